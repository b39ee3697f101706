#!/usr/bin/env bash
# Runs mini-swe-agent 2.4.6 on the same suite as `deft eval`, against an OpenAI-compatible
# model server, in its native tool-calling mode and in its text-based mode, and writes one
# report per mode in the JSON shape of `deft eval --json` (docs/EVALUATION.md), so that
#
#   deft eval evals/suite --compare target/mini-swe-agent/results/toolcall.json
#
# shows deft beside it. Usage:
#
#   evals/mini-swe-agent/run.sh BASE_URL [--model NAME] [--mode toolcall|text|both]
#       [--suite DIR] [--only TASK]... [--out DIR] [--step-limit N] [--timeout SECS] [--deft PATH]
#       [--max-tokens N]
#
# BASE_URL is the server's OpenAI-compatible root, e.g. http://127.0.0.1:8181/v1 (what
# `real-model.sh serve` prints). mini-swe-agent is installed from the Python package index
# into a venv under target/ (or $DEFT_MSWEA_VENV) on first use. The agent's commands run in
# its bubblewrap environment (the task's repository the only writable directory, no
# network); each check runs in a deft sandbox (`deft sandbox run`), never on the host.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${DEFT_MSWEA_VENV:-$root/target/mini-swe-agent/venv}
version=2.4.6

if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi

if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('mini-swe-agent') != '$version')" 2>/dev/null; then
  echo "mini-swe-agent: installing mini-swe-agent==$version into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet "mini-swe-agent==$version"
fi

exec python3 "$here/driver.py" --venv "$venv" --root "$root" --version "$version" "$@"
