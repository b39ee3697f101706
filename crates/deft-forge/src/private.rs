//! A task's private repository: a bare copy of each forge repository that deft keeps outside
//! every sandbox (no sandbox mounts it, not even the pooled ones' stage), so the host's git
//! works only on repositories no task could write. The task's clone in its workspace is made
//! from it inside the jail; the task's commits come back to it as a bundle made in the jail,
//! which git fetches the way it fetches from any untrusted remote; and pushes, the secret
//! search and the diffs a person sees all read it.

use std::path::Path;

use crate::jail::{BUNDLE_CAP, Jail, ORIGIN, WORKSPACE};
use crate::objects::Objects;
use crate::{ForgeError, GitAuth, git_checked};

/// A fresh bare copy of the registered local repository `source` at `private` (whatever was
/// there is replaced), its objects copied rather than linked.
pub async fn mirror_local(source: &Path, private: &Path) -> Result<(), ForgeError> {
    let from = source.to_string_lossy().into_owned();
    let refused = |why: &str| ForgeError::Refused {
        what: format!(
            "to copy {}: {why}; register a plain repository of its own instead (`git clone --no-local` it to a new directory, and register that), then try again",
            source.display()
        ),
    };
    if let Some(why) = leads_elsewhere(source) {
        return Err(refused(&why));
    }
    if let Err(error) = mirror(private, &from, &[]).await {
        // What git says here can quote any file the registered repository's links point at
        // (a `packed-refs` linked to a file of another user's): the owner sees none of it.
        return Err(match error {
            ForgeError::Git { .. } => {
                refused("git could not read it as a repository (run `git fsck` in it to see why)")
            }
            other => other,
        });
    }
    // A repository that borrows objects from another (its `objects/info/alternates`) would
    // lend every git on the host that reads the copy the other repository's objects, another
    // user's included.
    if std::fs::symlink_metadata(private.join("objects/info/alternates")).is_ok() {
        let _ = std::fs::remove_dir_all(private);
        return Err(refused(
            "it borrows objects from another repository (objects/info/alternates)",
        ));
    }
    Ok(())
}

/// Why the registered repository at `source` would have git read another one, if it would:
/// the repository itself, its `.git` or what git reads first is a link, `.git` is a file
/// naming another directory (a worktree's, a submodule's), or it shares another's objects and
/// refs (`commondir`). git's own `--local` clone refuses links inside `objects`, and
/// `objects/info/alternates` is refused once copied. (The repository's writers can still
/// change it between this look and git's: see SECURITY.md's known limits.)
fn leads_elsewhere(source: &Path) -> Option<String> {
    let kind = |path: &Path| std::fs::symlink_metadata(path).map(|meta| meta.file_type());
    if let Some(why) = crate::objects::moved(source) {
        return Some(why);
    }
    match kind(source) {
        Ok(kind) if kind.is_dir() => {}
        Ok(_) => return Some("it is a link or a file, not a directory".into()),
        Err(error) => return Some(format!("it cannot be read ({error})")),
    }
    let git_dir = match kind(&source.join(".git")) {
        Ok(kind) if kind.is_dir() => source.join(".git"),
        Ok(kind) if kind.is_symlink() => return Some("its .git is a link".into()),
        Ok(_) => {
            return Some(
                "its .git is a file naming another directory (a worktree or a submodule)".into(),
            );
        }
        // A bare repository.
        Err(_) => source.to_owned(),
    };
    for entry in ["commondir", "gitdir"] {
        if kind(&git_dir.join(entry)).is_ok() {
            return Some(format!(
                "it shares another repository's objects and refs ({entry})"
            ));
        }
    }
    for entry in [
        "objects",
        "objects/info",
        "objects/pack",
        "refs",
        "packed-refs",
        "HEAD",
        "config",
    ] {
        if kind(&git_dir.join(entry)).is_ok_and(|kind| kind.is_symlink()) {
            return Some(format!("its {entry} is a link"));
        }
    }
    None
}

/// A fresh bare copy of the remote repository at `url` (HTTPS, with `auth`) at `private`.
pub async fn mirror_remote(url: &str, private: &Path, auth: &GitAuth) -> Result<(), ForgeError> {
    mirror(private, url, &auth.env()).await
}

