//! The bubblewrap backend: a sandbox per task, each command a fresh set of namespaces.
//!
//! deft starts `deft __sandbox-launch` with a [`LaunchPlan`] on its stdin; the launcher joins
//! the sandbox's cgroups and becomes `bwrap`, which runs
//! `deft __sandbox-init` as pid 1 of the new namespaces; the init runs the command. See
//! [`crate::inner`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use deft_core::Redactor;
use deft_egress::{EgressProxy, ProxyEvent};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;

use crate::cgroup::SandboxCgroup;
use crate::output::{CappedOutput, OutputText, Stderr, read_streams};
use crate::plan::LaunchPlan;
use crate::{
    Ending, ExecOutcome, ExecRequest, HostSupport, Sandbox, SandboxError, SandboxSpec, inner,
    workspace,
};

/// The port inside the sandbox where the bridge to the egress proxy listens.
pub const PROXY_PORT: u16 = 3128;
/// The uid and gid commands see inside (mapped to the sandbox's own on the host).
const INSIDE_ID: &str = "1000";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Makes bubblewrap sandboxes.
#[derive(Debug, Clone)]
pub struct BwrapBackend {
    support: HostSupport,
    /// The binary that knows the launcher's and the init's verbs (deft itself).
    helper: PathBuf,
    /// Files and directories of the mounted system directories that their owner alone may
    /// read (`/etc/shadow`, private keys): hidden, since commands run as the host uid that
    /// owns them.
    masks: std::sync::Arc<Vec<(PathBuf, bool)>>,
}

impl BwrapBackend {
    /// A backend, or why this host cannot run it.
    pub fn new(support: HostSupport, helper: PathBuf) -> Result<BwrapBackend, SandboxError> {
        if let Err(why) = &support.bwrap {
            return Err(SandboxError::Unsupported(why.clone()));
        }
        let masks = std::sync::Arc::new(private_entries(&["/etc", "/opt"]));
        // A deft that was killed outright left its sandboxes' cgroups: end what is in them.
        support.cgroups.sweep_stale("deft-sandbox-");
        Ok(BwrapBackend {
            support,
            helper,
            masks,
        })
    }

    pub fn support(&self) -> &HostSupport {
        &self.support
    }

    /// Makes a sandbox for `spec`, or refuses, saying why, when its limits cannot be enforced.
    /// Every connection the egress proxy decides is sent to `events`.
    pub async fn create(
        &self,
        spec: SandboxSpec,
        events: mpsc::UnboundedSender<ProxyEvent>,
    ) -> Result<BwrapSandbox, SandboxError> {
        if let Some(why) = self.support.refusal(&spec.limits) {
            return Err(SandboxError::Unsupported(why));
        }
        let serial = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("deft-sandbox-{}-{serial}", std::process::id());
        std::fs::create_dir_all(&spec.state_dir).map_err(SandboxError::io(format!(
            "creating {}",
            spec.state_dir.display()
        )))?;
        let socket = spec.state_dir.join("proxy.sock");
        let _ = std::fs::remove_file(&socket);
        let proxy =
            EgressProxy::start_with(&socket, spec.network.clone(), events, spec.resolver.clone())
                .map_err(SandboxError::io(format!(
                "starting the egress proxy at {}",
                socket.display()
            )))?;
        let cgroup = self
            .support
            .cgroups
            .create(&name, spec.limits.memory_bytes, spec.limits.processes)
            .map_err(SandboxError::io("creating the sandbox's cgroup"))?;
        let redactor = Redactor::new(&spec.secrets);
        Ok(BwrapSandbox {
            spec,
            cgroup,
            proxy,
            redactor,
            helper: self.helper.clone(),
            masks: self.masks.clone(),
        })
    }
}

#[derive(Debug)]
pub struct BwrapSandbox {
    spec: SandboxSpec,
    cgroup: Option<SandboxCgroup>,
    proxy: EgressProxy,
    redactor: Redactor,
    helper: PathBuf,
    masks: std::sync::Arc<Vec<(PathBuf, bool)>>,
}

