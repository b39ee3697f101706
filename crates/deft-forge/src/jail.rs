//! git on a task's clone runs inside a throwaway bubblewrap, never on the host. The clone passed
//! through the sandbox, so anything in it may be hostile: a `.git/COMMIT_EDITMSG` or
//! `.git/logs/HEAD` that is a link to `~/.bashrc`, refs and objects that are links to other
//! repositories, a configuration that runs programs. In the jail the clone is the only thing
//! that can be written, and nothing else of the host is there to be reached: `/usr` read-only
//! and of `/etc` only the linker's cache, an empty home and `/tmp`, no `/proc`, no network, a
//! fresh session, and nothing of deft's environment. A link in the clone that points out of it finds nothing.
//!
//! What leaves the jail is data: the command's standard output (a diff, a commit id, a
//! bundle), read by deft with a cap.

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncReadExt as _;
use tokio::process::Command;

use crate::ForgeError;

/// Where the directory holding the clones (the task's workspace) is inside the jail.
pub(crate) const WORKSPACE: &str = "/workspace";
/// Where a read-only repository given to the jail (the host's copy to clone from) is.
pub(crate) const ORIGIN: &str = "/origin";
/// The most bytes of output kept from one jailed git command.
const OUTPUT_CAP: u64 = 64 * 1024 * 1024;
/// The most bytes of a bundle a jailed git may write.
pub(crate) const BUNDLE_CAP: u64 = 4 * 1024 * 1024 * 1024;
/// How long one jailed git command may run.
const DEADLINE: std::time::Duration = std::time::Duration::from_secs(600);
/// The address space one jailed git may use, in KiB (`ulimit -v`), and its CPU seconds.
const MEMORY_KIB: u64 = 4 * 1024 * 1024;
const CPU_SECONDS: u64 = 600;

/// What one jailed git command is given.
pub(crate) struct Jail<'a> {
    /// The directory that holds the clone, mounted read-write at [`WORKSPACE`]: deft made it,
    /// and a task cannot replace it (it is the sandbox's mount point). The clone inside it
    /// may be anything, a link to another repository of the host included; the jail looks it
    /// up in its own file system, where such a link leads nowhere.
    pub workspace: &'a Path,
    /// The clone git works on (`WORKSPACE/NAME/.git`, named outright), or `None` when git is
    /// left to its arguments (`git clone`).
    pub clone: Option<&'a str>,
    /// Mounted read-only at [`ORIGIN`], when there is one.
    pub origin: Option<&'a Path>,
}