async fn mirror(private: &Path, from: &str, env: &[(&str, &str)]) -> Result<(), ForgeError> {
    let io = |error: std::io::Error| ForgeError::Git {
        command: "clone".into(),
        message: format!("preparing {}: {error}", private.display()),
    };
    let parent = private.parent().unwrap_or(private);
    std::fs::create_dir_all(parent).map_err(io)?;
    match std::fs::remove_dir_all(private) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(io(error)),
        _ => {}
    }
    let dest = private.to_string_lossy().into_owned();
    // A local repository's objects are linked, not copied: git never changes an object file
    // in place, neither here nor there, and no sandbox or jail mounts the private copy (the
    // workspace's clone of it is made without links).
    git_checked(
        parent,
        &["clone", "--quiet", "--bare", "--", from, &dest],
        env,
    )
    .await?;
    Ok(())
}

/// Makes the task's clone `dest` (a directory of the task's workspace that does not exist
/// yet) from its private repository, inside the jail: the workspace may hold anything a
/// command left there.
pub async fn clone_into_workspace(private: &Path, dest: &Path) -> Result<(), ForgeError> {
    jail_clone(private, dest, &[]).await
}

/// `git clone` from the private repository to `dest`, inside the jail, with `options`.
async fn jail_clone(private: &Path, dest: &Path, options: &[&str]) -> Result<(), ForgeError> {
    let (Some(parent), Some(name)) = (dest.parent(), dest.file_name().and_then(|n| n.to_str()))
    else {
        return Err(ForgeError::Refused {
            what: format!("a clone at {}: it needs a named directory", dest.display()),
        });
    };
    let into = format!("{WORKSPACE}/{name}");
    let mut args = vec!["clone", "--quiet", "--no-hardlinks"];
    args.extend_from_slice(options);
    args.extend_from_slice(&["--", ORIGIN, &into]);
    Jail {
        workspace: Some(parent),
        clone: None,
        origin: Some(private),
        origin_writable: false,
    }
    .git(&args, &[], true)
    .await?;
    Ok(())
}

/// The commit branch ref `reference` (`refs/heads/…`) points at in a repository deft reads on
/// the host (a private repository, or a registered local one, which no task writes); `None`
/// when there is no such branch.
pub async fn resolve_ref(repo: &Path, reference: &str) -> Result<Option<String>, ForgeError> {
    if !reference.starts_with("refs/heads/") {
        return Err(ForgeError::Refused {
            what: format!("resolving `{reference}`: only branches are resolved here"),
        });
    }
    let mut command = crate::repo_command(repo);
    command.args(["-c", "safe.directory=*"]);
    let rev = format!("{reference}^{{commit}}");
    let args = ["rev-parse", "--verify", "--quiet", "--end-of-options", &rev];
    let (status, out, err) = crate::capped_output(command, &args, &[]).await?;
    match status.code() {
        Some(0) => Ok(Some(String::from_utf8_lossy(&out).trim().to_owned())),
        Some(1) if err.is_empty() => Ok(None),
        _ => Err(ForgeError::Git {
            command: "rev-parse".into(),
            message: String::from_utf8_lossy(&err).trim().to_owned(),
        }),
    }
}

/// The commit each branch of `branches` (names without `refs/heads/`) points at in a
/// repository deft reads on the host, in one start of git; `None` for a branch that is not
/// there, or that names anything but a commit.
pub async fn resolve_branches(
    repo: &Path,
    branches: &[&str],
) -> Result<Vec<Option<String>>, ForgeError> {
    Objects::Private(repo).resolve_branches(branches).await
}

/// Whether the private repository holds `commit` (a full object id).
pub async fn has_commit(private: &Path, commit: &str) -> Result<bool, ForgeError> {
    if !crate::objects::is_object_id(commit) {
        return Ok(false);
    }
    let mut command = crate::repo_command(private);
    command.args(["-c", "safe.directory=*"]);
    let object = format!("{commit}^{{commit}}");
    let (status, _, _) = crate::capped_output(command, &["cat-file", "-e", &object], &[]).await?;
    Ok(status.success())
}

