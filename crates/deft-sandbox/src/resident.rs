//! The resident init (inside, pid 1): a sandbox started ahead of its task that runs the task's
//! commands one after another, so a command costs a fork and an exec instead of a fresh set of
//! namespaces (see `crate::shell` for deft's side).
//!
//! Its life: at start it keeps `CAP_SYS_ADMIN` (over its own user namespace only) in one
//! thread, the mounter, and drops every capability in the others; it starts the proxy bridge,
//! applies the seccomp filter to its main thread and says it is ready. On `attach` the mounter
//! binds the task's workspace from the stage (a directory of workspaces bound at start) at
//! `/workspace` and unmounts the stage, so no other workspace stays reachable. Before each
//! command the mounter makes every repository's `.git/hooks` and `.git/config` read-only, since
//! repositories appear in the workspace after the sandbox started. The command runs from the
//! filtered main thread, without capabilities; when it ends, everything else in the pid
//! namespace is killed, so nothing a command started outlives it.

use std::io::Write as _;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;

use rustix::io::Errno;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendFlags, recvmsg, send};

use crate::plan::{FromInit, MAX_MESSAGE, ToInit, Usage};

/// Where the directory of workspaces is bound until the task's is attached.
const STAGE: &str = "/.deft/stage";
const WORKSPACE: &str = "/workspace";
/// Repositories whose `.git` is protected at most: each costs two mounts, and a command that
/// made thousands of `.git` directories would otherwise fill the mount table.
const MAX_REPOSITORIES: usize = 256;

/// Runs the resident init; returns the exit code for the sandbox.
///
/// `control` names the control socket's path when the init runs in a container (see
/// `deft-container`): standard input is then the runtime's stream, so the init connects to
/// the socket deft listens on in a directory bound into the container. There the task's
/// workspace is already at `/workspace`, and the init first makes a user and mount namespace
/// of its own ([`crate::inner::own_namespaces`]): uid 1000 inside, its own uid outside, and the
/// `CAP_SYS_ADMIN` over its own mounts that protecting `.git` needs, which the container's
/// runtime gives no capability for.
pub(crate) fn serve(
    proxy: Option<(u16, String)>,
    limits: crate::inner::Rlimits,
    control: Option<String>,
) -> Result<i32, String> {
    let contained = control.is_some();
    let control = match &control {
        Some(path) => connect(path)?,
        // The control socket is standard input; commands get /dev/null there instead.
        None => std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("control socket: {e}"))?,
    };
    let mounter = match start(&control, proxy, &limits, contained) {
        Ok(mounter) => mounter,
        Err(why) => {
            // Said to deft too, which reports it with the sandbox's start.
            let _ = answer(&control, &FromInit::Failed(why.clone()));
            return Err(why);
        }
    };
    answer(&control, &FromInit::Ready)?;

    let mut buffer = vec![0u8; MAX_MESSAGE];
    // In a container the workspace was bound at `/workspace` before the init started.
    let mut attached = contained;
    // CPU time is limited per command, not on the init, whose own time (the proxy bridge's
    // copying) grows with the task.
    let mut command_cpu = if contained { limits.cpu } else { 0 };
    loop {
        let Some((message, mut fds)) = receive(&control, &mut buffer)? else {
            // deft closed the socket: the sandbox is over.
            return Ok(0);
        };
        let reply = match message {
            ToInit::Attach { .. } if contained => {
                FromInit::Failed("a container's workspace is bound when it starts".into())
            }
            ToInit::Attach {
                workspace,
                nproc,
                fsize,
                cpu,
            } => mounter
                .run(MountWork::Attach(workspace))
                .and_then(|()| {
                    crate::inner::set_limits(&crate::inner::Rlimits {
                        nproc,
                        fsize,
                        cpu: 0,
                    })
                })
                .map_or_else(FromInit::Failed, |()| {
                    attached = true;
                    command_cpu = cpu;
                    FromInit::Done
                }),
            ToInit::Usage => FromInit::Usage(usage()),
            ToInit::Exec { .. } | ToInit::Spawn { .. } if !attached => {
                FromInit::Failed("no workspace is attached yet".into())
            }
            ToInit::Exec { argv, env, cwd } => match (fds.pop(), mounter.run(MountWork::Refresh)) {
                (_, Err(why)) => FromInit::Failed(why),
                (None, _) => FromInit::Failed("no output descriptor came with the command".into()),
                (Some(output), Ok(())) => {
                    run(&argv, env, &cwd, Streams::Output(output), command_cpu)
                }
            },
            ToInit::Spawn { argv, env, cwd } => {
                match (
                    <[OwnedFd; 3]>::try_from(fds),
                    mounter.run(MountWork::Refresh),
                ) {
                    (_, Err(why)) => FromInit::Failed(why),
                    (Err(_), _) => FromInit::Failed(
                        "a program needs its standard input, output and error".into(),
                    ),
                    (Ok(streams), Ok(())) => {
                        run(&argv, env, &cwd, Streams::Own(streams), command_cpu)
                    }
                }
            }
        };
        answer(&control, &reply)?;
    }
}

