//! Where repositories live. For now, the local forge: git repositories on the server's disk,
//! whose pull requests deft keeps itself (SPEC §1). GitHub comes with its own issue.
//!
//! Everything here runs `git` on the host, outside any sandbox, so it only reads metadata and
//! switches off the configuration knobs that could make git run a repository's own programs.

mod jail;
mod merge;
mod objects;
mod ownership;
pub mod private;

pub use merge::{Merged, merge_local};
pub use objects::{Objects, Registered};

pub use ownership::set_clone_owner;

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
    #[error("`git {command}` failed: {message}")]
    Git { command: String, message: String },
    #[error("refused {what}")]
    Refused { what: String },
    #[error(
        "`{head}` does not merge cleanly into `{base}`: both changed {}. Merge it by hand, or send the task feedback to bring its branch up to date",
        files.join(", ")
    )]
    MergeConflict {
        head: String,
        base: String,
        files: Vec<String>,
    },
    #[error("there is no branch `{branch}` in {repo}; it was deleted or renamed there")]
    BranchMissing { branch: String, repo: String },

    #[error("cannot run `git` ({0}); install git (`apt-get install git`)")]
    GitMissing(#[source] std::io::Error),
    #[error(
        "git on a task's clone runs inside bubblewrap, which is not installed; install it (`apt-get install bubblewrap`)"
    )]
    JailMissing,
    #[error(
        "cannot start the jail git runs in on a task's clone: {message}; `deft doctor` checks bubblewrap"
    )]
    Jail { message: String },
}

impl ForgeError {
    /// Whether the same git call may succeed a moment later: the remote could not be reached,
    /// hung up, or answered a server error or "too many requests". Everything else (a refused
    /// credential, a missing repository, a protected branch) fails the same way again.
    pub fn is_transient(&self) -> bool {
        let ForgeError::Git { message, .. } = self else {
            return false;
        };
        const PASSING: [&str; 9] = [
            "The requested URL returned error: 5",
            "The requested URL returned error: 429",
            "Could not resolve host",
            "Failed to connect",
            "Connection timed out",
            "Connection reset",
            "Operation timed out",
            "early EOF",
            "RPC failed",
        ];
        PASSING.iter().any(|sign| message.contains(sign))
    }
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

/// Who a commit is by, or with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub email: String,
}

impl Identity {
    fn trailer(&self) -> String {
        format!("Co-authored-by: {} <{}>", self.name, self.email)
    }
}

/// A task's branch (SPEC §5): `deft/<task-id-prefix>-<slug-of-description>`.
pub fn branch_name(task_id: &str, description: &str) -> String {
    let prefix: String = task_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    let mut slug = String::new();
    for word in description
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if slug.len() + word.len() + 1 > 40 {
            break;
        }
        if !slug.is_empty() {
            slug.push('-');
        }
        slug.push_str(&word.to_ascii_lowercase());
    }
    if slug.is_empty() {
        format!("deft/{prefix}")
    } else {
        format!("deft/{prefix}-{slug}")
    }
}

/// Clones a local repository into `dest`, copying its objects: with hardlinks, a command in
/// the sandbox could rewrite the original repository's objects through the clone.
pub async fn clone_local(source: &Path, dest: &Path) -> Result<(), ForgeError> {
    let parent = dest.parent().unwrap_or(dest);
    let source_text = source.to_string_lossy().into_owned();
    let dest_text = dest.to_string_lossy().into_owned();
    git_checked(
        parent,
        &[
            "clone",
            "--quiet",
            "--no-hardlinks",
            &source_text,
            &dest_text,
        ],
        &[],
    )
    .await?;
    Ok(())
}

/// Credentials for a forge host. They reach git as an HTTP header through its environment,
/// so they are never written into the clone's configuration, which the sandbox can read, nor
/// onto a command line, which other processes can read.
#[derive(Clone)]
pub struct GitAuth {
    header: String,
}

impl std::fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GitAuth(..)")
    }
}

impl GitAuth {
    /// HTTP Basic credentials, as GitHub takes an installation token
    /// (`x-access-token:TOKEN`).
    pub fn basic(user: &str, password: &str) -> GitAuth {
        use base64::Engine as _;
        let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        GitAuth {
            header: format!("Authorization: Basic {pair}"),
        }
    }

    pub(crate) fn env(&self) -> [(&str, &str); 4] {
        [
            ("GIT_CONFIG_COUNT", "1"),
            ("GIT_CONFIG_KEY_0", "http.extraHeader"),
            ("GIT_CONFIG_VALUE_0", self.header.as_str()),
            // Never wait for a password on a terminal: a refused credential is an error.
            ("GIT_TERMINAL_PROMPT", "0"),
        ]
    }
}

/// Clones a remote repository over HTTPS into `dest`.
pub async fn clone_remote(url: &str, dest: &Path, auth: &GitAuth) -> Result<(), ForgeError> {
    let parent = dest.parent().unwrap_or(dest);
    let dest_text = dest.to_string_lossy().into_owned();
    git_checked(
        parent,
        &["clone", "--quiet", "--", url, &dest_text],
        &auth.env(),
    )
    .await?;
    Ok(())
}

/// Puts `dir` on `branch`: the branch as deft last pushed it (`origin/BRANCH`, which only
/// deft's push moves) when there is one, else a new branch from `base`. A branch of the
/// clone's own that is ahead of that one (or has none there) is kept: its commits were never
/// pushed, such as a completion's commit whose push was refused, and starting over would
/// lose them. One that went another way (the task's commands rewrote it), or a check that
/// fails, gives way to the pushed one.
pub async fn checkout_branch(dir: &Path, branch: &str, base: &str) -> Result<(), ForgeError> {
    ensure_untampered(dir).await?;
    let verify = |reference: String| async move {
        clone_query(
            dir,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{reference}^{{commit}}"),
            ],
        )
        .await
        .map(|found| found.map(|out| out.trim().to_owned()))
    };
    let remote = verify(format!("refs/remotes/origin/{branch}")).await?;
    let local = verify(format!("refs/heads/{branch}")).await?;
    let start = match (remote, local) {
        (Some(remote), Some(local)) => {
            let ahead = clone_query(dir, &["merge-base", "--is-ancestor", &remote, &local])
                .await?
                .is_some();
            if ahead { local } else { remote }
        }
        (Some(remote), None) => remote,
        (None, Some(local)) => local,
        (None, None) => format!("origin/{base}"),
    };
    clone_checked(dir, &["checkout", "--quiet", "-B", branch, &start], &[]).await?;
    Ok(())
}

