//! The `container` sandbox backend (SPEC §3): one long-lived container per task, made through
//! the Engine API of Podman (`podman system service`) or Docker on a unix socket, for hosts
//! where deft itself runs in a container without user namespaces and bubblewrap cannot start.
//!
//! A task's container runs deft's resident init (`deft_sandbox::shell`, the same program as in
//! bubblewrap's sandboxes), which runs the task's commands one after another: deft does not
//! `exec` through the engine per command. The init is deft's binary, built for the host,
//! bound read-only at `/.deft/init` and started through the host's loader with the libraries
//! `ldd` lists (`/.deft/lib`). Its standard input is the engine's stream, so it connects to a
//! `SOCK_SEQPACKET` socket deft listens on in the sandbox's own directory (bound at
//! `/.deft/net`, beside the egress proxy's socket), and that connection is its control channel:
//! requests and answers as in bubblewrap's sandboxes, each command's output pipe passed with
//! `SCM_RIGHTS` (the same kernel on both sides).
//!
//! The container's root is the image's root filesystem as `deft-images` unpacked it (see
//! `root`): its top-level entries bound read-only, its `/etc` copied into a small image of
//! deft's with deft's own `passwd`, `group`, `hosts` and `hostname` bound over it. CMD,
//! ENTRYPOINT, EXPOSE, USER and WORKDIR of the image play no part; its ENV reaches commands.
//!
//! Guarantees, as the bubblewrap backend's (the attack suite of `deft-sandbox` runs against
//! this backend, `tests/attacks_container.rs`):
//! - no network (`NetworkMode: none`): only loopback, where the init bridges `127.0.0.1:3128`
//!   to the egress proxy's socket;
//! - the root read-only (`ReadonlyRootfs`, read-only binds), `/tmp` and `/home/deft` tmpfs of
//!   the spec's size, the task's workspace alone at `/workspace` (the same host directory deft's
//!   file tools open);
//! - no capability (`CapDrop: ALL`), `no-new-privileges`, and the container runs as the host
//!   user bubblewrap's sandboxes run as (`deft_sandbox::user`), never host root. The init then
//!   makes a user and mount namespace of its own, as bubblewrap does: commands run as uid 1000
//!   (`deft`) mapped to that user alone, and the init keeps `CAP_SYS_ADMIN` over its own mount
//!   namespace only, to make each repository's `.git/hooks` and `.git/config` read-only before
//!   every command, repositories cloned after the start included;
//! - deft's seccomp filter on every command, over Podman's default profile (Docker's refuses
//!   the init's own user namespace and mounts, so there deft's filter is the only one);
//!   `/proc`'s kernel settings read-only and its kernel memory files hidden by the init in its
//!   own mount namespace (the lists of `deft_sandbox::bwrap`; Podman ignores the API's
//!   `MaskedPaths`, which deft sends for Docker all the same);
//! - memory (`Memory`, `MemorySwap`) and processes (`PidsLimit`) limited by the engine's
//!   cgroup, and checked from inside: the init reads the limits its cgroup enforces before the
//!   first command, and a sandbox whose limits are not those of its spec is refused (an
//!   engine that cannot set them warns and runs the container unlimited); CPU time and file
//!   size per command by rlimits; out-of-memory kills and refused forks reported per command;
//! - nothing a command starts outlives it (the init is the container's pid 1 and kills what is
//!   left); a timeout drops the control channel, the init ends, and with it every process of
//!   the container; the engine removes it (`AutoRemove`), and the next command gets a new
//!   container on the same workspace and proxy socket;
//! - a long-running program (`spawn`, an MCP server) runs in a container of its own, so that a
//!   command's end or timeout never takes it along, and `pause_programs` freezes those
//!   containers (the engine's pause: the cgroup freezer);
//! - the sandbox dies with deft: the init ends when its control channel closes.
//!
//! Limits, beyond bubblewrap's:
//! - The engine must see deft's paths as deft does (the workspace, the image cache, deft's
//!   binary and the host's loader and libraries are bound from them): run the engine on the
//!   same host with deft's data at the same path, or in deft's own container.
//! - Only a rootful engine without user namespace remapping is accepted (`rootless` or
//!   `name=userns` in its security options is refused): a container's uid must be the host's,
//!   so that the files commands write belong to the sandbox's user.
//! - Containers that cannot make a user namespace (a kernel that forbids unprivileged ones,
//!   Ubuntu's AppArmor restriction) and engines whose security profile forbids mounts are
//!   refused at the sandbox's start, with the init's reason. deft could instead bind each
//!   repository's `.git/hooks` and `.git/config` read-only when the container is made (a
//!   task's repositories are cloned before its sandbox), leaving repositories that commands
//!   clone later unprotected; it does not, so that this backend's guarantees stay the
//!   bubblewrap backend's. Note that deft's git jail (`deft-forge`) needs bubblewrap anyway.
//! - The engine's default `/dev` (with `/dev/pts`) and a read-only `/sys` are there, which
//!   bubblewrap's sandboxes do not have; `TIOCSTI` is still refused by the seccomp filter.
//! - `RLIMIT_NPROC` is set to 32768 and `RLIMIT_NOFILE` to 4096 (an engine applies its own
//!   otherwise, which can exceed what it may set, and the container fails to start); the
//!   process limit is the engine's `PidsLimit`. Like every sandbox user's process on the
//!   host, commands of all tasks count towards the one `RLIMIT_NPROC`, as in bubblewrap's.
//! - Podman mounts a tmpfs at `/var/tmp` of a read-only container: an image with a `/var`
//!   but no `/var/tmp` cannot start (the image's `/var` is read-only), and says so.

