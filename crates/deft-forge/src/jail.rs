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

/// What one jailed git command is given.
pub(crate) struct Jail<'a> {
    /// The directory that holds the clone, mounted read-write at [`WORKSPACE`]: deft made it,
    /// and a task cannot replace it (it is the sandbox's mount point). The clone inside it
    /// may be anything, a link to another repository of the host included; the jail looks it
    /// up in its own file system, where such a link leads nowhere.
    /// `None` for git that writes nothing of the host (a registered repository read): the
    /// jail's `/workspace` is then its own empty directory.
    pub workspace: Option<&'a Path>,
    /// The clone git works on (`WORKSPACE/NAME/.git`, named outright), or `None` when git is
    /// left to its arguments (`git clone`).
    pub clone: Option<&'a str>,
    /// Mounted read-only at [`ORIGIN`], when there is one.
    pub origin: Option<&'a Path>,
    /// Mount [`ORIGIN`] read-write instead: a merge into a registered repository writes its
    /// objects, its branch and (when the branch is checked out) its work tree, and nothing else.
    pub origin_writable: bool,
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
            workspace: Some(workspace),
            clone: Some(name),
            origin: None,
            origin_writable: false,
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

    /// Runs `git ARGS` in the jail: whether it succeeded, and its output either way (`git
    /// merge-tree` lists a merge's conflicts as it fails).
    pub(crate) async fn git_status(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<(bool, Vec<u8>), ForgeError> {
        let mut out = Vec::new();
        let succeeded = self.run(args, env, &mut out, OUTPUT_CAP, false).await?;
        Ok((succeeded, out))
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
        command.args(["--", "/bin/sh", "-c", crate::GIT_LIMITS, "git"]);
        command
            .args(crate::NO_PROGRAMS)
            .args([
                "-c",
                "core.attributesFile=/dev/null",
                "-c",
                "safe.bareRepository=explicit",
                "-c",
                "safe.directory=*",
                "-c",
                "submodule.recurse=false",
                // A commit graph the task wrote could show the reviewer other trees.
                "-c",
                "core.commitGraph=false",
                "-c",
                "protocol.allow=never",
                "-c",
                "protocol.file.allow=always",
            ])
            .args(args)
            .stdin(Stdio::piped())
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
            // The filter goes in on standard input, which git then finds at its end.
            {
                use tokio::io::AsyncWriteExt as _;
                let mut stdin = child.stdin.take().expect("piped");
                stdin
                    .write_all(&seccomp_program())
                    .await
                    .map_err(ForgeError::GitMissing)?;
            }
            let mut stdout = child.stdout.take().expect("piped").take(cap + 1);
            let stderr = child.stderr.take().expect("piped");
            // Standard error is read to its end (past its cap, dropped): git never blocks on it.
            let (copied, err) = tokio::join!(
                tokio::io::copy(&mut stdout, sink),
                crate::read_keeping(stderr, 64 * 1024)
            );
            let copied = copied.map_err(ForgeError::GitMissing)?;
            let err = err.map_err(ForgeError::GitMissing)?;
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
        if let Some(workspace) = self.workspace {
            crate::ownership::take_tree(workspace).map_err(|error| ForgeError::Git {
                command: what.clone(),
                message: format!("taking {} for git: {error}", workspace.display()),
            })?;
        }
        let outcome = tokio::time::timeout(crate::GIT_DEADLINE, run).await;
        if let Some(workspace) = self.workspace {
            crate::ownership::give_tree(workspace).map_err(|error| ForgeError::Git {
                command: what.clone(),
                message: format!(
                    "giving {} back to the sandbox: {error}",
                    workspace.display()
                ),
            })?;
        }
        let (status, err) = match outcome {
            Ok(result) => result?,
            // Dropping the future kills the jail (`kill_on_drop`, `--die-with-parent`).
            Err(_) => {
                return Err(ForgeError::Git {
                    command: what,
                    message: format!(
                        "it ran past {} s and was killed",
                        crate::GIT_DEADLINE.as_secs()
                    ),
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
            "--seccomp",
            "0",
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
            // A repository that says it is a partial clone would have git fetch what it
            // lacks, running the program its remote's configuration names.
            "--setenv",
            "GIT_NO_LAZY_FETCH",
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
        match self.workspace {
            Some(workspace) => args.extend([
                "--bind".into(),
                workspace.to_string_lossy().into_owned(),
                WORKSPACE.into(),
            ]),
            None => args.extend(["--dir".into(), WORKSPACE.into()]),
        }
        if let Some(origin) = self.origin {
            args.extend([
                if self.origin_writable {
                    "--bind"
                } else {
                    "--ro-bind"
                }
                .into(),
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

/// The jail's seccomp filter, as bubblewrap reads it (`--seccomp`): git on a local repository
/// needs no socket (the jail has no network, but `AF_VSOCK` ignores network namespaces), no
/// new namespace, no tracing, no kernel keyring, no BPF, no io_uring and no mount. The x32
/// numbering of x86-64 is refused whole; a foreign architecture is killed.
fn seccomp_program() -> Vec<u8> {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const JSET_K: u16 = 0x45;
    const RET_K: u16 = 0x06;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_KILL: u32 = 0x8000_0000;
    const RET_EPERM: u32 = 0x0005_0000 | libc::EPERM as u32;
    const RET_ENOSYS: u32 = 0x0005_0000 | libc::ENOSYS as u32;
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xc000_003e;
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xc000_00b7;
    let denied: &[i64] = &[
        libc::SYS_socket,
        libc::SYS_ptrace,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_open_tree,
        libc::SYS_move_mount,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
    ];
    let mut program: Vec<(u16, u8, u8, u32)> = vec![
        // seccomp_data: nr at 0, arch at 4, args from 16 (the low word first).
        (LD_W_ABS, 0, 0, 4),
        (JEQ_K, 1, 0, ARCH),
        (RET_K, 0, 0, RET_KILL),
        (LD_W_ABS, 0, 0, 0),
    ];
    // Then: x32 → EPERM; each refused call → EPERM; clone3 → ENOSYS (the C library falls
    // back to clone, whose flags a filter can see); clone → its flags; the rest allowed.
    // Jumps are relative, patched once the refusals' places at the end are known.
    let mut body: Vec<(u16, u8, u8, u32)> = Vec::new();
    body.push((JSET_K, 0, 0, 0x4000_0000)); // patched below
    for number in denied {
        body.push((JEQ_K, 0, 0, *number as u32)); // patched below
    }
    body.push((JEQ_K, 0, 0, libc::SYS_clone3 as u32)); // patched below
    body.push((JEQ_K, 0, 0, libc::SYS_clone as u32)); // patched below
    body.push((RET_K, 0, 0, RET_ALLOW));
    // clone: refuse a new user namespace.
    let clone_check = body.len();
    body.push((LD_W_ABS, 0, 0, 16));
    body.push((JSET_K, 0, 0, libc::CLONE_NEWUSER as u32)); // patched below
    body.push((RET_K, 0, 0, RET_ALLOW));
    let eperm = body.len();
    body.push((RET_K, 0, 0, RET_EPERM));
    let enosys = body.len();
    body.push((RET_K, 0, 0, RET_ENOSYS));
    let jump = |from: usize, to: usize| (to - from - 1) as u8;
    body[0].1 = jump(0, eperm);
    for (i, rule) in body.iter_mut().enumerate().take(denied.len() + 1).skip(1) {
        rule.1 = jump(i, eperm);
    }
    let clone3 = denied.len() + 1;
    body[clone3].1 = jump(clone3, enosys);
    let clone = clone3 + 1;
    body[clone].1 = jump(clone, clone_check);
    body[clone_check + 1].1 = jump(clone_check + 1, eperm);
    program.extend(body);
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for (code, jt, jf, k) in program {
        bytes.extend_from_slice(&code.to_ne_bytes());
        bytes.push(jt);
        bytes.push(jf);
        bytes.extend_from_slice(&k.to_ne_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the jail's git could be made to run (here through an alias, as a hostile
    /// configuration would) opens no socket of any family (`AF_VSOCK` ignores network
    /// namespaces) and makes no user namespace.
    #[tokio::test]
    async fn the_jails_programs_open_no_socket_and_no_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let jail = Jail {
            workspace: Some(dir.path()),
            clone: None,
            origin: None,
            origin_writable: false,
        };
        let probe = "!python3 -c \"import socket, ctypes\nfor f in (40, 2, 1):\n  try:\n    socket.socket(f); print(f, 'open')\n  except OSError as e: print(f, e.errno)\nlibc = ctypes.CDLL(None, use_errno=True)\nprint('userns', libc.unshare(0x10000000), ctypes.get_errno())\"";
        let out = jail
            .git(&["-c", &format!("alias.probe={probe}"), "probe"], &[], true)
            .await
            .unwrap()
            .unwrap();
        let out = String::from_utf8_lossy(&out);
        assert_eq!(out, "40 1\n2 1\n1 1\nuserns -1 1\n", "{out}");
    }
}
