#!/bin/sh
# Runs in the task's result; exit 0 = solved.
node -e '
const { slugify } = require("./src/slug");
const cases = [["Hello Big World", "hello-big-world"], ["One", "one"], ["  A b c d ", "a-b-c-d"]];
for (const [input, expected] of cases) {
  const got = slugify(input);
  if (got !== expected) { console.log(`slugify(${JSON.stringify(input)}) = ${JSON.stringify(got)}, expected ${JSON.stringify(expected)}`); process.exit(1); }
}
console.log("slugify is right");
'
