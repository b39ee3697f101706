#!/bin/sh
# Makes the task's repository in the current (empty) directory.
set -eu
cat > duration.js <<'DEFT_EOF'
/**
 * Parses a duration such as "1h30m", "45s", "2m" or "1h2m3s" into a number of seconds.
 * The units are h, m and s, each at most once and in that order, each after a whole
 * number. Anything else (an empty string, "5", "1x", "m5") throws an Error.
 *
 * @param {string} text
 * @returns {number} the duration in seconds
 */
function parseDuration(text) {
  throw new Error("not implemented");
}

module.exports = { parseDuration };
DEFT_EOF
git init -q -b main && git add -A && git -c user.name=deft-eval -c user.email=eval@deft.invalid commit -q -m "Initial commit"
