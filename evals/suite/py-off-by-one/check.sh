#!/bin/sh
# Runs in the task's result; exit 0 = solved.
python3 - <<'EOF'
from stats import mean
assert mean([1, 2, 3]) == 2, mean([1, 2, 3])
assert mean([5]) == 5, mean([5])
assert mean([2, 4, 6, 8]) == 5, mean([2, 4, 6, 8])
print("mean is right")
EOF