mod engine;
mod root;

use std::collections::HashMap;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountTmpfsOptions, MountType, ResourcesUlimits,
};
use deft_core::Redactor;
use deft_egress::{EgressProxy, ProxyEvent};
use deft_sandbox::bwrap::{HelperLoader, INIT_THROUGH_LOADER, resident_init_args};
use deft_sandbox::shell::{Control, ControlListener, Usage};
use deft_sandbox::user::HostUser;
use deft_sandbox::{
    CheckedCommand, LimitCounts, NativeBackend, NativeSandbox, PausedPrograms, Ran, SandboxError,
    SandboxProcess, SandboxSpec, inner,
};
use tokio::sync::mpsc;

use crate::engine::Engine;

/// How long a container's init may take to connect and say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The per-user process rlimit in every container (see the crate's limits).
const NPROC: i64 = 32768;
/// Open files per process.
const NOFILE: i64 = 4096;

/// Numbers the containers of this process, with a random part: pids repeat across deft
/// processes that share an engine.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Makes container sandboxes.
#[derive(Debug, Clone)]
pub struct ContainerBackend {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    engine: Engine,
    /// deft's own binary (it answers the launcher's and the init's verbs).
    helper: PathBuf,
    loader: Option<HelperLoader>,
    /// The sandbox's `passwd`, `group`, `hosts` and `hostname`.
    identity: tempfile::TempDir,
    /// The host user the containers run as.
    run_as: HostUser,
    /// Root filesystems already laid out and imported, by path (a published image never
    /// changes under its path).
    roots: tokio::sync::Mutex<HashMap<PathBuf, Arc<root::Root>>>,
    /// Told apart from other deft processes' containers.
    instance: String,
}

