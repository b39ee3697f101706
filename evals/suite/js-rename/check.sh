#!/bin/sh
# Runs in the task's result; exit 0 = solved.
set -e
[ "$(node index.js)" = 5 ] || { echo "node index.js does not print 5"; exit 1; }
node -e '
const m = require("./lib/math");
if (typeof m.sum !== "function") { console.log("lib/math.js exports no sum"); process.exit(1); }
if ("addNumbers" in m) { console.log("addNumbers is still exported"); process.exit(1); }
if (m.sum(4, 5) !== 9) { console.log("sum(4, 5) is not 9"); process.exit(1); }
'
if grep -rn addNumbers --include='*.js' .; then echo "addNumbers is still named"; exit 1; fi
echo "renamed"