/// Makes the task's clone `dest` on its `branch` in one start of the jail. The branch is made
/// in the private repository first (deft's own, which no task writes) at `base`, a commit it
/// holds, unless the forge already has it (a later round of the same task); the clone then
/// checks it out as it is made. What `dest`'s parent holds is the workspace's, which only the
/// jail touches.
pub async fn clone_on_branch(
    private: &Path,
    dest: &Path,
    branch: &str,
    base: &str,
) -> Result<(), ForgeError> {
    if !branch.starts_with("deft/") {
        return Err(ForgeError::Refused {
            what: format!("making a clone on `{branch}`: deft works only on `deft/…` branches"),
        });
    }
    let target = format!("refs/heads/{branch}");
    if resolve_ref(private, &target).await?.is_none() {
        git_checked(private, &["update-ref", &target, base], &[]).await?;
    }
    jail_clone(private, dest, &["--branch", branch]).await
}

/// Brings the clone's `branch` into the private repository: the jail bundles what the branch
/// has beyond `base` (a commit the private repository has), deft keeps the bundle beside the
/// private repository, and git checks and fetches it there. The branch in the private
/// repository then is exactly what a push would send.
pub async fn deliver(
    clone: &Path,
    private: &Path,
    base: &str,
    branch: &str,
) -> Result<String, ForgeError> {
    crate::ensure_untampered(clone).await?;
    if !branch.starts_with("deft/") {
        return Err(ForgeError::Refused {
            what: format!("taking `{branch}` from a clone: deft works only on `deft/…` branches"),
        });
    }
    let jail = Jail::for_clone(clone)?;
    let head = jail
        .git(
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("refs/heads/{branch}^{{commit}}"),
            ],
            &[],
            true,
        )
        .await?
        .unwrap_or_default();
    let head = String::from_utf8_lossy(&head).trim().to_owned();
    let target = format!("refs/heads/{branch}");
    if head == base {
        git_checked(private, &["update-ref", &target, base], &[]).await?;
        return Ok(head);
    }
    // Streamed into a file beside the private repository, never whole into memory.
    let file = tempfile::Builder::new()
        .prefix("deft-bundle-")
        .tempfile_in(private.parent().unwrap_or(private))
        .map_err(|error| ForgeError::Git {
            command: "bundle".into(),
            message: format!("making a file for the clone's bundle: {error}"),
        })?;
    let mut sink = tokio::fs::File::from_std(file.reopen().map_err(|error| ForgeError::Git {
        command: "bundle".into(),
        message: format!("opening the clone's bundle: {error}"),
    })?);
    jail.git_into(
        &[
            "bundle",
            "create",
            "--quiet",
            "-",
            &target,
            &format!("^{base}"),
        ],
        &mut sink,
        BUNDLE_CAP,
    )
    .await?;
    {
        use tokio::io::AsyncWriteExt as _;
        sink.flush().await.map_err(ForgeError::GitMissing)?;
    }
    let path = file.path().to_string_lossy().into_owned();
    git_checked(private, &["bundle", "verify", "--quiet", &path], &[]).await?;
    git_checked(
        private,
        &[
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            &path,
            &format!("+{target}:{target}"),
        ],
        &[],
    )
    .await?;
    let fetched = git_checked(
        private,
        &["rev-parse", "--verify", &format!("{target}^{{commit}}")],
        &[],
    )
    .await?;
    Ok(fetched.trim().to_owned())
}

/// Pushes `branch` from the private repository to `url` (given again, never read from a
/// clone), without forcing and never to the default branch; then tells the clone, in the
/// jail, that its remote now has the branch, so a later round there continues from it.
pub async fn push(
    private: &Path,
    clone: &Path,
    url: &str,
    branch: &str,
    default_branch: &str,
    auth: Option<&GitAuth>,
) -> Result<(), ForgeError> {
    if branch == default_branch || !branch.starts_with("deft/") {
        return Err(ForgeError::Refused {
            what: format!("pushing to `{branch}`: deft pushes only its own `deft/…` branches"),
        });
    }
    // No `+`: a push that is not a fast-forward fails rather than rewriting history.
    let refspec = format!("refs/heads/{branch}:refs/heads/{branch}");
    let env = auth.map(GitAuth::env);
    // Pushed to a registered local repository, git on the host runs its receiving side, which
    // would run that repository's hooks, its clean-up after a push (whose repack runs a
    // command the configuration names) and, pushing to the branch checked out, its filters in
    // the work tree; git passes it none of this side's settings, so it is told itself.
    let receive_pack = (!url.contains("://")).then_some(
        "--receive-pack=GIT_NO_LAZY_FETCH=1 git -c core.hooksPath=/dev/null -c core.fsmonitor=false -c core.alternateRefsCommand=true -c receive.autogc=false -c gc.auto=0 -c maintenance.auto=false -c receive.denyCurrentBranch=refuse receive-pack",
    );
    let mut args = vec!["push", "--quiet"];
    args.extend(receive_pack);
    args.extend(["--", url, &refspec]);
    git_checked(private, &args, env.as_ref().map_or(&[][..], |env| &env[..])).await?;
    let pushed = git_checked(
        private,
        &["rev-parse", &format!("refs/heads/{branch}")],
        &[],
    )
    .await?;
    crate::clone_checked(
        clone,
        &[
            "update-ref",
            &format!("refs/remotes/origin/{branch}"),
            pushed.trim(),
        ],
        &[],
    )
    .await?;
    Ok(())
}

