//! Where the agent's commands run (SPEC §3): a sandbox per task, with the task's workspace at
//! `/workspace`, no network but the egress proxy, limits on what it may use, and output that
//! never carries a secret's value.
//!
//! [`Sandbox`] is what every backend offers: exec with streaming output, a timeout and an
//! output cap; copy in and out; destroy. A backend writes it as a [`NativeSandbox`], made by a
//! [`NativeBackend`]. Two backends exist here: [`bwrap`] (the default on Linux)
//! and [`host`] (no isolation at all, only when named explicitly, for development). Nothing
//! falls back from one to the other.
//!
//! Guarantees of the `bwrap` backend, each tested as an attack that must fail (tests/):
//! - no network interface but loopback; the only way out is the egress proxy;
//! - the host's system directories read-only, homes, `/run`, `/srv`, `/mnt` and the like absent;
//! - the task's workspace alone at `/workspace` (no other task's), with each repository's
//!   `.git/hooks` and `.git/config` read-only, also for repositories cloned after the start;
//! - a private pid namespace: host processes and their environments are invisible;
//! - commands run without capabilities, as uid 1000 of a user namespace of their own; what
//!   only the host's owner may read under `/etc` and `/opt` is hidden;
//! - seccomp refuses `io_uring`, `ptrace`, `TIOCSTI`, new `AF_UNIX` sockets and new user
//!   namespaces (`clone3`, whose flags a filter cannot read, reports `ENOSYS`, and the C
//!   library falls back to `clone`);
//! - memory and processes limited by cgroups (v2, or v1), CPU time and file size by rlimits;
//! - nothing a command starts outlives it; a timeout kills the whole process tree (and the
//!   sandbox, which the next command replaces); the sandbox dies with deft.
//!
//! How: a task's commands run one after another in one sandbox whose init stays resident
//! (`resident`, `shell`), and a few such sandboxes are started ahead of tasks, so a task waits
//! neither for bubblewrap nor, per command, for a new set of namespaces.
//!
//! Limits: the workspace's disk use is measured after each command, not prevented while it
//! runs; there are no pseudo-terminals inside; the sandbox shares the host kernel, so a kernel
//! exploit escapes it.

pub mod bwrap;
mod cgroup;
pub mod host;
pub mod inner;
pub mod netns;
mod output;
mod plan;
pub mod probe;
mod resident;
mod seccomp;
pub mod shell;
pub mod user;
pub mod workspace;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

pub use output::CappedOutput;
pub use probe::HostSupport;

/// How much a sandbox may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub processes: u64,
    pub cpu_seconds: u64,
    pub file_size_bytes: u64,
    /// The size of the private `/tmp` and home.
    pub tmp_bytes: u64,
    /// The workspace's size, checked after each command.
    pub disk_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        const GIB: u64 = 1024 * 1024 * 1024;
        Limits {
            memory_bytes: 4 * GIB,
            processes: 512,
            cpu_seconds: 3600,
            file_size_bytes: 2 * GIB,
            tmp_bytes: GIB,
            disk_bytes: 20 * GIB,
        }
    }
}

/// What a sandbox is made with.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// The task's workspace on the host, mounted read-write at `/workspace`.
    pub workspace: PathBuf,
    /// Where the sandbox keeps its own files on the host (the proxy socket); made if missing.
    pub state_dir: PathBuf,
    /// The user's environment variables; they win over secrets of the same name.
    pub env: BTreeMap<String, String>,
    /// The user's secrets, set in the environment and redacted from all output.
    pub secrets: BTreeMap<String, String>,
    pub network: deft_egress::EgressPolicy,
    /// How the egress proxy resolves names (the system's, or fixed answers in tests).
    pub resolver: deft_egress::Resolver,
    pub limits: Limits,
    /// The root filesystem commands see: the host's system directories (`None`), or an
    /// image's, unpacked by deft (a repository's Dockerfile).
    pub root: Option<ImageRoot>,
}

impl SandboxSpec {
    /// Makes the workspace's path canonical and gives the directory to the sandbox's user
    /// (when deft is root; else it is deft's own already), as every backend needs it.
    pub fn claim_workspace(&mut self) -> Result<(), SandboxError> {
        self.workspace = self.workspace.canonicalize().map_err(|error| {
            SandboxError::Start(format!(
                "the workspace {} cannot be used ({error}); make the directory first",
                self.workspace.display()
            ))
        })?;
        user::give(&self.workspace)
    }
}

