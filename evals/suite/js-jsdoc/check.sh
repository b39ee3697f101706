#!/bin/sh
# Runs in the task's result; exit 0 = solved.
node -e '
const { parseDuration } = require("./duration");
const good = [["1h30m", 5400], ["45s", 45], ["2m", 120], ["1h2m3s", 3723], ["0s", 0], ["10h", 36000]];
for (const [text, expected] of good) {
  let got;
  try { got = parseDuration(text); } catch (e) { console.log(`parseDuration(${JSON.stringify(text)}) threw ${e.message}`); process.exit(1); }
  if (got !== expected) { console.log(`parseDuration(${JSON.stringify(text)}) = ${got}, expected ${expected}`); process.exit(1); }
}
for (const text of ["", "5", "1x", "m5", "1s1h", "h"]) {
  let threw = false;
  try { parseDuration(text); } catch (e) { threw = true; }
  if (!threw) { console.log(`parseDuration(${JSON.stringify(text)}) did not throw`); process.exit(1); }
}
console.log("parseDuration is right");
'