/// Everything before the init says it is ready: namespaces (in a container), capabilities
/// per thread, the lifeline, the proxy bridge, rlimits and the seccomp filter.
fn start(
    control: &OwnedFd,
    proxy: Option<(u16, String)>,
    limits: &crate::inner::Rlimits,
    contained: bool,
) -> Result<Mounter, String> {
    if contained {
        crate::inner::own_namespaces()?;
    }
    let null = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    rustix::stdio::dup2_stdin(&null).map_err(|e| format!("replacing stdin: {e}"))?;
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| format!("prctl: {e}"))?;
    // The init holds commands' environments in memory; no process of the sandbox may read it.
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(|e| format!("prctl: {e}"))?;

    // Capabilities belong to threads: the mounter keeps the one it needs; this thread, from
    // which commands are started, empties even its bounding set (the reason bubblewrap gave
    // it CAP_SETPCAP), so no program it starts could ever regain one.
    let mounter = Mounter::start()?;
    // Every one: a user namespace of the init's own (a container's) starts with a full
    // bounding set. CAP_SETPCAP, which dropping needs, goes last; capabilities this kernel
    // does not know cannot be dropped, nor had.
    use rustix::thread::CapabilitySet;
    for capability in CapabilitySet::all().iter() {
        if capability == CapabilitySet::SETPCAP {
            continue;
        }
        let dropped = rustix::thread::remove_capability_from_bounding_set(capability);
        if capability == CapabilitySet::SYS_ADMIN {
            dropped.map_err(|e| format!("capabilities: {e}"))?;
        }
    }
    rustix::thread::remove_capability_from_bounding_set(CapabilitySet::SETPCAP)
        .map_err(|e| format!("capabilities: {e}"))?;
    rustix::thread::clear_ambient_capability_set().map_err(|e| format!("capabilities: {e}"))?;
    rustix::thread::set_capabilities(
        None,
        rustix::thread::CapabilitySets {
            effective: rustix::thread::CapabilitySet::empty(),
            permitted: rustix::thread::CapabilitySet::empty(),
            inheritable: rustix::thread::CapabilitySet::empty(),
        },
    )
    .map_err(|e| format!("capabilities: {e}"))?;
    if contained {
        // Nothing would be protected later if mounts were refused here (a container engine's
        // AppArmor profile does): refuse the sandbox now instead.
        mounter.run(MountWork::Probe)?;
        mounter.run(MountWork::MaskProc)?;
    }
    crate::inner::watch_for_deft(control.try_clone().map_err(|e| e.to_string())?)?;
    if let Some((port, socket)) = proxy {
        crate::inner::start_bridge(port, socket)?;
    }
    // A container's init gets the task's CPU time as an option; it is for commands only.
    crate::inner::set_limits(&crate::inner::Rlimits {
        cpu: if contained { 0 } else { limits.cpu },
        ..*limits
    })?;
    for filter in crate::seccomp::filters()? {
        seccompiler::apply_filter(&filter).map_err(|e| format!("seccomp: {e}"))?;
    }
    Ok(mounter)
}

