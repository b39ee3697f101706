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

/// Where the clone is inside the jail.
pub(crate) const CLONE: &str = "/repo";
/// Where a read-only repository given to the jail (the host's copy to clone from) is.
pub(crate) const ORIGIN: &str = "/origin";
/// The most bytes of output read from one jailed git command.
const OUTPUT_CAP: u64 = 1024 * 1024 * 1024;

/// What one jailed git command is given.
pub(crate) struct Jail<'a> {
    /// Mounted read-write at [`CLONE`].
    pub writable: &'a Path,
    /// Mounted read-only at [`ORIGIN`], when there is one.
    pub origin: Option<&'a Path>,
    /// Whether git works on `CLONE/.git` (a clone's git directory named outright) or is left
    /// to its arguments (`git clone`).
    pub in_clone: bool,
}

impl Jail<'_> {
    /// Runs `git ARGS` in the jail with `env` (names and values that are not secret: they are
    /// on bubblewrap's command line). `Ok(None)` when git said no and `checked` is false.
    pub(crate) async fn git(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        checked: bool,
    ) -> Result<Option<Vec<u8>>, ForgeError> {
        let mut command = Command::new("bwrap");
        command.args(self.bwrap_args());
        for (key, value) in env {
            command.args(["--setenv", key, value]);
        }
        command
            .arg("--")
            .arg("git")
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
        let mut child = command.spawn().map_err(|error| {
            if error.kind() == std::io::ErrorKind::NotFound {
                ForgeError::JailMissing
            } else {
                ForgeError::GitMissing(error)
            }
        })?;
        let mut stdout = child.stdout.take().expect("piped").take(OUTPUT_CAP + 1);
        let mut stderr = child.stderr.take().expect("piped").take(64 * 1024);
        let mut out = Vec::new();
        let mut err = Vec::new();
        let (read_out, read_err) =
            tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err),);
        read_out.map_err(ForgeError::GitMissing)?;
        read_err.map_err(ForgeError::GitMissing)?;
        if out.len() as u64 > OUTPUT_CAP {
            let _ = child.kill().await;
            return Err(ForgeError::Git {
                command: args.first().copied().unwrap_or("").to_owned(),
                message: format!("its output passed {OUTPUT_CAP} bytes"),
            });
        }
        let status = child.wait().await.map_err(ForgeError::GitMissing)?;
        if status.success() {
            return Ok(Some(out));
        }
        if !checked {
            return Ok(None);
        }
        let message = String::from_utf8_lossy(&err).trim().to_owned();
        // bubblewrap's own failures say so; git's are git's.
        if message.starts_with("bwrap:") {
            return Err(ForgeError::Jail { message });
        }
        Err(ForgeError::Git {
            command: args.first().copied().unwrap_or("").to_owned(),
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
            "--dev",
            "/dev",
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
            self.writable.to_string_lossy().into_owned(),
            CLONE.into(),
        ]);
        if let Some(origin) = self.origin {
            args.extend([
                "--ro-bind".into(),
                origin.to_string_lossy().into_owned(),
                ORIGIN.into(),
            ]);
        }
        args.extend(["--chdir".into(), CLONE.into()]);
        if self.in_clone {
            args.extend([
                "--setenv".into(),
                "GIT_DIR".into(),
                format!("{CLONE}/.git"),
                "--setenv".into(),
                "GIT_WORK_TREE".into(),
                CLONE.into(),
            ]);
        }
        args
    }
}
