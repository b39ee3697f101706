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
