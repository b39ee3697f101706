//! deft's side of a resident sandbox (see `crate::resident` for the init's side), and the pool
//! of them started ahead of tasks.
//!
//! A shell is a bubblewrap sandbox whose init waits on a control socket: made once, it runs a
//! task's commands one after another. Starting one costs what bubblewrap costs (namespaces,
//! mounts, the init), several milliseconds on a small host; a pool keeps a few started for
//! each directory of workspaces, so a task's sandbox is ready in the time its workspace takes
//! to attach. A shell is never used for two tasks: after its task it is killed.
//!
//! The control channel itself ([`Control`]) and one command's run through it
//! ([`Control::run`]) do not depend on how the init was started, and are public for the
//! other backend whose sandboxes hold deft's resident init: `deft-container`, whose init
//! connects to a [`ControlListener`] from inside a container.

use std::collections::{HashMap, HashSet};
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd as _, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::net::{
    AddressFamily, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags,
    SocketType,
};
use tokio::io::{AsyncReadExt as _, Interest};
use tokio::net::UnixStream;

use crate::bwrap::ShellMaker;
use crate::cgroup::SandboxCgroup;
use crate::plan::{FromInit, LaunchPlan, MAX_MESSAGE, ToInit};
use crate::{Limits, SandboxError, inner};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// How long a refill waits after a shell was taken: starting bubblewrap takes a few
/// milliseconds of both cores of a small host, which the task that just got its sandbox needs
/// more.
const REFILL_DELAY: std::time::Duration = std::time::Duration::from_millis(200);

/// What shells of a pool have in common: where the workspaces and the sandboxes' own files
/// live, and the size of the private `/tmp` and home, all fixed when bubblewrap starts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ShellKey {
    /// The directory of workspaces, bound at `/.deft/stage` until one is attached.
    pub stage: PathBuf,
    /// Where each shell's directory for the proxy socket is made.
    pub runtime: PathBuf,
    pub tmp_bytes: u64,
    /// An image's root filesystem instead of the host's system directories.
    pub image: Option<PathBuf>,
}

#[derive(Debug)]
pub(crate) struct Shell {
    child: tokio::process::Child,
    /// The init's control channel, through which the sandbox runs its commands.
    pub control: Control,
    /// Where the proxy socket goes, bound at `/.deft/net`.
    pub runtime_dir: PathBuf,
    /// Removed once the shell is killed: its runtime directory until a sandbox adopts it, and
    /// the sandbox's own directories when the sandbox goes.
    pub remove_on_drop: Vec<PathBuf>,
    pub cgroup: Option<SandboxCgroup>,
    /// The memory and process limits its cgroup has now.
    cgroup_limits: (u64, u64),
}

