//! Merging a task's branch into its base in a registered local repository: the local forge's
//! "merge pull request" button.
//!
//! The repository belongs to whoever can write it, and so do its configuration and its links,
//! so git works on it in the jail as it does when reading it (see `objects.rs`), with one
//! difference: the repository is mounted read-write, since a merge writes objects, moves the
//! base branch and, when that branch is checked out, updates the work tree. Nothing else of the
//! host is there to be written or run. A merge that conflicts changes nothing: the merge is
//! computed without a work tree first (`git merge-tree`), and the branch moves only when it is
//! clean, by compare-and-swap on its old commit.

use std::path::Path;

use crate::jail::{Jail, ORIGIN};
use crate::objects::{Objects, moved};
use crate::{ForgeError, Identity};

/// What a merge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merged {
    /// The base had nothing the branch lacked: it now points at the branch's commit.
    FastForward { commit: String },
    /// The two had diverged: a merge commit with both as parents.
    MergeCommit { commit: String },
    /// Every commit of the branch was already in the base.
    AlreadyMerged,
}

/// Merges `head` into `base` in the registered repository at `repo` (both branch names,
/// without `refs/heads/`), fast-forward when it can, else with a merge commit by `by` whose
/// message is `message`. A conflict is [`ForgeError::MergeConflict`], and nothing changes.
///
/// `reviewed` is the commit of `head` the person looked at: a branch that moved since (the
/// task pushed again) is refused, so that what is merged is what was read.
pub async fn merge_local(
    repo: &Path,
    (head, reviewed): (&str, &str),
    base: &str,
    message: &str,
    by: &Identity,
) -> Result<Merged, ForgeError> {
    if let Some(why) = moved(repo) {
        return Err(ForgeError::Refused {
            what: format!("to merge in {}: {why}", repo.display()),
        });
    }
    let heads = Objects::registered(repo)
        .resolve_branches(&[base, head])
        .await?;
    let missing = |branch: &str| ForgeError::BranchMissing {
        branch: branch.to_owned(),
        repo: repo.display().to_string(),
    };
    let old = heads[0].clone().ok_or_else(|| missing(base))?;
    let tip = heads[1].clone().ok_or_else(|| missing(head))?;
    if tip != reviewed {
        return Err(ForgeError::Refused {
            what: format!(
                "to merge `{head}`: it moved since the diff you looked at (it is at {} now); look at the diff again, then merge",
                &tip[..tip.len().min(12)]
            ),
        });
    }
    let git = Merger::new(repo);
    if git
        .succeeds(&["merge-base", "--is-ancestor", &tip, &old])
        .await?
    {
        return Ok(Merged::AlreadyMerged);
    }
    let fast_forward = git
        .succeeds(&["merge-base", "--is-ancestor", &old, &tip])
        .await?;
    let new = if fast_forward {
        tip.clone()
    } else {
        let tree = git.merged_tree(&old, &tip, head, base).await?;
        let env = [
            ("GIT_AUTHOR_NAME", by.name.as_str()),
            ("GIT_AUTHOR_EMAIL", by.email.as_str()),
            ("GIT_COMMITTER_NAME", by.name.as_str()),
            ("GIT_COMMITTER_EMAIL", by.email.as_str()),
        ];
        let made = git
            .output(
                &["commit-tree", &tree, "-p", &old, "-p", &tip, "-m", message],
                &env,
            )
            .await?;
        made.trim().to_owned()
    };
    git.move_branch(base, &old, &new, head).await?;
    Ok(if fast_forward {
        Merged::FastForward { commit: new }
    } else {
        Merged::MergeCommit { commit: new }
    })
}

/// git in the jail on one registered repository, mounted read-write.
struct Merger<'a> {
    repo: &'a Path,
    /// `--git-dir=…` (and `--work-tree=…` for a repository with one) as the jail sees them.
    dirs: Vec<String>,
    worktree: bool,
}

impl<'a> Merger<'a> {
    fn new(repo: &'a Path) -> Merger<'a> {
        // As `Objects::registered` decides it: only a real `.git` directory is a work tree's.
        let worktree = std::fs::symlink_metadata(repo.join(".git")).is_ok_and(|m| m.is_dir());
        let dirs = if worktree {
            vec![
                format!("--git-dir={ORIGIN}/.git"),
                format!("--work-tree={ORIGIN}"),
            ]
        } else {
            vec![format!("--git-dir={ORIGIN}")]
        };
        Merger {
            repo,
            dirs,
            worktree,
        }
    }

    fn jail(&self) -> Jail<'a> {
        Jail {
            workspace: None,
            clone: None,
            origin: Some(self.repo),
            origin_writable: true,
        }
    }