/// Commits every change in `dir` by `author`, with a `Co-authored-by:` trailer for each of
/// `with`. `None` when there was nothing to commit.
pub async fn commit_all(
    dir: &Path,
    message: &str,
    author: &Identity,
    with: &[Identity],
) -> Result<Option<String>, ForgeError> {
    ensure_untampered(dir).await?;
    clone_checked(dir, &["add", "--all"], &[]).await?;
    if clone_query(dir, &["diff", "--cached", "--quiet"])
        .await?
        .is_some()
    {
        return Ok(None);
    }
    let mut full = message.trim_end().to_owned();
    full.push_str("\n\n");
    full.push_str(
        &with
            .iter()
            .map(Identity::trailer)
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let env = [
        ("GIT_AUTHOR_NAME", author.name.as_str()),
        ("GIT_AUTHOR_EMAIL", author.email.as_str()),
        ("GIT_COMMITTER_NAME", author.name.as_str()),
        ("GIT_COMMITTER_EMAIL", author.email.as_str()),
    ];
    clone_checked(
        dir,
        &["commit", "--quiet", "--no-verify", "-m", &full],
        &env,
    )
    .await?;
    let sha = clone_checked(dir, &["rev-parse", "HEAD"], &[]).await?;
    Ok(Some(sha.trim().to_owned()))
}

/// The commit `rev` names in a task's clone.
pub async fn commit_of(dir: &Path, rev: &str) -> Result<String, ForgeError> {
    ensure_untampered(dir).await?;
    let sha = clone_checked(
        dir,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ],
        &[],
    )
    .await?;
    Ok(sha.trim().to_owned())
}

/// Everything changed in a clone's work tree against `against` (a commit, or a ref of the
/// clone), new files included (they are staged, which committing does anyway).
pub async fn worktree_diff(dir: &Path, against: &str) -> Result<String, ForgeError> {
    ensure_untampered(dir).await?;
    clone_checked(dir, &["add", "--all"], &[]).await?;
    clone_checked(dir, &[GIT_DIFF, &["--cached", against]].concat(), &[]).await
}

/// `git diff` as deft runs it: without the external diff or text conversion a repository's
/// config or attributes could name.
pub(crate) const GIT_DIFF: &[&str] = &["diff", "--no-ext-diff", "--no-textconv"];

/// The changes of `head` against `base` in a registered repository, as a unified diff: read
/// in the jail, as a task's first read of it is (`Objects::Registered`), since the
/// repository's configuration and its submodules' can name programs and include files.
pub async fn diff(repo: &Path, base: &str, head: &str) -> Result<String, ForgeError> {
    Objects::registered(repo).diff(base, head).await
}

/// The commit `branch` points at in the registered local repository `repo`, if it is there.
pub async fn local_branch_tip(repo: &Path, branch: &str) -> Result<Option<String>, ForgeError> {
    let mut tips = Objects::registered(repo)
        .resolve_branches(&[branch])
        .await?;
    Ok(tips.pop().flatten())
}

/// Where a task's branch stands in a registered local repository, the local forge's stand-in
/// for a pull request's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalBranchState {
    /// The branch is there and not yet in its base: review may still send work back.
    Open,
    /// Every commit of the branch is in its base branch.
    Merged,
    /// The branch was deleted without being merged.
    Closed,
}

/// Whether `head` was merged into `base` in the registered repository `repo`, deleted, or is
/// still open. A base that is gone reads as open (nothing to decide on).
pub async fn local_branch_state(
    repo: &Path,
    head: &str,
    base: &str,
) -> Result<LocalBranchState, ForgeError> {
    let head_ref = format!("refs/heads/{head}");
    let base_ref = format!("refs/heads/{base}");
    let exists = |reference: String| async move {
        git(repo, &["rev-parse", "--verify", "--quiet", &reference])
            .await
            .map(|found| found.is_some())
    };
    if !exists(base_ref.clone()).await? {
        return Ok(LocalBranchState::Open);
    }
    if !exists(head_ref.clone()).await? {
        return Ok(LocalBranchState::Closed);
    }
    let merged = git(repo, &["merge-base", "--is-ancestor", &head_ref, &base_ref])
        .await?
        .is_some();
    Ok(if merged {
        LocalBranchState::Merged
    } else {
        LocalBranchState::Open
    })
}

/// One piece of what a push of `base..head` would send, as it is read: an object's path, or a
/// stretch of an object's bytes (a commit with its message, a tree, a file's contents). Bytes
/// come in stretches of at most a mebibyte, each beginning with the last `overlap` bytes of the
/// one before, so that nothing of that length is missed across the seam.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outgoing<'a> {
    Path(&'a str),
    Bytes {
        path: Option<&'a str>,
        kind: &'a str,
        bytes: &'a [u8],
    },
}

/// Reads every object reachable from `head` and not from `base` in a task's private
/// repository (see [`private`]) and shows each piece to `visit`, until it returns something:
/// what a push of the branch could carry, history included (a secret added in one commit and
/// removed in the next still travels). Objects are streamed, never held whole: a task can make
/// files of any size cheaply.
pub async fn each_outgoing<T>(
    private: &Path,
    base: &str,
    head: &str,
    overlap: usize,
    mut visit: impl FnMut(Outgoing<'_>) -> Option<T>,
) -> Result<Option<T>, ForgeError> {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _};
    const STRETCH: usize = 1024 * 1024;
    let listing = git_checked(
        private,
        &["rev-list", "--objects", &format!("{base}..{head}"), "--"],
        &[],
    )
    .await?;
    let mut wanted: Vec<(String, Option<String>)> = Vec::new();
    for line in listing.lines() {
        let (id, path) = match line.split_once(' ') {
            Some((id, path)) => (id, Some(path.to_owned())),
            None => (line, None),
        };
        if !id.is_empty() {
            wanted.push((id.to_owned(), path));
        }
    }
    for (_, path) in &wanted {
        if let Some(path) = path
            && let Some(found) = visit(Outgoing::Path(path))
        {
            return Ok(Some(found));
        }
    }
    // What the objects weigh once expanded, before any is read: a few kilobytes of deltas can
    // stand for terabytes.
    let ids: String = wanted.iter().map(|(id, _)| format!("{id}\n")).collect();
    let sizes = git_with_input(
        private,
        &["cat-file", "--batch-check=%(objectsize)"],
        ids.clone().into_bytes(),
    )
    .await?;
    let total: u64 = sizes
        .lines()
        .filter_map(|line| line.trim().parse::<u64>().ok())
        .sum();
    if total > MAX_SEARCHED_BYTES {
        return Err(ForgeError::Refused {
            what: format!(
                "to search a push of {total} bytes of objects for secrets (at most {MAX_SEARCHED_BYTES}); make the branch smaller"
            ),
        });
    }
    let (mut child, writer) = git_fed(private, &["cat-file", "--batch"], ids.into_bytes())?;
    let mut out = tokio::io::BufReader::new(child.stdout.take().expect("piped"));
    let broken = |what: &str| ForgeError::Git {
        command: "cat-file".into(),
        message: format!("unexpected answer: {what}"),
    };
    let mut stretch = Vec::with_capacity(STRETCH + overlap);
    for (id, path) in &wanted {
        let mut header = String::new();
        out.read_line(&mut header)
            .await
            .map_err(|e| broken(&e.to_string()))?;
        let mut fields = header.split_whitespace();
        let (Some(_), Some(kind), Some(size)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(broken(header.trim()));
        };
        let kind = kind.to_owned();
        let mut left: u64 = size.parse().map_err(|_| broken(header.trim()))?;
        stretch.clear();
        loop {
            let start = stretch.len();
            let take = (STRETCH as u64).min(left) as usize;
            stretch.resize(start + take, 0);
            out.read_exact(&mut stretch[start..])
                .await
                .map_err(|e| broken(&format!("{id}: {e}")))?;
            left -= take as u64;
            if let Some(found) = visit(Outgoing::Bytes {
                path: path.as_deref(),
                kind: &kind,
                bytes: &stretch,
            }) {
                return Ok(Some(found));
            }
            if left == 0 {
                break;
            }
            let keep = overlap.min(stretch.len());
            stretch.drain(..stretch.len() - keep);
        }
        let mut newline = [0u8; 1];
        out.read_exact(&mut newline)
            .await
            .map_err(|e| broken(&format!("{id}: {e}")))?;
    }
    let _ = writer.await;
    let _ = child.wait().await;
    Ok(None)
}

