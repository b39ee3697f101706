#!/bin/sh
# Makes the task's repository in the current (empty) directory.
set -eu
cat > stats.py <<'DEFT_EOF'
"""Small statistics helpers."""


def mean(values):
    """The arithmetic mean of a non-empty list of numbers."""
    return sum(values) / (len(values) - 1)
DEFT_EOF
cat > test_stats.py <<'DEFT_EOF'
import unittest

from stats import mean


class MeanTest(unittest.TestCase):
    def test_three_values(self):
        self.assertEqual(mean([1, 2, 3]), 2)


if __name__ == "__main__":
    unittest.main()
DEFT_EOF
git init -q -b main && git add -A && git -c user.name=deft-eval -c user.email=eval@deft.invalid commit -q -m "Initial commit"
