//! Where repositories live. For now, the local forge: git repositories on the server's disk,
//! whose pull requests deft keeps itself (SPEC §1). GitHub comes with its own issue.
//!
//! Everything here runs `git` on the host, outside any sandbox, so it only reads metadata and
//! switches off the configuration knobs that could make git run a repository's own programs.

use std::path::{Path, PathBuf};

use tokio::process::Command;

/// A local repository that checked out as usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRepository {
    /// The directory name, without a trailing `.git`.
    pub name: String,
    /// The canonical absolute path: symlinks resolved, so one repository has one location.
    pub path: PathBuf,
    pub default_branch: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error("`{path}` is not an absolute path; give the repository's full path on the server")]
    NotAbsolute { path: String },
    #[error("`{path}` does not exist on the server ({source}); check the path")]
    Missing {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "`{path}` is not the top of a git repository; give the directory that holds `.git`, or a bare repository"
    )]
    NotARepository { path: String },
    #[error(
        "`{path}` has no branch checked out (HEAD is detached or unborn); commit to a branch first"
    )]
    NoDefaultBranch { path: String },
    #[error("cannot run `git` ({0}); install git (`apt-get install git`)")]
    GitMissing(#[source] std::io::Error),
}

/// Checks that `path` is the top of a git repository (work tree or bare) and reads its name and
/// default branch.
pub async fn inspect_local(path: &str) -> Result<LocalRepository, ForgeError> {
    if !Path::new(path).is_absolute() {
        return Err(ForgeError::NotAbsolute {
            path: path.to_owned(),
        });
    }
    let canonical = tokio::fs::canonicalize(path)
        .await
        .map_err(|source| ForgeError::Missing {
            path: path.to_owned(),
            source,
        })?;
    let not_a_repo = || ForgeError::NotARepository {
        path: path.to_owned(),
    };
    let found = git(
        &canonical,
        &["rev-parse", "--is-bare-repository", "--absolute-git-dir"],
    )
    .await?
    .ok_or_else(not_a_repo)?;
    let mut lines = found.lines();
    let bare = lines.next() == Some("true");
    let git_dir = lines.next().map(PathBuf::from);
    let top = if bare {
        git_dir
    } else {
        git(&canonical, &["rev-parse", "--show-toplevel"])
            .await?
            .map(|out| PathBuf::from(out.trim()))
    };
    if top.as_deref() != Some(canonical.as_path()) {
        return Err(not_a_repo());
    }
    let no_branch = || ForgeError::NoDefaultBranch {
        path: path.to_owned(),
    };
    git(&canonical, &["rev-parse", "--verify", "--quiet", "HEAD"])
        .await?
        .ok_or_else(no_branch)?;
    let branch = git(&canonical, &["symbolic-ref", "--quiet", "--short", "HEAD"])
        .await?
        .map(|out| out.trim().to_owned())
        .filter(|branch| !branch.is_empty())
        .ok_or_else(no_branch)?;
    let name = canonical
        .file_name()
        .map(|name| name.to_string_lossy().trim_end_matches(".git").to_owned())
        .filter(|name| !name.is_empty())
        .ok_or_else(not_a_repo)?;
    Ok(LocalRepository {
        name,
        path: canonical,
        default_branch: branch,
    })
}

/// Runs a read-only git command in `dir`: `Ok(None)` when git says no, its stdout otherwise.
async fn git(dir: &Path, args: &[&str]) -> Result<Option<String>, ForgeError> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        // A repository's own config must not make the server run its programs.
        .args([
            "-c",
            "core.fsmonitor=false",
            "-c",
            "core.hooksPath=/dev/null",
        ])
        .arg("-c")
        .arg(format!("safe.directory={}", dir.display()))
        .args(args)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env("GIT_CEILING_DIRECTORIES", dir.parent().unwrap_or(dir))
        .kill_on_drop(true)
        .output()
        .await
        .map_err(ForgeError::GitMissing)?;
    if !output.status.success() {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(dir: &Path, script: &str) {
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .status()
            .unwrap();
        assert!(status.success(), "{script}");
    }

    const INIT: &str = "git init -q -b trunk && git -c user.name=t -c user.email=t@t commit -q --allow-empty -m init";

    #[tokio::test]
    async fn a_work_tree_and_a_bare_repository_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("widgets");
        std::fs::create_dir(&work).unwrap();
        sh(&work, INIT);
        let repo = inspect_local(work.to_str().unwrap()).await.unwrap();
        assert_eq!(
            (repo.name.as_str(), repo.default_branch.as_str()),
            ("widgets", "trunk")
        );
        assert_eq!(repo.path, work.canonicalize().unwrap());

        sh(dir.path(), "git clone -q --bare widgets gadgets.git");
        let bare = inspect_local(dir.path().join("gadgets.git").to_str().unwrap())
            .await
            .unwrap();
        assert_eq!(
            (bare.name.as_str(), bare.default_branch.as_str()),
            ("gadgets", "trunk")
        );
    }

    #[tokio::test]
    async fn bad_paths_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("widgets");
        std::fs::create_dir_all(work.join("src")).unwrap();
        let check = |path: String, expect: &'static str| async move {
            let error = inspect_local(&path).await.unwrap_err().to_string();
            assert!(error.contains(expect), "{path}: {error}");
        };
        check("relative/path".into(), "is not an absolute path").await;
        check(
            dir.path().join("nope").display().to_string(),
            "does not exist",
        )
        .await;
        check(
            work.display().to_string(),
            "is not the top of a git repository",
        )
        .await;
        sh(&work, "git init -q -b main");
        check(work.display().to_string(), "has no branch checked out").await;
        sh(&work, INIT);
        check(
            work.join("src").display().to_string(),
            "is not the top of a git repository",
        )
        .await;
    }
}
