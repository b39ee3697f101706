//! Where a task's start reads a commit of a repository: deft's private copy of it, read by the
//! host's git; or, while that copy is still being made, the registered local repository
//! itself, read by git in the jail.
//!
//! The host's git never reads a registered repository beyond the copy (`git clone --bare`,
//! whose result is checked): the repository's configuration, its links and the objects it
//! borrows from others belong to whoever can write it. In the jail they reach nothing: the
//! repository is mounted read-only and alone, so a link or an `objects/info/alternates` that
//! points at another repository of the host finds nothing, and whatever git prints is data
//! that names files and commits, read with the jail's caps. Nothing of the host is writable
//! there, and git may fetch nothing (a repository that says it is a partial clone would
//! otherwise run the program its remote names).

use std::path::Path;

use crate::jail::{Jail, ORIGIN};
use crate::{ForgeError, private};

/// A repository whose commits a task's start reads.
pub enum Objects<'a> {
    /// A repository deft made and no task writes: its private copy, read on the host.
    Private(&'a Path),
    /// A registered local repository, read in the jail.
    Registered(Registered<'a>),
}

/// A registered local repository as the jail sees it.
pub struct Registered<'a> {
    source: &'a Path,
    /// Where its git directory is in the jail: `/origin/.git` for a working tree, `/origin`
    /// for a bare repository.
    git_dir: String,
}