/// Connects to deft's control socket at `path` (a `SOCK_SEQPACKET` listener).
fn connect(path: &str) -> Result<OwnedFd, String> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let socket = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| format!("control socket: {e}"))?;
    let address = SocketAddrUnix::new(path).map_err(|e| format!("control socket {path}: {e}"))?;
    rustix::net::connect(&socket, &address)
        .map_err(|e| format!("connecting to deft at {path}: {e}"))?;
    Ok(socket)
}

/// Reads the cgroup the init runs in, as a container shows it: the container's own cgroup at
/// the root of `/sys/fs/cgroup` (v2 with a cgroup namespace; v1, where the runtime binds each
/// controller's directory there), or below it at the path `/proc/self/cgroup` names.
fn usage() -> Usage {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let read = |controller: &str, file: &str| -> Option<String> {
        let (root, path) = if controller.is_empty() {
            let path = own.lines().find_map(|line| line.strip_prefix("0::"));
            ("/sys/fs/cgroup".to_owned(), path)
        } else {
            let path = own.lines().find_map(|line| {
                let mut parts = line.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                controllers
                    .split(',')
                    .any(|c| c == controller)
                    .then_some(path)
            });
            (format!("/sys/fs/cgroup/{controller}"), path)
        };
        let below = path.map(|path| format!("{root}/{}/{file}", path.trim_start_matches('/')));
        below
            .into_iter()
            .chain([format!("{root}/{file}")])
            .find_map(|candidate| std::fs::read_to_string(candidate).ok())
    };
    let counter = |text: Option<String>, name: &str| {
        text?.lines().find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.trim().parse().ok())
        })
    };
    let number = |text: Option<String>| text?.trim().parse::<u64>().ok();
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Usage {
            oom_kills: counter(read("", "memory.events"), "oom_kill"),
            pids_refused: counter(read("", "pids.events"), "max"),
            memory_max: number(read("", "memory.max")),
            pids_max: number(read("", "pids.max")),
        }
    } else {
        Usage {
            oom_kills: counter(read("memory", "memory.oom_control"), "oom_kill"),
            pids_refused: counter(read("pids", "pids.events"), "max"),
            // v1 says "no limit" with the largest page-aligned number.
            memory_max: number(read("memory", "memory.limit_in_bytes"))
                .filter(|bytes| *bytes < i64::MAX as u64 / 2),
            pids_max: number(read("pids", "pids.max")),
        }
    }
}

fn receive(control: &OwnedFd, buffer: &mut [u8]) -> Result<Option<(ToInit, Vec<OwnedFd>)>, String> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut ancillary = RecvAncillaryBuffer::new(&mut space);
    let received = loop {
        match recvmsg(
            control,
            &mut [std::io::IoSliceMut::new(buffer)],
            &mut ancillary,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(Errno::INTR) => continue,
            other => break other.map_err(|e| format!("reading the control socket: {e}"))?,
        }
    };
    if received.bytes == 0 {
        return Ok(None);
    }
    let mut fds = Vec::new();
    for message in ancillary.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    let message = serde_json::from_slice(&buffer[..received.bytes.min(buffer.len())])
        .map_err(|e| format!("a message deft sent is not understood: {e}"))?;
    Ok(Some((message, fds)))
}

fn answer(control: &OwnedFd, reply: &FromInit) -> Result<(), String> {
    let bytes = serde_json::to_vec(reply).expect("replies serialize");
    loop {
        match send(control, &bytes, SendFlags::NOSIGNAL) {
            Err(Errno::INTR) => continue,
            Ok(_) => return Ok(()),
            // deft is gone; so is the sandbox.
            Err(error) => return Err(format!("answering deft: {error}")),
        }
    }
}

/// Where a command's standard streams go.
enum Streams {
    /// A command's: no input, output and errors into the one descriptor, in the order written.
    Output(OwnedFd),
    /// A long-running program's: standard input, output and error of its own.
    Own([OwnedFd; 3]),
}

