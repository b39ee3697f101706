#!/bin/sh
# Runs in the task's result; exit 0 = solved.
python3 - <<'EOF'
import client
expected = "https://widgets.prod.example.net"
assert client.API_URL == expected, f"API_URL is {client.API_URL!r}; the production address is {expected!r}"
print("the client uses production")
EOF
