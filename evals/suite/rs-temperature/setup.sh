#!/bin/sh
# Makes the task's repository in the current (empty) directory.
set -eu
mkdir -p src
cat > Cargo.toml <<'DEFT_EOF'
[package]
name = "temperature"
version = "0.1.0"
edition = "2021"

[dependencies]
DEFT_EOF
cat > src/lib.rs <<'DEFT_EOF'
//! Temperature conversions.

/// Degrees Celsius in degrees Fahrenheit.
pub fn fahrenheit(celsius: f64) -> f64 {
    celsius * 9.0 / 5.0 - 32.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn water_boils_at_212() {
        assert_eq!(fahrenheit(100.0), 212.0);
    }
}
DEFT_EOF
# As `cargo new` leaves it: the build's output is not the repository's.
printf '/target\n' > .gitignore
git init -q -b main && git add -A && git -c user.name=deft-eval -c user.email=eval@deft.invalid commit -q -m "Initial commit"
