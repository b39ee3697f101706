#!/bin/sh
# Runs in the task's result; exit 0 = solved.
set -e
out=$(python3 greet.py Ada --shout)
[ "$out" = "HELLO, ADA!" ] || { echo "--shout printed: $out"; exit 1; }
out=$(python3 greet.py Ada)
[ "$out" = "Hello, Ada!" ] || { echo "without --shout: $out"; exit 1; }
echo "the flag works"