impl BwrapSandbox {
    /// The environment commands get: a fixed base, the proxy, then secrets, then env vars
    /// (which win over a secret of the same name).
    fn environment(&self) -> Vec<(String, String)> {
        let proxy = format!("http://127.0.0.1:{PROXY_PORT}");
        let mut path = String::from("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        for toolchain in crate::probe::home_toolchains() {
            let bin = if toolchain.ends_with("bin") {
                toolchain.clone()
            } else {
                toolchain.join("bin")
            };
            if toolchain.ends_with(".pyenv") {
                path = format!(
                    "{}:{}:{path}",
                    toolchain.join("shims").display(),
                    bin.display()
                );
            } else if bin.is_dir() {
                path = format!("{}:{path}", bin.display());
            }
        }
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for (key, value) in [
            ("PATH", path.as_str()),
            ("HOME", "/home/deft"),
            ("USER", "deft"),
            ("LOGNAME", "deft"),
            ("LANG", "C.UTF-8"),
            ("TERM", "dumb"),
            ("TMPDIR", "/tmp"),
            ("CARGO_HOME", "/home/deft/.cargo"),
            ("HTTP_PROXY", &proxy),
            ("HTTPS_PROXY", &proxy),
            ("http_proxy", &proxy),
            ("https_proxy", &proxy),
            ("NO_PROXY", "localhost,127.0.0.1,::1"),
            ("no_proxy", "localhost,127.0.0.1,::1"),
            ("npm_config_proxy", &proxy),
            ("npm_config_https_proxy", &proxy),
            ("PIP_PROXY", &proxy),
            ("CARGO_HTTP_PROXY", &proxy),
            ("GIT_CONFIG_NOSYSTEM", "1"),
        ] {
            env.insert(key.to_owned(), value.to_owned());
        }
        if let Some(rustup) = crate::probe::home_toolchains()
            .into_iter()
            .find(|p| p.ends_with(".rustup"))
        {
            env.insert("RUSTUP_HOME".into(), rustup.display().to_string());
        }
        env.extend(self.spec.secrets.clone());
        env.extend(self.spec.env.clone());
        env.into_iter().collect()
    }

    fn plan(&self, request: &ExecRequest, stdio: bool) -> Result<LaunchPlan, SandboxError> {
        let limits = &self.spec.limits;
        let mut args: Vec<String> = Vec::with_capacity(96);
        let mut push = |more: &[&str]| args.extend(more.iter().map(|s| s.to_string()));
        push(&[
            "--unshare-user",
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-net",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--as-pid-1",
            "--cap-drop",
            "ALL",
            "--hostname",
            "sandbox",
            "--uid",
            INSIDE_ID,
            "--gid",
            INSIDE_ID,
        ]);
        for dir in ["/usr", "/etc", "/opt"] {
            if Path::new(dir).is_dir() {
                push(&["--ro-bind", dir, dir]);
            }
        }
        for (path, is_dir) in self.masks.iter() {
            let path = path.to_string_lossy();
            if *is_dir {
                push(&["--tmpfs", &path]);
            } else {
                push(&["--ro-bind", "/dev/null", &path]);
            }
        }
        for dir in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
            match std::fs::read_link(dir) {
                Ok(target) => push(&["--symlink", &target.to_string_lossy(), dir]),
                Err(_) if Path::new(dir).is_dir() => push(&["--ro-bind", dir, dir]),
                Err(_) => {}
            }
        }
        let tmp = limits.tmp_bytes.to_string();
        push(&["--proc", "/proc", "--dev", "/dev"]);
        push(&[
            "--size",
            &tmp,
            "--tmpfs",
            "/tmp",
            "--size",
            &tmp,
            "--tmpfs",
            "/home",
            "--dir",
            "/home/deft",
        ]);
        push(&["--tmpfs", "/run", "--dir", "/.deft"]);
        let helper = self.helper.to_string_lossy();
        push(&["--ro-bind", &helper, "/.deft/init"]);
        let workspace = self.spec.workspace.to_string_lossy();
        push(&["--bind", &workspace, "/workspace"]);
        // A repository's hooks and config would let a command make the host's git run code.
        if let Ok(entries) = std::fs::read_dir(&self.spec.workspace) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                for part in ["hooks", "config"] {
                    let source = entry.path().join(".git").join(part);
                    if std::fs::symlink_metadata(&source).is_ok_and(|m| !m.file_type().is_symlink())
                    {
                        let dest = format!("/workspace/{name}/.git/{part}");
                        push(&["--ro-bind", &source.to_string_lossy(), &dest]);
                    }
                }
            }
        }
        let socket = self.proxy.path().to_string_lossy();
        push(&["--bind", &socket, "/.deft/proxy.sock"]);
        for toolchain in crate::probe::home_toolchains() {
            let path = toolchain.to_string_lossy();
            push(&["--ro-bind", &path, &path]);
        }
        let cwd = match &request.cwd {
            Some(cwd) => format!("/workspace/{}", workspace::relative(cwd)?),
            None => "/workspace".into(),
        };
        // Without a cgroup, the process rlimit is the last resort.
        let nproc = if self.cgroup.is_some() {
            0
        } else {
            limits.processes
        };
        // Everything outside /workspace, /tmp and the home is read-only, the root included.
        push(&[
            "--remount-ro",
            "/",
            "--chdir",
            &cwd,
            "--",
            "/.deft/init",
            inner::INIT,
        ]);
        push(&[
            "--proxy-socket",
            "/.deft/proxy.sock",
            "--proxy-port",
            &PROXY_PORT.to_string(),
        ]);
        push(&[
            "--nproc",
            &nproc.to_string(),
            "--fsize",
            &limits.file_size_bytes.to_string(),
        ]);
        push(&["--cpu", &limits.cpu_seconds.to_string(), "--cwd", &cwd]);
        if stdio {
            push(&["--stdio", "1"]);
        }
        push(&["--"]);
        args.extend(request.argv.iter().cloned());
        Ok(LaunchPlan {
            bwrap: PathBuf::from("/usr/bin/bwrap"),
            cgroup_procs: self
                .cgroup
                .as_ref()
                .map(SandboxCgroup::procs_files)
                .unwrap_or_default(),
            args,
            env: self.environment(),
        })
    }
}

