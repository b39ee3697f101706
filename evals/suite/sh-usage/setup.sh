#!/bin/sh
# Makes the task's repository in the current (empty) directory.
set -eu
cat > sum.sh <<'DEFT_EOF'
#!/bin/sh
# Prints the sum of its arguments: `./sum.sh 1 2 3` prints 6.
total=0
for n in "$@"; do
  total=$((total + n))
done
echo "$total"
DEFT_EOF
chmod 755 sum.sh
git init -q -b main && git add -A && git -c user.name=deft-eval -c user.email=eval@deft.invalid commit -q -m "Initial commit"
