#!/bin/sh
# Makes the task's repository in the current (empty) directory.
set -eu
cat > test.sh <<'DEFT_EOF'
#!/bin/sh
# Passes once greeting.txt says hello.
grep -qw hello greeting.txt 2>/dev/null || { echo "greeting.txt must contain the word hello"; exit 1; }
echo ok
DEFT_EOF
chmod 755 test.sh
git init -q -b main && git add -A && git -c user.name=deft-eval -c user.email=eval@deft.invalid commit -q -m "Initial commit"