/// Runs one command to its end, then ends everything else in the sandbox.
fn run(
    argv: &[String],
    env: Vec<(String, String)>,
    cwd: &str,
    streams: Streams,
    cpu_seconds: u64,
) -> FromInit {
    let Some(program) = argv.first() else {
        return FromInit::Failed("an empty command".into());
    };
    let (stdin, stdout, stderr) = match streams {
        Streams::Output(output) => match (output.try_clone(), output.try_clone()) {
            (Ok(stdout), Ok(stderr)) => (Stdio::null(), stdout, stderr),
            _ => return FromInit::Failed("cannot duplicate the output descriptor".into()),
        },
        Streams::Own([stdin, stdout, stderr]) => (Stdio::from(stdin), stdout, stderr),
    };
    let Ok(errors) = stderr.try_clone() else {
        return FromInit::Failed("cannot duplicate the error descriptor".into());
    };
    let child = crate::inner::program(argv, env, cwd)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .spawn();
    let child = match child {
        Ok(child) => child,
        Err(error) => {
            let (code, line) = crate::inner::not_started(program, &error);
            let _ = writeln!(std::fs::File::from(errors), "{line}");
            return FromInit::Exited(code);
        }
    };
    drop(errors);
    if cpu_seconds > 0 {
        // Set from outside, a moment after the start: what the command may have run by then
        // is microseconds of the hour.
        let limit = rustix::process::Rlimit {
            current: Some(cpu_seconds),
            maximum: Some(cpu_seconds),
        };
        if let Err(error) = rustix::process::prlimit(
            Some(rustix::process::Pid::from_child(&child)),
            rustix::process::Resource::Cpu,
            limit,
        ) && error != Errno::SRCH
        {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(&child),
                rustix::process::Signal::KILL,
            );
        }
    }
    let command = child.id() as i32;
    // As pid 1, reap every orphan until the command itself ends.
    let ending = loop {
        match rustix::process::wait(rustix::process::WaitOptions::empty()) {
            Ok(Some((pid, status))) if pid.as_raw_nonzero().get() == command => {
                break match (status.exit_status(), status.terminating_signal()) {
                    (Some(code), _) => FromInit::Exited(code),
                    (None, Some(signal)) => FromInit::Signaled(signal),
                    (None, None) => FromInit::Exited(-1),
                };
            }
            Ok(_) | Err(Errno::INTR) => {}
            Err(error) => break FromInit::Failed(format!("waiting for the command: {error}")),
        }
    };
    end_everything_else();
    ending
}