    fn args<'b>(&'b self, args: &[&'b str]) -> Vec<&'b str> {
        let mut all = vec![
            "-C",
            ORIGIN,
            "-c",
            "protocol.allow=never",
            "-c",
            "protocol.file.allow=never",
        ];
        all.extend(self.dirs.iter().map(String::as_str));
        all.extend_from_slice(args);
        all
    }

    async fn succeeds(&self, args: &[&str]) -> Result<bool, ForgeError> {
        Ok(self.jail().git_status(&self.args(args), &[]).await?.0)
    }

    async fn output(&self, args: &[&str], env: &[(&str, &str)]) -> Result<String, ForgeError> {
        let out = self
            .jail()
            .git(&self.args(args), env, true)
            .await?
            .unwrap_or_default();
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// The tree of `ours` and `theirs` merged, written as objects but on no branch; the
    /// conflicting files when they do not merge cleanly.
    async fn merged_tree(
        &self,
        ours: &str,
        theirs: &str,
        head: &str,
        base: &str,
    ) -> Result<String, ForgeError> {
        let (clean, out) = self
            .jail()
            .git_status(
                &self.args(&[
                    "merge-tree",
                    "--write-tree",
                    "--name-only",
                    "--no-messages",
                    ours,
                    theirs,
                ]),
                &[],
            )
            .await?;
        let out = String::from_utf8_lossy(&out);
        let mut lines = out.lines();
        let tree = lines.next().unwrap_or("").trim().to_owned();
        if !crate::objects::is_object_id(&tree) {
            return Err(ForgeError::Git {
                command: "merge-tree".into(),
                message: format!("it printed no tree: {}", out.trim()),
            });
        }
        if !clean {
            let files = lines
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(str::to_owned)
                .collect();
            return Err(ForgeError::MergeConflict {
                head: head.to_owned(),
                base: base.to_owned(),
                files,
            });
        }
        Ok(tree)
    }

    /// Moves `base` from `old` to `new`: with the work tree when `base` is checked out there
    /// (a fast-forward there, which keeps the person's uncommitted changes or refuses if the
    /// merge would overwrite them), else the branch alone, only if it still points at `old`.
    async fn move_branch(
        &self,
        base: &str,
        old: &str,
        new: &str,
        head: &str,
    ) -> Result<(), ForgeError> {
        let base_ref = format!("refs/heads/{base}");
        let checked_out = self.worktree
            && self
                .output(&["symbolic-ref", "--quiet", "HEAD"], &[])
                .await
                .is_ok_and(|current| current.trim() == base_ref);
        let reflog = format!("deft: merge {head}");
        if !checked_out {
            self.output(&["update-ref", "-m", &reflog, &base_ref, new, old], &[])
                .await?;
            return Ok(());
        }
        // The branch checked out moved meanwhile: a fast-forward to `new` would drop it.
        let now = self
            .output(&["rev-parse", "--verify", &base_ref], &[])
            .await?;
        if now.trim() != old {
            return Err(ForgeError::Refused {
                what: format!(
                    "to merge into `{base}`: it moved while the merge was made; merge again"
                ),
            });
        }
        match self
            .output(&["merge", "--ff-only", "--no-edit", "--quiet", new], &[])
            .await
        {
            Ok(_) => Ok(()),
            Err(ForgeError::Git { message, .. }) => Err(ForgeError::Refused {
                what: format!(
                    "to merge into `{base}`, which is checked out in the repository's work tree: {message}. Commit or stash the changes there, then merge again"
                ),
            }),
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::sh;

    fn who() -> Identity {
        Identity {
            name: "ada".into(),
            email: "ada@deft.invalid".into(),
        }
    }

    fn out(dir: &Path, script: &str) -> String {
        let output = std::process::Command::new("sh")
            .args(["-c", script])
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(output.status.success(), "{script}");
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    /// A work tree `repo` on `main` with `a.txt`, and a branch `deft/x` adding `b.txt`.
    fn repo(dir: &Path) -> std::path::PathBuf {
        let repo = dir.join("repo");
        std::fs::create_dir(&repo).unwrap();
        sh(
            &repo,
            "git init -q -b main && git config user.name t && git config user.email t@t \
             && printf 'one\\ntwo\\n' > a.txt && git add -A && git commit -q -m init \
             && git checkout -q -b deft/x && echo b > b.txt && git add -A && git commit -q -m b \
             && git checkout -q main",
        );
        repo.canonicalize().unwrap()
    }

    #[tokio::test]
    async fn a_branch_ahead_of_its_base_fast_forwards_with_the_work_tree() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        let tip = out(&repo, "git rev-parse deft/x");
        let merged = merge_local(&repo, ("deft/x", &tip), "main", "Merge", &who())
            .await
            .unwrap();
        assert_eq!(
            merged,
            Merged::FastForward {
                commit: tip.clone()
            }
        );
        assert_eq!(out(&repo, "git rev-parse main"), tip);
        assert_eq!(std::fs::read_to_string(repo.join("b.txt")).unwrap(), "b\n");
        assert_eq!(out(&repo, "git status --porcelain"), "");
        // Again: nothing to do.
        assert_eq!(
            merge_local(&repo, ("deft/x", &tip), "main", "Merge", &who())
                .await
                .unwrap(),
            Merged::AlreadyMerged
        );
    }

    #[tokio::test]
    async fn diverged_branches_get_a_merge_commit_by_the_person() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        sh(&repo, "echo c > c.txt && git add -A && git commit -q -m c");
        let old = out(&repo, "git rev-parse main");
        let tip = out(&repo, "git rev-parse deft/x");
        let merged = merge_local(
            &repo,
            ("deft/x", &tip),
            "main",
            "Merge deft/x\n\nWhy",
            &who(),
        )
        .await
        .unwrap();
        let Merged::MergeCommit { commit } = merged else {
            panic!("{merged:?}");
        };
        assert_eq!(out(&repo, "git rev-parse main"), commit);
        assert_eq!(
            out(&repo, "git log -1 --format='%P|%an <%ae>|%s' main"),
            format!("{old} {tip}|ada <ada@deft.invalid>|Merge deft/x")
        );
        assert!(repo.join("b.txt").exists() && repo.join("c.txt").exists());
        assert_eq!(out(&repo, "git status --porcelain"), "");
    }

    #[tokio::test]
    async fn a_conflict_changes_nothing_and_names_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        sh(
            &repo,
            "git checkout -q deft/x && printf 'one\\nTWO\\n' > a.txt && git commit -qam x \
             && git checkout -q main && printf 'one\\nzwei\\n' > a.txt && git commit -qam y",
        );
        let before = out(&repo, "git rev-parse main");
        let tip = out(&repo, "git rev-parse deft/x");
        let error = merge_local(&repo, ("deft/x", &tip), "main", "Merge", &who())
            .await
            .unwrap_err();
        assert!(
            matches!(&error, ForgeError::MergeConflict { files, .. } if files == &["a.txt".to_owned()]),
            "{error:?}"
        );
        assert!(error.to_string().contains("a.txt"), "{error}");
        assert_eq!(out(&repo, "git rev-parse main"), before);
        assert_eq!(out(&repo, "git status --porcelain"), "");
    }

    /// A bare repository (or a base not checked out) moves the branch alone.
    #[tokio::test]
    async fn a_bare_repository_moves_the_branch() {
        let dir = tempfile::tempdir().unwrap();
        let work = repo(dir.path());
        sh(dir.path(), "git clone -q --bare repo bare.git");
        let bare = dir.path().join("bare.git").canonicalize().unwrap();
        let tip = out(&work, "git rev-parse deft/x");
        merge_local(&bare, ("deft/x", &tip), "main", "Merge", &who())
            .await
            .unwrap();
        assert_eq!(out(&bare, "git rev-parse main"), tip);
    }

    /// Uncommitted changes in the way of the merge refuse it, and stay.
    #[tokio::test]
    async fn changes_in_the_work_tree_in_the_way_refuse_the_merge() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        std::fs::write(repo.join("b.txt"), "mine\n").unwrap();
        let before = out(&repo, "git rev-parse main");
        let tip = out(&repo, "git rev-parse deft/x");
        let error = merge_local(&repo, ("deft/x", &tip), "main", "Merge", &who())
            .await
            .unwrap_err();
        assert!(error.to_string().contains("Commit or stash"), "{error}");
        assert_eq!(out(&repo, "git rev-parse main"), before);
        assert_eq!(
            std::fs::read_to_string(repo.join("b.txt")).unwrap(),
            "mine\n"
        );
    }

    /// A branch is a task's, so an attacker's. The repository's owner has a filter and a
    /// merge driver `x`, and the branches turn them on: they run, if at all, in the jail,
    /// where nothing of the host outside the repository is there to write. Each is shown to
    /// run on the host first, where the same steps write their witness.
    #[tokio::test]
    async fn a_hostile_branch_runs_nothing_outside_the_jail() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        let (smudged, merged_by) = (dir.path().join("smudged"), dir.path().join("merged"));
        let commit = "git -c user.name=t -c user.email=t@t commit -q";
        sh(
            &repo,
            &format!(
                "git init -q -b main \
                 && git config filter.x.smudge 'sh -c \"echo x > {s}; cat\"' \
                 && git config filter.x.clean cat \
                 && git config merge.x.driver 'echo x > {m}; true' \
                 && printf 'one\\ntwo\\n' > a.txt && printf '* filter=x\\na.txt merge=x\\n' > .gitattributes \
                 && git add -A && {commit} -m init \
                 && git checkout -q -b deft/y && echo c > c.txt && git add -A && {commit} -m c \
                 && git checkout -q main",
                s = smudged.display(),
                m = merged_by.display(),
            ),
        );
        let repo = repo.canonicalize().unwrap();
        // The filter is live: checking out c.txt on the host runs it.
        sh(&repo, "git checkout -q deft/y && git checkout -q main");
        std::fs::remove_file(&smudged).expect("the filter runs where it is not jailed");
        let tip = out(&repo, "git rev-parse deft/y");
        let merged = merge_local(&repo, ("deft/y", &tip), "main", "Merge", &who()).await;
        assert!(
            matches!(merged, Ok(Merged::FastForward { .. })),
            "{merged:?}"
        );
        assert!(repo.join("c.txt").exists(), "the work tree moved");
        assert!(!smudged.exists(), "the filter wrote outside the jail");

        // Both sides change a.txt, which names the driver.
        sh(
            &repo,
            &format!(
                "git checkout -q -b deft/x && printf 'ONE\\ntwo\\n' > a.txt && {commit} -qam x \
                 && git checkout -q main && printf 'one\\nTWO\\n' > a.txt && {commit} -qam y"
            ),
        );
        let _ = std::fs::remove_file(&smudged);
        // The driver is live: the same merge on the host runs it.
        sh(
            &repo,
            "git merge-tree --write-tree main deft/x >/dev/null || true",
        );
        std::fs::remove_file(&merged_by).expect("the driver runs where it is not jailed");
        let tip = out(&repo, "git rev-parse deft/x");
        let merged = merge_local(&repo, ("deft/x", &tip), "main", "Merge", &who()).await;
        assert!(
            matches!(
                merged,
                Ok(Merged::MergeCommit { .. }) | Err(ForgeError::MergeConflict { .. })
            ),
            "{merged:?}"
        );
        assert!(
            !merged_by.exists(),
            "the merge driver wrote outside the jail"
        );
        assert!(!smudged.exists(), "the filter wrote outside the jail");
    }

    /// What is merged is what the person read: a branch the task pushed to after the diff
    /// was shown is refused, and nothing changes.
    #[tokio::test]
    async fn a_branch_that_moved_since_it_was_reviewed_is_not_merged() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        let reviewed = out(&repo, "git rev-parse deft/x");
        sh(
            &repo,
            "git checkout -q deft/x && echo later > later.txt && git add -A && git commit -q -m later \
             && git checkout -q main",
        );
        let before = out(&repo, "git rev-parse main");
        let error = merge_local(&repo, ("deft/x", &reviewed), "main", "Merge", &who())
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("moved since the diff you looked at"),
            "{error}"
        );
        assert_eq!(out(&repo, "git rev-parse main"), before);
        assert!(!repo.join("later.txt").exists() && !repo.join("b.txt").exists());
    }

    #[tokio::test]
    async fn a_missing_branch_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        let error = merge_local(&repo, ("deft/gone", "0000"), "main", "Merge", &who())
            .await
            .unwrap_err();
        assert!(
            matches!(&error, ForgeError::BranchMissing { branch, .. } if branch == "deft/gone"),
            "{error:?}"
        );
    }
}
