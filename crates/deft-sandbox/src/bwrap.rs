//! The bubblewrap backend: a sandbox per task.
//!
//! A task's commands run in one resident sandbox (`crate::shell`, `crate::resident`): deft
//! starts `deft __sandbox-launch --resident`, which reads a [`LaunchPlan`] from its control
//! socket, joins the sandbox's cgroups and becomes `bwrap`, which runs `deft __sandbox-init`
//! as pid 1 of the new namespaces; the init then runs each command deft sends. Sandboxes are
//! started ahead of tasks, a few per directory of workspaces, so that a task does not wait for
//! bubblewrap. Long-running programs ([`BwrapSandbox::spawn`], MCP servers) get a bubblewrap
//! of their own, with the same isolation. See [`crate::inner`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use deft_core::Redactor;
use deft_egress::{EgressProxy, ProxyEvent};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;

use crate::cgroup::SandboxCgroup;
use crate::plan::LaunchPlan;
use crate::shell::{Answer, Pool, Shell, ShellKey};
use crate::{
    CheckedCommand, Ending, HostSupport, LimitCounts, Limits, NativeBackend, NativeSandbox,
    PausedPrograms, Ran, SandboxError, SandboxProcess, SandboxSpec, inner,
};

/// The port inside the sandbox where the bridge to the egress proxy listens.
pub const PROXY_PORT: u16 = 3128;
/// Numbers the cgroups of long-running programs.
static PROGRAMS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
/// The size of the tmpfs at `/dev` and `/run` of a resident sandbox, in bytes.
const SMALL_TMPFS: &str = "16777216";
/// The uid and gid commands see inside (mapped to the sandbox's own on the host).
const INSIDE_ID: &str = "1000";

/// The command line that starts deft's init on an image's root: through the host's loader and
/// libraries, bound at `/.deft/lib`, since the image's own may not run deft's binary.
pub const INIT_THROUGH_LOADER: [&str; 4] = [
    "/.deft/lib/ld.so",
    "--library-path",
    "/.deft/lib",
    "/.deft/init",
];

/// The arguments that make deft's init the resident one of a sandbox, which bridges
/// `127.0.0.1:PROXY_PORT` to the egress proxy's socket at `/.deft/net/proxy.sock`.
pub fn resident_init_args() -> Vec<String> {
    let port = PROXY_PORT.to_string();
    [
        inner::INIT,
        "--proxy-socket",
        "/.deft/net/proxy.sock",
        "--proxy-port",
        &port,
        "--resident",
        "1",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// How many sandboxes are kept started ahead of tasks, per directory of workspaces.
pub const DEFAULT_POOL: usize = 2;

/// Makes bubblewrap sandboxes.
#[derive(Debug, Clone)]
pub struct BwrapBackend {
    maker: Arc<ShellMaker>,
    pool: Arc<Pool>,
}

/// What every sandbox of a backend is made from.
#[derive(Debug)]
pub(crate) struct ShellMaker {
    support: HostSupport,
    /// The binary that knows the launcher's and the init's verbs (deft itself).
    helper: PathBuf,
    /// Files and directories of the mounted system directories that their owner alone may
    /// read (`/etc/shadow`, private keys): hidden, since commands run as the host uid that
    /// owns them.
    masks: Vec<(PathBuf, bool)>,
    /// The sandbox's own `passwd` and `group` (its user `deft`, home `/home/deft`), bound
    /// over the host's: tools that look the user up find it, and no host account shows.
    identity: tempfile::TempDir,
    /// The host user bubblewrap runs as when deft is root ([`crate::user`]).
    run_as: Option<crate::user::HostUser>,
    /// How the init starts inside an image's root, found the first time one is used.
    image_loader: std::sync::OnceLock<Result<Option<HelperLoader>, String>>,
}

/// The host's dynamic loader and the libraries deft's binary links, for running deft's init
/// inside a root filesystem whose C library may be another (or none).
#[derive(Debug)]
pub struct HelperLoader {
    pub interpreter: PathBuf,
    /// Each library's name as the binary asks for it, and where the host has it.
    pub libraries: Vec<(String, PathBuf)>,
}

/// The loader and libraries `ldd` lists for `helper` (deft's own binary, never a task's):
/// `None` for a static binary.
pub fn helper_loader(helper: &Path) -> Result<Option<HelperLoader>, String> {
    let output = std::process::Command::new("ldd")
        .arg(helper)
        .output()
        .map_err(|error| format!("running ldd on {}: {error}", helper.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || text.contains("not a dynamic executable") {
        return Ok(None);
    }
    let mut interpreter = None;
    let mut libraries = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some((name, rest)) = line.split_once(" => ") {
            if let Some(path) = rest
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/'))
            {
                libraries.push((name.trim().to_owned(), PathBuf::from(path)));
            }
        } else if let Some(path) = line
            .split_whitespace()
            .next()
            .filter(|p| p.starts_with('/'))
        {
            interpreter = Some(PathBuf::from(path));
        }
    }
    let interpreter = interpreter.ok_or_else(|| {
        format!(
            "ldd names no loader for {}; an image's root cannot run deft's init",
            helper.display()
        )
    })?;
    Ok(Some(HelperLoader {
        interpreter,
        libraries,
    }))
}

/// The accounts a sandbox knows: root and nobody as every system has them, and its user.
const PASSWD: &str = "root:x:0:0:root:/root:/usr/sbin/nologin\n\
    deft:x:1000:1000:deft:/home/deft:/bin/bash\n\
    nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\ndeft:x:1000:\nnogroup:x:65534:\n";

/// Writes the sandbox's `passwd` and `group` into a directory of deft's own, readable by all.
pub fn identity_files() -> Result<tempfile::TempDir, SandboxError> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::Builder::new()
        .prefix("deft-sandbox-etc-")
        .tempdir()
        .map_err(SandboxError::io("making the sandbox's /etc/passwd"))?;
    // `empty` covers files of an image that must read as nothing (its `ld.so.preload`).
    for (name, text) in [("passwd", PASSWD), ("group", GROUP), ("empty", "")] {
        let path = dir.path().join(name);
        std::fs::write(&path, text)
            .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)))
            .map_err(SandboxError::io(format!("writing {}", path.display())))?;
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(SandboxError::io("making the sandbox's /etc/passwd"))?;
    Ok(dir)
}