/// [`diff`] in a task's clone, which passed through the sandbox.
pub async fn clone_diff(dir: &Path, base: &str, head: &str) -> Result<String, ForgeError> {
    ensure_untampered(dir).await?;
    let range = format!("{base}...{head}");
    clone_checked(dir, &[GIT_DIFF, &[&range]].concat(), &[]).await
}

/// The configuration keys a clone made by deft has (as git writes them: section and key in
/// lower case); `*` stands for one subsection name.
const CLONE_KEYS: &[&str] = &[
    "core.repositoryformatversion",
    "core.filemode",
    "core.bare",
    "core.logallrefupdates",
    "core.symlinks",
    "core.ignorecase",
    "core.precomposeunicode",
    "extensions.objectformat",
    "remote.origin.url",
    "remote.origin.fetch",
    "branch.*.remote",
    "branch.*.merge",
];

/// Refuses a task's clone whose git directory is not as deft made it. A command in the sandbox
/// cannot write `.git/config` or `.git/hooks` (they are mounted read-only), but it can replace
/// the whole `.git`, or point git elsewhere from it; and a repository's configuration can make
/// the host's git run programs (filters, diff drivers, `core.sshCommand`), rewrite where it
/// pushes (`url.*.insteadOf`), or send credentials astray. So before deft's git touches a
/// clone: `.git` must be a directory, not a link or a `gitdir:` file, with no `commondir`,
/// and its configuration may hold only what a clone holds.
pub async fn ensure_untampered(dir: &Path) -> Result<(), ForgeError> {
    let git_dir = dir.join(".git");
    let refuse = |why: String| ForgeError::Refused {
        what: format!(
            "to run git in {}: {why}. A command in the sandbox may have changed how git would run \
             on this machine; look at the task's commands, and start it again from a fresh clone",
            dir.display()
        ),
    };
    match std::fs::symlink_metadata(&git_dir) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => return Err(refuse("`.git` is not a directory".into())),
        Err(error) => return Err(refuse(format!("`.git` cannot be read ({error})"))),
    }
    // Files that make git read another repository's configuration or objects, or rewrite
    // history as it shows it.
    for file in [
        "commondir",
        "config.worktree",
        "objects/info/alternates",
        "objects/info/http-alternates",
        "info/grafts",
        "shallow",
    ] {
        if std::fs::symlink_metadata(git_dir.join(file)).is_ok() {
            return Err(refuse(format!(
                "`.git/{file}` exists, which deft never writes"
            )));
        }
    }
    // A repository inside the clone has its own configuration, which git honours when it
    // looks at it as a submodule during `add`.
    if let Some(nested) = nested_repository(dir) {
        return Err(refuse(format!(
            "`{}` is a repository inside the clone",
            nested.strip_prefix(dir).unwrap_or(&nested).display()
        )));
    }
    let config = git_dir.join("config");
    match std::fs::symlink_metadata(&config) {
        Ok(metadata) if metadata.is_file() => {}
        _ => return Err(refuse("`.git/config` is not a plain file".into())),
    }
    // Reading a file of configuration runs nothing; includes are not followed; and it is read
    // in the jail, so a link swapped in for it reaches nothing of the host.
    let jail = jail::Jail::for_clone(dir)?;
    let listed = jail
        .git(
            &[
                "config",
                "--no-includes",
                "--null",
                "--list",
                "--file",
                &jail.path(".git/config"),
            ],
            &[],
            false,
        )
        .await?;
    let Some(listed) = listed else {
        return Err(refuse("`.git/config` cannot be read".into()));
    };
    for entry in listed.split(|byte| *byte == 0) {
        let key = String::from_utf8_lossy(entry.split(|byte| *byte == b'\n').next().unwrap_or(b""))
            .into_owned();
        if key.is_empty() {
            continue;
        }
        if !CLONE_KEYS.iter().any(|allowed| key_matches(allowed, &key)) {
            return Err(refuse(format!(
                "`.git/config` sets `{key}`, which a clone made by deft does not have"
            )));
        }
    }
    let gitlinks = clone_checked(dir, &["ls-files", "--stage", "-z"], &[]).await?;
    if let Some(entry) = gitlinks
        .split('\0')
        .find(|entry| entry.starts_with("160000 "))
    {
        return Err(refuse(format!(
            "the index holds a submodule ({})",
            entry.split('\t').nth(1).unwrap_or("?")
        )));
    }
    Ok(())
}

/// The first `.git` found below the top of the clone, without following links.
fn nested_repository(dir: &Path) -> Option<std::path::PathBuf> {
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if entry.file_name() == ".git" {
                if current != dir {
                    return Some(path);
                }
            } else if kind.is_dir() {
                pending.push(path);
            }
        }
    }
    None
}

/// Whether `key` is `pattern`, where `*` in the pattern stands for one subsection name (which
/// may itself hold dots).
fn key_matches(pattern: &str, key: &str) -> bool {
    match pattern.split_once(".*.") {
        None => pattern == key,
        Some((section, name)) => key
            .strip_prefix(section)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|rest| rest.strip_suffix(name))
            .and_then(|rest| rest.strip_suffix('.'))
            .is_some_and(|subsection| !subsection.is_empty()),
    }
}

