#!/bin/sh
# Runs in the task's result; exit 0 = solved.
python3 - <<'EOF'
from accounts import withdraw
assert withdraw(100, 30) == 70
assert withdraw(100, 100) == 0
for amount in (0, -5, 101):
    try:
        withdraw(100, amount)
    except ValueError:
        pass
    else:
        raise SystemExit(f"withdraw(100, {amount}) did not raise ValueError")
print("withdraw validates")
EOF
