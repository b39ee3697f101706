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

/// Where local repositories may be registered from. A server shared by several people names
/// its repository directories, so that nobody registers (and later pushes to) a repository
/// elsewhere on the machine, someone else's included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalRoots(Option<Vec<PathBuf>>);

impl LocalRoots {
    /// No restriction (the caller decides who may use that).
    pub fn unrestricted() -> LocalRoots {
        LocalRoots(None)
    }

    pub fn only(roots: Vec<PathBuf>) -> LocalRoots {
        LocalRoots(Some(roots))
    }

    pub fn is_restricted(&self) -> bool {
        self.0.is_some()
    }

    fn admits(&self, path: &Path) -> bool {
        match &self.0 {
            None => true,
            Some(roots) => roots.iter().any(|root| path.starts_with(root)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error(
        "`{path}` is not under the directories this server allows for local repositories; ask its administrator, who sets them with `[forge] local_roots`"
    )]
    OutsideRoots { path: String },
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

/// [`inspect_local`] for a path that must lie under `roots`: checked on the path as written,
/// before the file system is touched (so a refused path reveals nothing about what exists),
/// and again after symlinks are resolved.
pub async fn inspect_local_within(
    path: &str,
    roots: &LocalRoots,
) -> Result<LocalRepository, ForgeError> {
    let outside = || ForgeError::OutsideRoots {
        path: path.to_owned(),
    };
    let written = Path::new(path);
    if roots.is_restricted()
        && (written
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
            || !roots.admits(written))
    {
        return Err(outside());
    }
    let repo = inspect_local(path).await?;
    if !roots.admits(&repo.path) {
        return Err(outside());
    }
    Ok(repo)
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
    async fn roots_admit_only_what_lies_under_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("git");
        let inside = root.join("widgets");
        let outside = dir.path().join("elsewhere");
        for repo in [&inside, &outside] {
            std::fs::create_dir_all(repo).unwrap();
            sh(repo, INIT);
        }
        std::os::unix::fs::symlink(&outside, root.join("sneaky")).unwrap();
        let roots = LocalRoots::only(vec![root.canonicalize().unwrap()]);
        let root = root.canonicalize().unwrap();
        assert!(
            inspect_local_within(root.join("widgets").to_str().unwrap(), &roots)
                .await
                .is_ok()
        );
        for refused in [
            outside.display().to_string(),
            root.join("sneaky").display().to_string(),
            format!("{}/../elsewhere", root.display()),
            "/nonexistent/anything".to_owned(),
        ] {
            let error = inspect_local_within(&refused, &roots).await.unwrap_err();
            assert!(
                matches!(error, ForgeError::OutsideRoots { .. }),
                "{refused}: {error}"
            );
        }
        assert!(
            inspect_local_within(outside.to_str().unwrap(), &LocalRoots::unrestricted())
                .await
                .is_ok()
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
