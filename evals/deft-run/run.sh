#!/usr/bin/env bash
# Runs a deft binary's `deft run` over the same suite as `deft eval`, for a deft from before
# `deft eval` existed (the "before" of docs/EVALUATION.md), and writes the report in the JSON
# shape of `deft eval --json`, so that `deft eval evals/suite --compare REPORT` shows the two
# side by side. Usage:
#
#   DEFT_MODEL=openai-compatible/NAME DEFT_MODEL_BASE_URL=URL DEFT_MODEL_API_KEY=KEY \
#   evals/deft-run/run.sh DEFT_BINARY --json REPORT [--runner TEXT] [--suite DIR]
#       [--only TASK]... [--timeout SECS] [--keep DIR] [--deft PATH]
#
# Each task gets its own data dir; the checks run in sandboxes of --deft (default: this
# checkout's build), never on the host. The deft evaluated is older, with older sandboxes:
# run it on a machine you would let a task's code reach, such as a throwaway VM.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
exec python3 "$here/driver.py" --root "$root" "$@"