/// Entries under `roots` that others may not read (files) or enter (directories), without
/// descending into the directories found.
fn private_entries(roots: &[&str]) -> Vec<(PathBuf, bool)> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut found = Vec::new();
    let mut pending: Vec<PathBuf> = roots
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .collect();
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(metadata) = entry.path().symlink_metadata() else {
                continue;
            };
            let mode = metadata.permissions().mode();
            if metadata.is_dir() {
                if mode & 0o005 != 0o005 {
                    found.push((entry.path(), true));
                } else {
                    pending.push(entry.path());
                }
            } else if metadata.is_file() && mode & 0o004 == 0 {
                found.push((entry.path(), false));
            }
        }
    }
    found.sort();
    found
}

/// A long-running program in the sandbox that talks over its standard input and output (an
/// MCP server): same isolation, limits and network policy as any command. It is killed, with
/// everything it started, when this is dropped or the sandbox goes.
#[derive(Debug)]
pub struct SandboxProcess {
    pub child: tokio::process::Child,
    pub stdin: tokio::process::ChildStdin,
    pub stdout: tokio::process::ChildStdout,
    /// What it writes on standard error (not redacted: for deft's log, never the model).
    pub stderr: tokio::process::ChildStderr,
}

impl BwrapSandbox {
    /// Starts the launcher (deft's own binary) with all three standard streams piped.
    fn launcher(&self, args: &[&str]) -> Result<tokio::process::Child, SandboxError> {
        tokio::process::Command::new(&self.helper)
            .args(args)
            .env_clear()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| SandboxError::Start(format!("{}: {error}", self.helper.display())))
    }

    /// Masks the sandbox's secrets in `text`, as every command's output is.
    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }

    /// What masks the sandbox's secrets, for output that reaches deft another way.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Starts `request.argv` with its standard input and output connected to the returned
    /// process, `extra_env` added to (and winning over) the sandbox's environment.
    pub async fn spawn(
        &self,
        request: &ExecRequest,
        extra_env: &[(String, String)],
    ) -> Result<SandboxProcess, SandboxError> {
        let mut plan = self.plan(request, true)?;
        let mut env: BTreeMap<String, String> = plan.env.drain(..).collect();
        env.extend(extra_env.iter().cloned());
        let env: Vec<(String, String)> = env.into_iter().collect();
        let mut child = self.launcher(&[inner::LAUNCH, inner::STDIO])?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        // The plan for the launcher, then the environment for the init, each with its length;
        // what follows is the program's own input.
        let plan = serde_json::to_vec(&plan).expect("plans serialize");
        let env = crate::plan::encode_env(&env);
        for part in [&plan, &env] {
            let length = u32::try_from(part.len())
                .map_err(|_| SandboxError::Start("the environment is too large".into()))?;
            stdin
                .write_all(&length.to_be_bytes())
                .await
                .map_err(SandboxError::io("sending the plan to the launcher"))?;
            stdin
                .write_all(part)
                .await
                .map_err(SandboxError::io("sending the plan to the launcher"))?;
        }
        stdin
            .flush()
            .await
            .map_err(SandboxError::io("sending the plan to the launcher"))?;
        Ok(SandboxProcess {
            stdout: child.stdout.take().expect("stdout is piped"),
            stderr: child.stderr.take().expect("stderr is piped"),
            stdin,
            child,
        })
    }
}