impl ContainerBackend {
    /// Connects to the engine's Engine API at `socket`, checks it can run deft's sandboxes,
    /// and removes the containers a killed deft left. `helper` is deft's own binary.
    pub async fn connect(socket: &Path, helper: PathBuf) -> Result<ContainerBackend, SandboxError> {
        let engine = Engine::connect(socket).await?;
        let loader =
            deft_sandbox::bwrap::helper_loader(&helper).map_err(SandboxError::Unsupported)?;
        let run_as = match deft_sandbox::user::sandbox_user()? {
            Some(user) => user,
            None => HostUser {
                uid: rustix::process::getuid().as_raw(),
                gid: rustix::process::getgid().as_raw(),
            },
        };
        let identity = deft_sandbox::bwrap::identity_files()?;
        for (name, text) in [
            ("hosts", "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost\n"),
            ("hostname", "sandbox\n"),
        ] {
            let path = identity.path().join(name);
            std::fs::write(&path, text).map_err(|source| SandboxError::Io {
                context: format!("writing {}", path.display()),
                source,
            })?;
        }
        engine.sweep().await;
        let instance = format!("{:08x}", rand_u32());
        Ok(ContainerBackend {
            shared: Arc::new(Shared {
                engine,
                helper,
                loader,
                identity,
                run_as,
                roots: tokio::sync::Mutex::new(HashMap::new()),
                instance,
            }),
        })
    }

    /// The root filesystem at `rootfs` as the engine's image, laid out and imported once.
    async fn root(&self, rootfs: &Path) -> Result<Arc<root::Root>, SandboxError> {
        let mut roots = self.shared.roots.lock().await;
        if let Some(root) = roots.get(rootfs) {
            return Ok(root.clone());
        }
        let path = rootfs.to_owned();
        let root = tokio::task::spawn_blocking(move || root::layout(&path))
            .await
            .map_err(|_| SandboxError::Start("laying out the image's root failed".into()))??;
        self.shared
            .engine
            .ensure_image(&root.tag, root.tar.clone())
            .await?;
        let root = Arc::new(root);
        roots.insert(rootfs.to_owned(), root.clone());
        Ok(root)
    }
}

impl NativeBackend for ContainerBackend {
    const NAME: &'static str = "container";

    type Sandbox = ContainerSandbox;

    /// Refuses a spec without an image's root, or without a memory and a process limit for the
    /// engine to keep.
    async fn create(
        &self,
        mut spec: SandboxSpec,
        events: mpsc::UnboundedSender<ProxyEvent>,
    ) -> Result<ContainerSandbox, SandboxError> {
        let Some(image) = spec.root.clone() else {
            return Err(SandboxError::Unsupported(
                "the container backend runs commands in an image's root filesystem (a \
                 repository's Dockerfile), and this sandbox has none; add a Dockerfile, or use \
                 the bwrap backend for the host's root"
                    .into(),
            ));
        };
        image.check()?;
        if spec.limits.memory_bytes == 0 || spec.limits.processes == 0 {
            return Err(SandboxError::Unsupported(
                "a container sandbox needs a memory and a process limit".into(),
            ));
        }
        spec.claim_workspace()?;
        let root = self.root(&image.rootfs).await?;
        let runtime_dir = runtime_dir(&spec.state_dir)?;
        let socket = runtime_dir.join("proxy.sock");
        let proxy =
            EgressProxy::start_with(&socket, spec.network.clone(), events, spec.resolver.clone())
                .map_err(|source| SandboxError::Io {
                    context: format!("starting the egress proxy at {}", socket.display()),
                    source,
                });
        let proxy = match proxy {
            Ok(proxy) => proxy,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&runtime_dir);
                return Err(error);
            }
        };
        {
            // The sandbox's user connects to it (its directory is the sandbox's alone).
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666));
        }
        let sandbox = ContainerSandbox {
            environment: deft_sandbox::bwrap::environment(&spec),
            redactor: Redactor::new(&spec.secrets),
            spec,
            shared: self.shared.clone(),
            root,
            runtime_dir,
            proxy: Some(proxy),
            current: tokio::sync::Mutex::new(None),
            programs: Mutex::new(Vec::new()),
        };
        let running = sandbox.start().await?;
        *sandbox.current.lock().await = Some(running);
        Ok(sandbox)
    }
}