/// A root filesystem made from an image: read-only in every sandbox that uses it, with the
/// image's environment. Commands still run as the sandbox's user `deft` (uid 1000) in
/// `/workspace`, where the repositories are: an image's `USER` and `WORKDIR` are recorded
/// by the builder, not applied, since the agent's tools work on the repositories.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRoot {
    /// The unpacked root filesystem on the host; no sandbox may write it.
    pub rootfs: PathBuf,
    /// The image's `ENV`, applied before the user's secrets and environment variables.
    pub env: Vec<(String, String)>,
}

impl ImageRoot {
    /// Refuses a root whose files deft covers or replaces could be elsewhere: `/etc` must be a
    /// directory and its `ld.so.preload`, when there, a regular file. The host's loader starts
    /// deft's init inside the root and reads that preload file; through a link (`etc ->
    /// usr/etc`, or the file linked into `/tmp`) it would escape the cover deft puts over it.
    pub fn check(&self) -> Result<(), SandboxError> {
        let refuse = |what: &str| {
            Err(SandboxError::Unsupported(format!(
                "the image's {what}; deft runs images whose /etc is a directory and whose /etc/ld.so.preload, if any, is a regular file"
            )))
        };
        match std::fs::symlink_metadata(self.rootfs.join("etc")) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return refuse("/etc is not a directory (a link?)"),
            Err(_) => return refuse("/etc is missing"),
        }
        match std::fs::symlink_metadata(self.rootfs.join("etc/ld.so.preload")) {
            Ok(meta) if !meta.is_file() => refuse("/etc/ld.so.preload is not a regular file"),
            _ => Ok(()),
        }
    }
}

/// One command to run.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// Relative to `/workspace`.
    pub cwd: Option<String>,
    pub timeout: Duration,
    /// The most output kept, head and tail.
    pub output_cap: usize,
}

impl ExecRequest {
    /// `sh -c SCRIPT` with the defaults of the agent's `bash` tool.
    pub fn shell(script: &str) -> ExecRequest {
        ExecRequest {
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            cwd: None,
            timeout: Duration::from_secs(600),
            output_cap: 64 * 1024,
        }
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    Signaled(i32),
    /// Killed, with all its children, at the timeout.
    TimedOut,
    /// Killed for using more memory than the limit.
    OutOfMemory,
}

#[derive(Debug, Clone)]
pub struct ExecOutcome {
    pub ending: Ending,
    /// stdout and stderr together, redacted, capped.
    pub output: String,
    pub truncated: bool,
    pub duration: Duration,
    /// Limits the command ran into (the process limit, the disk limit), in words.
    pub limits_hit: Vec<String>,
}

/// A request checked once, here, for every backend: a program to run, in a directory of the
/// workspace. Backends are handed this, never a bare [`ExecRequest`], so none can forget a check
/// (the host backend once indexed an empty command and panicked).
#[derive(Debug)]
pub struct CheckedCommand<'a> {
    request: &'a ExecRequest,
    /// The directory the command starts in, relative to the workspace; `None` for its root.
    dir: Option<String>,
}

impl<'a> CheckedCommand<'a> {
    /// `request`, or why no backend may run it: no program, or a directory outside the
    /// workspace.
    pub fn check(request: &'a ExecRequest) -> Result<CheckedCommand<'a>, SandboxError> {
        let dir = request
            .cwd
            .as_deref()
            .map(workspace::relative)
            .transpose()?;
        // A `..` climbs out of the workspace: inside a sandbox to its root, on the host to
        // anywhere.
        if let Some(cwd) = &request.cwd
            && dir
                .iter()
                .flat_map(|dir| dir.split('/'))
                .any(|part| part == "..")
        {
            return Err(SandboxError::OutsideWorkspace { path: cwd.clone() });
        }
        if request.argv.is_empty() {
            return Err(SandboxError::Start(
                "the command is empty; give a program to run".into(),
            ));
        }
        Ok(CheckedCommand { request, dir })
    }

    pub fn request(&self) -> &'a ExecRequest {
        self.request
    }