/// Runs a git command in a task's clone that must succeed.
pub(crate) async fn clone_checked(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<String, ForgeError> {
    let out = jail::Jail::for_clone(dir)?
        .git(args, env, true)
        .await?
        .unwrap_or_default();
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A read-only git command in a task's clone, in the jail: `Ok(None)` when git says no.
async fn clone_query(dir: &Path, args: &[&str]) -> Result<Option<String>, ForgeError> {
    let out = jail::Jail::for_clone(dir)?.git(args, &[], false).await?;
    Ok(out.map(|out| String::from_utf8_lossy(&out).into_owned()))
}

/// git in `dir` (a registered repository, or where a clone is made), without the settings
/// through which a repository's own config could make the server run its programs.
pub(crate) fn repo_command(dir: &Path) -> Command {
    // Limited as the jail's git is: a task's branch, fetched into its private repository, can
    // be a few kilobytes of deltas that expand to terabytes.
    let mut command = Command::new("/bin/sh");
    command
        .args(["-c", GIT_LIMITS, "git"])
        .arg("-C")
        .arg(dir)
        .args(NO_PROGRAMS)
        // A commit graph copied from a registered repository could show other trees.
        .args(["-c", "pack.threads=1", "-c", "core.commitGraph=false"])
        .env("GIT_NO_LAZY_FETCH", "1")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .kill_on_drop(true);
    command
}

/// Runs a git command that must succeed, with the same protections as [`git`].
pub(crate) async fn git_checked(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<String, ForgeError> {
    let mut command = repo_command(dir);
    command.args(["-c", "safe.directory=*"]);
    checked(command, args, env).await
}

/// Runs a read-only git command in `dir`: `Ok(None)` when git says no, its stdout otherwise.
async fn git(dir: &Path, args: &[&str]) -> Result<Option<String>, ForgeError> {
    let mut command = repo_command(dir);
    command
        .arg("-c")
        .arg(format!("safe.directory={}", dir.display()))
        .env("GIT_CEILING_DIRECTORIES", dir.parent().unwrap_or(dir));
    query(command, args).await
}

/// The settings through which a repository's own config could make git run one of its
/// programs (a file-system monitor, hooks, the command that lists a borrowed repository's
/// refs), turned off on every git deft runs on a repository. (A partial clone's fetch of what
/// it lacks is turned off by `GIT_NO_LAZY_FETCH`, in the environment.)
pub(crate) const NO_PROGRAMS: [&str; 6] = [
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.alternateRefsCommand=true",
];

/// The most bytes kept of one host git command's output (a diff a person reads, a listing).
const HOST_OUTPUT_CAP: u64 = 64 * 1024 * 1024;
/// The address space (4 GiB) and CPU time (10 minutes) of one git command, the jail's or the
/// host's: a shell sets them, then becomes git with the arguments it was given.
pub(crate) const GIT_LIMITS: &str = "ulimit -v 4194304 && ulimit -t 600 && exec git \"$@\"";
/// How long one git command may run, the jail's or the host's.
pub(crate) const GIT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(600);
/// The most bytes of objects a push may carry beyond its base when they must be searched for
/// secrets first.
pub const MAX_SEARCHED_BYTES: u64 = 1024 * 1024 * 1024;

/// Runs `command` with `args`, its output read with a cap: a branch pushed by a task may hold
/// anything, and its diff must not fill deft's memory.
pub(crate) async fn capped_output(
    mut command: Command,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<(std::process::ExitStatus, Vec<u8>, Vec<u8>), ForgeError> {
    let what = args.first().copied().unwrap_or("").to_owned();
    let mut child = command
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(ForgeError::GitMissing)?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let run = async {
        // Both read to their end (what is past a cap is read and dropped), so that git never
        // blocks on a full pipe.
        let (out, err) = tokio::join!(
            read_keeping(stdout, HOST_OUTPUT_CAP + 1),
            read_keeping(stderr, 64 * 1024)
        );
        let (out, err) = (
            out.map_err(ForgeError::GitMissing)?,
            err.map_err(ForgeError::GitMissing)?,
        );
        if out.len() as u64 > HOST_OUTPUT_CAP {
            let _ = child.kill().await;
            return Err(ForgeError::Git {
                command: what.clone(),
                message: format!("its output passed {HOST_OUTPUT_CAP} bytes"),
            });
        }
        let status = child.wait().await.map_err(ForgeError::GitMissing)?;
        Ok((status, out, err))
    };
    match tokio::time::timeout(GIT_DEADLINE, run).await {
        Ok(result) => result,
        Err(_) => Err(ForgeError::Git {
            command: what,
            message: format!("it ran past {} s and was killed", GIT_DEADLINE.as_secs()),
        }),
    }
}

/// Reads `reader` to its end, keeping at most `keep` bytes.
pub(crate) async fn read_keeping(
    mut reader: impl tokio::io::AsyncRead + Unpin,
    keep: u64,
) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt as _;
    let mut kept = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let read = reader.read(&mut chunk).await?;
        if read == 0 {
            return Ok(kept);
        }
        let room = (keep as usize).saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..read.min(room)]);
    }
}

/// Starts a host git command in `dir` that reads `input` on its standard input, with its
/// standard output piped. The input is written by the returned task while the output is read,
/// so that neither pipe fills and stalls the other.
fn git_fed(
    dir: &Path,
    args: &[&str],
    input: Vec<u8>,
) -> Result<(tokio::process::Child, tokio::task::JoinHandle<()>), ForgeError> {
    use tokio::io::AsyncWriteExt as _;
    let mut command = repo_command(dir);
    command.args(["-c", "safe.directory=*"]);
    let mut child = command
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(ForgeError::GitMissing)?;
    let mut stdin = child.stdin.take().expect("piped");
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&input).await;
    });
    Ok((child, writer))
}

