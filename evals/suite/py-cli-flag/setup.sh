#!/bin/sh
# Makes the task's repository in the current (empty) directory.
set -eu
cat > greet.py <<'DEFT_EOF'
"""Prints a greeting: `python3 greet.py NAME`."""

import argparse


def main():
    parser = argparse.ArgumentParser(description="Greet someone.")
    parser.add_argument("name")
    args = parser.parse_args()
    message = f"Hello, {args.name}!"
    print(message)


if __name__ == "__main__":
    main()
DEFT_EOF
cat > README.md <<'DEFT_EOF'
# greet

`python3 greet.py Ada` prints `Hello, Ada!`.
DEFT_EOF
git init -q -b main && git add -A && git -c user.name=deft-eval -c user.email=eval@deft.invalid commit -q -m "Initial commit"