impl BwrapBackend {
    /// A backend, or why this host cannot run it.
    pub fn new(support: HostSupport, helper: PathBuf) -> Result<BwrapBackend, SandboxError> {
        if let Err(why) = &support.bwrap {
            return Err(SandboxError::Unsupported(why.clone()));
        }
        let masks = private_entries(&["/etc", "/opt"]);
        // A deft that was killed outright left its sandboxes' cgroups: end what is in them.
        support.cgroups.sweep_stale("deft-sandbox-");
        Ok(BwrapBackend {
            maker: Arc::new(ShellMaker {
                support,
                helper,
                masks,
                identity: identity_files()?,
                run_as: crate::user::sandbox_user()?,
                image_loader: std::sync::OnceLock::new(),
            }),
            pool: Arc::new(Pool::new(DEFAULT_POOL)),
        })
    }

    /// The same backend keeping `size` sandboxes started ahead of tasks (0: none; every
    /// task then waits for bubblewrap to start).
    pub fn with_pool(self, size: usize) -> BwrapBackend {
        BwrapBackend {
            pool: Arc::new(Pool::new(size)),
            ..self
        }
    }

    pub fn support(&self) -> &HostSupport {
        &self.maker.support
    }

    /// Starts sandboxes ahead of tasks whose workspaces will be made in `workspaces` (and
    /// their own files next to them), with `limits`. Returns at once.
    pub fn prewarm(&self, workspaces: &Path, limits: &Limits) {
        if let Ok(stage) = workspaces.canonicalize() {
            let key = ShellKey {
                runtime: stage.clone(),
                stage,
                tmp_bytes: limits.tmp_bytes,
                image: None,
            };
            self.pool.refill(self.maker.clone(), key);
        }
    }

    /// How many sandboxes are ready for tasks whose workspaces are in `workspaces`.
    pub fn ready(&self, workspaces: &Path, limits: &Limits) -> usize {
        workspaces.canonicalize().map_or(0, |stage| {
            self.pool.ready(&ShellKey {
                runtime: stage.clone(),
                stage,
                tmp_bytes: limits.tmp_bytes,
                image: None,
            })
        })
    }

    /// How many sandboxes this backend keeps ready per directory of workspaces.
    pub fn pool_size(&self) -> usize {
        self.pool.size()
    }
}

impl NativeBackend for BwrapBackend {
    const NAME: &'static str = "bwrap";

    type Sandbox = BwrapSandbox;