impl Shell {
    /// Starts a shell and waits until its init is ready. `runtime_dir`, when given, is reused
    /// (a sandbox whose shell was killed keeps its proxy socket's place).
    pub async fn start(
        recipe: &ShellMaker,
        key: &ShellKey,
        runtime_dir: Option<PathBuf>,
    ) -> Result<Shell, SandboxError> {
        let name = format!(
            "deft-sandbox-{}-s{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let remove_on_drop = Vec::new();
        let owns_runtime_dir = runtime_dir.is_none();
        let runtime_dir = runtime_dir.unwrap_or_else(|| key.runtime.join(format!(".{name}")));
        std::fs::create_dir_all(&runtime_dir).map_err(SandboxError::io(format!(
            "creating {}",
            runtime_dir.display()
        )))?;
        // The sandbox's user enters both to reach the proxy's socket and its workspace (it
        // lists neither).
        for dir in [&runtime_dir, &key.runtime, &key.stage] {
            recipe.let_sandbox_enter(dir)?;
        }
        let defaults = Limits::default();
        let cgroup = recipe
            .cgroups()
            .create(&name, defaults.memory_bytes, defaults.processes)
            .map_err(SandboxError::io("creating the sandbox's cgroup"))?;
        let plan = LaunchPlan {
            bwrap: PathBuf::from("/usr/bin/bwrap"),
            cgroup_procs: cgroup
                .as_ref()
                .map(SandboxCgroup::procs_files)
                .unwrap_or_default(),
            args: recipe.bwrap_args(key, &runtime_dir),
            env: Vec::new(),
            run_as: recipe.run_as(),
        };
        let (ours, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .map_err(|e| SandboxError::Start(format!("control socket: {e}")))?;
        // The init's end blocks: it waits for requests and nothing else.
        rustix::io::ioctl_fionbio(&theirs, false)
            .map_err(|e| SandboxError::Start(format!("control socket: {e}")))?;
        let mut child = tokio::process::Command::new(recipe.helper())
            .args([inner::LAUNCH, inner::RESIDENT])
            .env_clear()
            .stdin(std::process::Stdio::from(theirs))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| {
                SandboxError::Start(format!("{}: {error}", recipe.helper().display()))
            })?;
        let control = Control::new(ours)?;
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let mut shell = Shell {
            child,
            control,
            remove_on_drop,
            runtime_dir,
            cgroup,
            cgroup_limits: (defaults.memory_bytes, defaults.processes),
        };
        if owns_runtime_dir {
            shell.remove_on_drop.push(shell.runtime_dir.clone());
        }
        let plan = serde_json::to_vec(&plan).expect("plans serialize");
        let ready = match shell.control.send_bytes(&plan, &[]).await {
            Ok(()) => shell.receive().await,
            Err(error) => Err(error),
        };
        match ready {
            Ok(FromInit::Ready) => {
                // What bubblewrap or the init says later is for deft's log.
                tokio::spawn(async move {
                    let mut said = String::new();
                    let _ = stderr.read_to_string(&mut said).await;
                    if !said.trim().is_empty() {
                        tracing::debug!(stderr = %said.trim(), "sandbox diagnostics");
                    }
                });
                Ok(shell)
            }
            other => {
                let _ = shell.child.start_kill();
                let mut said = String::new();
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    stderr.read_to_string(&mut said),
                )
                .await;
                let why = match other {
                    Ok(FromInit::Failed(why)) => why,
                    Ok(reply) => format!("unexpected answer {reply:?}"),
                    Err(error) => error.to_string(),
                };
                Err(SandboxError::Start(format!(
                    "bubblewrap did not start: {} ({why})",
                    said.trim()
                )))
            }
        }
    }

