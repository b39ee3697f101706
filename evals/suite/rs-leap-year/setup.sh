#!/bin/sh
# Makes the task's repository in the current (empty) directory.
set -eu
mkdir -p src
cat > Cargo.toml <<'DEFT_EOF'
[package]
name = "calendar"
version = "0.1.0"
edition = "2021"

[dependencies]
DEFT_EOF
cat > src/lib.rs <<'DEFT_EOF'
//! Calendar arithmetic.

/// Whether `year` is a leap year in the Gregorian calendar.
pub fn is_leap(year: u32) -> bool {
    year % 4 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fourth_year() {
        assert!(is_leap(2024));
        assert!(!is_leap(2023));
    }

    #[test]
    fn centuries_are_not_unless_divisible_by_400() {
        assert!(!is_leap(1900));
        assert!(is_leap(2000));
    }
}
DEFT_EOF
# As `cargo new` leaves it: the build's output is not the repository's.
printf '/target\n' > .gitignore
git init -q -b main && git add -A && git -c user.name=deft-eval -c user.email=eval@deft.invalid commit -q -m "Initial commit"