    /// Refuses when bubblewrap cannot run here or the spec's limits cannot be enforced.
    async fn create(
        &self,
        mut spec: SandboxSpec,
        events: mpsc::UnboundedSender<ProxyEvent>,
    ) -> Result<BwrapSandbox, SandboxError> {
        if let Some(why) = self.maker.support.refusal(&spec.limits) {
            return Err(SandboxError::Unsupported(why));
        }
        if let Some(root) = &spec.root {
            root.check()?;
        }
        spec.claim_workspace()?;
        let (Some(stage), Some(name)) = (
            spec.workspace.parent(),
            spec.workspace.file_name().and_then(|name| name.to_str()),
        ) else {
            return Err(SandboxError::Start(format!(
                "the workspace {} must be a directory with a UTF-8 name inside another",
                spec.workspace.display()
            )));
        };
        let runtime = match spec.state_dir.parent() {
            Some(parent) => {
                std::fs::create_dir_all(parent)
                    .map_err(SandboxError::io(format!("creating {}", parent.display())))?;
                parent
                    .canonicalize()
                    .map_err(SandboxError::io(format!("finding {}", parent.display())))?
            }
            None => {
                return Err(SandboxError::Start(format!(
                    "the sandbox's directory {} must be inside another",
                    spec.state_dir.display()
                )));
            }
        };
        let key = ShellKey {
            stage: stage.to_path_buf(),
            runtime,
            tmp_bytes: spec.limits.tmp_bytes,
            image: spec.root.as_ref().map(|root| root.rootfs.clone()),
        };
        let workspace_name = name.to_owned();
        // Sandboxes are started ahead of tasks on the host's root only: an image's is known
        // once the task's repositories are.
        let pooled = if key.image.is_none() {
            let pooled = self.pool.take(&key);
            self.pool.refill(self.maker.clone(), key.clone());
            pooled
        } else {
            self.maker.image_loader()?;
            None
        };
        // A sandbox from the pool may have died while it waited (its memory or process limit,
        // a killed init): then one is started now.
        let (mut shell, runtime_dir) = match pooled {
            Some(mut shell) => {
                let runtime_dir = shell.adopt(&spec.state_dir);
                match shell.attach(&workspace_name, &spec.limits).await {
                    Ok(()) => (shell, runtime_dir),
                    Err(error) => {
                        tracing::warn!(%error, "a sandbox started ahead of its task failed");
                        // Now, not aside: the next shell's directory takes the same name.
                        let _ = std::fs::remove_dir_all(&runtime_dir);
                        drop(shell);
                        self.fresh_shell(&key, &spec, &workspace_name).await?
                    }
                }
            }
            None => self.fresh_shell(&key, &spec, &workspace_name).await?,
        };
        let socket = runtime_dir.join("proxy.sock");
        let _ = std::fs::remove_file(&socket);
        let proxy = match EgressProxy::start_with(
            &socket,
            spec.network.clone(),
            events,
            spec.resolver.clone(),
        ) {
            Ok(proxy) => proxy,
            Err(error) => {
                shell.remove_on_drop.push(runtime_dir);
                return Err(SandboxError::io(format!(
                    "starting the egress proxy at {}",
                    socket.display()
                ))(error));
            }
        };
        // The sandbox's user connects to it (its directory is the sandbox's alone).
        if self.maker.run_as().is_some() {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))
                .map_err(SandboxError::io(format!("opening {}", socket.display())))?;
        }
        let redactor = Redactor::new(&spec.secrets);
        Ok(BwrapSandbox {
            environment: environment(&spec),
            spec,
            shell: tokio::sync::Mutex::new(Some(shell)),
            key,
            workspace_name,
            runtime_dir,
            proxy: Some(proxy),
            redactor,
            maker: self.maker.clone(),
            programs_cgroup: std::sync::Mutex::new(None),
        })
    }
}

impl BwrapBackend {
    /// Starts a shell now and gives it the task, with `spec.state_dir` as its own directory.
    async fn fresh_shell(
        &self,
        key: &ShellKey,
        spec: &SandboxSpec,
        workspace_name: &str,
    ) -> Result<(Shell, PathBuf), SandboxError> {
        let mut shell = Shell::start(self.maker.as_ref(), key, None).await?;
        let runtime_dir = shell.adopt(&spec.state_dir);
        if let Err(error) = shell.attach(workspace_name, &spec.limits).await {
            shell.remove_on_drop.push(runtime_dir);
            return Err(error);
        }
        Ok((shell, runtime_dir))
    }
}

impl ShellMaker {
    /// How deft's init runs inside an image's root, or why it cannot.
    pub(crate) fn image_loader(&self) -> Result<Option<&HelperLoader>, SandboxError> {
        self.image_loader
            .get_or_init(|| helper_loader(&self.helper))
            .as_ref()
            .map(Option::as_ref)
            .map_err(|why| SandboxError::Unsupported(why.clone()))
    }

    /// The command line that starts deft's init: itself on the host's root, through the
    /// host's loader at `/.deft/lib` on an image's.
    pub(crate) fn init_command(&self, image: bool) -> Vec<String> {
        if image && matches!(self.image_loader(), Ok(Some(_))) {
            INIT_THROUGH_LOADER.map(str::to_owned).to_vec()
        } else {
            vec!["/.deft/init".to_owned()]
        }
    }

    pub(crate) fn helper(&self) -> &Path {
        &self.helper
    }

    pub(crate) fn run_as(&self) -> Option<crate::user::HostUser> {
        self.run_as
    }