/// The files of `commit`'s tree in the private repository that name an environment, among
/// `paths`: regular files only (a link in a repository could point anywhere on the host).
pub async fn regular_files(
    private: &Path,
    commit: &str,
    paths: &[&str],
) -> Result<Vec<String>, ForgeError> {
    let mut args = vec!["ls-tree", "-z", commit, "--"];
    args.extend_from_slice(paths);
    let listing = git_checked(private, &args, &[]).await?;
    Ok(listing
        .split('\0')
        .filter_map(|entry| {
            let (meta, path) = entry.split_once('\t')?;
            let mode = meta.split_whitespace().next()?;
            matches!(mode, "100644" | "100755").then(|| path.to_owned())
        })
        .collect())
}

/// One file of `commit`'s tree, as git stores it.
pub async fn read_file(private: &Path, commit: &str, path: &str) -> Result<Vec<u8>, ForgeError> {
    Objects::Private(private).read_file(commit, path).await
}

/// `commit`'s whole tree as an uncompressed tar (an image's build context), at most 64 MiB:
/// from git's objects, never from a directory a task could have changed.
pub async fn archive(private: &Path, commit: &str) -> Result<Vec<u8>, ForgeError> {
    raw_output(private, &["archive", "--format=tar", commit]).await
}

/// Every file path of `commit`'s tree, as git stores them (at most 64 MiB of listing).
pub async fn list_paths(private: &Path, commit: &str) -> Result<Vec<String>, ForgeError> {
    let out = raw_output(
        private,
        &[
            "ls-tree",
            "-r",
            "-z",
            "--name-only",
            "--end-of-options",
            commit,
        ],
    )
    .await?;
    Ok(out
        .split(|byte| *byte == 0)
        .filter(|path| !path.is_empty())
        .map(|path| String::from_utf8_lossy(path).into_owned())
        .collect())
}

/// Every entry of `commit`'s tree, recursively, with git's mode (see
/// [`Objects::list_tree`]).
pub async fn list_tree(repo: &Path, commit: &str) -> Result<Vec<(String, String)>, ForgeError> {
    Objects::Private(repo).list_tree(commit).await
}

/// git's id of `commit`'s tree: what names its files, whatever commit holds them.
pub async fn tree_of(private: &Path, commit: &str) -> Result<String, ForgeError> {
    // `COMMIT:dir` names a tree already; `^{tree}` would be read as part of its path.
    let rev = if commit.contains(':') {
        commit.to_owned()
    } else {
        format!("{commit}^{{tree}}")
    };
    let out = raw_output(
        private,
        &["rev-parse", "--verify", "--end-of-options", &rev],
    )
    .await?;
    Ok(String::from_utf8_lossy(&out).trim().to_owned())
}

pub(crate) async fn raw_output(private: &Path, args: &[&str]) -> Result<Vec<u8>, ForgeError> {
    let mut command = crate::repo_command(private);
    command.args(["-c", "safe.directory=*"]);
    let (status, out, err) = crate::capped_output(command, args, &[]).await?;
    if !status.success() {
        return Err(ForgeError::Git {
            command: args.first().copied().unwrap_or("").to_owned(),
            message: String::from_utf8_lossy(&err).trim().to_owned(),
        });
    }
    Ok(out)
}