impl<'a> Objects<'a> {
    /// The registered local repository at `source`, to be read in the jail.
    pub fn registered(source: &'a Path) -> Objects<'a> {
        // Only a real directory is taken as the working tree's git directory; a link or a
        // `.git` file (a worktree's) would lead out of the mount, where git finds nothing.
        let worktree = std::fs::symlink_metadata(source.join(".git")).is_ok_and(|m| m.is_dir());
        let git_dir = if worktree {
            format!("{ORIGIN}/.git")
        } else {
            ORIGIN.to_owned()
        };
        Objects::Registered(Registered { source, git_dir })
    }

    /// What `git ARGS` prints, when it succeeds.
    async fn output(&self, args: &[&str]) -> Result<Vec<u8>, ForgeError> {
        Ok(self.output_if(args, true).await?.unwrap_or_default())
    }

    /// What `git ARGS` prints; with `checked`, a failure is an error, else `None`.
    async fn output_if(&self, args: &[&str], checked: bool) -> Result<Option<Vec<u8>>, ForgeError> {
        match self {
            Objects::Private(repo) => match private::raw_output(repo, args).await {
                Ok(out) => Ok(Some(out)),
                Err(ForgeError::Git { .. }) if !checked => Ok(None),
                Err(error) => Err(error),
            },
            Objects::Registered(registered) => {
                if let Some(why) = moved(registered.source) {
                    return Err(ForgeError::Refused {
                        what: format!("to read {}: {why}", registered.source.display()),
                    });
                }
                let git_dir = format!("--git-dir={}", registered.git_dir);
                // It reaches no other repository, not even by a path: it only reads its own.
                let mut all = vec![
                    "-c",
                    "protocol.allow=never",
                    "-c",
                    "protocol.file.allow=never",
                    git_dir.as_str(),
                ];
                all.extend_from_slice(args);
                // Nothing of the host is writable in this jail: what the repository could
                // still make git do leaves nothing behind.
                let jail = Jail {
                    workspace: None,
                    clone: None,
                    origin: Some(registered.source),
                    origin_writable: false,
                };
                jail.git(&all, &[], checked).await
            }
        }
    }

    /// The commit each branch of `branches` (names without `refs/heads/`) points at, in one
    /// start of git; `None` for a branch that is not there, or that names anything but a
    /// commit.
    pub async fn resolve_branches(
        &self,
        branches: &[&str],
    ) -> Result<Vec<Option<String>>, ForgeError> {
        let wanted: Vec<String> = branches
            .iter()
            .map(|branch| format!("refs/heads/{branch}"))
            .collect();
        let mut args = vec![
            "for-each-ref",
            "--format=%(refname)%00%(objecttype)%00%(objectname)",
            "--",
        ];
        args.extend(wanted.iter().map(String::as_str));
        let out = self.output(&args).await?;
        let out = String::from_utf8_lossy(&out);
        // A pattern also matches the refs below it (`main` matches `main/x`): only exact names.
        let found: Vec<(&str, &str, &str)> = out
            .lines()
            .filter_map(|line| {
                let mut fields = line.split('\0');
                Some((fields.next()?, fields.next()?, fields.next()?))
            })
            .collect();
        Ok(wanted
            .iter()
            .map(|reference| {
                found
                    .iter()
                    .find(|(name, kind, id)| {
                        name == reference && *kind == "commit" && is_object_id(id)
                    })
                    .map(|(_, _, id)| (*id).to_owned())
            })
            .collect())
    }

    /// Every entry of `commit`'s tree, recursively, with git's mode: `100644` a regular file,
    /// `100755` an executable one, `120000` a link, `160000` a submodule (at most 64 MiB of
    /// listing).
    pub async fn list_tree(&self, commit: &str) -> Result<Vec<(String, String)>, ForgeError> {
        let out = self
            .output(&["ls-tree", "-r", "-z", "--end-of-options", commit])
            .await?;
        Ok(out
            .split(|byte| *byte == 0)
            .filter_map(|entry| {
                let entry = String::from_utf8_lossy(entry);
                let (meta, path) = entry.split_once('\t')?;
                let mode = meta.split_whitespace().next()?;
                Some((mode.to_owned(), path.to_owned()))
            })
            .collect())
    }

    /// The changes of `head` against where it left `base` (`base...head`), as a unified
    /// diff: submodules as one line each (a submodule's own git would read its own
    /// configuration), with the usual prefixes whatever the configuration says.
    pub async fn diff(&self, base: &str, head: &str) -> Result<String, ForgeError> {
        let range = format!("{base}...{head}");
        let mut args = crate::GIT_DIFF.to_vec();
        args.extend([
            "--submodule=short",
            "--src-prefix=a/",
            "--dst-prefix=b/",
            "--no-color",
            "--end-of-options",
            &range,
        ]);
        let out = self.output(&args).await?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// The lines of `commit`'s text files that match `pattern` (a POSIX extended regular
    /// expression), as `path:line:text`, in the files `pathspec` selects (a glob such as
    /// `*.py`, or a directory), at most `max` of them; none when nothing matches.
    pub async fn grep(
        &self,
        commit: &str,
        pattern: &str,
        pathspec: Option<&str>,
        max: usize,
    ) -> Result<Vec<String>, ForgeError> {
        let prefix = format!("{commit}:");
        let mut args = vec![
            "grep",
            "-n",
            "-I",
            "-E",
            "--no-color",
            "--full-name",
            "-e",
            pattern,
            "--end-of-options",
            commit,
            "--",
        ];
        if let Some(pathspec) = pathspec {
            args.push(pathspec);
        }
        // git grep exits 1 when nothing matches: no lines, not a failure.
        let out = self.output_if(&args, false).await?.unwrap_or_default();
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .map(|line| line.strip_prefix(&prefix).unwrap_or(line).to_owned())
            .take(max)
            .collect())
    }

    /// One file of `commit`'s tree, as git stores it.
    pub async fn read_file(&self, commit: &str, path: &str) -> Result<Vec<u8>, ForgeError> {
        let object = format!("{commit}:{path}");
        self.output(&["cat-file", "blob", &object]).await
    }
}

/// Why the registered path `source` (stored as it was found then, with no link in it) now
/// leads somewhere else, if it does: a directory on the way was replaced by a link.
pub(crate) fn moved(source: &Path) -> Option<String> {
    match std::fs::canonicalize(source) {
        Ok(real) if real == source => None,
        Ok(real) => Some(format!(
            "a directory on its path is now a link (it leads to {}); register the repository where it really is",
            real.display()
        )),
        Err(error) => Some(format!("it cannot be found ({error})")),
    }
}

/// Whether `id` is a full object id (SHA-1 or SHA-256), as git prints them.
pub(crate) fn is_object_id(id: &str) -> bool {
    matches!(id.len(), 40 | 64) && id.chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::sh;

    /// A working tree `name` in `dir` whose one commit on `main` holds `AGENTS.md`.
    fn worktree(dir: &Path, name: &str, words: &str) -> std::path::PathBuf {
        let repo = dir.join(name);
        std::fs::create_dir(&repo).unwrap();
        sh(
            &repo,
            &format!(
                "echo '{words}' > AGENTS.md && mkdir -p src && echo x > src/a.py && git init -q -b main \
                 && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init"
            ),
        );
        repo
    }

    /// The jail reads what the host's git reads, from a working tree and a bare repository.
    #[tokio::test]
    async fn the_jail_reads_a_registered_repository_as_the_host_would() {
        let dir = tempfile::tempdir().unwrap();
        let repo = worktree(dir.path(), "widgets", "be brief");
        sh(dir.path(), "git clone -q --bare widgets bare.git");
        let host = Objects::Private(&repo);
        let heads = host.resolve_branches(&["main", "deft/x"]).await.unwrap();
        let commit = heads[0].clone().expect("main");
        assert_eq!(heads[1], None);
        for source in [repo.clone(), dir.path().join("bare.git")] {
            let jailed = Objects::registered(&source);
            assert_eq!(
                jailed.resolve_branches(&["main", "deft/x"]).await.unwrap(),
                heads,
                "{}",
                source.display()
            );
            assert_eq!(
                jailed.list_tree(&commit).await.unwrap(),
                host.list_tree(&commit).await.unwrap()
            );
            assert_eq!(
                jailed.read_file(&commit, "AGENTS.md").await.unwrap(),
                b"be brief\n"
            );
        }
    }

    /// A repository that borrows another's objects, or whose branch is a link to another
    /// repository's, reads nothing of the other in the jail.
    #[tokio::test]
    async fn the_jail_reaches_no_other_repository_of_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let victim = worktree(dir.path(), "victim", "the victim only");
        sh(dir.path(), "git clone -q --shared victim borrower");
        let borrower = dir.path().join("borrower");
        assert!(
            Objects::Private(&borrower)
                .resolve_branches(&["main"])
                .await
                .unwrap()[0]
                .is_some(),
            "on the host, git reads the borrowed objects"
        );
        let jailed = Objects::registered(&borrower);
        let listed = jailed.list_tree("main").await;
        assert!(
            listed.is_err(),
            "the jail read another repository's tree: {listed:?}"
        );
        // A branch that is a link to another repository's branch file.
        let linker = worktree(dir.path(), "linker", "mine");
        sh(
            &linker,
            &format!(
                "git branch other && rm .git/refs/heads/other && ln -s {}/.git/refs/heads/main .git/refs/heads/other",
                victim.display()
            ),
        );
        let jailed = Objects::registered(&linker);
        let read = jailed.resolve_branches(&["other"]).await;
        assert!(
            !matches!(read, Ok(ref heads) if heads[0].is_some()),
            "the jail followed a link to another repository: {read:?}"
        );
    }

