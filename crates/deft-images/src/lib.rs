//! A repository's Dockerfile, turned into an unpacked root filesystem for the sandbox.
//!
//! deft does not build images: a real builder does, Podman (`podman system service`) or Docker,
//! through the Docker-compatible Engine API on a unix socket (`bollard`). [`Images::prepare`]
//! checks the build context and the Dockerfile, has the builder build it, reads the image's
//! environment, working directory and user, exports its root filesystem through a container
//! that is never started, and unpacks it into a cache directory that the sandbox mounts
//! read-only. Images are cached by the hash of the Dockerfile's path and the context, and the
//! cache is kept within a byte budget.
//!
//! Guarantees:
//! - `RUN` steps never run in the host's network namespace: they get a private one with only
//!   loopback ([`BuildNetwork::None`]), or join one whose only way out is deft's egress proxy
//!   ([`BuildNetwork::Egress`], Podman only). Podman's Engine API takes that as `nsoptions`
//!   (its `networkmode` says whether to configure a network, and without `nsoptions` it uses
//!   the host's), so the build request is made here, not through bollard. `RUN --mount`,
//!   `--network` and `--security`, `ADD` from a URL and `# syntax=` directives are refused
//!   before the builder sees the Dockerfile, naming the line.
//! - No registry credentials are sent, so only public base images build
//!   ([`ImageError::PrivateImage`] otherwise).
//! - The build context holds no absolute paths, no `..`, no link out of it (symlinks are
//!   followed through each other to decide), no devices or FIFOs.
//! - Unpacking never writes outside its directory, never restores owners, setuid or setgid
//!   bits or extended attributes, skips device nodes and FIFOs, and stops at 2,000,000 entries
//!   or 32 GiB.
//! - An image in use (a live [`Prepared`]) is never pruned; preparations of one key run one at
//!   a time, and a half-unpacked image is never used.
//!
//! Limits:
//! - The builder's own stored logins (Podman's `auth.json` for the user it runs as) are the
//!   builder's business; deft sends none, but cannot stop the builder from using its own.
//! - The cache directory belongs to one deft process at a time.
//! - The root filesystem holds the image's links as they are, absolute ones included: they
//!   are meant to be resolved inside the sandbox, and host code must not follow them.
//! - The sandbox's user must be able to reach the cache directory; the root filesystem's own
//!   directories are opened to it (`o+x`).

mod builder;
mod cache;
mod context;
mod error;
mod lint;
mod unpack;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::sync::OwnedMutexGuard;

pub use crate::error::ImageError;

/// How long a call to the builder, other than a build or an export, may take.
const API_TIMEOUT: Duration = Duration::from_secs(120);

/// The image builder and the cache of unpacked images.
pub struct Images {
    builder: builder::Builder,
    cache: cache::Cache,
}

/// What to build: the context and the Dockerfile's path inside it.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// An uncompressed tar of the build context, e.g. from `git archive`.
    pub context_tar: Vec<u8>,
    /// The Dockerfile's path inside the context, e.g. `Dockerfile` or `.deft/Dockerfile`.
    pub dockerfile: String,
    /// What names the context's contents when its tar's bytes do not: git's tree id, since
    /// `git archive` writes the commit's id and time into the tar, and two commits with the
    /// same files must share one image. `None`: the tar's bytes are the identity.
    pub contents_id: Option<String>,
    /// The network the build's `RUN` steps get.
    pub network: BuildNetwork,
}

/// The network of a build's `RUN` steps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BuildNetwork {
    /// None at all: only their own loopback.
    #[default]
    None,
    /// A network namespace whose only way out is deft's egress proxy at `proxy`
    /// (`http://127.0.0.1:3128`), as a task's sandbox has: the task's network policy decides
    /// what `RUN` reaches. Podman's builder only.
    Egress { namespace: PathBuf, proxy: String },
}

/// An image ready for the sandbox. While it lives, its root filesystem is never pruned.
#[derive(Debug)]
pub struct Prepared {
    /// The hex SHA-256 of the Dockerfile's path and the context (see [`BuildRequest::key`]).
    pub key: String,
    /// The unpacked root filesystem, to be mounted read-only.
    pub rootfs: PathBuf,
    pub config: ImageConfig,
    /// Whether this preparation built the image (false: it came from the cache).
    pub built: bool,
    _in_use: cache::InUse,
}

/// The parts of an image's config that the sandbox uses. `CMD`, `ENTRYPOINT` and `EXPOSE`
/// are ignored: the agent decides what runs.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ImageConfig {
    /// `ENV`, in the image's order, each split at its first `=`.
    pub env: Vec<(String, String)>,
    /// `WORKDIR`, when set.
    pub workdir: Option<String>,
    /// `USER`, when set, as written (a name or an id, maybe with a group).
    pub user: Option<String>,
}

impl BuildRequest {
    /// The cache key: the hex SHA-256 of the Dockerfile's path (its length first, as 8
    /// little-endian bytes, then its bytes) followed by the contents' id (marked `id:`) or,
    /// without one, the context's bytes (marked `tar:`).
    pub fn key(&self) -> String {
        let mut hash = Sha256::new();
        hash.update((self.dockerfile.len() as u64).to_le_bytes());
        hash.update(self.dockerfile.as_bytes());
        match &self.contents_id {
            Some(id) => {
                hash.update(b"id:");
                hash.update(id.as_bytes());
            }
            None => {
                hash.update(b"tar:");
                hash.update(&self.context_tar);
            }
        }
        hex::encode(hash.finalize())
    }
}

