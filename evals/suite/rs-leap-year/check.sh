#!/bin/sh
# Runs in the task's result; exit 0 = solved.
# Compiles the repository's src/lib.rs with the suite's own tests, using rustc alone.
command -v rustc >/dev/null || { echo "rustc is not installed (Debian: apt-get install rustc)"; exit 1; }
dir=$(mktemp -d)
cat > "$dir/check.rs" <<EOF
#[path = "$PWD/src/lib.rs"]
mod subject;
#[test]
fn gregorian() {
    for (year, leap) in [(2024, true), (2023, false), (1900, false), (2000, true), (2100, false), (2400, true), (1996, true)] {
        assert_eq!(subject::is_leap(year), leap, "{year}");
    }
}
EOF
rustc --edition 2021 --test -o "$dir/check" "$dir/check.rs" 2>&1 | tail -n 20
[ -x "$dir/check" ] || { echo "src/lib.rs does not compile"; exit 1; }
"$dir/check" --quiet
