//! The two short programs of a sandbox's start, run by deft's own binary:
//!
//! - the launcher (host side): reads a [`LaunchPlan`] on stdin, joins the sandbox's cgroups
//!   and becomes bubblewrap;
//! - the init (inside, pid 1): either resident ([`crate::resident`], a task's commands), or
//!   for one long-running program: reads its environment and its command from stdin, starts the bridge from a
//!   loopback port to the egress proxy's socket, sets rlimits and the seccomp filters, runs
//!   the program and exits with its status (which ends the pid namespace and all in it).
//!
//! Both are synchronous and start before any runtime, as `deft __sandbox-launch` and
//! `deft __sandbox-init`. A third, `deft __sandbox-launch --await`, stands on the host for a
//! long-running program of a container's (see `deft-container`): it holds the program's
//! control socket, exits with the program's status, and its death ends the program.

use std::io::Read as _;
use std::os::fd::AsFd as _;
use std::os::unix::process::CommandExt as _;
use std::process::Command;

use crate::plan::{LaunchPlan, decode_env};

/// The verbs of the two programs.
pub const LAUNCH: &str = "__sandbox-launch";
pub const INIT: &str = "__sandbox-init";
/// The launcher's option for a program that talks over its standard input and output: the
/// plan and the environment come first on standard input, each after its length (4 bytes,
/// big-endian), and the rest of the stream is the program's.
pub const STDIO: &str = "--stdio";
/// The launcher's option for a resident sandbox (see [`crate::resident`]): standard input is
/// the control socket, whose first message is the plan.
pub const RESIDENT: &str = "--resident";
/// The launcher's option for the stand-in of a program that runs in a container: standard
/// input is the control socket of the program's init; the stand-in exits with the program's
/// status, and when it is killed, the socket closes and the init ends the program.
pub const AWAIT: &str = "--await";

/// The whole of a small program that answers the launcher's and the init's verbs, for a
/// crate's tests and benchmarks (the `deft` binary answers them in production); `name` is the
/// program's own, for its one diagnostic.
#[allow(clippy::print_stderr, reason = "the helper's one diagnostic")]
pub fn helper_main(name: &str) -> ! {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some(LAUNCH) => {
            let error = launch(&args[2..]);
            eprintln!("{name}: {error}");
            std::process::exit(125);
        }
        Some(INIT) => std::process::exit(init(&args[2..])),
        _ => {
            eprintln!("{name}: this helper is started by deft's sandbox only");
            std::process::exit(2);
        }
    }
}

/// Reads one length-prefixed part from standard input without reading past it: the bytes
/// after it belong to the next reader (bubblewrap's init, then the program).
fn read_part() -> std::io::Result<Vec<u8>> {
    // Unbuffered, unlike `std::io::stdin()`, whose buffer would swallow the program's input;
    // and descriptor 0 itself, not `/dev/stdin` opened again, which the sandbox's user may not
    // open (the pipe is deft's).
    let mut input = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let mut length = [0u8; 4];
    input.read_exact(&mut length)?;
    let mut part = vec![0u8; u32::from_be_bytes(length) as usize];
    input.read_exact(&mut part)?;
    Ok(part)
}

/// Runs the launcher; returns only on failure (it becomes bubblewrap).
pub fn launch(args: &[String]) -> std::io::Error {
    if args.iter().any(|arg| arg == AWAIT) {
        std::process::exit(await_program());
    }
    let outcome = if args.iter().any(|arg| arg == RESIDENT) {
        try_launch_resident()
    } else if args.iter().any(|arg| arg == STDIO) {
        try_launch_stdio()
    } else {
        Err(std::io::Error::other(format!("give {STDIO} or {RESIDENT}")))
    };
    match outcome {
        Ok(never) => match never {},
        Err(error) => error,
    }
}

/// The plan is the control socket's first message; the socket stays standard input, for the
/// init.
fn try_launch_resident() -> std::io::Result<std::convert::Infallible> {
    let mut buffer = vec![0u8; crate::plan::MAX_MESSAGE];
    let (_, length) = rustix::net::recv(
        std::io::stdin().as_fd(),
        &mut buffer[..],
        rustix::net::RecvFlags::empty(),
    )?;
    let plan: LaunchPlan =
        serde_json::from_slice(&buffer[..length]).map_err(std::io::Error::other)?;
    exec_bwrap(&plan)
}