    /// Lets the sandbox's user (when deft is root) pass through `dir`, which deft made: it may
    /// enter, not list. Everything above it is reached through the launcher's staging.
    pub(crate) fn let_sandbox_enter(&self, dir: &Path) -> Result<(), SandboxError> {
        use std::os::unix::fs::PermissionsExt as _;
        if self.run_as.is_none() {
            return Ok(());
        }
        let meta = std::fs::symlink_metadata(dir)
            .map_err(SandboxError::io(format!("reading {}", dir.display())))?;
        if meta.is_dir() && meta.permissions().mode() & 0o001 == 0 {
            std::fs::set_permissions(
                dir,
                std::fs::Permissions::from_mode(meta.permissions().mode() | 0o001),
            )
            .map_err(SandboxError::io(format!(
                "opening {} to the sandbox",
                dir.display()
            )))?;
        }
        Ok(())
    }

    pub(crate) fn cgroups(&self) -> &crate::cgroup::Cgroups {
        &self.support.cgroups
    }

    /// bubblewrap's arguments for a resident sandbox. Unlike [`BwrapSandbox::plan`]'s, they
    /// leave the init `CAP_SYS_ADMIN` over the sandbox's own mount namespace, since it
    /// attaches the workspace and protects `.git` after the start: bubblewrap's
    /// `--disable-userns` and `--dev` would each put the init in a nested user namespace where
    /// it cannot mount, so nested user namespaces are refused by the seccomp filter instead,
    /// and `/dev` is built from the host's harmless devices (no pseudo-terminals).
    pub(crate) fn bwrap_args(&self, key: &ShellKey, runtime_dir: &Path) -> Vec<String> {
        let mut args = isolation(
            &["--cap-add", "CAP_SYS_ADMIN", "--cap-add", "CAP_SETPCAP"],
            self,
            key.tmp_bytes,
            key.image.as_deref(),
        );
        let mut push = |more: &[&str]| args.extend(more.iter().map(|s| s.to_string()));
        // Small tmpfs sizes where nothing big belongs: these stay for the task's whole life.
        push(&["--proc", "/proc"]);
        push_proc_masks(&mut push);
        push(&["--size", SMALL_TMPFS, "--tmpfs", "/dev"]);
        for device in ["null", "zero", "full", "random", "urandom", "tty"] {
            let path = format!("/dev/{device}");
            if Path::new(&path).exists() {
                push(&["--dev-bind", &path, &path]);
            }
        }
        push(&[
            "--symlink",
            "/proc/self/fd",
            "/dev/fd",
            "--symlink",
            "/proc/self/fd/0",
            "/dev/stdin",
            "--symlink",
            "/proc/self/fd/1",
            "/dev/stdout",
            "--symlink",
            "/proc/self/fd/2",
            "/dev/stderr",
        ]);
        let tmp = key.tmp_bytes.to_string();
        push(&["--size", &tmp, "--tmpfs", "/dev/shm"]);
        push(&[
            "--size",
            SMALL_TMPFS,
            "--tmpfs",
            "/run",
            "--dir",
            "/.deft",
            "--dir",
            "/workspace",
        ]);
        push(&["--ro-bind", &self.helper.to_string_lossy(), "/.deft/init"]);
        push(&["--bind", &key.stage.to_string_lossy(), "/.deft/stage"]);
        // Read-only: connecting to the socket needs no more, and commands may neither replace
        // it nor keep files on the host outside the workspace.
        push(&["--ro-bind", &runtime_dir.to_string_lossy(), "/.deft/net"]);
        if key.image.is_none() {
            toolchains(&mut args);
        }
        let mut push = |more: &[&str]| args.extend(more.iter().map(|s| s.to_string()));
        push(&["--remount-ro", "/", "--chdir", "/", "--"]);
        args.extend(self.init_command(key.image.is_some()));
        args.extend(resident_init_args());
        args
    }
}