/// A fresh directory for the sandbox's sockets, named `state_dir` when that is free (an
/// earlier sandbox of the task may still be removing its own by that name), and entered by
/// the sandbox's user.
fn runtime_dir(state_dir: &Path) -> Result<PathBuf, SandboxError> {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(parent) = state_dir.parent() else {
        return Err(SandboxError::Start(format!(
            "the sandbox's directory {} must be inside another",
            state_dir.display()
        )));
    };
    std::fs::create_dir_all(parent).map_err(|source| SandboxError::Io {
        context: format!("creating {}", parent.display()),
        source,
    })?;
    let fresh = parent.join(format!(
        ".deft-container-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&fresh).map_err(|source| SandboxError::Io {
        context: format!("creating {}", fresh.display()),
        source,
    })?;
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o711)).map_err(|source| {
        SandboxError::Io {
            context: format!("opening {} to the sandbox", fresh.display()),
            source,
        }
    })?;
    let renamed = rustix::fs::renameat_with(
        rustix::fs::CWD,
        &fresh,
        rustix::fs::CWD,
        state_dir,
        rustix::fs::RenameFlags::NOREPLACE,
    );
    Ok(if renamed.is_ok() {
        state_dir.to_path_buf()
    } else {
        fresh
    })
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos()),
    );
    hasher.finish() as u32
}

/// A task's sandbox: its commands' container, its programs' containers, its egress proxy.
#[derive(Debug)]
pub struct ContainerSandbox {
    spec: SandboxSpec,
    shared: Arc<Shared>,
    root: Arc<root::Root>,
    /// The sandbox's own directory (the proxy's and the control sockets), bound at
    /// `/.deft/net`.
    runtime_dir: PathBuf,
    proxy: Option<EgressProxy>,
    redactor: Redactor,
    /// What every command's environment is.
    environment: Vec<(String, String)>,
    /// The container commands run in; `None` after a timeout ended it (the next command
    /// starts another). Commands run one at a time.
    current: tokio::sync::Mutex<Option<Running>>,
    /// The containers of long-running programs.
    programs: Mutex<Vec<Container>>,
}

/// The commands' container and its init.
#[derive(Debug)]
struct Running {
    control: Control,
    container: Container,
    /// The counters as of the last command's end.
    usage: Usage,
}

/// A container of the engine's, removed (with what runs in it) when this is dropped.
#[derive(Debug)]
struct Container {
    id: String,
    engine: Engine,
}

impl Drop for Container {
    fn drop(&mut self) {
        let (engine, id) = (self.engine.clone(), std::mem::take(&mut self.id));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { engine.remove(&id).await });
            }
            Err(_) => {
                engine::blocking(&engine, async move |engine| engine.remove(&id).await);
            }
        }
    }
}