    /// Hands the shell to a sandbox, which from now on owns the runtime directory, moved to
    /// `state_dir` when that is free (bubblewrap bound the directory itself, not its name).
    pub fn adopt(&mut self, state_dir: &Path) -> PathBuf {
        self.remove_on_drop.clear();
        // Never onto a directory that is there: an earlier sandbox of the task may still be
        // removing its own by that name, and would remove this one's with it.
        if rustix::fs::renameat_with(
            rustix::fs::CWD,
            &self.runtime_dir,
            rustix::fs::CWD,
            state_dir,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .is_ok()
        {
            self.runtime_dir = state_dir.to_path_buf();
        }
        self.runtime_dir.clone()
    }

    /// Gives the shell its task: the limits, then the workspace named `workspace` in the stage.
    pub async fn attach(&mut self, workspace: &str, limits: &Limits) -> Result<(), SandboxError> {
        let wanted = (limits.memory_bytes, limits.processes);
        if let Some(cgroup) = &self.cgroup
            && wanted != self.cgroup_limits
        {
            cgroup
                .set_limits(wanted.0, wanted.1)
                .map_err(SandboxError::io("setting the sandbox's cgroup limits"))?;
            self.cgroup_limits = wanted;
        }
        let request = ToInit::Attach {
            workspace: workspace.to_owned(),
            // Without a cgroup, the process rlimit is the last resort.
            nproc: if self.cgroup.is_some() {
                0
            } else {
                limits.processes
            },
            fsize: limits.file_size_bytes,
            cpu: limits.cpu_seconds,
        };
        self.send(&request, None).await?;
        match self.receive().await? {
            FromInit::Done => Ok(()),
            FromInit::Failed(why) => Err(SandboxError::Start(why)),
            other => Err(SandboxError::Start(format!("unexpected answer {other:?}"))),
        }
    }

    pub async fn send(
        &self,
        message: &ToInit,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), SandboxError> {
        self.control.send(message, fd.as_slice()).await
    }

    pub async fn receive(&self) -> Result<FromInit, SandboxError> {
        self.control.receive().await
    }
}

/// deft's end of a resident init's control socket: a `SOCK_SEQPACKET` socket, driven through
/// tokio's stream type for its readiness only, every read and write one whole message of the
/// protocol in `crate::plan`. Dropping it ends the init (which watches the socket), and with
/// it everything in the sandbox.
#[derive(Debug)]
pub struct Control {
    socket: UnixStream,
}

/// How a command run through [`Control::run`] went: its (redacted, capped) output, and the
/// control channel back unless the command's end took the init with it.
#[derive(Debug)]
pub struct CommandRun {
    /// `None` after a timeout (the init was dropped, and with it the command) or when the
    /// init failed; the next command needs a new sandbox.
    pub control: Option<Control>,
    pub ending: Result<crate::Ending, SandboxError>,
    pub output: String,
    pub truncated: bool,
}

/// What the init answered to one command ([`Control::command`]).
#[derive(Debug)]
pub(crate) enum Answer {
    /// The command ended; the init waits for the next.
    Ended(crate::Ending),
    /// The init could not run the command and says why; it waits for the next.
    Refused(SandboxError),
    /// The command never started or the init is gone: the next command needs a new sandbox.
    Lost(SandboxError),
    /// The timeout came first: the caller drops the channel, which ends the init and with it
    /// everything the command started.
    TimedOut,
}

/// One command's answer and its (redacted, capped) output.
#[derive(Debug)]
pub(crate) struct Executed {
    pub answer: Answer,
    pub output: String,
    pub truncated: bool,
}

pub use crate::plan::Usage;

impl Control {
    fn new(socket: std::os::fd::OwnedFd) -> Result<Control, SandboxError> {
        let socket = std::os::unix::net::UnixStream::from(socket);
        socket
            .set_nonblocking(true)
            .map_err(SandboxError::io("control socket"))?;
        Ok(Control {
            socket: UnixStream::from_std(socket).map_err(SandboxError::io("control socket"))?,
        })
    }

    /// The uid of the process at the other end, as the kernel saw it connect (in deft's user
    /// namespace).
    pub fn peer_uid(&self) -> Option<u32> {
        rustix::net::sockopt::socket_peercred(&self.socket)
            .ok()
            .map(|credentials| credentials.uid.as_raw())
    }

    /// Waits for the init to say it is ready; its failure to start is the error, in its words.
    pub async fn ready(&self) -> Result<(), SandboxError> {
        match self.receive().await? {
            FromInit::Ready => Ok(()),
            FromInit::Failed(why) => Err(SandboxError::Start(why)),
            other => Err(SandboxError::Start(format!("unexpected answer {other:?}"))),
        }
    }

    /// What the sandbox's cgroup counted and enforces, as the init reads it.
    pub async fn usage(&self) -> Result<Usage, SandboxError> {
        self.send(&ToInit::Usage, &[]).await?;
        match self.receive().await? {
            FromInit::Usage(usage) => Ok(usage),
            other => Err(SandboxError::Start(format!("unexpected answer {other:?}"))),
        }
    }