/// What both kinds of sandbox start with: new namespaces (plus `how` the user namespace is
/// kept from nesting), no capabilities but what `how` adds, a uid of their own; the host's
/// system directories, read-only, with what only their owner may read hidden; and a private
/// `/tmp` and home of `tmp_bytes` each.
fn isolation(
    how: &[&str],
    maker: &ShellMaker,
    tmp_bytes: u64,
    image: Option<&Path>,
) -> Vec<String> {
    let mut args: Vec<String> = Vec::with_capacity(128);
    let mut push = |more: &[&str]| args.extend(more.iter().map(|s| s.to_string()));
    push(&[
        "--unshare-user",
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-uts",
        "--unshare-cgroup-try",
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
    push(how);
    match image {
        None => host_root(maker, &mut push),
        Some(rootfs) => image_root(maker, rootfs, &mut push),
    }
    let tmp = tmp_bytes.to_string();
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
    args
}

/// The host's system directories, read-only, with what only their owner may read hidden and
/// the sandbox's own accounts.
fn host_root(maker: &ShellMaker, push: &mut impl FnMut(&[&str])) {
    for dir in ["/usr", "/etc", "/opt"] {
        if Path::new(dir).is_dir() {
            push(&["--ro-bind", dir, dir]);
        }
    }
    identity(maker, push);
    for (path, is_dir) in &maker.masks {
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
}

/// The sandbox's `passwd` and `group`, over the root's.
fn identity(maker: &ShellMaker, push: &mut impl FnMut(&[&str])) {
    for name in ["passwd", "group"] {
        let file = maker.identity.path().join(name);
        push(&[
            "--ro-bind",
            &file.to_string_lossy(),
            &format!("/etc/{name}"),
        ]);
    }
}

/// Directories of the new root that the sandbox makes itself, whatever an image holds there.
pub const SANDBOX_OWNED: &[&str] = &[
    "proc",
    "dev",
    "sys",
    "tmp",
    "run",
    "home",
    "workspace",
    ".deft",
];

/// An image's root filesystem, read-only, entry by entry at the top (so that the sandbox's
/// own directories can still be made beside them), plus the host's loader and the libraries
/// deft's init needs at `/.deft/lib`: the init is deft's binary, built for the host. The
/// image's `/etc/ld.so.preload` is covered, or the host's loader would run the image's
/// library inside the init.
fn image_root(maker: &ShellMaker, rootfs: &Path, push: &mut impl FnMut(&[&str])) {
    let mut entries: Vec<_> = std::fs::read_dir(rootfs)
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if SANDBOX_OWNED.contains(&name.as_str()) {
            continue;
        }
        let (source, dest) = (entry.path(), format!("/{name}"));
        let Ok(meta) = std::fs::symlink_metadata(&source) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            if let Ok(target) = std::fs::read_link(&source) {
                push(&["--symlink", &target.to_string_lossy(), &dest]);
            }
        } else if meta.is_dir() || meta.is_file() {
            push(&["--ro-bind", &source.to_string_lossy(), &dest]);
        }
    }
    let etc = rootfs.join("etc");
    if std::fs::symlink_metadata(&etc).is_ok_and(|meta| meta.is_dir()) {
        for name in ["passwd", "group"] {
            if std::fs::symlink_metadata(etc.join(name)).is_ok_and(|meta| meta.is_file()) {
                let file = maker.identity.path().join(name);
                push(&[
                    "--ro-bind",
                    &file.to_string_lossy(),
                    &format!("/etc/{name}"),
                ]);
            }
        }
        if std::fs::symlink_metadata(etc.join("ld.so.preload")).is_ok() {
            let empty = maker.identity.path().join("empty");
            push(&["--ro-bind", &empty.to_string_lossy(), "/etc/ld.so.preload"]);
        }
    }
    if let Ok(Some(loader)) = maker.image_loader() {
        push(&["--dir", "/.deft", "--dir", "/.deft/lib"]);
        push(&[
            "--ro-bind",
            &loader.interpreter.to_string_lossy(),
            "/.deft/lib/ld.so",
        ]);
        for (name, path) in &loader.libraries {
            push(&[
                "--ro-bind",
                &path.to_string_lossy(),
                &format!("/.deft/lib/{name}"),
            ]);
        }
    }
}

/// The parts of `/proc` that change or reveal the host's kernel rather than the sandbox's own
/// processes, as OCI runtimes (runc, crun) treat them: kernel settings and the interfaces of
/// devices read-only (a writable `/proc/sys/kernel/core_pattern` runs a program as host
/// root), and the files that read kernel memory or other users' keys and timers hidden.
/// Only what this kernel has: bubblewrap cannot mount over a path that is not there.
pub const PROC_READ_ONLY: &[&str] = &[
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/proc/irq",
    "/proc/bus",
    "/proc/fs",
];
pub const PROC_HIDDEN_FILES: &[&str] = &[
    "/proc/kcore",
    "/proc/keys",
    "/proc/key-users",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/kallsyms",
    "/proc/kmsg",
    "/proc/kpagecount",
    "/proc/kpageflags",
    "/proc/kpagecgroup",
    "/proc/config.gz",
    // Kernel addresses and allocator state, readable by root: what exploits aim with.
    "/proc/slabinfo",
    "/proc/vmallocinfo",
    "/proc/pagetypeinfo",
    "/proc/iomem",
    "/proc/ioports",
    "/proc/modules",
];
pub const PROC_HIDDEN_DIRS: &[&str] = &["/proc/acpi", "/proc/asound", "/proc/scsi", "/proc/driver"];

/// bubblewrap's arguments that apply [`PROC_READ_ONLY`] and the hidden entries, right after
/// `--proc /proc`. The read-only views are the host's own entries (the settings are the
/// kernel's, not per sandbox), bound read-only over the sandbox's.
fn push_proc_masks(push: &mut impl FnMut(&[&str])) {
    for path in PROC_READ_ONLY {
        if Path::new(path).exists() {
            push(&["--ro-bind", path, path]);
        }
    }
    for path in PROC_HIDDEN_FILES {
        if Path::new(path).exists() {
            push(&["--ro-bind", "/dev/null", path]);
        }
    }
    for path in PROC_HIDDEN_DIRS {
        if Path::new(path).is_dir() {
            push(&["--size", "4096", "--tmpfs", path, "--remount-ro", path]);
        }
    }
}

/// Toolchains installed under a home (rustup, cargo, pyenv), each alone and read-only.
fn toolchains(args: &mut Vec<String>) {
    for toolchain in crate::probe::home_toolchains() {
        let path = toolchain.to_string_lossy().into_owned();
        args.extend(["--ro-bind".to_owned(), path.clone(), path]);
    }
}

#[derive(Debug)]
pub struct BwrapSandbox {
    spec: SandboxSpec,
    /// The resident sandbox commands run in; `None` after a timeout killed it (the next
    /// command starts another). Commands run one at a time.
    shell: tokio::sync::Mutex<Option<Shell>>,
    key: ShellKey,
    workspace_name: String,
    /// The sandbox's own directory, with the proxy socket: its state directory when that was
    /// free. Removed with the sandbox (by its shell, once killed).
    runtime_dir: PathBuf,
    /// Always there until the sandbox is dropped, when it goes first: its socket file is
    /// removed while no sandbox is being torn down over it.
    proxy: Option<EgressProxy>,
    redactor: Redactor,
    maker: Arc<ShellMaker>,
    /// The cgroup of the long-running programs started with [`BwrapSandbox::spawn`].
    programs_cgroup: std::sync::Mutex<Option<SandboxCgroup>>,
    /// What every command's environment is.
    environment: Vec<(String, String)>,
}

/// The environment commands get: a fixed base, the proxy, then secrets, then env vars (which
/// win over a secret of the same name). Made once per sandbox: it never changes in its life.
pub fn environment(spec: &SandboxSpec) -> Vec<(String, String)> {
    let proxy = format!("http://127.0.0.1:{PROXY_PORT}");
    let mut path = String::from("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    // The host's toolchains under homes are not in an image's root.
    let toolchains = match spec.root {
        None => crate::probe::home_toolchains(),
        Some(_) => Vec::new(),
    };
    for toolchain in &toolchains {
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
    if let Some(rustup) = toolchains.into_iter().find(|p| p.ends_with(".rustup")) {
        env.insert("RUSTUP_HOME".into(), rustup.display().to_string());
    }
    // The image's own settings (its PATH among them), then what the user set.
    if let Some(root) = &spec.root {
        env.extend(root.env.iter().cloned());
    }
    env.extend(spec.secrets.clone());
    env.extend(spec.env.clone());
    env.into_iter().collect()
}

impl BwrapSandbox {
    /// bubblewrap's whole command line for one long-running program (see [`Self::spawn`]).
    fn plan(
        &self,
        command: &CheckedCommand<'_>,
        cgroup: Option<&SandboxCgroup>,
    ) -> Result<LaunchPlan, SandboxError> {
        let limits = &self.spec.limits;
        let image = self.spec.root.as_ref().map(|root| root.rootfs.as_path());
        let mut args = isolation(&["--disable-userns"], &self.maker, limits.tmp_bytes, image);
        let mut push = |more: &[&str]| args.extend(more.iter().map(|s| s.to_string()));
        push(&["--proc", "/proc"]);
        push_proc_masks(&mut push);
        push(&["--dev", "/dev"]);
        push(&["--tmpfs", "/run", "--dir", "/.deft"]);
        let helper = self.maker.helper.to_string_lossy();
        push(&["--ro-bind", &helper, "/.deft/init"]);
        let workspace = self.spec.workspace.to_string_lossy();
        push(&["--bind", &workspace, "/workspace"]);
        // A repository's hooks and config would let a command make the host's git run code.
        // The launcher binds these sources as root, following links: every step of the path
        // must be what it seems, not only the last (a `.git` linked to `/root/.ssh` would show
        // the host's `config`). No command runs while a program starts, so nothing swaps them.
        let real_dir = |path: &Path| std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
        if let Ok(entries) = std::fs::read_dir(&self.spec.workspace) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !real_dir(&entry.path()) || !real_dir(&entry.path().join(".git")) {
                    continue;
                }
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
        let socket = self
            .proxy
            .as_ref()
            .expect("the proxy lives as long as the sandbox")
            .path()
            .to_string_lossy();
        push(&["--bind", &socket, "/.deft/proxy.sock"]);
        if image.is_none() {
            toolchains(&mut args);
        }
        let mut push = |more: &[&str]| args.extend(more.iter().map(|s| s.to_string()));
        let cwd = command.dir_inside();
        // Without a cgroup, the process rlimit is the last resort.
        let nproc = if cgroup.is_some() {
            0
        } else {
            limits.processes
        };
        // Everything outside /workspace, /tmp and the home is read-only, the root included.
        push(&["--remount-ro", "/", "--chdir", &cwd, "--"]);
        args.extend(self.maker.init_command(image.is_some()));
        let mut push = |more: &[&str]| args.extend(more.iter().map(|s| s.to_string()));
        push(&[inner::INIT]);
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
        // The program and its arguments follow on standard input, not here: bubblewrap's
        // command line is readable by every user of the host, and arguments may hold secrets.
        push(&["--argv-on-stdin", "1"]);
        Ok(LaunchPlan {
            bwrap: PathBuf::from("/usr/bin/bwrap"),
            cgroup_procs: cgroup.map(SandboxCgroup::procs_files).unwrap_or_default(),
            args,
            env: self.environment.clone(),
            run_as: self.maker.run_as(),
        })
    }
}

/// A long-running program's environment: the sandbox's `environment` with `extra_env` added
/// to it, an extra variable winning over the sandbox's of the same name.
pub fn program_env(
    environment: impl IntoIterator<Item = (String, String)>,
    extra_env: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = environment.into_iter().collect();
    env.extend(extra_env.iter().cloned());
    env.into_iter().collect()
}

/// Starts deft's own binary `helper` with `args`, an empty environment and `stdio` as its
/// standard input, output and error; it is killed when the child is dropped.
pub fn start_helper(
    helper: &Path,
    args: &[&str],
    [stdin, stdout, stderr]: [std::process::Stdio; 3],
) -> Result<tokio::process::Child, SandboxError> {
    tokio::process::Command::new(helper)
        .args(args)
        .env_clear()
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| SandboxError::Start(format!("{}: {error}", helper.display())))
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

impl BwrapSandbox {
    /// Starts the launcher (deft's own binary) with all three standard streams piped.
    fn launcher(&self, args: &[&str]) -> Result<tokio::process::Child, SandboxError> {
        let piped = std::process::Stdio::piped;
        start_helper(&self.maker.helper, args, [piped(), piped(), piped()])
    }

    /// Masks the sandbox's secrets in `text`, as every command's output is.
    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }
}

/// The task's long-running programs, stopped (`SIGSTOP`) until this is dropped.
#[derive(Debug)]
struct ProgramsStopped {
    procs: Vec<PathBuf>,
    /// The freezer's control file, and what thaws it, when the cgroup was frozen rather
    /// than signalled.
    thaw: Option<(PathBuf, &'static str)>,
}

impl Drop for ProgramsStopped {
    fn drop(&mut self) {
        if let Some((control, thawed)) = &self.thaw
            && std::fs::write(control, thawed).is_ok()
        {
            return;
        }
        for pid in cgroup_pids(&self.procs) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::CONT);
        }
    }
}

fn cgroup_pids(procs: &[PathBuf]) -> Vec<rustix::process::Pid> {
    let mut pids: Vec<rustix::process::Pid> = procs
        .iter()
        .flat_map(|file| {
            std::fs::read_to_string(file)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter_map(|line| line.trim().parse::<i32>().ok())
        .filter_map(rustix::process::Pid::from_raw)
        .collect();
    pids.sort_by_key(|pid| pid.as_raw_nonzero());
    pids.dedup();
    pids
}

/// Whether the process is stopped, as `/proc/PID/stat` says (a gone process counts).
fn is_stopped(pid: rustix::process::Pid) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero())) else {
        return true;
    };
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
        .is_none_or(|state| matches!(state, 'T' | 't' | 'Z' | 'X'))
}

