//! A real image builder for tests: Podman's Engine API service, with its storage in a
//! directory the caller keeps (under the cargo target dir, so that images survive between
//! runs), and a small Debian base image made offline from the machine's own apt sources.
//!
//! Each `PodmanService` is a process of its own on a socket of its own, so tests in separate
//! processes (as nextest runs them) each start one; they share the storage, which Podman locks.
//! The storage driver is `vfs`: slower and bigger than overlay, but it leaves no mounts behind,
//! so the directory can always be deleted. The service reads a `registries.conf` of its own
//! that searches no registry for short names (a test never reaches out by accident) and lets
//! it speak plain HTTP to registries on 127.0.0.1 (the private-registry stand-in below).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The tag of the base image [`base_image`] makes.
pub const BASE_IMAGE: &str = "localhost/deft-test-base:1";

/// How long a service may take to answer its first request.
const START_TIMEOUT: Duration = Duration::from_secs(60);

const REGISTRIES_CONF: &str = r#"# Written by deft-testkit: tests never search registries for short names.
unqualified-search-registries = []

[[registry]]
location = "127.0.0.1"
insecure = true
"#;

/// A running `podman system service`; killed when dropped.
#[derive(Debug)]
pub struct PodmanService {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl PodmanService {
    /// Starts `podman system service` with its storage under `dir` (made if missing) and waits
    /// until its socket answers. Panics, with the service's log, when it does not.
    pub fn start(dir: &Path) -> PodmanService {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        );
        std::fs::create_dir_all(storage_dir(dir)).expect("podman's storage can be made");
        std::fs::create_dir_all(dir.join("logs")).expect("the podman test directory can be made");
        let run = run_dir(dir);
        for sub in ["libpod", "sockets"] {
            std::fs::create_dir_all(run.join(sub)).expect("podman's run directory can be made");
        }
        let registries = dir.join("registries.conf");
        std::fs::write(&registries, REGISTRIES_CONF).expect("registries.conf can be written");
        let socket = run.join("sockets").join(format!("{name}.sock"));
        let log = dir.join("logs").join(format!("{name}.log"));
        let _ = std::fs::remove_file(&socket);
        let log_file = std::fs::File::create(&log).expect("the service's log can be made");
        let child = podman(dir)
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .env("CONTAINERS_REGISTRIES_CONF", &registries)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("a log handle can be cloned"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot run podman ({error}); install it: `apt-get install -y podman runc`")
            });
        let mut service = PodmanService {
            child,
            dir: dir.to_owned(),
            socket,
            log,
        };
        service.wait_until_ready();
        service
    }

    /// The service's unix socket, for `deft_images::Images::connect`.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A `podman` command with this service's storage, for what the API does not do.
    pub fn cli(&self) -> Command {
        podman(&self.dir)
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ping(&self.socket) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "podman system service exited ({status}):\n{}",
                    self.log_text()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "podman system service did not answer within {START_TIMEOUT:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Podman's storage under `dir`, named after `dir` itself: Podman's database remembers the
/// paths it was made with and refuses to start from any other, so a checkout that moved (or
/// a target directory seen through another path) gets a storage of its own.
fn storage_dir(dir: &Path) -> PathBuf {
    dir.join(format!("storage-{:016x}", path_hash(dir)))
}

/// Podman's run directory for the storage under `dir`. Podman refuses a runroot longer than 50
/// characters and a unix socket's path holds at most 107 bytes, while `dir` lies in a checkout
/// whose path can be of any length; so the run directory (and the sockets in it) is a short one
/// under the temporary directory, named by a hash of `dir` so that every process sharing the
/// storage shares its locks too.
fn run_dir(dir: &Path) -> PathBuf {
    let hash = path_hash(dir);
    let temp = std::env::temp_dir();
    let base = if temp.as_os_str().len() <= 16 {
        temp
    } else {
        PathBuf::from("/tmp")
    };
    base.join(format!("deft-podman-{hash:016x}"))
}

/// FNV-1a of a path: stable across processes and builds, which `DefaultHasher` does not
/// promise.
fn path_hash(path: &Path) -> u64 {
    path.as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// `podman` with the storage under `dir`, and the flags a machine without systemd needs.
fn podman(dir: &Path) -> Command {
    let run = run_dir(dir);
    let mut command = Command::new("podman");
    command
        .arg("--root")
        .arg(storage_dir(dir))
        .arg("--runroot")
        .arg(&run)
        .arg("--tmpdir")
        .arg(run.join("libpod"))
        .args([
            "--storage-driver",
            "vfs",
            "--runtime",
            "runc",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ]);
    command
}

/// Whether the Engine API answers `/_ping` on `socket`.
fn ping(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(b"GET /_ping HTTP/1.0\r\nHost: podman\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200")
}

/// Makes, once for the storage (and once per machine for the tarball), a minimal Debian image
/// tagged [`BASE_IMAGE`], and returns its name. The root filesystem comes from
/// `mmdebstrap --variant=minbase` with the machine's own apt sources and suite (from
/// `/etc/os-release`), without documentation, manuals or locales, cached as a tarball beside
/// the storage; `podman import` makes it an image. Other test processes wait on a lock file.
pub fn base_image(service: &PodmanService) -> String {
    let lock_path = service.dir.join("base-image.lock");
    let lock = std::fs::File::create(&lock_path).expect("the base image's lock can be made");
    lock.lock().expect("the base image's lock can be taken");

    let exists = service
        .cli()
        .args(["image", "exists", BASE_IMAGE])
        .status()
        .expect("podman runs");
    if exists.success() {
        return BASE_IMAGE.to_owned();
    }
    let suite = os_release("VERSION_CODENAME");
    let tarball = service.dir.join(format!("debian-{suite}-minbase.tar"));
    if !tarball.exists() {
        let partial = tarball.with_extension("tar.partial");
        let output = Command::new("mmdebstrap")
            .args(["--variant=minbase", "--quiet", "--format=tar"])
            .args([
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/info/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*",
            ])
            .arg(&suite)
            .arg(&partial)
            .args(apt_sources())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run mmdebstrap ({error}); install it: `apt-get install -y mmdebstrap`"
                )
            });
        assert!(
            output.status.success(),
            "mmdebstrap failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::rename(&partial, &tarball).expect("the base tarball can be renamed");
    }
    let output = service
        .cli()
        .args([
            "import",
            "--change",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ])
        .arg(&tarball)
        .arg(BASE_IMAGE)
        .output()
        .expect("podman runs");
    assert!(
        output.status.success(),
        "podman import failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    BASE_IMAGE.to_owned()
}

/// A value of `/etc/os-release`, unquoted.
fn os_release(key: &str) -> String {
    let text = std::fs::read_to_string("/etc/os-release").expect("/etc/os-release is readable");
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .map(|value| value.trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("/etc/os-release has no {key}"))
}

/// The machine's apt source files, each of which mmdebstrap copies into the new system.
fn apt_sources() -> Vec<PathBuf> {
    let mut sources = Vec::new();
    let list = PathBuf::from("/etc/apt/sources.list");
    if std::fs::metadata(&list).is_ok_and(|metadata| metadata.len() > 0) {
        sources.push(list);
    }
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| {
                path.extension()
                    .is_some_and(|extension| extension == "list" || extension == "sources")
            })
            .collect();
        found.sort();
        sources.extend(found);
    }
    assert!(
        !sources.is_empty(),
        "this machine has no apt sources for mmdebstrap"
    );
    sources
}

/// A registry stand-in on 127.0.0.1 that answers every request `401 Unauthorized`, as a
/// registry does for a private image pulled without credentials. Stops when dropped.
#[derive(Debug)]
pub struct PrivateRegistry {
    /// `127.0.0.1:PORT`, to write in front of an image name.
    pub address: String,
    stop: Arc<AtomicBool>,
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accepting thread, which then sees the flag.
        let _ = std::net::TcpStream::connect(&self.address);
    }
}

impl PrivateRegistry {
    pub fn start() -> PrivateRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port can be bound");
        let address = listener
            .local_addr()
            .expect("a bound port has an address")
            .to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                // Read the request head, then refuse it.
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" || line == "\n" {
                        break;
                    }
                    line.clear();
                }
                let body =
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
                let _ = write!(
                    &stream,
                    "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n\
                     WWW-Authenticate: Basic realm=\"deft-test\"\r\n\
                     Docker-Distribution-API-Version: registry/2.0\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        PrivateRegistry { address, stop }
    }
}