impl Drop for BwrapSandbox {
    fn drop(&mut self) {
        if let Some(cgroup) = self.cgroup.take() {
            cgroup.remove();
        }
        let _ = std::fs::remove_dir_all(&self.spec.state_dir);
    }
}

impl Sandbox for BwrapSandbox {
    async fn exec(
        &self,
        request: &ExecRequest,
        on_output: &mut (dyn FnMut(&str) + Send),
    ) -> Result<ExecOutcome, SandboxError> {
        let started = Instant::now();
        let plan = self.plan(request, false)?;
        let oom_before = self.cgroup.as_ref().map_or(0, SandboxCgroup::oom_kills);
        let pids_before = self.cgroup.as_ref().map_or(0, SandboxCgroup::pids_refused);
        let mut child = self.launcher(&[inner::LAUNCH])?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let plan = serde_json::to_vec(&plan).expect("plans serialize");
        stdin
            .write_all(&plan)
            .await
            .map_err(SandboxError::io("sending the plan to the launcher"))?;
        drop(stdin);
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut text = OutputText::new(self.redactor.stream());
        let mut kept = CappedOutput::new(request.output_cap);
        let mut diagnostics = Vec::new();
        let read_all = async {
            diagnostics = read_streams(
                stdout,
                stderr,
                Stderr::Aside,
                &mut text,
                &mut kept,
                on_output,
            )
            .await;
            child.wait().await
        };
        let waited = tokio::time::timeout(request.timeout, read_all).await;
        let ending = match waited {
            Ok(Ok(status)) => {
                use std::os::unix::process::ExitStatusExt as _;
                match (status.code(), status.signal()) {
                    (Some(code), _) if code > 128 && code < 160 => Ending::Signaled(code - 128),
                    (Some(code), _) => Ending::Exited(code),
                    (None, Some(signal)) => Ending::Signaled(signal),
                    (None, None) => Ending::Exited(-1),
                }
            }
            Ok(Err(error)) => return Err(SandboxError::io("waiting for the sandbox")(error)),
            Err(_) => {
                // SIGKILL to bubblewrap kills the init (die-with-parent), which ends the pid
                // namespace; the cgroup sweep catches anything that slipped out.
                let _ = child.start_kill();
                if let Some(cgroup) = &self.cgroup {
                    cgroup.kill_all();
                }
                let _ = child.wait().await;
                Ending::TimedOut
            }
        };
        let rest = text.finish();
        kept.push(&rest);
        if !rest.is_empty() {
            on_output(&String::from_utf8_lossy(&rest));
        }
        let diagnostics = self.redactor.redact(&String::from_utf8_lossy(&diagnostics));
        if !diagnostics.trim().is_empty() {
            tracing::debug!(stderr = %diagnostics.trim(), "sandbox diagnostics");
            kept.push(diagnostics.as_bytes());
            on_output(&diagnostics);
        }
        let mut limits_hit = Vec::new();
        let mut ending = ending;
        if let Some(cgroup) = &self.cgroup {
            if cgroup.oom_kills() > oom_before {
                limits_hit.push(format!(
                    "the memory limit ({} MiB) was reached and a process was killed",
                    self.spec.limits.memory_bytes / (1024 * 1024)
                ));
                if matches!(ending, Ending::Signaled(9) | Ending::Exited(137)) {
                    ending = Ending::OutOfMemory;
                }
            }
            if cgroup.pids_refused() > pids_before {
                limits_hit.push(format!(
                    "the process limit ({}) refused new processes",
                    self.spec.limits.processes
                ));
            }
        }
        if workspace::size(&self.spec.workspace) > self.spec.limits.disk_bytes {
            limits_hit.push(format!(
                "the workspace is over its disk limit ({} MiB)",
                self.spec.limits.disk_bytes / (1024 * 1024)
            ));
        }
        let (output, truncated) = kept.finish();
        Ok(ExecOutcome {
            ending,
            output,
            truncated,
            duration: started.elapsed(),
            limits_hit,
        })
    }

    async fn copy_in(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError> {
        workspace::write(&self.spec.workspace, path, contents)
    }

    async fn copy_out(&self, path: &str) -> Result<Vec<u8>, SandboxError> {
        workspace::read(&self.spec.workspace, path)
    }

    async fn destroy(self) -> Result<(), SandboxError> {
        // Dropping does the work, so that a sandbox that is merely dropped is cleaned up too.
        drop(self);
        Ok(())
    }
}