/// Kills every process of the pid namespace but this one, and reaps them, until none is left.
/// A process forked between one look at `/proc` and the kills is caught by the next look.
fn end_everything_else() {
    loop {
        let mut alive = false;
        let Ok(entries) = std::fs::read_dir("/proc") else {
            // Unable to tell what is left: the init ends, and with it the pid namespace and
            // everything in it; deft starts another sandbox for the next command.
            std::process::exit(137);
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<i32>().ok())
                .filter(|pid| *pid > 1)
                .and_then(rustix::process::Pid::from_raw)
            else {
                continue;
            };
            alive = true;
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        while let Ok(Some(_)) = rustix::process::wait(rustix::process::WaitOptions::NOHANG) {}
        if !alive {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// What the mounter does.
enum MountWork {
    Attach(String),
    Refresh,
    /// Whether the mounter can make a read-only bind at all.
    Probe,
    /// `/proc` as bubblewrap's sandboxes have it, whatever the container engine did.
    MaskProc,
}

/// The one thread of the init that may mount, asked over a channel.
struct Mounter {
    work: mpsc::Sender<MountWork>,
    done: mpsc::Receiver<Result<(), String>>,
}

impl Mounter {
    fn start() -> Result<Mounter, String> {
        let (work, jobs) = mpsc::channel::<MountWork>();
        let (results, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("deft-mounter".into())
            .spawn(move || {
                // It needs nothing but CAP_SYS_ADMIN, and never runs a program.
                let _ = rustix::thread::clear_ambient_capability_set();
                let _ = rustix::thread::set_capabilities(
                    None,
                    rustix::thread::CapabilitySets {
                        effective: rustix::thread::CapabilitySet::SYS_ADMIN,
                        permitted: rustix::thread::CapabilitySet::SYS_ADMIN,
                        inheritable: rustix::thread::CapabilitySet::empty(),
                    },
                );
                while let Ok(job) = jobs.recv() {
                    let result = match job {
                        MountWork::Attach(name) => attach(&name),
                        MountWork::Refresh => protect_git_dirs(),
                        MountWork::Probe => probe(),
                        MountWork::MaskProc => mask_proc(),
                    };
                    if results.send(result).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| format!("mounter thread: {e}"))?;
        Ok(Mounter { work, done })
    }

    fn run(&self, job: MountWork) -> Result<(), String> {
        self.work
            .send(job)
            .map_err(|_| "the mounter thread is gone".to_owned())?;
        self.done
            .recv()
            .map_err(|_| "the mounter thread is gone".to_owned())?
    }
}

fn attach(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(format!("`{name}` is not a workspace's name"));
    }
    let source = Path::new(STAGE).join(name);
    match std::fs::symlink_metadata(&source) {
        Ok(metadata) if metadata.is_dir() => {}
        _ => return Err(format!("the workspace `{name}` is not a directory")),
    }
    rustix::mount::mount_bind(&source, WORKSPACE)
        .map_err(|e| format!("mounting the workspace: {e}"))?;
    rustix::mount::unmount(STAGE, rustix::mount::UnmountFlags::DETACH)
        .map_err(|e| format!("hiding the other workspaces: {e}"))?;
    protect_git_dirs()
}

/// Makes each repository's `.git/hooks` and `.git/config` read-only (a command could otherwise
/// make the host's git run code), checking again what is already protected.
///
/// Commands of this sandbox are all dead when this runs, but an MCP server of the task (a
/// sandbox of its own over the same workspace) may be changing it meanwhile. So every path is
/// opened once, without following a link, and the mount is made on that very descriptor: a
/// path swapped for a link between check and mount changes nothing. What cannot be opened
/// that way (a link, an unreadable `.git`, past the first 256 repositories) is skipped rather
/// than refused, so a command cannot lock its task out of the sandbox: deft's git on the host
/// checks every clone before it touches it (`deft_forge::ensure_untampered`).
fn protect_git_dirs() -> Result<(), String> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let workspace = rustix::fs::open(
        WORKSPACE,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("{WORKSPACE}: {e}"))?;
    let beneath = |dir: &OwnedFd, path: &str, flags: OFlags| {
        rustix::fs::openat2(
            dir,
            path,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC | flags,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
        )
    };
    let entries = std::fs::read_dir(WORKSPACE).map_err(|e| format!("listing {WORKSPACE}: {e}"))?;
    let mut repositories = 0;
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Ok(git) = beneath(&workspace, &format!("{name}/.git"), OFlags::DIRECTORY) else {
            continue;
        };
        repositories += 1;
        if repositories > MAX_REPOSITORIES {
            break;
        }
        for part in ["hooks", "config"] {
            let Ok(target) = beneath(&git, part, OFlags::empty()) else {
                continue;
            };
            let protected = if mount_id(&target)? != mount_id(&git)? {
                ensure_read_only(&target)
            } else {
                read_only_bind(&target)
            };
            protected.map_err(|error| format!("making {name}/.git/{part} read-only: {error}"))?;
        }
    }
    Ok(())
}

/// Makes a read-only bind of a scratch directory and takes it down again: what protecting a
/// repository does, where nothing depends on it.
fn probe() -> Result<(), String> {
    use rustix::fs::{Mode, OFlags};
    let dir = format!("/tmp/.deft-mount-probe-{}", std::process::id());
    std::fs::create_dir(&dir).map_err(|e| format!("making {dir}: {e}"))?;
    let outcome = rustix::fs::open(
        dir.as_str(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .and_then(|target| read_only_bind(&target))
    .and_then(|()| rustix::mount::unmount(dir.as_str(), rustix::mount::UnmountFlags::DETACH));
    let _ = std::fs::remove_dir(&dir);
    outcome.map_err(|error| {
        format!(
            "the sandbox's init cannot make read-only mounts ({error}), so it could not protect \
             each repository's .git/hooks and .git/config; a security profile of the container \
             engine (AppArmor's, SELinux's) forbids mounts"
        )
    })
}

/// Makes `/proc` what bubblewrap's sandboxes see (`crate::bwrap`'s lists): the kernel's
/// settings and devices' interfaces read-only, the files that read kernel memory or keys
/// covered with `/dev/null`, their directories with an empty read-only tmpfs. A container
/// engine does some of this, and which part varies (Podman ignores the API's `MaskedPaths`),
/// so the init does all of it in its own mount namespace.
fn mask_proc() -> Result<(), String> {
    use rustix::fs::{Mode, OFlags};
    use rustix::mount::MountFlags;
    let failed = |path: &str, error: Errno| format!("hiding {path}: {error}");
    for path in crate::bwrap::PROC_HIDDEN_FILES {
        if Path::new(path).exists() {
            rustix::mount::mount_bind("/dev/null", *path).map_err(|e| failed(path, e))?;
        }
    }
    for path in crate::bwrap::PROC_HIDDEN_DIRS {
        if Path::new(path).is_dir() {
            rustix::mount::mount(
                "deft-hidden",
                *path,
                "tmpfs",
                MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
                c"size=4096,mode=0555",
            )
            .map_err(|e| failed(path, e))?;
        }
    }
    for path in crate::bwrap::PROC_READ_ONLY {
        let Ok(target) = rustix::fs::open(
            *path,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            continue;
        };
        read_only_bind(&target).map_err(|e| format!("making {path} read-only: {e}"))?;
    }
    Ok(())
}

fn mount_id(fd: &OwnedFd) -> Result<u64, String> {
    rustix::fs::statx(
        fd,
        "",
        rustix::fs::AtFlags::EMPTY_PATH,
        rustix::fs::StatxFlags::MNT_ID,
    )
    .map(|statx| statx.stx_mnt_id)
    .map_err(|e| format!("statx: {e}"))
}

/// The path of the mount `fd` is the root of, through its link in /proc: not a path that
/// could change.
fn own_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(fd))
}

/// Binds what `target` is onto itself, read-only; if it cannot be made read-only, the bind
/// goes again, so a failure never leaves a writable mount that looks protected.
fn read_only_bind(target: &OwnedFd) -> Result<(), Errno> {
    use rustix::mount::{MoveMountFlags, OpenTreeFlags};
    let tree = rustix::mount::open_tree(
        target,
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH,
    )?;
    rustix::mount::move_mount(
        &tree,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )?;
    if let Err(error) = remount_read_only(&tree) {
        let _ = rustix::mount::unmount(
            own_path(&tree).as_str(),
            rustix::mount::UnmountFlags::DETACH,
        );
        return Err(error);
    }
    Ok(())
}

/// A mount already over the path: deft's own from an earlier command, checked to be
/// read-only still, and made so if it is not.
fn ensure_read_only(root: &OwnedFd) -> Result<(), Errno> {
    let flags = rustix::fs::fstatvfs(root)?.f_flag;
    if flags.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
        return Ok(());
    }
    remount_read_only(root)
}

fn remount_read_only(root: &OwnedFd) -> Result<(), Errno> {
    use rustix::fs::StatVfsMountFlags as Vfs;
    use rustix::mount::MountFlags as Mount;
    // Flags the kernel locked on the mount beneath must be kept, or the remount is refused.
    let kept = rustix::fs::fstatvfs(root)?.f_flag;
    let mut flags = Mount::BIND | Mount::RDONLY;
    for (vfs, mount) in [
        (Vfs::NOSUID, Mount::NOSUID),
        (Vfs::NODEV, Mount::NODEV),
        (Vfs::NOEXEC, Mount::NOEXEC),
        (Vfs::NOATIME, Mount::NOATIME),
        (Vfs::NODIRATIME, Mount::NODIRATIME),
        (Vfs::RELATIME, Mount::RELATIME),
    ] {
        if kept.contains(vfs) {
            flags |= mount;
        }
    }
    rustix::mount::mount_remount(own_path(root).as_str(), flags, "")
}