impl ContainerSandbox {
    /// Where deft's init runs inside, and how it starts.
    fn body(&self, name: &str) -> ContainerCreateBody {
        let shared = &self.shared;
        let limits = &self.spec.limits;
        let bind = |source: &Path, target: &str, read_only: bool| Mount {
            target: Some(target.to_owned()),
            source: Some(source.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            read_only: Some(read_only),
            ..Default::default()
        };
        let mut mounts: Vec<Mount> = self
            .root
            .binds
            .iter()
            .map(|(source, target)| bind(source, target, true))
            .collect();
        for name in ["passwd", "group", "hosts", "hostname"] {
            mounts.push(bind(
                &shared.identity.path().join(name),
                &format!("/etc/{name}"),
                true,
            ));
        }
        mounts.push(bind(&shared.helper, "/.deft/init", true));
        let mut cmd = vec!["/.deft/init".to_owned()];
        if let Some(loader) = &shared.loader {
            mounts.push(bind(&loader.interpreter, "/.deft/lib/ld.so", true));
            for (library, path) in &loader.libraries {
                mounts.push(bind(path, &format!("/.deft/lib/{library}"), true));
            }
            cmd = INIT_THROUGH_LOADER.map(str::to_owned).to_vec();
        }
        // Read-only: connecting to a socket needs no more, and commands may neither replace
        // one nor keep files on the host outside the workspace.
        mounts.push(bind(&self.runtime_dir, "/.deft/net", true));
        mounts.push(bind(&self.spec.workspace, "/workspace", false));
        mounts.push(Mount {
            target: Some("/tmp".to_owned()),
            typ: Some(MountType::TMPFS),
            tmpfs_options: Some(MountTmpfsOptions {
                size_bytes: Some(limits.tmp_bytes as i64),
                mode: Some(0o1777),
                ..Default::default()
            }),
            ..Default::default()
        });
        let user = shared.run_as;
        let home_owner = if shared.engine.podman {
            "U".to_owned()
        } else {
            format!("uid={},gid={}", user.uid, user.gid)
        };
        cmd.extend(resident_init_args());
        cmd.extend(
            [
                "--control",
                &format!("/.deft/net/{name}.sock"),
                "--nproc",
                "0",
                "--fsize",
                &limits.file_size_bytes.to_string(),
                "--cpu",
                &limits.cpu_seconds.to_string(),
            ]
            .map(str::to_owned),
        );
        let proc_paths = |paths: &[&[&str]]| {
            let mut all: Vec<String> = paths
                .iter()
                .flat_map(|list| list.iter())
                .map(|p| p.to_string())
                .collect();
            all.sort();
            all.dedup();
            all
        };
        ContainerCreateBody {
            image: Some(self.root.tag.clone()),
            cmd: Some(cmd),
            user: Some(format!("{}:{}", user.uid, user.gid)),
            hostname: Some("sandbox".to_owned()),
            working_dir: Some("/".to_owned()),
            env: Some(Vec::new()),
            labels: Some(HashMap::from([(
                engine::LABEL.to_owned(),
                shared.instance.clone(),
            )])),
            host_config: Some(HostConfig {
                mounts: Some(mounts),
                tmpfs: Some(HashMap::from([(
                    "/home/deft".to_owned(),
                    format!("size={},mode=0700,{home_owner}", limits.tmp_bytes),
                )])),
                network_mode: Some("none".to_owned()),
                readonly_rootfs: Some(true),
                cap_drop: Some(vec!["ALL".to_owned()]),
                security_opt: Some(shared.engine.security_opt.clone()),
                pids_limit: Some(limits.processes as i64),
                memory: Some(limits.memory_bytes as i64),
                memory_swap: Some(limits.memory_bytes as i64),
                shm_size: Some(limits.tmp_bytes as i64),
                ulimits: Some(vec![
                    ResourcesUlimits {
                        name: Some("nofile".to_owned()),
                        soft: Some(NOFILE),
                        hard: Some(NOFILE),
                    },
                    ResourcesUlimits {
                        name: Some("nproc".to_owned()),
                        soft: Some(NPROC),
                        hard: Some(NPROC),
                    },
                ]),
                masked_paths: Some(proc_paths(&[
                    deft_sandbox::bwrap::PROC_HIDDEN_FILES,
                    deft_sandbox::bwrap::PROC_HIDDEN_DIRS,
                    &[
                        "/proc/latency_stats",
                        "/sys/firmware",
                        "/sys/fs/selinux",
                        "/sys/dev/block",
                    ],
                ])),
                readonly_paths: Some(proc_paths(&[deft_sandbox::bwrap::PROC_READ_ONLY])),
                ipc_mode: Some("private".to_owned()),
                init: Some(false),
                privileged: Some(false),
                auto_remove: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Starts a container with deft's init, waits until the init connected and is ready.
    async fn launch(&self, kind: &str) -> Result<(Control, Container), SandboxError> {
        let name = format!(
            "deft-{kind}-{}-{}-{}",
            self.shared.instance,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let listener = ControlListener::bind(
            &self.runtime_dir.join(format!("{name}.sock")),
            deft_sandbox::user::sandbox_user()?,
        )?;
        let engine = &self.shared.engine;
        let id = engine.run(&name, self.body(&name)).await?;
        let container = Container {
            id,
            engine: engine.clone(),
        };
        let control = tokio::select! {
            accepted = tokio::time::timeout(START_TIMEOUT, listener.accept()) => match accepted {
                Ok(control) => control?,
                Err(_) => return Err(SandboxError::Start(format!(
                    "the container's init did not connect within {} s", START_TIMEOUT.as_secs()
                ))),
            },
            () = engine.ended(&container.id) => return Err(SandboxError::Start(
                "the container ended before deft's init connected from it; the engine's log of \
                 the container says why".into(),
            )),
        };
        drop(listener);
        // Only the container's init runs as this user and reaches the socket's directory.
        if let Some(uid) = control.peer_uid()
            && uid != self.shared.run_as.uid
        {
            return Err(SandboxError::Start(format!(
                "uid {uid} connected to the sandbox's control socket, not the sandbox's {}",
                self.shared.run_as.uid
            )));
        }
        match tokio::time::timeout(START_TIMEOUT, control.ready()).await {
            Ok(ready) => ready?,
            Err(_) => {
                return Err(SandboxError::Start(format!(
                    "the container's init was not ready within {} s",
                    START_TIMEOUT.as_secs()
                )));
            }
        }
        Ok((control, container))
    }

    /// The commands' container, with its limits checked from inside.
    async fn start(&self) -> Result<Running, SandboxError> {
        let (control, container) = self.launch("sandbox").await?;
        let usage = control.usage().await?;
        let limits = &self.spec.limits;
        // The kernel rounds a memory limit down to whole pages.
        let memory_kept = usage
            .memory_max
            .is_some_and(|max| max <= limits.memory_bytes && limits.memory_bytes - max < 65536);
        if !memory_kept || usage.pids_max != Some(limits.processes) {
            return Err(SandboxError::Unsupported(format!(
                "the container engine did not apply the sandbox's limits (memory {} bytes, {} \
                 processes; inside, its cgroup says {:?} and {:?}); deft runs no sandbox it \
                 cannot limit",
                limits.memory_bytes, limits.processes, usage.memory_max, usage.pids_max
            )));
        }
        Ok(Running {
            control,
            container,
            usage,
        })
    }
}

impl NativeSandbox for ContainerSandbox {
    async fn run(
        &self,
        command: &CheckedCommand<'_>,
        on_output: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Ran, SandboxError> {
        let mut slot = self.current.lock().await;
        // Owned for the command's time: should this future be dropped mid-command (a task
        // cancelled), the container goes with it, and no late answer can be taken for the
        // next command's.
        let Running {
            control,
            container,
            usage: before,
        } = match slot.take() {
            Some(running) => running,
            None => self.start().await?,
        };
        let run = control
            .run(command, &self.environment, &self.redactor, on_output)
            .await;
        let mut counts = LimitCounts::default();
        if let Some(control) = run.control
            && let Ok(after) = control.usage().await
        {
            let grew = |was: Option<u64>, is: Option<u64>| is.unwrap_or(0) > was.unwrap_or(0);
            counts = LimitCounts {
                oom_killed: grew(before.oom_kills, after.oom_kills),
                pids_refused: grew(before.pids_refused, after.pids_refused),
            };
            *slot = Some(Running {
                control,
                container,
                usage: after,
            });
        }
        Ok(Ran::new(run.ending?, (run.output, run.truncated), counts))
    }

    /// Starts `request.argv` in a container of its own (a command's end must not take it
    /// along), with its standard streams connected to the returned process: a stand-in on the
    /// host (`deft __sandbox-launch --await`) that holds the program's control channel, exits
    /// with its status, and whose death ends it.
    async fn spawn(
        &self,
        command: &CheckedCommand<'_>,
        extra_env: &[(String, String)],
    ) -> Result<SandboxProcess, SandboxError> {
        let env = deft_sandbox::bwrap::program_env(self.environment.iter().cloned(), extra_env);
        let (control, container) = self.launch("program").await?;
        self.programs
            .lock()
            .expect("never poisoned")
            .push(container);
        let pipe = || {
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|error| {
                SandboxError::Io {
                    context: "making the program's pipes".into(),
                    source: error.into(),
                }
            })
        };
        let (
            (stdin_theirs, stdin_ours),
            (stdout_ours, stdout_theirs),
            (stderr_ours, stderr_theirs),
        ) = (pipe()?, pipe()?, pipe()?);
        control
            .spawn(
                command.argv(),
                &env,
                &command.dir_inside(),
                [
                    stdin_theirs.as_fd(),
                    stdout_theirs.as_fd(),
                    stderr_theirs.as_fd(),
                ],
            )
            .await?;
        drop((stdin_theirs, stdout_theirs, stderr_theirs));
        let control = std::process::Stdio::from(control.into_fd()?);
        let null = std::process::Stdio::null;
        let child = deft_sandbox::bwrap::start_helper(
            &self.shared.helper,
            &[inner::LAUNCH, inner::AWAIT],
            [control, null(), null()],
        )?;
        let stream = |error: std::io::Error| SandboxError::Io {
            context: "the program's standard streams".into(),
            source: error,
        };
        Ok(SandboxProcess {
            child,
            stdin: tokio::process::ChildStdin::from_std(std::process::ChildStdin::from(stdin_ours))
                .map_err(stream)?,
            stdout: tokio::process::ChildStdout::from_std(std::process::ChildStdout::from(
                stdout_ours,
            ))
            .map_err(stream)?,
            stderr: tokio::process::ChildStderr::from_std(std::process::ChildStderr::from(
                stderr_ours,
            ))
            .map_err(stream)?,
        })
    }

    /// Freezes the programs' containers (the engine's pause, the cgroup freezer) until the
    /// guard drops; a program that cannot be paused is killed, as in bubblewrap's sandboxes.
    fn pause_programs(&self) -> PausedPrograms {
        let ids: Vec<String> = self
            .programs
            .lock()
            .expect("never poisoned")
            .iter()
            .map(|container| container.id.clone())
            .collect();
        if ids.is_empty() {
            return PausedPrograms::nothing();
        }
        let paused = engine::blocking(&self.shared.engine, async move |engine| {
            let mut paused = Vec::new();
            for id in ids {
                match engine.docker.pause_container(&id).await {
                    Ok(()) => paused.push(id),
                    // Gone, or not running: nothing of it runs.
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 404 | 409,
                        ..
                    }) => {}
                    Err(error) => {
                        tracing::warn!(container = id, %error, "a program could not be paused; killing it");
                        engine.remove(&id).await;
                    }
                }
            }
            paused
        })
        .unwrap_or_default();
        PausedPrograms::holding(Paused {
            engine: self.shared.engine.clone(),
            ids: paused,
        })
    }

    async fn destroy(self) -> Result<(), SandboxError> {
        let mut this = self;
        if let Some(running) = this.current.get_mut().take() {
            drop(running.control);
            let container = running.container;
            container.engine.remove(&container.id).await;
        }
        let programs = std::mem::take(this.programs.get_mut().expect("never poisoned"));
        for program in programs {
            program.engine.remove(&program.id).await;
        }
        // Dropping does the rest.
        drop(this);
        Ok(())
    }

    fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    fn spec(&self) -> &SandboxSpec {
        &self.spec
    }
}

/// Programs' containers paused until this is dropped.
#[derive(Debug)]
struct Paused {
    engine: Engine,
    ids: Vec<String>,
}

impl Drop for Paused {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut self.ids);
        engine::blocking(&self.engine, async move |engine| {
            for id in ids {
                let _ = engine.docker.unpause_container(&id).await;
            }
        });
    }
}

impl Drop for ContainerSandbox {
    fn drop(&mut self) {
        // The proxy first: its socket file is removed while no container is torn down over it.
        drop(self.proxy.take());
        drop(self.current.get_mut().take());
        self.programs.get_mut().expect("never poisoned").clear();
        let dir = self.runtime_dir.clone();
        let remove = move || {
            let _ = std::fs::remove_dir_all(dir);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(remove);
            }
            Err(_) => remove(),
        }
    }
}