/// Waits for the init on standard input to say how its program ended, and returns the exit
/// code a shell would give: the program's, 128 and its signal, 125 when the init failed, 137
/// when the init went away without a word (its container was killed).
fn await_program() -> i32 {
    // deft's death ends the stand-in, whose end closes the socket, which ends the program.
    if rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .is_err()
        || rustix::process::getppid().is_none()
    {
        return 137;
    }
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match rustix::net::recv(
            std::io::stdin().as_fd(),
            &mut buffer[..],
            rustix::net::RecvFlags::empty(),
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            Ok((0, _)) | Err(_) => return 137,
            Ok((length, _)) => {
                return match serde_json::from_slice(&buffer[..length.min(buffer.len())]) {
                    Ok(crate::plan::FromInit::Exited(code)) => code,
                    Ok(crate::plan::FromInit::Signaled(signal)) => 128 + signal,
                    _ => 125,
                };
            }
        }
    }
}

/// Gives the calling process (single-threaded, in a container) a user namespace and a mount
/// namespace of its own, as bubblewrap gives its init: uid and gid 1000 inside, mapped to the
/// process's own outside and to nothing else, with every capability over the new namespaces
/// and none over the container's. Mounts then made (the `.git` protection) stay in the new
/// mount namespace.
pub(crate) fn own_namespaces() -> Result<(), String> {
    let (uid, gid) = (rustix::process::getuid(), rustix::process::getgid());
    host::unshare_user_and_mounts().map_err(|error| {
        format!(
            "cannot make a user namespace in the container ({error}); the kernel or the \
             engine's seccomp profile forbids them, so deft's init could not protect \
             .git/hooks and .git/config"
        )
    })?;
    for (file, text) in [
        ("/proc/self/setgroups", "deny".to_owned()),
        ("/proc/self/uid_map", format!("1000 {} 1", uid.as_raw())),
        ("/proc/self/gid_map", format!("1000 {} 1", gid.as_raw())),
    ] {
        std::fs::write(file, text).map_err(|error| format!("writing {file}: {error}"))?;
    }
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
    )
    .map_err(|error| format!("making the sandbox's mounts private: {error}"))
}

/// The plan is the first part on standard input; the environment follows, for the init.
fn try_launch_stdio() -> std::io::Result<std::convert::Infallible> {
    let plan: LaunchPlan = serde_json::from_slice(&read_part()?).map_err(std::io::Error::other)?;
    exec_bwrap(&plan)
}

fn exec_bwrap(plan: &LaunchPlan) -> std::io::Result<std::convert::Infallible> {
    host::keep_only_standard_descriptors()?;
    for procs in &plan.cgroup_procs {
        std::fs::write(procs, std::process::id().to_string()).map_err(|error| {
            std::io::Error::other(format!("joining {}: {error}", procs.display()))
        })?;
    }
    let mut args = plan.args.clone();
    if let Some(user) = plan.run_as {
        host::stage_binds(&mut args)?;
        become_user(user)?;
    }
    Err(Command::new(&plan.bwrap).args(&args).env_clear().exec())
}

/// Where the launcher puts the sources of bubblewrap's binds that the sandbox's user could not
/// reach where they are (under root's home, a data dir only root may enter).
const STAGE: &str = "/run/deft-stage";

/// Whether bubblewrap, as the sandbox's user, reaches `source` where it is: the system's
/// read-only directories and the kernel's files always are, the rest is staged.
fn reachable_as_is(source: &str) -> bool {
    [
        "/usr", "/etc", "/opt", "/dev", "/proc", "/bin", "/sbin", "/lib",
    ]
    .iter()
    .any(|root| source == *root || source.starts_with(&format!("{root}/")))
}

