#!/bin/sh
# Makes the task's repository in the current (empty) directory.
set -eu
mkdir -p lib
cat > lib/math.js <<'DEFT_EOF'
// Arithmetic helpers.

function addNumbers(a, b) {
  return a + b;
}

module.exports = { addNumbers };
DEFT_EOF
cat > index.js <<'DEFT_EOF'
const { addNumbers } = require("./lib/math");

console.log(addNumbers(2, 3));
DEFT_EOF
git init -q -b main && git add -A && git -c user.name=deft-eval -c user.email=eval@deft.invalid commit -q -m "Initial commit"