    /// The program and its arguments, never empty.
    pub fn argv(&self) -> &'a [String] {
        &self.request.argv
    }

    pub fn program(&self) -> &'a str {
        &self.request.argv[0]
    }

    pub fn args(&self) -> &'a [String] {
        &self.request.argv[1..]
    }

    /// Where the command starts, as a path inside the sandbox.
    pub fn dir_inside(&self) -> String {
        match &self.dir {
            Some(dir) => format!("/workspace/{dir}"),
            None => "/workspace".into(),
        }
    }

    /// Where the command starts, as a path of the host, for a backend that runs it there.
    pub fn dir_on_host(&self, workspace: &std::path::Path) -> std::path::PathBuf {
        match &self.dir {
            Some(dir) => workspace.join(dir),
            None => workspace.to_path_buf(),
        }
    }
}

/// How a command ran, as a backend reports it. What it means in limits and the time it took
/// are measured by [`NativeSandbox::exec`], alike for every backend.
#[derive(Debug, Clone)]
pub struct Ran {
    pub ending: Ending,
    /// stdout and stderr together, redacted, capped.
    pub output: String,
    pub truncated: bool,
    /// What the sandbox's cgroup counted while the command ran.
    pub counts: LimitCounts,
}

impl ExecOutcome {
    /// The exit code a shell would report.
    pub fn exit_code(&self) -> i32 {
        match self.ending {
            Ending::Exited(code) => code,
            Ending::Signaled(signal) => 128 + signal,
            Ending::TimedOut => 124,
            Ending::OutOfMemory => 137,
        }
    }
}

/// What a sandbox's cgroup counted while one command ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitCounts {
    /// The kernel killed a process for going over the memory limit.
    pub oom_killed: bool,
    /// The process limit refused a new process.
    pub pids_refused: bool,
}

impl Ran {
    /// A command that ended as `ending`, leaving `output` (and whether it was cut), while the
    /// cgroup counted `counts`.
    pub fn new(ending: Ending, (output, truncated): (String, bool), counts: LimitCounts) -> Ran {
        Ran {
            ending,
            output,
            truncated,
            counts,
        }
    }

    /// The outcome of a command of a sandbox made with `spec`, begun at `started`: a kill the
    /// memory limit caused is [`Ending::OutOfMemory`], and each limit it ran into is said in
    /// words, the workspace's disk limit measured now, inside the command's time.
    async fn outcome(self, spec: &SandboxSpec, started: std::time::Instant) -> ExecOutcome {
        let Ran {
            ending,
            output,
            truncated,
            counts,
        } = self;
        let mut limits_hit = Vec::new();
        if counts.oom_killed {
            limits_hit.push(format!(
                "the memory limit ({} MiB) was reached and a process was killed",
                spec.limits.memory_bytes / (1024 * 1024)
            ));
        }
        if counts.pids_refused {
            limits_hit.push(format!(
                "the process limit ({}) refused new processes",
                spec.limits.processes
            ));
        }
        let ending = match ending {
            Ending::Signaled(9) | Ending::Exited(137) if counts.oom_killed => Ending::OutOfMemory,
            ending => ending,
        };
        // The walk may be long (a command can leave millions of files): off the async threads.
        let root = spec.workspace.clone();
        let used = tokio::task::spawn_blocking(move || workspace::size(&root))
            .await
            .unwrap_or(0);
        if used > spec.limits.disk_bytes {
            limits_hit.push(format!(
                "the workspace is over its disk limit ({} MiB)",
                spec.limits.disk_bytes / (1024 * 1024)
            ));
        }
        ExecOutcome {
            ending,
            output,
            truncated,
            duration: started.elapsed(),
            limits_hit,
        }
    }
}

/// A network connection the egress proxy decided, for the task's events.
pub use deft_egress::ProxyEvent;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the sandbox cannot run here: {0}")]
    Unsupported(String),
    #[error("`{path}` is outside the workspace; use a path under /workspace")]
    OutsideWorkspace { path: String },
    #[error("cannot start the sandbox: {0}")]
    Start(String),
    /// A FIFO, device, socket, directory or link where a file was expected: opening or
    /// reading it could block or leave the workspace, so it is refused.
    #[error("`{path}` is a {kind}, not a regular file; look at it with bash")]
    NotRegularFile { path: String, kind: &'static str },
    #[error(
        "`{path}` is {bytes} bytes, over the {limit} a file tool reads; use bash (head, sed -n) for a part of it"
    )]
    TooLarge {
        path: String,
        bytes: u64,
        limit: u64,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl SandboxError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
        let context = context.into();
        move |source| SandboxError::Io { context, source }
    }
}