/// Drops every privilege for the sandbox's user: no supplementary groups, its gid, its uid.
/// The launcher is single-threaded, so the thread's credentials are the process's.
fn become_user(user: crate::user::HostUser) -> std::io::Result<()> {
    use rustix::process::{Gid, Uid};
    let gid = Gid::from_raw(user.gid);
    let uid = Uid::from_raw(user.uid);
    rustix::thread::set_thread_groups(&[])?;
    rustix::thread::set_thread_res_gid(gid, gid, gid)?;
    rustix::thread::set_thread_res_uid(uid, uid, uid)?;
    if rustix::process::geteuid().is_root() {
        return Err(std::io::Error::other("the launcher is still root"));
    }
    Ok(())
}

/// The launcher's calls that touch what no safe API owns: the process's descriptors and its
/// mount namespace. This is the workspace's one module allowed `unsafe`.
#[allow(unsafe_code)]
mod host {
    use super::{STAGE, reachable_as_is};

    /// Marks every descriptor above standard error close-on-exec, so that nothing deft
    /// inherited from whoever started it (a terminal's, a supervisor's, a directory's) reaches
    /// bubblewrap, which passes every open descriptor on into the sandbox: a directory's would
    /// let a command open files beside it, outside every mount.
    ///
    /// Sound because the launcher is single-threaded, owns nothing above 2 that it uses after
    /// this, and execs at once; close-on-exec closes nothing before that.
    pub(super) fn keep_only_standard_descriptors() -> std::io::Result<()> {
        // SAFETY: CLOSE_RANGE_CLOEXEC only sets a flag on descriptors; no memory is touched.
        // The raw system call, not the C library's wrapper, which older C libraries lack.
        let marked = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        if marked == 0 {
            return Ok(());
        }
        // Kernels before 5.11: one descriptor at a time, as `/proc` lists them.
        let listed: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
            .filter(|fd| *fd > 2)
            .collect();
        for fd in listed {
            // SAFETY: as above; a descriptor closed since the listing (the directory's own)
            // makes this fail with EBADF, which is ignored.
            unsafe {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        Ok(())
    }

    /// A new user namespace and mount namespace for the calling process (a container's init,
    /// before it starts any thread).
    ///
    /// Sound because the process is single-threaded then and the flags name only namespaces:
    /// no memory, descriptor table or file system information shared with another thread
    /// changes under it.
    pub(crate) fn unshare_user_and_mounts() -> std::io::Result<()> {
        use rustix::thread::UnshareFlags;
        // SAFETY: see above; neither CLONE_FILES nor CLONE_FS is among the flags.
        unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWUSER | UnshareFlags::NEWNS)? };
        Ok(())
    }

    /// In a mount namespace of the launcher's own (root's still), binds each source of
    /// bubblewrap's binds that the sandbox's user could not reach where it is under
    /// [`STAGE`], and points the arguments there: bubblewrap, started as that user, then
    /// mounts them into the sandbox as before. The host's mounts are untouched.
    pub(super) fn stage_binds(args: &mut [String]) -> std::io::Result<()> {
        use rustix::mount::{MountFlags, MountPropagationFlags};
        // SAFETY: only the mount namespace is unshared (not the descriptor table or the file
        // system information other threads share), and the launcher is single-threaded.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS)? };
        rustix::mount::mount_change(
            "/",
            MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
        )?;
        std::fs::create_dir_all(STAGE)?;
        rustix::mount::mount(
            "deft-stage",
            STAGE,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            c"mode=0755,size=1m",
        )?;
        let mut staged = 0;
        let mut i = 0;
        while i + 2 < args.len() {
            let is_bind = matches!(
                args[i].as_str(),
                "--bind" | "--ro-bind" | "--bind-try" | "--ro-bind-try"
            );
            if !is_bind || reachable_as_is(&args[i + 1]) {
                i += 1;
                continue;
            }
            let source = args[i + 1].clone();
            let Ok(meta) = std::fs::metadata(&source) else {
                // A `-try` source that is not there: bubblewrap skips it as before.
                i += 3;
                continue;
            };
            let target = format!("{STAGE}/{staged}");
            staged += 1;
            if meta.is_dir() {
                std::fs::create_dir(&target)?;
            } else {
                std::fs::File::create(&target)?;
            }
            rustix::mount::mount_bind_recursive(source.as_str(), target.as_str())
                .map_err(|error| std::io::Error::other(format!("staging {source}: {error}")))?;
            args[i + 1] = target;
            i += 3;
        }
        Ok(())
    }
}

