//! A repository without a Dockerfile gets its dependencies installed once per task, inside
//! the task's sandbox and under its network level, by its ecosystem's own tool
//! ([`deft_ecosystems`]: what to run is found from the repository's git objects, never from
//! the workspace). Download caches are kept per owner and repository between tasks, never
//! shared between users, and only those whose tool checks what it takes from them against the
//! repository's own hashes: one task cannot poison the next one's dependencies.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use deft_ecosystems::Ecosystem;

/// Caches whose tool verifies each file it takes against the repository's lockfile: npm
/// (the lockfile's `integrity`), Cargo (`Cargo.lock`'s checksums), Go (`go.sum`), each only
/// in the parts that are checked (see `unverified_parts`). pip, Maven, Gradle and Bundler
/// trust their caches, so theirs start empty in every task.
pub const VERIFIED_CACHES: [&str; 3] = ["npm", "cargo-registry", "go-mod"];

/// One repository's ecosystems, as found at the task's base.
#[derive(Debug, Clone)]
pub struct RepoDependencies {
    /// Its directory in the workspace.
    pub name: String,
    pub repo_id: String,
    pub ecosystems: Vec<Ecosystem>,
}

/// The most bytes of one manifest read for detection.
const MANIFEST_CAP: usize = 1024 * 1024;

/// Where the kept caches are, inside the task's workspace (not in any repository).
pub const WORKSPACE_CACHES: &str = ".deft-cache";

/// The ecosystems of the repository at `commit` of its private repository.
pub async fn detect(
    private: &Path,
    commit: &str,
) -> Result<Vec<Ecosystem>, deft_forge::ForgeError> {
    let listing = deft_forge::private::list_paths(private, commit).await?;
    let paths: Vec<&str> = listing.iter().map(String::as_str).collect();
    // Which manifests detection reads, then those read from git's objects.
    let mut wanted = Vec::new();
    deft_ecosystems::detect(&paths, &mut |path| {
        wanted.push(path.to_owned());
        None
    });
    let mut files = HashMap::new();
    for path in wanted {
        if let Ok(bytes) = deft_forge::private::read_file(private, commit, &path).await
            && bytes.len() <= MANIFEST_CAP
        {
            files.insert(path, bytes);
        }
    }
    Ok(deft_ecosystems::detect(&paths, &mut |path| {
        files.get(path).cloned()
    }))
}

/// The kept caches of one owner's repository on the host.
pub fn kept_caches(workspaces: &Path, owner: &str, repo: &str) -> PathBuf {
    workspaces
        .parent()
        .unwrap_or(workspaces)
        .join("caches")
        .join(owner)
        .join(repo)
}

/// Moves the verified caches kept for a repository into the task's workspace, where the
/// install's script links them into the home. A rename, never a copy or a walk; another task
/// of the same repository running meanwhile finds none and downloads afresh.
pub fn take_caches(kept: &Path, workspace: &Path) {
    let into = workspace.join(WORKSPACE_CACHES);
    for name in VERIFIED_CACHES {
        let from = kept.join(name);
        if std::fs::symlink_metadata(&from).is_ok_and(|meta| meta.is_dir()) {
            // The sandbox's user writes in it (the caches inside are its already).
            if std::fs::create_dir(&into).is_ok()
                && let Err(error) = deft_sandbox::user::give(&into)
            {
                tracing::warn!(%error, "the kept caches stay out of the workspace");
                let _ = std::fs::remove_dir(&into);
                return;
            }
            if let Err(error) = std::fs::rename(&from, into.join(name)) {
                tracing::debug!(%error, cache = name, "a kept cache stays where it is");
            }
        }
    }
}

/// Moves the verified caches back out of the workspace after the run. Only directories move
/// (a command may have put a link there: a rename moves the link itself, never what it
/// points at, but a link is no cache); one already kept stays, and the newer is dropped.
pub fn give_back_caches(workspace: &Path, kept: &Path) {
    let from = workspace.join(WORKSPACE_CACHES);
    if !std::fs::symlink_metadata(&from).is_ok_and(|meta| meta.is_dir()) {
        return;
    }
    for name in VERIFIED_CACHES {
        let cache = from.join(name);
        if !std::fs::symlink_metadata(&cache).is_ok_and(|meta| meta.is_dir()) {
            continue;
        }
        unverified_parts(name, &cache);
        // rename(2) would replace an empty directory there and refuse a full one.
        let to = kept.join(name);
        if std::fs::symlink_metadata(&to).is_err() && std::fs::create_dir_all(kept).is_ok() {
            let _ = std::fs::rename(&cache, &to);
        }
    }
}

