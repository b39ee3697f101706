#!/bin/sh
# Makes the task's repository in the current (empty) directory.
set -eu
mkdir -p src test
cat > src/slug.js <<'DEFT_EOF'
// Turns a title into a URL slug: lower case, words joined by "-".
function slugify(title) {
  return title.trim().toLowerCase().replace(" ", "-");
}

module.exports = { slugify };
DEFT_EOF
cat > test/slug.test.js <<'DEFT_EOF'
const test = require("node:test");
const assert = require("node:assert");
const { slugify } = require("../src/slug");

test("joins every word with a dash", () => {
  assert.strictEqual(slugify("Hello Big World"), "hello-big-world");
});
DEFT_EOF
cat > package.json <<'DEFT_EOF'
{
  "name": "slug",
  "version": "1.0.0",
  "private": true,
  "scripts": { "test": "node --test test/" }
}
DEFT_EOF
git init -q -b main && git add -A && git -c user.name=deft-eval -c user.email=eval@deft.invalid commit -q -m "Initial commit"