/// Options of the init, as `--name value` pairs before `--` and the command.
#[derive(Debug, Default)]
struct InitOptions {
    proxy_socket: Option<String>,
    proxy_port: u16,
    /// In a container: the control socket's path (see [`crate::resident::serve`]).
    control: Option<String>,
    nproc: u64,
    fsize: u64,
    cpu: u64,
    cwd: String,
    /// No command: serve deft's requests (see [`crate::resident`]).
    resident: bool,
    /// The command comes on standard input, after the environment (it may hold secrets).
    argv_on_stdin: bool,
    argv: Vec<String>,
}

fn parse_init(args: &[String]) -> Result<InitOptions, String> {
    let mut options = InitOptions {
        cwd: "/workspace".into(),
        ..InitOptions::default()
    };
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            options.argv = iter.cloned().collect();
            break;
        }
        let value = iter.next().ok_or_else(|| format!("{arg} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{arg}: `{value}` is not a number"))
        };
        match arg.as_str() {
            "--proxy-socket" => options.proxy_socket = Some(value.clone()),
            "--proxy-port" => options.proxy_port = number()? as u16,
            "--nproc" => options.nproc = number()?,
            "--fsize" => options.fsize = number()?,
            "--cpu" => options.cpu = number()?,
            "--cwd" => options.cwd = value.clone(),
            "--control" => options.control = Some(value.clone()),
            "--resident" => options.resident = value == "1",
            "--argv-on-stdin" => options.argv_on_stdin = value == "1",
            other => return Err(format!("unknown option {other}")),
        }
    }
    if options.argv.is_empty() && !options.resident && !options.argv_on_stdin {
        return Err("no command after `--`".into());
    }
    Ok(options)
}

/// The command for `argv` (not empty) in `cwd`, with exactly `env`.
pub(crate) fn program(argv: &[String], env: Vec<(String, String)>, cwd: &str) -> Command {
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .env_clear()
        .envs(env)
        .current_dir(cwd);
    command
}

/// A program that could not start, as a shell reports it: the exit code (127 when it is not
/// there, else 126) and the line for its standard error.
pub(crate) fn not_started(program: &str, error: &std::io::Error) -> (i32, String) {
    let code = if error.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    (
        code,
        format!("deft sandbox: cannot run `{program}`: {error}"),
    )
}

/// Runs the init; returns the exit code for the sandbox.
#[allow(
    clippy::print_stderr,
    reason = "the init's diagnostics go to the sandbox's stderr, which deft logs"
)]
pub fn init(args: &[String]) -> i32 {
    match try_init(args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("deft sandbox: {message}");
            125
        }
    }
}

#[allow(
    clippy::print_stderr,
    reason = "a command that cannot start is reported like a shell does"
)]
fn try_init(args: &[String]) -> Result<i32, String> {
    let mut options = parse_init(args)?;
    let limits = Rlimits {
        nproc: options.nproc,
        fsize: options.fsize,
        cpu: options.cpu,
    };
    if options.resident {
        let proxy = options
            .proxy_socket
            .clone()
            .map(|socket| (options.proxy_port, socket));
        return crate::resident::serve(proxy, limits, options.control.take());
    }
    // The program's environment comes first on standard input; the rest is the program's.
    let blob = read_part().map_err(|e| format!("reading the environment: {e}"))?;
    let env = decode_env(&blob);
    drop(blob);
    if options.argv_on_stdin {
        let blob = read_part().map_err(|e| format!("reading the command: {e}"))?;
        options.argv = serde_json::from_slice(&blob).map_err(|e| format!("the command: {e}"))?;
        if options.argv.is_empty() {
            return Err("no command".into());
        }
    }
    // bubblewrap asks for this too, but only once its child runs; a deft killed in between
    // would leave the sandbox behind.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| format!("prctl: {e}"))?;
    // The init holds the environment in memory; no process of the sandbox may read it.
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(|e| format!("prctl: {e}"))?;

    watch_for_deft(
        std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("stdout: {e}"))?,
    )?;
    if let Some(socket) = options.proxy_socket.clone() {
        start_bridge(options.proxy_port, socket)?;
    }
    set_limits(&limits)?;
    for filter in crate::seccomp::filters()? {
        seccompiler::apply_filter(&filter).map_err(|e| format!("seccomp: {e}"))?;
    }

    let child = match program(&options.argv, env, &options.cwd).spawn() {
        Ok(child) => child,
        Err(error) => {
            let (code, line) = not_started(&options.argv[0], &error);
            eprintln!("{line}");
            return Ok(code);
        }
    };
    let command_pid = child.id() as i32;
    // As pid 1, reap every orphan until the command itself ends.
    loop {
        match rustix::process::wait(rustix::process::WaitOptions::empty()) {
            Ok(Some((pid, status))) if pid.as_raw_nonzero().get() == command_pid => {
                if let Some(code) = status.exit_status() {
                    return Ok(code);
                }
                return Ok(128 + status.terminating_signal().unwrap_or(0));
            }
            Ok(_) => {}
            Err(error) => return Err(format!("waiting for the command: {error}")),
        }
    }
}

