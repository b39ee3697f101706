#!/bin/sh
# Runs in the task's result; exit 0 = solved.
f=$(mktemp)
printf 'a\n\nb\n\n\nc\n' > "$f"
got=$(sh ./count_lines.sh "$f")
[ "$got" = 3 ] || { echo "expected 3, got $got"; exit 1; }
printf '\n\n' > "$f"
got=$(sh ./count_lines.sh "$f")
[ "$got" = 0 ] || { echo "expected 0 for empty lines only, got $got"; exit 1; }
printf 'x\ny\n' > "$f"
got=$(sh ./count_lines.sh "$f")
[ "$got" = 2 ] || { echo "expected 2, got $got"; exit 1; }
echo "count_lines.sh counts non-empty lines"