    /// Starts a long-running program with `stdio` (its standard input, output and error) and
    /// returns at once; the init answers on this channel when the program ends.
    pub async fn spawn(
        &self,
        argv: &[String],
        env: &[(String, String)],
        cwd: &str,
        stdio: [BorrowedFd<'_>; 3],
    ) -> Result<(), SandboxError> {
        let request = ToInit::Spawn {
            argv: argv.to_vec(),
            env: env.to_vec(),
            cwd: cwd.to_owned(),
        };
        self.send(&request, &stdio).await
    }

    /// The socket itself, blocking again, for a process that waits on it in deft's stead.
    pub fn into_fd(self) -> Result<std::os::fd::OwnedFd, SandboxError> {
        let socket = self
            .socket
            .into_std()
            .map_err(SandboxError::io("control socket"))?;
        socket
            .set_nonblocking(false)
            .map_err(SandboxError::io("control socket"))?;
        Ok(socket.into())
    }

    /// Runs one command (in its directory inside, with exactly `env`) and streams its redacted
    /// output to `on_output`, keeping the request's `output_cap` of it. At the request's
    /// `timeout`, the control channel is dropped, which ends the init and every
    /// process the command started.
    pub async fn run(
        self,
        command: &crate::CheckedCommand<'_>,
        env: &[(String, String)],
        redactor: &deft_core::Redactor,
        on_output: &mut (dyn FnMut(&str) + Send),
    ) -> CommandRun {
        let Executed {
            answer,
            output,
            truncated,
        } = self.command(command, env, redactor, on_output).await;
        let (control, ending) = match answer {
            Answer::Ended(ending) => (Some(self), Ok(ending)),
            Answer::Refused(error) => (Some(self), Err(error)),
            Answer::Lost(error) => (None, Err(error)),
            Answer::TimedOut => {
                drop(self);
                (None, Ok(crate::Ending::TimedOut))
            }
        };
        CommandRun {
            control,
            ending,
            output,
            truncated,
        }
    }

    /// One command's run through the init, up to its answer or `request.timeout`, for
    /// [`Control::run`] and the bwrap backend's shells: what becomes of the channel after
    /// each answer is the caller's.
    pub(crate) async fn command(
        &self,
        command: &crate::CheckedCommand<'_>,
        env: &[(String, String)],
        redactor: &deft_core::Redactor,
        on_output: &mut (dyn FnMut(&str) + Send),
    ) -> Executed {
        let request = command.request();
        use crate::output::{CappedOutput, OutputText, Stderr, read_streams};
        let mut kept = CappedOutput::new(request.output_cap);
        let mut text = OutputText::new(redactor.stream());
        let started = async {
            let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(|e| SandboxError::io("making the output pipe")(e.into()))?;
            let message = ToInit::Exec {
                argv: request.argv.clone(),
                env: env.to_vec(),
                cwd: command.dir_inside(),
            };
            self.send(&message, &[writer.as_fd()]).await?;
            drop(writer);
            tokio::net::unix::pipe::Receiver::from_owned_fd(reader)
                .map_err(SandboxError::io("reading the command's output"))
        };
        let reader = match started.await {
            Ok(reader) => reader,
            Err(error) => {
                return Executed {
                    answer: Answer::Lost(error),
                    output: String::new(),
                    truncated: false,
                };
            }
        };
        let read_all = async {
            read_streams(
                reader,
                tokio::io::empty(),
                Stderr::Aside,
                &mut text,
                &mut kept,
                on_output,
            )
            .await;
            self.receive().await
        };
        let answer = match tokio::time::timeout(request.timeout, read_all).await {
            Ok(Ok(FromInit::Exited(code))) => Answer::Ended(crate::Ending::Exited(code)),
            Ok(Ok(FromInit::Signaled(signal))) => Answer::Ended(crate::Ending::Signaled(signal)),
            Ok(Ok(FromInit::Failed(why))) => Answer::Refused(SandboxError::Start(why)),
            Ok(Ok(other)) => Answer::Lost(SandboxError::Start(format!(
                "the sandbox's init answered {other:?} to a command"
            ))),
            // The init is gone (killed, or out of memory itself).
            Ok(Err(error)) => Answer::Lost(error),
            Err(_) => Answer::TimedOut,
        };
        let rest = text.finish();
        kept.push(&rest);
        if !rest.is_empty() {
            on_output(&String::from_utf8_lossy(&rest));
        }
        let (output, truncated) = kept.finish();
        Executed {
            answer,
            output,
            truncated,
        }
    }

    pub(crate) async fn send(
        &self,
        message: &ToInit,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), SandboxError> {
        let bytes = serde_json::to_vec(message).expect("requests serialize");
        if bytes.len() > MAX_MESSAGE {
            return Err(SandboxError::Start(format!(
                "the command and its environment take {} bytes, over the {MAX_MESSAGE} a \
                 sandbox accepts; pass large values in a file instead",
                bytes.len()
            )));
        }
        self.send_bytes(&bytes, fds).await
    }

    async fn send_bytes(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), SandboxError> {
        loop {
            self.socket
                .writable()
                .await
                .map_err(SandboxError::io("writing to the sandbox's init"))?;
            let sent = self.socket.try_io(Interest::WRITABLE, || {
                let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(3))];
                let mut ancillary = SendAncillaryBuffer::new(&mut space);
                if !fds.is_empty() {
                    ancillary.push(SendAncillaryMessage::ScmRights(fds));
                }
                rustix::net::sendmsg(
                    self.socket.as_fd(),
                    &[IoSlice::new(bytes)],
                    &mut ancillary,
                    SendFlags::NOSIGNAL,
                )
                .map_err(std::io::Error::from)
            });
            match sent {
                Ok(_) => return Ok(()),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(error) => {
                    return Err(SandboxError::io("writing to the sandbox's init")(error));
                }
            }
        }
    }

