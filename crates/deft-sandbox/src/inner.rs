//! The two short programs of a sandbox's start, run by deft's own binary:
//!
//! - the launcher (host side): reads a [`LaunchPlan`] on stdin, joins the sandbox's cgroups
//!   and becomes bubblewrap, whose stdin is a memfd holding the environment;
//! - the init (inside, pid 1): reads that environment from stdin, starts the bridge from a
//!   loopback port to the egress proxy's socket, sets rlimits and the seccomp filter, runs the
//!   command and exits with its status (which ends the pid namespace and all in it).
//!
//! Both are synchronous and start before any runtime, as `deft __sandbox-launch` and
//! `deft __sandbox-init`.

use std::io::{Read as _, Seek as _, Write as _};
use std::os::fd::AsFd as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};

use crate::plan::{LaunchPlan, decode_env, encode_env};

/// The verbs of the two programs.
pub const LAUNCH: &str = "__sandbox-launch";
pub const INIT: &str = "__sandbox-init";
/// The launcher's option for a program that talks over its standard input and output: the
/// plan and the environment come first on standard input, each after its length (4 bytes,
/// big-endian), and the rest of the stream is the program's.
pub const STDIO: &str = "--stdio";

/// Reads one length-prefixed part from standard input without reading past it: the bytes
/// after it belong to the next reader (bubblewrap's init, then the program).
fn read_part() -> std::io::Result<Vec<u8>> {
    // Unbuffered, unlike `std::io::stdin()`, whose buffer would swallow the program's input.
    let mut input = std::fs::File::open("/dev/stdin")?;
    let mut length = [0u8; 4];
    input.read_exact(&mut length)?;
    let mut part = vec![0u8; u32::from_be_bytes(length) as usize];
    input.read_exact(&mut part)?;
    Ok(part)
}

/// Runs the launcher; returns only on failure (it becomes bubblewrap).
pub fn launch(args: &[String]) -> std::io::Error {
    match try_launch(args.iter().any(|arg| arg == STDIO)) {
        Ok(never) => match never {},
        Err(error) => error,
    }
}

fn try_launch(stdio: bool) -> std::io::Result<std::convert::Infallible> {
    let plan: LaunchPlan = if stdio {
        // The environment follows on standard input, for the init to read.
        serde_json::from_slice(&read_part()?).map_err(std::io::Error::other)?
    } else {
        let mut input = Vec::new();
        std::io::stdin().read_to_end(&mut input)?;
        let plan: LaunchPlan = serde_json::from_slice(&input).map_err(std::io::Error::other)?;
        let env = rustix::fs::memfd_create("deft-env", rustix::fs::MemfdFlags::CLOEXEC)?;
        let mut file = std::fs::File::from(env);
        file.write_all(&encode_env(&plan.env))?;
        file.rewind()?;
        // bubblewrap passes its stdin to the init, which reads the environment from it.
        rustix::stdio::dup2_stdin(&file)?;
        plan
    };
    for procs in &plan.cgroup_procs {
        std::fs::write(procs, std::process::id().to_string()).map_err(|error| {
            std::io::Error::other(format!("joining {}: {error}", procs.display()))
        })?;
    }
    Err(Command::new(&plan.bwrap)
        .args(&plan.args)
        .env_clear()
        .exec())
}

/// Options of the init, as `--name value` pairs before `--` and the command.
#[derive(Debug, Default)]
struct InitOptions {
    proxy_socket: Option<String>,
    proxy_port: u16,
    nproc: u64,
    fsize: u64,
    cpu: u64,
    cwd: String,
    /// The command talks over standard input and output (see [`STDIO`]).
    stdio: bool,
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
            "--stdio" => options.stdio = value == "1",
            other => return Err(format!("unknown option {other}")),
        }
    }
    if options.argv.is_empty() {
        return Err("no command after `--`".into());
    }
    Ok(options)
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
    let options = parse_init(args)?;
    let mut blob = Vec::new();
    if options.stdio {
        blob = read_part().map_err(|e| format!("reading the environment: {e}"))?;
    } else {
        std::io::stdin()
            .read_to_end(&mut blob)
            .map_err(|e| format!("reading the environment: {e}"))?;
    }
    let env = decode_env(&blob);
    drop(blob);
    if !options.stdio {
        let null = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
        rustix::stdio::dup2_stdin(&null).map_err(|e| format!("replacing stdin: {e}"))?;
    }
    // bubblewrap asks for this too, but only once its child runs; a deft killed in between
    // would leave the sandbox behind.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| format!("prctl: {e}"))?;
    // The init holds the environment in memory; no process of the sandbox may read it.
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(|e| format!("prctl: {e}"))?;

    watch_for_deft()?;
    if let Some(socket) = options.proxy_socket.clone() {
        start_bridge(options.proxy_port, socket)?;
    }
    set_limits(&options)?;
    let filter = crate::seccomp::filter()?;
    seccompiler::apply_filter(&filter).map_err(|e| format!("seccomp: {e}"))?;

    let mut command = Command::new(&options.argv[0]);
    command
        .args(&options.argv[1..])
        .env_clear()
        .envs(env)
        .current_dir(&options.cwd);
    if !options.stdio {
        // stderr joins stdout, so the output keeps the order in which it was written.
        let stderr = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("stderr: {e}"))?;
        command.stdin(Stdio::null()).stderr(stderr);
    }
    let child = command.spawn();
    let child = match child {
        Ok(child) => child,
        Err(error) => {
            let code = if error.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            eprintln!("deft sandbox: cannot run `{}`: {error}", options.argv[0]);
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

fn set_limits(options: &InitOptions) -> Result<(), String> {
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

/// Ends the sandbox when deft is gone. The init's stdout is a pipe whose only reader is deft;
/// when deft dies, that pipe reports an error to a poll, and the init exits, which ends the
/// pid namespace and everything in it. (The parent-death signal alone misses a deft killed
/// while bubblewrap is still starting.)
fn watch_for_deft() -> Result<(), String> {
    let stdout = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("stdout: {e}"))?;
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
fn start_bridge(port: u16, socket: String) -> Result<(), String> {
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