impl Images {
    /// Connects to the Engine API on a unix socket (Podman's `podman system service` or
    /// Docker's), with `cache_dir` (made if missing) holding at most about `budget_bytes` of
    /// unpacked images besides those in use. Nothing is sent until the first call.
    pub fn connect(
        socket: &Path,
        cache_dir: &Path,
        budget_bytes: u64,
    ) -> Result<Images, ImageError> {
        let address = socket.to_str().ok_or_else(|| ImageError::Unavailable {
            socket: socket.to_owned(),
            reason: "the socket's path is not UTF-8".to_owned(),
        })?;
        let docker = bollard::Docker::connect_with_unix(
            address,
            API_TIMEOUT.as_secs(),
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|error| ImageError::from_api(socket, "connect", error))?;
        std::fs::create_dir_all(cache_dir).map_err(ImageError::io(cache_dir))?;
        Ok(Images {
            builder: builder::Builder {
                docker,
                socket: socket.to_owned(),
                podman: tokio::sync::OnceCell::new(),
            },
            cache: cache::Cache::new(cache_dir.to_owned(), budget_bytes),
        })
    }

    /// The builder's name and version, for `deft doctor`: `Podman Engine 4.3.1 (Engine API
    /// 1.41)`.
    pub async fn describe(&self) -> Result<String, ImageError> {
        self.builder.describe().await
    }

    /// Finds in the cache, or builds, the image for this Dockerfile and context, unpacked.
    /// `on_line` receives the builder's output lines (for the task's log); a cached image
    /// builds nothing, sends no line, and comes back with `built == false`.
    /// The image for `request` when it is built and unpacked already (held, as `prepare`
    /// holds it), after the same checks; `None` when `prepare` would build. The builder is not
    /// asked anything, so a caller can leave out what only a build needs.
    pub async fn cached(&self, request: &BuildRequest) -> Result<Option<Prepared>, ImageError> {
        let dockerfile_text = context::check(&request.context_tar, &request.dockerfile)?;
        lint::lint(&request.dockerfile, &dockerfile_text)?;
        let key = request.key();
        let _lock = self.cache.lock(&key).await;
        Ok(self
            .cache
            .lookup(&key)?
            .map(|record| self.cache_hit(key, record)))
    }

    fn cache_hit(&self, key: String, record: cache::Record) -> Prepared {
        Prepared {
            rootfs: self.cache.rootfs(&key),
            config: record.config,
            built: false,
            _in_use: self.cache.hold(&key),
            key,
        }
    }

    /// Whether the builder runs `RUN` steps in a network namespace deft names
    /// ([`BuildNetwork::Egress`]): Podman's does, Docker's does not.
    pub async fn joins_namespaces(&self) -> bool {
        self.builder.is_podman().await
    }

    pub async fn prepare(
        &self,
        request: &BuildRequest,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Prepared, ImageError> {
        let dockerfile_text = context::check(&request.context_tar, &request.dockerfile)?;
        let dockerfile = lint::lint(&request.dockerfile, &dockerfile_text)?;
        let key = request.key();
        let rootfs = self.cache.rootfs(&key);

        let lock = self.cache.lock(&key).await;
        if let Some(record) = self.cache.lookup(&key)? {
            return Ok(self.cache_hit(key, record));
        }

        let tag = format!("deft-env:{key}");
        self.builder
            .refuse_triggers(&dockerfile.base_images)
            .await?;
        self.builder
            .build(
                request.context_tar.clone(),
                &request.dockerfile,
                &tag,
                &dockerfile.base_images,
                &request.network,
                on_line,
            )
            .await?;
        let (unpacked, lock) = self.unpack(&key, &tag, lock).await;
        self.builder.forget(&tag).await;
        let (config, size_bytes) = unpacked?;
        let record = cache::Record {
            config: config.clone(),
            last_used_ms: cache::now_ms(),
            size_bytes,
        };
        self.cache.store(&key, &record)?;
        let in_use = self.cache.hold(&key);
        drop(lock);

        if let Err(error) = self.cache.prune() {
            // The image is ready; a cache that cannot shrink now is tried again after the
            // next build.
            tracing::warn!(error = %error, "could not prune the image cache");
        }
        Ok(Prepared {
            key,
            rootfs,
            config,
            built: true,
            _in_use: in_use,
        })
    }

    /// Reads the built image's config and unpacks its root filesystem as `KEY`. The key's lock
    /// goes along with the unpacking thread and comes back with it, so that a preparation
    /// dropped midway keeps the key locked until its thread has stopped writing.
    async fn unpack(
        &self,
        key: &str,
        tag: &str,
        lock: OwnedMutexGuard<()>,
    ) -> (Result<(ImageConfig, u64), ImageError>, OwnedMutexGuard<()>) {
        let config = match self.builder.config(tag).await {
            Ok(config) => config,
            Err(error) => return (Err(error), lock),
        };
        let partial = self.cache.partial(key);
        let rootfs = self.cache.rootfs(key);
        // Left by a preparation that failed midway, or by an unfinished one without its record.
        let cleared = cache::remove_path(&partial).and_then(|()| cache::remove_path(&rootfs));
        if let Err(error) = cleared {
            return (Err(error), lock);
        }
        let container = format!("deft-export-{key}");
        let (exported, lock) = self.builder.export(tag, &container, &partial, lock).await;
        let published = exported.and_then(|size| {
            std::fs::rename(&partial, &rootfs).map_err(ImageError::io(&rootfs))?;
            Ok((config, size))
        });
        if published.is_err() {
            let _ = cache::remove_path(&partial);
        }
        (published, lock)
    }
}