    pub(crate) async fn receive(&self) -> Result<FromInit, SandboxError> {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            self.socket
                .readable()
                .await
                .map_err(SandboxError::io("reading from the sandbox's init"))?;
            let received = self.socket.try_io(Interest::READABLE, || {
                rustix::net::recv(self.socket.as_fd(), &mut buffer[..], RecvFlags::empty())
                    .map(|(kept, _)| kept)
                    .map_err(std::io::Error::from)
            });
            match received {
                Ok(0) => return Err(SandboxError::Start("the sandbox's init ended".into())),
                Ok(length) => {
                    return serde_json::from_slice(&buffer[..length]).map_err(|error| {
                        SandboxError::Start(format!("the sandbox's init said nonsense: {error}"))
                    });
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(error) => {
                    return Err(SandboxError::io("reading from the sandbox's init")(error));
                }
            }
        }
    }
}

/// A `SOCK_SEQPACKET` socket deft listens on for one resident init to connect to (from inside
/// a container, where its standard input is the runtime's stream). Only its owner may connect:
/// the user the init runs as. Drop it (which removes the file) once the init connected, and
/// check who did ([`Control::peer_uid`]).
#[derive(Debug)]
pub struct ControlListener {
    /// tokio's stream listener type, for readiness and `accept` only (which are the same for
    /// a `SOCK_SEQPACKET` socket).
    socket: tokio::net::UnixListener,
    path: PathBuf,
}

