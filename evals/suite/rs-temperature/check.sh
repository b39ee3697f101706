#!/bin/sh
# Runs in the task's result; exit 0 = solved.
# Compiles the repository's src/lib.rs with the suite's own tests, using rustc alone.
command -v rustc >/dev/null || { echo "rustc is not installed (Debian: apt-get install rustc)"; exit 1; }
dir=$(mktemp -d)
cat > "$dir/check.rs" <<EOF
#[path = "$PWD/src/lib.rs"]
mod subject;
#[test]
fn conversions() {
    assert_eq!(subject::fahrenheit(100.0), 212.0);
    assert_eq!(subject::fahrenheit(0.0), 32.0);
    assert_eq!(subject::fahrenheit(-40.0), -40.0);
}
EOF
rustc --edition 2021 --test -o "$dir/check" "$dir/check.rs" 2>&1 | tail -n 20
[ -x "$dir/check" ] || { echo "src/lib.rs does not compile"; exit 1; }
"$dir/check" --quiet