impl<'a> Jail<'a> {
    /// The jail for git on the clone at `dir`.
    pub(crate) fn for_clone(dir: &'a Path) -> Result<Jail<'a>, ForgeError> {
        let (Some(workspace), Some(name)) =
            (dir.parent(), dir.file_name().and_then(|name| name.to_str()))
        else {
            return Err(ForgeError::Refused {
                what: format!("git on {}: a clone is a named directory", dir.display()),
            });
        };
        Ok(Jail {
            workspace,
            clone: Some(name),
            origin: None,
        })
    }

    /// A path of the clone, as git in the jail sees it.
    pub(crate) fn path(&self, relative: &str) -> String {
        format!("{WORKSPACE}/{}/{relative}", self.clone.unwrap_or(""))
    }

    /// Runs `git ARGS` in the jail with `env` (names and values that are not secret: they are
    /// on bubblewrap's command line); its output, at most [`OUTPUT_CAP`] bytes. `Ok(None)`
    /// when git said no and `checked` is false.
    pub(crate) async fn git(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        checked: bool,
    ) -> Result<Option<Vec<u8>>, ForgeError> {
        let mut out = Vec::new();
        let succeeded = self.run(args, env, &mut out, OUTPUT_CAP, checked).await?;
        Ok(succeeded.then_some(out))
    }

    /// Runs `git ARGS` in the jail, its output written to `sink` (at most `cap` bytes): a
    /// bundle goes to a file, never whole into memory.
    pub(crate) async fn git_into(
        &self,
        args: &[&str],
        sink: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
        cap: u64,
    ) -> Result<(), ForgeError> {
        self.run(args, &[], sink, cap, true).await.map(drop)
    }

    async fn run(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        sink: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
        cap: u64,
        checked: bool,
    ) -> Result<bool, ForgeError> {
        let what = args.first().copied().unwrap_or("").to_owned();
        let mut command = Command::new("bwrap");
        command.args(self.bwrap_args());
        for (key, value) in env {
            command.args(["--setenv", key, value]);
        }
        // Limits on the jail's git: a hostile repository can make git allocate without end (a
        // ref that is a device or a huge diff) or run for ever.
        command.args([
            "--",
            "/bin/sh",
            "-c",
            &format!("ulimit -v {MEMORY_KIB} && ulimit -t {CPU_SECONDS} && exec git \"$@\""),
            "git",
        ]);
        command
            .args([
                "-c",
                "core.fsmonitor=false",
                "-c",
                "core.hooksPath=/dev/null",
                "-c",
                "core.attributesFile=/dev/null",
                "-c",
                "safe.bareRepository=explicit",
                "-c",
                "safe.directory=*",
                "-c",
                "submodule.recurse=false",
                "-c",
                "protocol.allow=never",
                "-c",
                "protocol.file.allow=always",
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let run = async {
            let mut child = command.spawn().map_err(|error| {
                if error.kind() == std::io::ErrorKind::NotFound {
                    ForgeError::JailMissing
                } else {
                    ForgeError::GitMissing(error)
                }
            })?;
            let mut stdout = child.stdout.take().expect("piped").take(cap + 1);
            let mut stderr = child.stderr.take().expect("piped").take(64 * 1024);
            let mut err = Vec::new();
            let (copied, read_err) = tokio::join!(
                tokio::io::copy(&mut stdout, sink),
                stderr.read_to_end(&mut err)
            );
            let copied = copied.map_err(ForgeError::GitMissing)?;
            read_err.map_err(ForgeError::GitMissing)?;
            if copied > cap {
                let _ = child.kill().await;
                return Err(ForgeError::Git {
                    command: what.clone(),
                    message: format!("its output passed {cap} bytes"),
                });
            }
            let status = child.wait().await.map_err(ForgeError::GitMissing)?;
            Ok((status, err))
        };
        // While the jail's git works, the task's workspace is deft's; then it goes back to the
        // sandbox's user, whatever git said (no sandboxed process runs meanwhile).
        crate::ownership::take_tree(self.workspace).map_err(|error| ForgeError::Git {
            command: what.clone(),
            message: format!("taking {} for git: {error}", self.workspace.display()),
        })?;
        let outcome = tokio::time::timeout(DEADLINE, run).await;
        crate::ownership::give_tree(self.workspace).map_err(|error| ForgeError::Git {
            command: what.clone(),
            message: format!(
                "giving {} back to the sandbox: {error}",
                self.workspace.display()
            ),
        })?;
        let (status, err) = match outcome {
            Ok(result) => result?,
            // Dropping the future kills the jail (`kill_on_drop`, `--die-with-parent`).
            Err(_) => {
                return Err(ForgeError::Git {
                    command: what,
                    message: format!("it ran past {} s and was killed", DEADLINE.as_secs()),
                });
            }
        };
        if status.success() {
            return Ok(true);
        }
        if !checked {
            return Ok(false);
        }
        let message = String::from_utf8_lossy(&err).trim().to_owned();
        // bubblewrap's own failures say so; git's are git's.
        if message.starts_with("bwrap:") {
            return Err(ForgeError::Jail { message });
        }
        Err(ForgeError::Git {
            command: what,
            message,
        })
    }

    fn bwrap_args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--clearenv",
            "--setenv",
            "PATH",
            "/usr/local/bin:/usr/bin:/bin",
            "--setenv",
            "HOME",
            "/home/deft",
            "--setenv",
            "LANG",
            "C.UTF-8",
            "--setenv",
            "GIT_CONFIG_NOSYSTEM",
            "1",
            "--setenv",
            "GIT_CONFIG_GLOBAL",
            "/dev/null",
            "--setenv",
            "GIT_NO_REPLACE_OBJECTS",
            "1",
            "--setenv",
            "GIT_TERMINAL_PROMPT",
            "0",
            // No account database in the jail: git's own records (reflogs) name deft.
            "--setenv",
            "GIT_COMMITTER_NAME",
            "deft",
            "--setenv",
            "GIT_COMMITTER_EMAIL",
            "deft@deft.invalid",
            "--setenv",
            "GIT_AUTHOR_NAME",
            "deft",
            "--setenv",
            "GIT_AUTHOR_EMAIL",
            "deft@deft.invalid",
            "--ro-bind",
            "/usr",
            "/usr",
            // Of the devices only /dev/null and /dev/urandom (git's temporary files): fewer
            // endless files for a ref to point at; the address-space limit and the deadline
            // bound what one can still do.
            "--tmpfs",
            "/dev",
            "--dev-bind",
            "/dev/null",
            "/dev/null",
            "--dev-bind",
            "/dev/urandom",
            "/dev/urandom",
            "--tmpfs",
            "/tmp",
            "--tmpfs",
            "/home",
            "--dir",
            "/home/deft",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Of /etc only what the dynamic linker needs to find git's libraries: no accounts,
        // no keys, no system git configuration.
        args.extend([
            "--ro-bind-try".into(),
            "/etc/ld.so.cache".into(),
            "/etc/ld.so.cache".into(),
        ]);
        // Merged-/usr systems link these into /usr; older ones have them as directories.
        for dir in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
            match std::fs::read_link(dir) {
                Ok(target) => args.extend([
                    "--symlink".into(),
                    target.to_string_lossy().into(),
                    dir.into(),
                ]),
                Err(_) if Path::new(dir).is_dir() => {
                    args.extend(["--ro-bind".into(), dir.into(), dir.into()])
                }
                Err(_) => {}
            }
        }
        args.extend([
            "--bind".into(),
            self.workspace.to_string_lossy().into_owned(),
            WORKSPACE.into(),
        ]);
        if let Some(origin) = self.origin {
            args.extend([
                "--ro-bind".into(),
                origin.to_string_lossy().into_owned(),
                ORIGIN.into(),
            ]);
        }
        match self.clone {
            Some(name) => {
                let clone = format!("{WORKSPACE}/{name}");
                args.extend([
                    "--chdir".into(),
                    clone.clone(),
                    "--setenv".into(),
                    "GIT_DIR".into(),
                    format!("{clone}/.git"),
                    "--setenv".into(),
                    "GIT_WORK_TREE".into(),
                    clone,
                ]);
            }
            None => args.extend(["--chdir".into(), WORKSPACE.into()]),
        }
        args
    }
}