/// Removes what a tool takes from its cache without checking it against the lockfile: Cargo
/// trusts the crates it unpacked under `registry/src`, Go the modules it extracted; only
/// their downloads (`registry/cache`, `registry/index`; `cache/download`) are checked.
fn unverified_parts(name: &str, cache: &Path) {
    let keep: &[&str] = match name {
        "cargo-registry" => &["cache", "index"],
        "go-mod" => &["cache"],
        _ => return,
    };
    for entry in std::fs::read_dir(cache).into_iter().flatten().flatten() {
        let file_name = entry.file_name();
        if keep.iter().any(|kept| file_name == *kept) {
            continue;
        }
        // Never follows a link: remove_dir_all removes the link itself.
        let _ = match entry.file_type() {
            Ok(kind) if kind.is_dir() => std::fs::remove_dir_all(entry.path()),
            _ => std::fs::remove_file(entry.path()),
        };
    }
    if name == "go-mod" {
        let downloads = cache.join("cache");
        for entry in std::fs::read_dir(&downloads)
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.file_name() != "download" {
                let _ = std::fs::remove_dir_all(entry.path())
                    .or_else(|_| std::fs::remove_file(entry.path()));
            }
        }
    }
}

/// The install's script: the kept caches linked where the tool looks for them, then the
/// ecosystem's own install. Runs in the ecosystem's directory of the repository.
pub fn script(ecosystem: &Ecosystem, install: &str) -> String {
    let mut script = String::from("set -e\n");
    for cache in &ecosystem.caches {
        if !VERIFIED_CACHES.contains(&cache.name) {
            continue;
        }
        let inside = format!("/workspace/{WORKSPACE_CACHES}/{}", cache.name);
        let home = format!("{}/{}", deft_ecosystems::HOME, cache.path);
        script.push_str(&format!(
            "mkdir -p '{inside}' \"$(dirname '{home}')\"\n\
             if [ ! -e '{home}' ]; then ln -s '{inside}' '{home}'; fi\n"
        ));
    }
    script.push_str(install);
    script
}

/// Every variable the ecosystems' caches need, for every command of the task.
pub fn cache_env(ecosystems: &[Ecosystem]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for ecosystem in ecosystems {
        for cache in &ecosystem.caches {
            for (key, value) in &cache.env {
                if !env.iter().any(|(known, _): &(String, String)| known == key) {
                    env.push(((*key).to_owned(), (*value).to_owned()));
                }
            }
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_verified_caches_are_linked_and_the_install_comes_last() {
        let found = deft_ecosystems::detect(&["package.json", "package-lock.json"], &mut |_| {
            Some(br#"{"name": "x"}"#.to_vec())
        });
        let npm = &found[0];
        let text = script(npm, npm.install.as_deref().unwrap());
        assert!(text.contains("/workspace/.deft-cache/npm"), "{text}");
        assert!(
            text.trim_end()
                .ends_with(npm.install.as_deref().unwrap().trim_end())
        );
        let pip = deft_ecosystems::detect(&["requirements.txt"], &mut |_| None);
        let text = script(&pip[0], "true");
        assert!(
            !text.contains(".deft-cache"),
            "pip's cache is not kept: {text}"
        );
    }

    #[test]
    fn only_the_checked_parts_of_cargos_and_gos_caches_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (workspace, kept) = (dir.path().join("w"), dir.path().join("kept"));
        let caches = workspace.join(".deft-cache");
        for part in [
            "cargo-registry/cache/index.crates/serde-1.0.crate",
            "cargo-registry/index/x",
            "cargo-registry/src/index.crates/serde-1.0/src",
            "go-mod/cache/download/example.com/m/@v",
            "go-mod/cache/vcs/abc",
            "go-mod/example.com/m@v1.0.0",
        ] {
            std::fs::create_dir_all(caches.join(part)).unwrap();
        }
        give_back_caches(&workspace, &kept);
        assert!(kept.join("cargo-registry/cache/index.crates").is_dir());
        assert!(kept.join("cargo-registry/index/x").is_dir());
        assert!(
            !kept.join("cargo-registry/src").exists(),
            "unpacked crates are not checked"
        );
        assert!(kept.join("go-mod/cache/download/example.com").is_dir());
        assert!(!kept.join("go-mod/cache/vcs").exists());
        assert!(
            !kept.join("go-mod/example.com").exists(),
            "extracted modules are not checked"
        );
    }

    #[test]
    fn caches_go_back_only_as_directories_and_never_over_a_kept_one() {
        let dir = tempfile::tempdir().unwrap();
        let (workspace, kept) = (dir.path().join("w"), dir.path().join("kept"));
        std::fs::create_dir_all(workspace.join(".deft-cache/npm")).unwrap();
        std::fs::write(workspace.join(".deft-cache/npm/blob"), "new").unwrap();
        std::os::unix::fs::symlink("/etc", workspace.join(".deft-cache/go-mod")).unwrap();
        std::fs::create_dir_all(kept.join("cargo-registry")).unwrap();
        give_back_caches(&workspace, &kept);
        assert_eq!(
            std::fs::read_to_string(kept.join("npm/blob")).unwrap(),
            "new"
        );
        assert!(!kept.join("go-mod").exists(), "a link is no cache");
        take_caches(&kept, &workspace);
        assert!(workspace.join(".deft-cache/npm/blob").exists());
        assert!(workspace.join(".deft-cache/cargo-registry").is_dir());
        assert!(!kept.join("npm").exists());
    }
}