/// A future a sandbox returns: boxed, so that [`Sandbox`] and [`SandboxBackend`] can be used
/// as trait objects and a backend chosen at run time.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What every backend's sandbox offers; the engine and the MCP code use only this.
pub trait Sandbox: Send + Sync + std::fmt::Debug {
    /// Runs a command, passing each piece of its (redacted) output to `on_output`.
    fn exec<'a>(
        &'a self,
        request: &'a ExecRequest,
        on_output: &'a mut (dyn FnMut(&str) + Send),
    ) -> BoxFuture<'a, Result<ExecOutcome, SandboxError>>;

    /// Starts a long-running program that talks over its standard streams (an MCP server),
    /// with the sandbox's isolation, limits and network policy; `extra_env` adds to its
    /// environment and wins over the sandbox's. It is killed, with what it started, when the
    /// process is dropped.
    fn spawn<'a>(
        &'a self,
        request: &'a ExecRequest,
        extra_env: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<SandboxProcess, SandboxError>>;

    /// Stops the long-running programs until the guard is dropped: deft's git checks the
    /// clones and then uses them, and nothing may change them in between.
    fn pause_programs(&self) -> PausedPrograms;

    /// What hides the user's secrets in anything that leaves the sandbox.
    fn redactor(&self) -> &deft_core::Redactor;

    /// The workspace on the host (at `/workspace` inside), where deft's file tools work.
    fn workspace(&self) -> &std::path::Path;

    /// Writes a file of the workspace (`path` relative to `/workspace`, or absolute inside it).
    /// Every backend's workspace is a directory of the host, so deft writes it there itself.
    fn copy_in<'a>(
        &'a self,
        path: &'a str,
        contents: &'a [u8],
    ) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move { workspace::write(self.workspace(), path, contents) })
    }

    /// Reads a file of the workspace, on the host as [`Sandbox::copy_in`] writes it.
    fn copy_out<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Vec<u8>, SandboxError>> {
        Box::pin(async move { workspace::read(self.workspace(), path) })
    }

    /// Stops everything still running and removes what the sandbox made (not the workspace).
    fn destroy(self: Box<Self>) -> BoxFuture<'static, Result<(), SandboxError>>;
}

/// Makes sandboxes: one per task, from a [`SandboxSpec`]. A backend is chosen once, at start,
/// and the engine never knows which it has. What every backend must keep true is written in
/// ARCHITECTURE.md (`deft-sandbox`).
pub trait SandboxBackend: Send + Sync + std::fmt::Debug {
    /// The backend's name in messages and `deft doctor` (`bwrap`, `host`).
    fn name(&self) -> &'static str;

    /// Makes a sandbox for `spec`, or refuses, saying why, when it cannot keep the spec's
    /// promises (limits, network level, root). Every connection the egress proxy decides is
    /// sent to `events`.
    fn create<'a>(
        &'a self,
        spec: SandboxSpec,
        events: tokio::sync::mpsc::UnboundedSender<ProxyEvent>,
    ) -> BoxFuture<'a, Result<Box<dyn Sandbox>, SandboxError>>;
}

/// A backend's sandbox as the backend writes it: plain `async fn`s on its own type. Every such
/// type is a [`Sandbox`]; the boxing that trait objects need is done once, here, for all.
pub trait NativeSandbox: Send + Sync + std::fmt::Debug + Sized + 'static {
    /// Runs a checked command as [`Sandbox::exec`] does, but leaves measuring it (its time and
    /// the limits it ran into) to [`NativeSandbox::exec`].
    fn run(
        &self,
        command: &CheckedCommand<'_>,
        on_output: &mut (dyn FnMut(&str) + Send),
    ) -> impl Future<Output = Result<Ran, SandboxError>> + Send;

    /// [`Sandbox::exec`]: the request checked, [`NativeSandbox::run`], and what it ran into
    /// measured, here for every backend.
    fn exec(
        &self,
        request: &ExecRequest,
        on_output: &mut (dyn FnMut(&str) + Send),
    ) -> impl Future<Output = Result<ExecOutcome, SandboxError>> + Send {
        async move {
            let started = std::time::Instant::now();
            let command = CheckedCommand::check(request)?;
            let ran = self.run(&command, on_output).await?;
            Ok(ran.outcome(self.spec(), started).await)
        }
    }

    /// [`Sandbox::spawn`], for a checked command.
    fn spawn(
        &self,
        command: &CheckedCommand<'_>,
        extra_env: &[(String, String)],
    ) -> impl Future<Output = Result<SandboxProcess, SandboxError>> + Send;

    /// [`Sandbox::pause_programs`]: nothing to stop, unless the backend has a way to.
    fn pause_programs(&self) -> PausedPrograms {
        PausedPrograms::nothing()
    }

    /// [`Sandbox::destroy`]: dropping the sandbox, unless the backend has more to do, so that a
    /// sandbox that is merely dropped is cleaned up too.
    fn destroy(self) -> impl Future<Output = Result<(), SandboxError>> + Send {
        async move {
            drop(self);
            Ok(())
        }
    }

    /// [`Sandbox::redactor`].
    fn redactor(&self) -> &deft_core::Redactor;

    /// What the sandbox was made from.
    fn spec(&self) -> &SandboxSpec;

    /// [`Sandbox::workspace`].
    fn workspace(&self) -> &std::path::Path {
        &self.spec().workspace
    }
}

