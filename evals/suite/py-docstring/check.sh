#!/bin/sh
# Runs in the task's result; exit 0 = solved.
python3 - <<'EOF'
from textutil import word_count
cases = {
    "The cat, the hat!": {"the": 2, "cat": 1, "hat": 1},
    "": {},
    "  Hello   hello\nHELLO.  ": {"hello": 3},
    "Wait... what?! ok": {"wait": 1, "what": 1, "ok": 1},
    "a - b": {"a": 1, "-": 1, "b": 1},
    "... !": {},
}
for text, expected in cases.items():
    got = word_count(text)
    assert got == expected, f"word_count({text!r}) = {got!r}, expected {expected!r}"
print("word_count is right")
EOF
