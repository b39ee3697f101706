#!/bin/sh
# Runs in the task's result; exit 0 = solved.
[ -f greeting.txt ] && [ ! -L greeting.txt ] || { echo "greeting.txt is not a file"; exit 1; }
grep -qiw hello greeting.txt || { echo "greeting.txt does not say hello"; exit 1; }
echo "greeting.txt says hello"