/// Per-process limits of commands, 0 meaning none.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rlimits {
    pub nproc: u64,
    pub fsize: u64,
    pub cpu: u64,
}

pub(crate) fn set_limits(options: &Rlimits) -> Result<(), String> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let limit = |resource: Resource, value: u64| {
        setrlimit(
            resource,
            Rlimit {
                current: Some(value),
                maximum: Some(value),
            },
        )
        .map_err(|e| format!("rlimit {resource:?}: {e}"))
    };
    limit(Resource::Core, 0)?;
    if options.fsize > 0 {
        limit(Resource::Fsize, options.fsize)?;
    }
    if options.cpu > 0 {
        limit(Resource::Cpu, options.cpu)?;
    }
    if options.nproc > 0 {
        limit(Resource::Nproc, options.nproc)?;
    }
    Ok(())
}

/// Ends the sandbox when deft is gone. `stdout` is a pipe or socket whose other end only deft
/// holds; when deft dies, it reports an error or hang-up to a poll, and the init exits, which
/// ends the pid namespace and everything in it. (The parent-death signal alone misses a deft
/// killed while bubblewrap is still starting.)
pub(crate) fn watch_for_deft(stdout: std::os::fd::OwnedFd) -> Result<(), String> {
    std::thread::Builder::new()
        .name("deft-lifeline".into())
        .spawn(move || {
            use rustix::event::{PollFd, PollFlags, poll};
            loop {
                let mut fds = [PollFd::new(&stdout, PollFlags::empty())];
                if poll(&mut fds, None).is_ok()
                    && fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP)
                {
                    std::process::exit(137);
                }
            }
        })
        .map_err(|e| format!("lifeline thread: {e}"))?;
    Ok(())
}

/// Forwards connections to `127.0.0.1:port` inside the sandbox to the egress proxy's socket,
/// on a thread of its own that the seccomp filter (applied later, to the main thread) spares.
pub(crate) fn start_bridge(port: u16, socket: String) -> Result<(), String> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| format!("proxy bridge on port {port}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("deft-bridge".into())
        .spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                loop {
                    let Ok((mut client, _)) = listener.accept().await else {
                        continue;
                    };
                    let socket = socket.clone();
                    tokio::spawn(async move {
                        if let Ok(mut proxy) = tokio::net::UnixStream::connect(&socket).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut proxy).await;
                        }
                    });
                }
            });
        })
        .map_err(|e| format!("bridge thread: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_options_parse() {
        let args: Vec<String> = [
            "--proxy-port",
            "3128",
            "--nproc",
            "64",
            "--",
            "sh",
            "-c",
            "true",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let options = parse_init(&args).unwrap();
        assert_eq!(
            (options.proxy_port, options.nproc, options.argv.len()),
            (3128, 64, 3)
        );
        assert!(parse_init(&["--nproc".into()]).is_err());
        assert!(
            parse_init(&["--".into()])
                .unwrap_err()
                .contains("no command")
        );
    }
}
