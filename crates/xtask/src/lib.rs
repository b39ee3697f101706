//! Project chores. The tidy checks live in `tests/tidy.rs` so that `cargo test` runs them; this
//! library holds what they share: reading the workspace's crates.

use std::path::{Path, PathBuf};

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("xtask lives in crates/xtask")
        .to_owned()
}

/// One crate of the workspace: its name and manifest.
#[derive(Debug)]
pub struct Crate {
    pub name: String,
    pub dir: PathBuf,
    pub manifest: toml::Table,
}

impl Crate {
    /// Names of the workspace crates this one depends on in `section` (`dependencies`, ...).
    pub fn deft_dependencies(&self, section: &str) -> Vec<String> {
        self.manifest
            .get(section)
            .and_then(toml::Value::as_table)
            .map(|deps| {
                deps.keys()
                    .filter(|name| name.starts_with("deft"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub fn crates() -> Vec<Crate> {
    let mut crates: Vec<Crate> = std::fs::read_dir(workspace_root().join("crates"))
        .expect("the crates folder is readable")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|dir| dir.join("Cargo.toml").is_file())
        .map(|dir| {
            let text =
                std::fs::read_to_string(dir.join("Cargo.toml")).expect("a manifest is readable");
            let manifest: toml::Table = text.parse().expect("a manifest is valid TOML");
            let name = manifest["package"]["name"]
                .as_str()
                .expect("a package name")
                .to_owned();
            Crate {
                name,
                dir,
                manifest,
            }
        })
        .collect();
    crates.sort_by(|a, b| a.name.cmp(&b.name));
    crates
}

/// Every `.rs` file under `dir`.
pub fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("a source directory is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The contents of the plain string literals (`"…"`) of Rust source, escapes left as written;
/// raw strings, chars and comments are skipped roughly, which is enough for paths.
pub fn string_literals(source: &str) -> Vec<String> {
    let mut literals = Vec::new();
    let mut chars = source.chars().peekable();
    let mut previous = ' ';
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                // A line comment: skip to its end.
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '\'' => {
                // A char literal ('"', '\"') or a lifetime: skip a quoted char if it is one.
                let mut ahead = chars.clone();
                match (ahead.next(), ahead.next(), ahead.next()) {
                    (Some('\\'), Some(_), Some('\'')) => {
                        chars.nth(2);
                    }
                    (Some(_), Some('\''), _) => {
                        chars.nth(1);
                    }
                    _ => {}
                }
            }
            '"' if previous != 'r' && previous != '#' => {
                let mut literal = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            literal.push(c);
                            if let Some(next) = chars.next() {
                                literal.push(next);
                            }
                        }
                        '"' => break,
                        _ => literal.push(c),
                    }
                }
                literals.push(literal);
            }
            _ => {}
        }
        previous = c;
    }
    literals
}

/// Whether `relative`, joined to `base` and its `..` taken lexically, stays under `root`. A
/// literal that does not start at a `..` is read from its first `..` on, as code joins pieces.
pub fn stays_inside(base: &Path, relative: &str, root: &Path) -> bool {
    let start = relative.find("../").unwrap_or(0);
    let mut path: Vec<&std::ffi::OsStr> = base.iter().collect();
    let depth = root.iter().count();
    for part in relative[start..].split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if path.len() <= depth {
                    return false;
                }
                path.pop();
            }
            name => path.push(std::ffi::OsStr::new(name)),
        }
    }
    true
}