impl ControlListener {
    /// Listens at `path` (of any length: a long one is bound through its directory), for
    /// `owner` (deft's own user when `None`) alone.
    pub fn bind(
        path: &Path,
        owner: Option<crate::user::HostUser>,
    ) -> Result<ControlListener, SandboxError> {
        use std::os::unix::ffi::OsStrExt as _;
        let failed = |error: rustix::io::Errno| {
            SandboxError::io(format!("listening at {}", path.display()))(error.into())
        };
        let socket = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .map_err(failed)?;
        let _ = std::fs::remove_file(path);
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(SandboxError::Start(format!(
                "{} names no socket in a directory",
                path.display()
            )));
        };
        let dir_fd = rustix::fs::open(
            dir,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(failed)?;
        let short = if path.as_os_str().as_bytes().len() < 100 {
            path.to_path_buf()
        } else {
            Path::new("/proc/self/fd")
                .join(std::os::fd::AsRawFd::as_raw_fd(&dir_fd).to_string())
                .join(name)
        };
        let address = rustix::net::SocketAddrUnix::new(short.as_path()).map_err(failed)?;
        rustix::net::bind(&socket, &address).map_err(failed)?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            let opened = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .and_then(|()| match owner {
                    Some(user) => std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid)),
                    None => Ok(()),
                });
            opened.map_err(SandboxError::io(format!(
                "giving {} to the sandbox",
                path.display()
            )))?;
        }
        rustix::net::listen(&socket, 1).map_err(failed)?;
        Ok(ControlListener {
            socket: tokio::net::UnixListener::from_std(std::os::unix::net::UnixListener::from(
                socket,
            ))
            .map_err(SandboxError::io(format!("listening at {}", path.display())))?,
            path: path.to_owned(),
        })
    }

    /// The first connection, once it comes.
    pub async fn accept(&self) -> Result<Control, SandboxError> {
        let (socket, _) = self
            .socket
            .accept()
            .await
            .map_err(SandboxError::io("accepting the sandbox's init"))?;
        let socket = socket
            .into_std()
            .map_err(SandboxError::io("accepting the sandbox's init"))?;
        Control::new(socket.into())
    }
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        // Killing bubblewrap kills the init (its parent-death signal), which ends the pid
        // namespace; the cgroup sweep catches anything that slipped out. The sweep waits for
        // the dead to leave the cgroup, so it runs aside.
        // Removing files right after the kill waits for the kernel to tear the sandbox's
        // mounts down, so that is aside too.
        let _ = self.child.start_kill();
        let cgroup = self.cgroup.take();
        let dirs = std::mem::take(&mut self.remove_on_drop);
        aside(move || {
            if let Some(cgroup) = cgroup {
                cgroup.remove();
            }
            for dir in dirs {
                let _ = std::fs::remove_dir_all(dir);
            }
        });
    }
}

/// Removes the runtime directories a deft that was killed outright left in `dir`.
fn sweep_stale_runtime_dirs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(".deft-sandbox-")
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Runs `work` on tokio's blocking threads when there is a runtime, else on a thread of its own.
pub(crate) fn aside(work: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(work);
        }
        Err(_) => {
            let _ = std::thread::Builder::new()
                .name("deft-sandbox-cleanup".into())
                .spawn(work);
        }
    }
}

/// Shells started ahead of tasks, by key.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    /// How many shells to keep ready for each key that has been asked for.
    size: usize,
    shells: Mutex<HashMap<ShellKey, Vec<Shell>>>,
    filling: Mutex<HashSet<ShellKey>>,
}

impl Pool {
    pub fn new(size: usize) -> Pool {
        Pool {
            size,
            ..Pool::default()
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn take(&self, key: &ShellKey) -> Option<Shell> {
        self.shells
            .lock()
            .expect("the pool's lock is never poisoned")
            .get_mut(key)
            .and_then(Vec::pop)
    }

    pub fn ready(&self, key: &ShellKey) -> usize {
        self.shells
            .lock()
            .expect("the pool's lock is never poisoned")
            .get(key)
            .map_or(0, Vec::len)
    }

    /// Starts shells for `key` in the background until `size` are ready (one filler per key).
    pub fn refill(self: &std::sync::Arc<Self>, recipe: std::sync::Arc<ShellMaker>, key: ShellKey) {
        if self.size == 0
            || !self
                .filling
                .lock()
                .expect("the pool's lock is never poisoned")
                .insert(key.clone())
        {
            return;
        }
        let pool = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(REFILL_DELAY).await;
            sweep_stale_runtime_dirs(&key.runtime);
            loop {
                let Some(strong) = pool.upgrade() else {
                    return;
                };
                if strong.ready(&key) >= strong.size {
                    break;
                }
                drop(strong);
                let started = Shell::start(&recipe, &key, None).await;
                let Some(strong) = pool.upgrade() else {
                    return;
                };
                match started {
                    Ok(shell) => strong
                        .shells
                        .lock()
                        .expect("the pool's lock is never poisoned")
                        .entry(key.clone())
                        .or_default()
                        .push(shell),
                    Err(error) => {
                        tracing::warn!(%error, "could not start a sandbox ahead of its task");
                        break;
                    }
                }
            }
            if let Some(strong) = pool.upgrade() {
                strong
                    .filling
                    .lock()
                    .expect("the pool's lock is never poisoned")
                    .remove(&key);
            }
        });
    }
}
