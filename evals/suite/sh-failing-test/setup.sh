#!/bin/sh
# Makes the task's repository in the current (empty) directory.
set -eu
cat > count_lines.sh <<'DEFT_EOF'
#!/bin/sh
# Prints how many non-empty lines the file $1 has.
wc -l < "$1" | tr -d ' '
DEFT_EOF
cat > test.sh <<'DEFT_EOF'
#!/bin/sh
# The tests of count_lines.sh.
printf 'one\n\ntwo\n\n' > /tmp/count_lines_test.txt
got=$(sh ./count_lines.sh /tmp/count_lines_test.txt)
if [ "$got" = 2 ]; then echo "1 passed, 0 failed"; else echo "expected 2 non-empty lines, got $got"; echo "0 passed, 1 failed"; exit 1; fi
DEFT_EOF
chmod 755 count_lines.sh
chmod 755 test.sh
git init -q -b main && git add -A && git -c user.name=deft-eval -c user.email=eval@deft.invalid commit -q -m "Initial commit"