    /// A repository that says it is a partial clone, missing a blob that is read: git would
    /// fetch it, running the program its remote's configuration names. Not in the jail.
    #[tokio::test]
    async fn a_repository_that_lacks_an_object_makes_the_jail_run_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let repo = worktree(dir.path(), "lazy", "be brief");
        sh(
            &repo,
            "blob=$(git rev-parse HEAD:AGENTS.md) && rm -f .git/objects/$(echo $blob | cut -c1-2)/$(echo $blob | cut -c3-) \
             && git config core.repositoryformatversion 1 && git config extensions.partialClone p \
             && git config remote.p.promisor true && git config remote.p.url /origin \
             && git config remote.p.partialclonefilter blob:none \
             && git config remote.p.uploadpack 'echo LAZY-FETCH-RAN >&2; exit 1'",
        );
        let jailed = Objects::registered(&repo);
        let commit = jailed.resolve_branches(&["main"]).await.unwrap()[0]
            .clone()
            .expect("main");
        let read = jailed.read_file(&commit, "AGENTS.md").await;
        let said = format!("{read:?}");
        assert!(read.is_err(), "{said}");
        assert!(
            !said.contains("LAZY-FETCH-RAN"),
            "the repository's program ran in the jail: {said}"
        );
        // The host's git on such a repository fetches nothing either.
        let host = Objects::Private(&repo)
            .read_file(&commit, "AGENTS.md")
            .await;
        assert!(
            !format!("{host:?}").contains("LAZY-FETCH-RAN"),
            "the repository's program ran on the host: {host:?}"
        );
    }
}