/// A host git command in `dir` reading `input` on its standard input; its output (capped).
async fn git_with_input(dir: &Path, args: &[&str], input: Vec<u8>) -> Result<String, ForgeError> {
    let (mut child, writer) = git_fed(dir, args, input)?;
    let stdout = child.stdout.take().expect("piped");
    let run = async {
        let out = read_keeping(stdout, HOST_OUTPUT_CAP)
            .await
            .map_err(ForgeError::GitMissing)?;
        let status = child.wait().await.map_err(ForgeError::GitMissing)?;
        Ok::<_, ForgeError>((status, out))
    };
    let (status, out) = tokio::time::timeout(GIT_DEADLINE, run)
        .await
        .map_err(|_| ForgeError::Git {
            command: args.first().copied().unwrap_or("").to_owned(),
            message: "it ran past its deadline and was killed".into(),
        })??;
    let _ = writer.await;
    if !status.success() {
        return Err(ForgeError::Git {
            command: args.first().copied().unwrap_or("").to_owned(),
            message: format!("{status}"),
        });
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Runs `command` with `args`; its stdout, or what git said when it failed.
async fn checked(
    command: Command,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<String, ForgeError> {
    let (status, out, err) = capped_output(command, args, env).await?;
    if !status.success() {
        return Err(ForgeError::Git {
            command: args.first().copied().unwrap_or("").to_owned(),
            message: String::from_utf8_lossy(&err).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Runs `command` with `args`: `Ok(None)` when git says no, its stdout otherwise.
async fn query(command: Command, args: &[&str]) -> Result<Option<String>, ForgeError> {
    let (status, out, _) = capped_output(command, args, &[]).await?;
    if !status.success() {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&out).into_owned()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Runs `script` with `sh` in `dir`, which must succeed.
    pub(crate) fn sh(dir: &Path, script: &str) {
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .status()
            .unwrap();
        assert!(status.success(), "{script}");
    }

    fn sh_out(dir: &Path, script: &str) -> String {
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(output.status.success(), "{script}");
        String::from_utf8(output.stdout).unwrap()
    }

    /// A repository `origin` in `dir` with one empty commit on `main`.
    fn origin_repo(dir: &Path) -> std::path::PathBuf {
        let origin = dir.join("origin");
        std::fs::create_dir(&origin).unwrap();
        sh(
            &origin,
            "git init -q -b main && git -c user.name=t -c user.email=t@t commit -q --allow-empty -m init",
        );
        origin
    }

    /// deft as the author of its commits.
    fn deft() -> Identity {
        Identity {
            name: "deft".into(),
            email: "deft@localhost".into(),
        }
    }

    /// A repository `name` in `dir` whose one commit holds `secret.txt`: another repository
    /// of the host, which no clone may read or write.
    fn private_repo(dir: &Path, name: &str) -> std::path::PathBuf {
        let repo = dir.join(name);
        std::fs::create_dir(&repo).unwrap();
        sh(
            &repo,
            "git init -q -b main && echo private > secret.txt && git add -A && git -c user.name=t -c user.email=t@t commit -q -m private",
        );
        repo
    }

    /// A task's clone at `work` of `origin`'s private copy, made at `private`, on the branch
    /// `deft/t-1`; the commit the branch starts from.
    async fn task_clone(origin: &Path, private: &Path, work: &Path) -> String {
        private::mirror_local(origin, private).await.unwrap();
        branch_clone(private, work).await;
        commit_of(work, "origin/main").await.unwrap()
    }

    /// A registered repository that borrows another's objects (another user's, say) is not
    /// copied: every git on the host that reads the copy would read that repository too.
    /// The diff a person reads of a registered repository: its submodule's own configuration
    /// names an external diff program, and the repository asks for submodules' diffs. Read in
    /// the jail, as one line per submodule, nothing runs on the host.
    #[tokio::test]
    async fn a_registered_repositorys_diff_runs_none_of_its_programs() {
        let dir = tempfile::tempdir().unwrap();
        let origin = origin_repo(dir.path());
        let ran = dir.path().join("a-diff-program-ran");
        sh(
            &origin,
            &format!(
                "mkdir sub && cd sub && git init -q -b main && echo one > f && git add f \
                 && git -c user.name=t -c user.email=t@t commit -q -m one && cd .. \
                 && git add sub 2>/dev/null && git -c user.name=t -c user.email=t@t commit -q -m sub \
                 && git checkout -q -b deft/z && cd sub && echo two > f \
                 && git -c user.name=t -c user.email=t@t commit -q -am two && cd .. \
                 && git add sub && git -c user.name=t -c user.email=t@t commit -q -m bump \
                 && git config diff.submodule diff \
                 && git -C sub config diff.external 'sh -c \"touch {}\"'",
                ran.display()
            ),
        );
        let shown = diff(&origin, "main", "deft/z").await.unwrap();
        assert!(!ran.exists(), "a submodule's diff program ran on the host");
        assert!(shown.contains("Subproject commit"), "{shown}");
    }

    /// A registered path whose directory above was replaced by a link leads elsewhere: it is
    /// neither copied nor read.
    #[tokio::test]
    async fn a_registered_path_that_now_leads_elsewhere_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("victim");
        std::fs::create_dir(&other).unwrap();
        private_repo(&other, "project");
        let home = dir.path().join("alice");
        std::fs::create_dir_all(home.join("sub/project")).unwrap();
        sh(&home.join("sub/project"), "git init -q -b main");
        let registered = home.join("sub/project").canonicalize().unwrap();
        // After registering, alice swaps the directory above for a link to the victim's.
        sh(
            &home,
            &format!("mv sub sub.real && ln -s {} sub", other.display()),
        );
        let private = dir.path().join("private.git");
        let error = private::mirror_local(&registered, &private)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("is now a link"), "{error}");
        let read = Objects::registered(&registered)
            .resolve_branches(&["main"])
            .await;
        assert!(
            matches!(&read, Err(ForgeError::Refused { what }) if what.contains("is now a link")),
            "{read:?}"
        );
    }

    /// A registered repository whose `.git` is a link to another user's, a `.git` file naming
    /// it, or a `commondir` sharing its objects is not copied: the copy would read the other.
    #[tokio::test]
    async fn a_repository_leading_to_another_is_not_copied() {
        let dir = tempfile::tempdir().unwrap();
        let other = private_repo(dir.path(), "other");
        let cases = [
            ("linked", format!("ln -s {}/.git .git", other.display())),
            (
                "named",
                format!("echo 'gitdir: {}/.git' > .git", other.display()),
            ),
            (
                "shared",
                format!(
                    "git init -q -b main && echo {}/.git > .git/commondir",
                    other.display()
                ),
            ),
        ];
        for (name, make) in cases {
            let registered = dir.path().join(name);
            std::fs::create_dir(&registered).unwrap();
            sh(&registered, &make);
            let private = dir.path().join(format!("{name}.git"));
            let error = private::mirror_local(&registered, &private)
                .await
                .expect_err(name);
            assert!(
                matches!(error, ForgeError::Refused { .. }),
                "{name}: {error}"
            );
            assert!(
                private::read_file(&private, "main", "secret.txt")
                    .await
                    .is_err(),
                "{name}: the other repository was copied"
            );
        }
    }

    #[tokio::test]
    async fn a_repository_borrowing_anothers_objects_is_not_copied() {
        let dir = tempfile::tempdir().unwrap();
        let other = private_repo(dir.path(), "other");
        let theirs = sh_out(&other, "git rev-parse main");
        let origin = origin_repo(dir.path());
        // The owner points their branch at the other's commit and borrows its objects.
        std::fs::write(
            origin.join(".git/objects/info/alternates"),
            format!("{}\n", other.join(".git/objects").display()),
        )
        .unwrap();
        sh(
            &origin,
            &format!("git update-ref refs/heads/main {}", theirs.trim()),
        );
        let private = dir.path().join("private.git");
        let error = private::mirror_local(&origin, &private).await.unwrap_err();
        assert!(error.to_string().contains("borrows objects"), "{error}");
        assert!(
            private::read_file(&private, "main", "secret.txt")
                .await
                .is_err(),
            "nothing of the other repository is read through the copy"
        );
    }

    /// What git quotes when a copy fails can be a line of any file the repository's links
    /// point at; none of it reaches the owner.
    #[tokio::test]
    async fn a_failed_copy_quotes_nothing_the_repositorys_links_point_at() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("credentials");
        std::fs::write(&secret, "zzz\nhttps://alice:ghp_TOPSECRET@forge.invalid\n").unwrap();
        let origin = origin_repo(dir.path());
        // A branch that is a link to the file: git reads it, and says what it read.
        std::os::unix::fs::symlink(&secret, origin.join(".git/refs/heads/stolen")).unwrap();
        let error = private::mirror_local(&origin, &dir.path().join("private.git"))
            .await
            .unwrap_err()
            .to_string();
        assert!(!error.contains("TOPSECRET"), "{error}");
        assert!(error.contains("git fsck"), "{error}");
        // A `packed-refs` that is a link is refused before git reads it.
        sh(&origin, "rm .git/refs/heads/stolen && git pack-refs --all");
        let packed = origin.join(".git/packed-refs");
        std::fs::remove_file(&packed).unwrap();
        std::os::unix::fs::symlink(&secret, &packed).unwrap();
        let error = private::mirror_local(&origin, &dir.path().join("private.git"))
            .await
            .unwrap_err()
            .to_string();
        assert!(!error.contains("TOPSECRET"), "{error}");
        assert!(error.contains("packed-refs is a link"), "{error}");
    }

    /// A task's clone at `work` of the private copy `private`, on the branch `deft/t-1`.
    async fn branch_clone(private: &Path, work: &Path) {
        private::clone_into_workspace(private, work).await.unwrap();
        checkout_branch(work, "deft/t-1", "main").await.unwrap();
    }

    const INIT: &str = "git init -q -b trunk && git -c user.name=t -c user.email=t@t commit -q --allow-empty -m init";

    #[tokio::test]
    async fn a_branch_reads_open_then_merged_or_closed() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        sh(repo, INIT);
        sh(
            repo,
            "git checkout -q -b deft/a && git -c user.name=t -c user.email=t@t commit -q --allow-empty -m a \
             && git checkout -q -b deft/b && git -c user.name=t -c user.email=t@t commit -q --allow-empty -m b \
             && git checkout -q trunk",
        );
        let state = |head: &'static str| local_branch_state(repo, head, "trunk");
        assert_eq!(state("deft/a").await.unwrap(), LocalBranchState::Open);
        sh(repo, "git merge -q --ff-only deft/a");
        assert_eq!(state("deft/a").await.unwrap(), LocalBranchState::Merged);
        assert_eq!(state("deft/b").await.unwrap(), LocalBranchState::Open);
        sh(repo, "git branch -q -D deft/b");
        assert_eq!(state("deft/b").await.unwrap(), LocalBranchState::Closed);
    }

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

    #[test]
    fn branch_names_follow_the_spec() {
        assert_eq!(
            branch_name("01a2286b-c52c-702c", "Add a /healthz route!"),
            "deft/01a2286b-add-a-healthz-route"
        );
        assert_eq!(branch_name("01a2286b", "???"), "deft/01a2286b");
        let long = branch_name(
            "01a2286b",
            "make the frobnicator handle every single edge case we can think of",
        );
        assert!(long.len() <= "deft/01a2286b-".len() + 40, "{long}");
    }

    #[tokio::test]
    async fn a_kept_clone_keeps_commits_it_never_pushed_and_follows_the_remote_ahead_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let origin = origin_repo(dir.path());
        let work = dir.path().join("work");
        clone_local(&origin, &work).await.unwrap();
        checkout_branch(&work, "deft/t-1", "main").await.unwrap();
        let commit = |file: &str| {
            format!(
                "echo {file} > {file} && git add {file} && git -c user.name=t -c user.email=t@t commit -q -m {file}"
            )
        };
        // A commit whose push never happened (refused, say) survives the clone's next start.
        sh(&work, &commit("unpushed.txt"));
        let head = sh_out(&work, "git rev-parse HEAD");
        checkout_branch(&work, "deft/t-1", "main").await.unwrap();
        assert_eq!(sh_out(&work, "git rev-parse HEAD"), head);
        assert!(work.join("unpushed.txt").exists());

        // The pushed branch ahead of the clone's own (as after a fetch of a reviewer's commit): it wins.
        sh(&work, "git push -q origin deft/t-1");
        sh(&origin, "git checkout -q deft/t-1");
        sh(&origin, &commit("reviewer.txt"));
        sh(&origin, "git checkout -q main");
        sh(&work, "git fetch -q origin");
        checkout_branch(&work, "deft/t-1", "main").await.unwrap();
        assert!(work.join("reviewer.txt").exists() && work.join("unpushed.txt").exists());
        assert_eq!(
            sh_out(&work, "git rev-parse HEAD"),
            sh_out(&work, "git rev-parse origin/deft/t-1")
        );
        // A local branch that went another way than the remote's gives way to the remote's.
        sh(&work, "git reset -q --hard main");
        sh(&work, &commit("elsewhere.txt"));
        checkout_branch(&work, "deft/t-1", "main").await.unwrap();
        assert!(!work.join("elsewhere.txt").exists() && work.join("reviewer.txt").exists());
    }

    #[tokio::test]
    async fn a_clone_whose_git_directory_was_tampered_with_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let origin = origin_repo(dir.path());
        let fresh = |name: &str| {
            let work = dir.path().join(name);
            let origin = origin.clone();
            async move {
                clone_local(&origin, &work).await.unwrap();
                checkout_branch(&work, "deft/t-1", "main").await.unwrap();
                work
            }
        };
        // As deft makes it, with its branch: accepted.
        let work = fresh("plain").await;
        ensure_untampered(&work).await.unwrap();
        let witness = dir.path().join("ran");
        // Each attack, and what the refusal names.
        let attacks: [(&str, String, &str); 7] = [
            (
                "filter",
                format!(
                    "printf '[filter \"x\"]\\n\\tclean = touch {}\\n' >> .git/config && echo '* filter=x' > .gitattributes",
                    witness.display()
                ),
                "filter.x.clean",
            ),
            (
                "insteadof",
                "printf '[url \"https://evil.test/\"]\\n\\tinsteadOf = /\\n' >> .git/config".into(),
                "insteadof",
            ),
            (
                "gitdir",
                "mv .git ../elsewhere-git && echo 'gitdir: ../elsewhere-git' > .git".into(),
                "not a directory",
            ),
            (
                "commondir",
                "echo ../other > .git/commondir".into(),
                "commondir",
            ),
            (
                "nested",
                format!(
                    "mkdir sub && cd sub && git init -q && printf '[filter \"x\"]\\n\\tclean = touch {}\\n' >> .git/config && echo '* filter=x' > .gitattributes && echo a > f",
                    witness.display()
                ),
                "repository inside the clone",
            ),
            (
                "alternates",
                "echo /elsewhere/objects > .git/objects/info/alternates".into(),
                "alternates",
            ),
            (
                "replaced",
                "mv .git .g && cp -r .g .git && printf '[core]\\n\\tsshCommand = evil\\n' >> .git/config".into(),
                "core.sshcommand",
            ),
        ];
        for (name, attack, named) in attacks {
            let work = fresh(name).await;
            sh(&work, &attack);
            let refused = commit_all(&work, "x", &deft(), &[]).await;
            assert!(
                matches!(&refused, Err(ForgeError::Refused { what }) if what.contains(named)),
                "{name}: {refused:?}"
            );
            let private = dir.path().join(format!("{name}.git"));
            private::mirror_local(&origin, &private).await.unwrap();
            let base = commit_of(&work, "origin/main").await;
            assert!(
                matches!(
                    private::deliver(
                        &work,
                        &private,
                        base.as_deref().unwrap_or("HEAD"),
                        "deft/t-1"
                    )
                    .await,
                    Err(ForgeError::Refused { .. })
                ),
                "{name}: nothing is taken from a tampered clone"
            );
        }
        // A broken `.git` must not send git looking for a repository above the clone.
        let work = fresh("above").await;
        sh(
            &work,
            &format!(
                "echo junk > .git/HEAD && echo '* filter=x' > .gitattributes && echo b > g && \
                 cd .. && git init -q && printf '[filter \"x\"]\\n\\tclean = touch {}\\n' >> .git/config",
                witness.display()
            ),
        );
        let refused = commit_all(&work, "x", &deft(), &[]).await;
        assert!(refused.is_err(), "{refused:?}");
        assert!(!witness.exists(), "a filter ran on the host");
    }

    /// A command links files of the clone's `.git` that git writes or reads to files of the
    /// host (as `ln -sf ~/.bashrc .git/COMMIT_EDITMSG` did, which the host's git then
    /// truncated and filled with the commit message): git runs in the jail, where the links
    /// lead nowhere, so the host's files are neither written nor read.
    #[tokio::test]
    async fn links_in_a_clones_git_directory_reach_no_host_file() {
        let dir = tempfile::tempdir().unwrap();
        let origin = origin_repo(dir.path());
        let host = dir.path().join("host");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("bashrc"), "host rc\n").unwrap();
        std::fs::write(host.join("log"), "host log\n").unwrap();
        let host_file = |name: &str| std::fs::read_to_string(host.join(name)).unwrap();
        // Another repository of the host, whose objects must not be read through the clone.
        let other = private_repo(dir.path(), "other");
        let work = dir.path().join("work");
        let private = dir.path().join("private.git");
        let base = task_clone(&origin, &private, &work).await;
        sh(
            &work,
            &format!(
                "ln -sf {rc} .git/COMMIT_EDITMSG && mkdir -p .git/logs/refs/heads/deft && ln -sf {log} .git/logs/HEAD \
                 && ln -sf {log} .git/logs/refs/heads/deft/t-1 && rm -rf .git/refs/tags && ln -s {other}/.git/refs/heads .git/refs/tags \
                 && echo change > file.txt",
                rc = host.join("bashrc").display(),
                log = host.join("log").display(),
                other = other.display()
            ),
        );
        let deft = deft();
        // The link leads nowhere in the jail: the commit fails there, the host file is intact.
        let committed = commit_all(&work, "the model's own words", &deft, &[]).await;
        assert!(
            matches!(&committed, Err(ForgeError::Git { message, .. }) if message.contains("COMMIT_EDITMSG")),
            "{committed:?}"
        );
        assert_eq!(host_file("bashrc"), "host rc\n");
        sh(&work, "rm .git/COMMIT_EDITMSG");
        let committed = commit_all(&work, "the model's own words", &deft, &[]).await;
        assert!(committed.is_err(), "the reflog's link leads nowhere too");
        assert_eq!(host_file("log"), "host log\n");
        // Without the links the commit goes through and the branch is delivered.
        sh(&work, "rm .git/logs/HEAD .git/logs/refs/heads/deft/t-1");
        let committed = commit_all(&work, "the model's own words", &deft, &[]).await;
        assert!(committed.is_ok(), "{committed:?}");
        let delivered = private::deliver(&work, &private, &base, "deft/t-1").await;
        assert!(delivered.is_ok(), "{delivered:?}");
        // A branch that is a link to another repository's ref reads nothing of it.
        sh(
            &work,
            &format!(
                "ln -s {}/.git/refs/heads/main .git/refs/heads/deft/t-2",
                other.display()
            ),
        );
        let stolen = private::deliver(&work, &private, &base, "deft/t-2").await;
        assert!(stolen.is_err(), "{stolen:?}");
        assert_eq!(host_file("bashrc"), "host rc\n");
        assert_eq!(host_file("log"), "host log\n");
        // The private repository holds the task's change and nothing of the other repository.
        let listing = git_checked(&private, &["rev-list", "--objects", "--all"], &[])
            .await
            .unwrap();
        assert!(!listing.contains("secret.txt"), "{listing}");
        assert!(listing.contains("file.txt"), "{listing}");
    }

    /// A command replaces its clone with a link to another repository of the host, or points
    /// a ref at an endless device: the jail looks the clone up in its own file system, where
    /// the link leads nowhere and the device is not there, so git fails at once and the other
    /// repository is neither read nor written.
    #[tokio::test]
    async fn a_clone_replaced_by_a_link_reaches_nothing_of_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let origin = origin_repo(dir.path());
        let victim = private_repo(dir.path(), "victim");
        std::fs::write(victim.join("wip.txt"), "wip\n").unwrap();
        let before = sh_out(&victim, "git rev-parse HEAD");
        let workspace = dir.path().join("workspace");
        std::fs::create_dir(&workspace).unwrap();
        let work = workspace.join("repo");
        let private = dir.path().join("private.git");
        let base = task_clone(&origin, &private, &work).await;
        for link in [victim.display().to_string(), "../victim".to_owned()] {
            std::fs::remove_dir_all(&work).ok();
            std::fs::remove_file(&work).ok();
            std::os::unix::fs::symlink(&link, &work).unwrap();
            assert!(commit_all(&work, "mine now", &deft(), &[]).await.is_err());
            assert!(worktree_diff(&work, &base).await.is_err());
            assert!(
                private::deliver(&work, &private, &base, "deft/t-1")
                    .await
                    .is_err()
            );
        }
        assert_eq!(sh_out(&victim, "git rev-parse HEAD"), before);
        assert_eq!(sh_out(&victim, "git status --porcelain"), "?? wip.txt\n");
        // A ref that is an endless device is not there in the jail.
        std::fs::remove_file(&work).unwrap();
        branch_clone(&private, &work).await;
        std::os::unix::fs::symlink("/dev/zero", work.join(".git/refs/heads/deft/t-2")).unwrap();
        let started = std::time::Instant::now();
        assert!(commit_of(&work, "deft/t-2").await.is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
    }

    /// What a push would carry is read in stretches, never whole: a text that straddles two
    /// stretches is still seen, through the overlap.
    #[tokio::test]
    async fn outgoing_objects_are_streamed_and_seams_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        sh(
            &repo,
            "git init -q -b main && git -c user.name=t -c user.email=t@t commit -q --allow-empty -m init",
        );
        let base = sh_out(&repo, "git rev-parse HEAD");
        let mut big = vec![b'a'; 3 * 1024 * 1024];
        let at = 1024 * 1024 - 4;
        big[at..at + 10].copy_from_slice(b"NEEDLE-XYZ");
        std::fs::write(repo.join("big.bin"), &big).unwrap();
        sh(
            &repo,
            "git add -A && git -c user.name=t -c user.email=t@t commit -q -m 'a big file'",
        );
        let needle = b"NEEDLE-XYZ";
        let mut largest = 0;
        let found = each_outgoing(
            &repo,
            base.trim(),
            "HEAD",
            needle.len() - 1,
            |piece| match piece {
                Outgoing::Path(_) => None,
                Outgoing::Bytes { path, bytes, .. } => {
                    largest = largest.max(bytes.len());
                    bytes
                        .windows(needle.len())
                        .any(|window| window == needle)
                        .then(|| path.map(str::to_owned))
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(found, Some(Some("big.bin".to_owned())));
        assert!(largest <= 1024 * 1024 + needle.len(), "{largest}");
    }

    #[tokio::test]
    async fn a_branch_is_committed_with_trailers_and_pushed_back() {
        let dir = tempfile::tempdir().unwrap();
        let origin = origin_repo(dir.path());
        let work = dir.path().join("work");
        clone_local(&origin, &work).await.unwrap();
        let branch = branch_name("0123abcd", "greeting file");
        checkout_branch(&work, &branch, "main").await.unwrap();
        let ada = Identity {
            name: "ada".into(),
            email: "ada@example.test".into(),
        };
        let deft = deft();
        assert_eq!(
            commit_all(&work, "Nothing", &deft, std::slice::from_ref(&ada))
                .await
                .unwrap(),
            None
        );
        std::fs::write(work.join("greeting.txt"), "hello\n").unwrap();
        let sha = commit_all(
            &work,
            "Add greeting.txt",
            &deft,
            &[ada.clone(), deft.clone()],
        )
        .await
        .unwrap()
        .unwrap();
        let url = origin.to_string_lossy().into_owned();
        let private = dir.path().join("private.git");
        private::mirror_local(&origin, &private).await.unwrap();
        let base = commit_of(&work, "origin/main").await.unwrap();
        let delivered = private::deliver(&work, &private, &base, &branch)
            .await
            .unwrap();
        assert_eq!(delivered, sha);
        // Its clean-up after a push would repack, running the command its config names: two
        // packs, an old unreachable object, and a limit of one pack make git want one.
        let cleaned = dir.path().join("a-clean-up-ran");
        sh(
            &origin,
            &format!(
                "git repack -q && git -c user.name=t -c user.email=t@t commit -q --allow-empty -m two && git repack -q \
                 && obj=$(echo unreachable | git hash-object -w --stdin) \
                 && touch -d '2 months ago' .git/objects/$(echo $obj | cut -c1-2)/$(echo $obj | cut -c3-) \
                 && git config gc.autoPackLimit 1 && git config gc.autoDetach false && git config maintenance.autoDetach false && git config gc.recentObjectsHook 'touch {}; echo'",
                cleaned.display()
            ),
        );
        // The registered repository's hooks would run on the host, as deft's user, when
        // deft's push reached them.
        let ran = dir.path().join("a-hook-ran");
        for hook in [
            "pre-receive",
            "update",
            "post-receive",
            "post-update",
            "reference-transaction",
        ] {
            let path = origin.join(".git/hooks").join(hook);
            std::fs::write(&path, format!("#!/bin/sh\ntouch {}\n", ran.display())).unwrap();
            sh(&origin, &format!("chmod 755 .git/hooks/{hook}"));
        }
        private::push(&private, &work, &url, &branch, "main", None)
            .await
            .unwrap();
        assert!(
            !ran.exists(),
            "the registered repository's hook ran on the host"
        );
        assert!(
            !cleaned.exists(),
            "the registered repository's clean-up ran its command on the host"
        );
        let log = std::process::Command::new("git")
            .args(["-C"])
            .arg(&origin)
            .args(["log", "-1", "--format=%H%n%an%n%B", &branch])
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&log.stdout).into_owned();
        assert!(log.starts_with(&sha), "{log}");
        assert!(
            log.contains("Co-authored-by: ada <ada@example.test>")
                && log.contains("Co-authored-by: deft <deft@localhost>"),
            "{log}"
        );
        let diff = diff(&origin, "main", &branch).await.unwrap();
        assert!(diff.contains("+hello"), "{diff}");
        assert!(matches!(
            private::push(&private, &work, &url, "main", "main", None).await,
            Err(ForgeError::Refused { .. })
        ));
        // Feedback: a fresh clone continues the same branch.
        let again = dir.path().join("again");
        clone_local(&origin, &again).await.unwrap();
        checkout_branch(&again, &branch, "main").await.unwrap();
        assert!(again.join("greeting.txt").exists());
        // The clone shares no object file with the original.
        let objects = |root: &Path| -> Vec<u64> {
            use std::os::unix::fs::MetadataExt as _;
            let mut inodes = Vec::new();
            let mut pending = vec![root.join(".git/objects")];
            while let Some(path) = pending.pop() {
                for entry in std::fs::read_dir(path).unwrap().flatten() {
                    if entry.file_type().unwrap().is_dir() {
                        pending.push(entry.path())
                    } else {
                        inodes.push(entry.metadata().unwrap().ino())
                    }
                }
            }
            inodes
        };
        let original = objects(&origin);
        assert!(
            objects(&work).iter().all(|inode| !original.contains(inode)),
            "objects are hardlinked"
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