impl Drop for BwrapSandbox {
    fn drop(&mut self) {
        drop(self.proxy.take());
        if let Some(cgroup) = self
            .programs_cgroup
            .get_mut()
            .expect("never poisoned")
            .take()
        {
            crate::shell::aside(move || cgroup.remove());
        }
        // Only its own: the state directory's name, when this sandbox did not get it, may be
        // another sandbox's by now.
        let dirs = vec![self.runtime_dir.clone()];
        match self.shell.get_mut().take() {
            Some(mut shell) => shell.remove_on_drop.extend(dirs),
            None => crate::shell::aside(move || {
                for dir in dirs {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }),
        }
    }
}

impl BwrapSandbox {
    /// A shell for this sandbox after its first was killed: started now, not from the pool,
    /// since the proxy's socket stays where it is.
    async fn restart(&self) -> Result<Shell, SandboxError> {
        let mut shell = Shell::start(
            self.maker.as_ref(),
            &self.key,
            Some(self.runtime_dir.clone()),
        )
        .await?;
        shell
            .attach(&self.workspace_name, &self.spec.limits)
            .await?;
        Ok(shell)
    }
}

impl NativeSandbox for BwrapSandbox {
    async fn run(
        &self,
        command: &CheckedCommand<'_>,
        on_output: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Ran, SandboxError> {
        let mut slot = self.shell.lock().await;
        // Owned for the command's time: should this future be dropped mid-command (a task
        // cancelled), the shell goes with it, killing everything the command started, and no
        // late answer can be taken for the next command's. It goes back when the command ended.
        let shell = match slot.take() {
            Some(shell) => shell,
            None => self.restart().await?,
        };
        let oom_before = shell.cgroup.as_ref().map_or(0, SandboxCgroup::oom_kills);
        let pids_before = shell.cgroup.as_ref().map_or(0, SandboxCgroup::pids_refused);
        let run = shell
            .control
            .command(command, &self.environment, &self.redactor, on_output)
            .await;
        let counts = shell
            .cgroup
            .as_ref()
            .map(|cgroup| LimitCounts {
                oom_killed: cgroup.oom_kills() > oom_before,
                pids_refused: cgroup.pids_refused() > pids_before,
            })
            .unwrap_or_default();
        let ending = match run.answer {
            Answer::Ended(ending) => {
                *slot = Some(shell);
                ending
            }
            Answer::Refused(error) => {
                *slot = Some(shell);
                return Err(error);
            }
            // The init is gone (killed, or out of memory itself): the next command gets a new
            // one.
            Answer::Lost(error) => return Err(error),
            Answer::TimedOut => {
                // The command and all it started die with the whole sandbox; the next command
                // gets a new one on the same workspace.
                drop(shell);
                Ending::TimedOut
            }
        };
        Ok(Ran::new(ending, (run.output, run.truncated), counts))
    }

    /// Starts the program through the launcher, in a bubblewrap of its own inside the cgroup
    /// of the task's programs.
    async fn spawn(
        &self,
        command: &CheckedCommand<'_>,
        extra_env: &[(String, String)],
    ) -> Result<SandboxProcess, SandboxError> {
        let mut plan = {
            // A cgroup of their own, with the task's limits: a command's timeout kills the
            // commands' sandbox and everything in its cgroup, and must not take these along.
            let mut cgroup = self.programs_cgroup.lock().expect("never poisoned");
            if cgroup.is_none() {
                let name = format!(
                    "deft-sandbox-{}-p{}",
                    std::process::id(),
                    PROGRAMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                );
                *cgroup = self
                    .maker
                    .support
                    .cgroups
                    .create(
                        &name,
                        self.spec.limits.memory_bytes,
                        self.spec.limits.processes,
                    )
                    .map_err(SandboxError::io(
                        "creating the cgroup of the task's programs",
                    ))?;
            }
            self.plan(command, cgroup.as_ref())?
        };
        let env = program_env(plan.env.drain(..), extra_env);
        let mut child = self.launcher(&[inner::LAUNCH, inner::STDIO])?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        // The plan for the launcher, then the environment and the program's arguments for the
        // init, each with its length; what follows is the program's own input.
        let plan = serde_json::to_vec(&plan).expect("plans serialize");
        let env = crate::plan::encode_env(&env);
        let argv = serde_json::to_vec(command.argv()).expect("strings serialize");
        for part in [&plan, &env, &argv] {
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

    /// Stops the task's long-running programs (MCP servers, which share the workspace) until
    /// the returned guard is dropped: deft's git on the host checks a clone and then uses it,
    /// and nothing may change the clone in between. Commands of the sandbox are never running
    /// then. Without a cgroup to find them by, the programs keep running.
    fn pause_programs(&self) -> PausedPrograms {
        let cgroup = self.programs_cgroup.lock().expect("never poisoned");
        let procs = cgroup
            .as_ref()
            .map(SandboxCgroup::procs_files)
            .unwrap_or_default();
        // The freezer stops a forking program at once, its new children included; signals
        // race with forks and with a loaded machine, so they are only the fallback (cgroup v1).
        // A program in the middle of a write under heavy disk load is frozen only when the
        // write ends, so the freezer is given long: waiting costs the task seconds, giving up
        // costs it its MCP servers.
        if let Some(control) = cgroup
            .as_ref()
            .and_then(|group| group.freeze(std::time::Duration::from_secs(20)))
        {
            return PausedPrograms::holding(ProgramsStopped {
                procs,
                thaw: Some(control),
            });
        }
        drop(cgroup);
        // A process that forks while being stopped leaves a child the next look stops. A
        // stopped process shows as stopped only once it is scheduled again, which on a busy
        // machine takes a while: the patience is in time, not in tries.
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_secs(5) {
            let pids = cgroup_pids(&procs);
            for pid in &pids {
                let _ = rustix::process::kill_process(*pid, rustix::process::Signal::STOP);
            }
            if pids.iter().all(|pid| is_stopped(*pid)) {
                return PausedPrograms::holding(ProgramsStopped { procs, thaw: None });
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // Programs that fork faster than they can be stopped would run beside deft's git: they
        // are killed instead (the task's MCP servers then fail their next calls).
        tracing::warn!("the task's programs could not all be stopped; killing them");
        for _ in 0..500 {
            let pids = cgroup_pids(&procs);
            if pids.is_empty() {
                break;
            }
            for pid in &pids {
                let _ = rustix::process::kill_process(*pid, rustix::process::Signal::KILL);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        PausedPrograms::holding(ProgramsStopped { procs, thaw: None })
    }

    fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    fn spec(&self) -> &SandboxSpec {
        &self.spec
    }
}
