#!/bin/sh
# Makes the task's repository in the current (empty) directory.
set -eu
cat > accounts.py <<'DEFT_EOF'
"""A bank account's arithmetic."""


def withdraw(balance, amount):
    """The balance after taking `amount` out of it."""
    return balance - amount
DEFT_EOF
git init -q -b main && git add -A && git -c user.name=deft-eval -c user.email=eval@deft.invalid commit -q -m "Initial commit"
