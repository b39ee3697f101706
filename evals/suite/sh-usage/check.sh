#!/bin/sh
# Runs in the task's result; exit 0 = solved.
out=$(sh ./sum.sh 2>/dev/null); code=$?
[ "$code" = 2 ] || { echo "without arguments: exit status $code, expected 2"; exit 1; }
[ -z "$out" ] || { echo "without arguments it printed to stdout: $out"; exit 1; }
err=$(sh ./sum.sh 2>&1 >/dev/null)
[ "$err" = "usage: sum.sh N..." ] || { echo "stderr was: $err"; exit 1; }
[ "$(sh ./sum.sh 1 2 3)" = 6 ] || { echo "sum.sh 1 2 3 is not 6"; exit 1; }
echo "usage is checked"