impl<S: NativeSandbox> Sandbox for S {
    fn exec<'a>(
        &'a self,
        request: &'a ExecRequest,
        on_output: &'a mut (dyn FnMut(&str) + Send),
    ) -> BoxFuture<'a, Result<ExecOutcome, SandboxError>> {
        Box::pin(NativeSandbox::exec(self, request, on_output))
    }

    fn spawn<'a>(
        &'a self,
        request: &'a ExecRequest,
        extra_env: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<SandboxProcess, SandboxError>> {
        Box::pin(async move {
            let command = CheckedCommand::check(request)?;
            NativeSandbox::spawn(self, &command, extra_env).await
        })
    }

    fn pause_programs(&self) -> PausedPrograms {
        NativeSandbox::pause_programs(self)
    }

    fn redactor(&self) -> &deft_core::Redactor {
        NativeSandbox::redactor(self)
    }

    fn workspace(&self) -> &std::path::Path {
        NativeSandbox::workspace(self)
    }

    fn destroy(self: Box<Self>) -> BoxFuture<'static, Result<(), SandboxError>> {
        Box::pin(NativeSandbox::destroy(*self))
    }
}

/// A backend as it is written, making its own type of [`NativeSandbox`]. Every such backend is
/// a [`SandboxBackend`], whose sandboxes are boxed here.
pub trait NativeBackend: Send + Sync + std::fmt::Debug {
    /// [`SandboxBackend::name`].
    const NAME: &'static str;

    type Sandbox: NativeSandbox;

    /// [`SandboxBackend::create`]: a sandbox for `spec`, or why this backend refuses it (its
    /// own doc says what it refuses); every connection the egress proxy decides is sent to
    /// `events`.
    fn create(
        &self,
        spec: SandboxSpec,
        events: tokio::sync::mpsc::UnboundedSender<ProxyEvent>,
    ) -> impl Future<Output = Result<Self::Sandbox, SandboxError>> + Send;
}

impl<B: NativeBackend> SandboxBackend for B {
    fn name(&self) -> &'static str {
        B::NAME
    }

    fn create<'a>(
        &'a self,
        spec: SandboxSpec,
        events: tokio::sync::mpsc::UnboundedSender<ProxyEvent>,
    ) -> BoxFuture<'a, Result<Box<dyn Sandbox>, SandboxError>> {
        Box::pin(async move {
            let sandbox = NativeBackend::create(self, spec, events).await?;
            Ok(Box::new(sandbox) as Box<dyn Sandbox>)
        })
    }
}

/// Keeps a sandbox's long-running programs stopped until dropped ([`Sandbox::pause_programs`]).
pub struct PausedPrograms(
    #[allow(dead_code, reason = "held for its Drop")] Option<Box<dyn Send + Sync>>,
);

impl PausedPrograms {
    /// A guard that holds `resume`, whose drop resumes the programs.
    pub fn holding(resume: impl Send + Sync + 'static) -> PausedPrograms {
        PausedPrograms(Some(Box::new(resume)))
    }

    /// Nothing to resume (a backend without long-running programs).
    pub fn nothing() -> PausedPrograms {
        PausedPrograms(None)
    }
}

impl std::fmt::Debug for PausedPrograms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PausedPrograms")
    }
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
