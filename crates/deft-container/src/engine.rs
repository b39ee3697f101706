//! The calls to the container engine (Podman's or Docker's Engine API, through bollard, on a
//! unix socket): what deft asks of it to run a sandbox, each with a timeout, and the checks
//! that it can run one as deft means to.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as ApiError;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, RemoveContainerOptions,
    WaitContainerOptions,
};
use deft_sandbox::SandboxError;
use futures_util::StreamExt as _;

/// How long a call to the engine may take.
const API_TIMEOUT: Duration = Duration::from_secs(120);

/// The label every container deft makes carries, so that leftovers can be found.
pub(crate) const LABEL: &str = "deft.sandbox";

/// A connection to the engine, and what deft learned about it.
#[derive(Debug, Clone)]
pub(crate) struct Engine {
    pub docker: Docker,
    pub socket: PathBuf,
    /// Podman understands `U` (own the tmpfs as the container's user); Docker wants numbers.
    pub podman: bool,
    /// Security options every container gets.
    pub security_opt: Vec<String>,
}

pub(crate) fn api_error(socket: &Path, action: &str, error: ApiError) -> SandboxError {
    SandboxError::Start(format!(
        "the container engine at {} could not {action}: {error}",
        socket.display()
    ))
}

impl Engine {
    /// Connects and checks that containers of this engine can be deft's sandboxes: a rootful
    /// engine without user namespace remapping, where a container's uid is the host's.
    pub async fn connect(socket: &Path) -> Result<Engine, SandboxError> {
        let address = socket.to_str().ok_or_else(|| {
            SandboxError::Unsupported(format!("{} is not a UTF-8 path", socket.display()))
        })?;
        let docker =
            Docker::connect_with_unix(address, API_TIMEOUT.as_secs(), bollard::API_DEFAULT_VERSION)
                .map_err(|error| api_error(socket, "be reached", error))?;
        let info = docker.info().await.map_err(|error| {
            SandboxError::Unsupported(format!(
                "no container engine answers at {} ({error}); start one (`podman system service \
                 --time=0 unix://{}`)",
                socket.display(),
                socket.display()
            ))
        })?;
        let options = info.security_options.unwrap_or_default();
        if let Some(option) = options
            .iter()
            .find(|option| option.contains("rootless") || option.contains("name=userns"))
        {
            return Err(SandboxError::Unsupported(format!(
                "the container engine at {} maps users ({option}): the files a sandbox writes in \
                 the workspace would belong to another host user than deft's clones; use a \
                 rootful engine without user namespace remapping",
                socket.display()
            )));
        }
        let version = docker
            .version()
            .await
            .map_err(|error| api_error(socket, "say its version", error))?;
        let podman = version
            .components
            .unwrap_or_default()
            .iter()
            .any(|component| component.name.contains("Podman"));
        // deft's init applies its own seccomp filter to every command (the same as in
        // bubblewrap's sandboxes). Podman's default profile stays in force beneath it: it lets
        // the init make its user namespace and mounts (checked by the attack suite). Docker's
        // refuses `unshare` and `mount` to a container without CAP_SYS_ADMIN, so there deft's
        // filter is the only one (not tried here: this machine has no Docker).
        let mut security_opt = vec!["no-new-privileges".to_owned()];
        if !podman {
            security_opt.push("seccomp=unconfined".to_owned());
        }
        if options
            .iter()
            .any(|option| option.contains("name=apparmor"))
        {
            security_opt.push("apparmor=unconfined".to_owned());
        }
        if options.iter().any(|option| option.contains("name=selinux")) {
            security_opt.push("label=disable".to_owned());
        }
        Ok(Engine {
            docker,
            socket: socket.to_owned(),
            podman,
            security_opt,
        })
    }

    fn error(&self, action: &str) -> impl FnOnce(ApiError) -> SandboxError + '_ {
        let action = action.to_owned();
        move |error| api_error(&self.socket, &action, error)
    }

    /// Imports `tar` as the image `tag` unless the engine has it.
    pub async fn ensure_image(&self, tag: &str, tar: Vec<u8>) -> Result<(), SandboxError> {
        if self.docker.inspect_image(tag).await.is_ok() {
            return Ok(());
        }
        let options = CreateImageOptions {
            from_src: Some("-".to_owned()),
            // Docker and Podman both take the tag within the name.
            repo: Some(tag.to_owned()),
            ..Default::default()
        };
        let stream = self.docker.create_image(
            Some(options),
            Some(bollard::body_full(bytes::Bytes::from(tar))),
            None,
        );
        let imported = tokio::time::timeout(API_TIMEOUT, async {
            futures_util::pin_mut!(stream);
            while let Some(item) = stream.next().await {
                item?;
            }
            Ok::<(), ApiError>(())
        })
        .await
        .map_err(|_| SandboxError::Start(format!("importing {tag} took over two minutes")))?;
        imported.map_err(self.error("import the sandbox's root image"))
    }

    /// Creates and starts a container; returns its id. A container that fails to start is
    /// removed.
    pub async fn run(&self, name: &str, body: ContainerCreateBody) -> Result<String, SandboxError> {
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.to_owned()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(self.error("create the sandbox's container"))?;
        if let Some(warning) = created.warnings.iter().find(|warning| !warning.is_empty()) {
            // An engine that cannot apply a limit says so here, and runs the container without.
            self.remove(&created.id).await;
            return Err(SandboxError::Unsupported(format!(
                "the container engine warned: {warning}; deft runs no sandbox it cannot limit"
            )));
        }
        if let Err(error) = self
            .docker
            .start_container(
                &created.id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
        {
            self.remove(&created.id).await;
            return Err(api_error(
                &self.socket,
                "start the sandbox's container",
                error,
            ));
        }
        Ok(created.id)
    }

    /// Resolves once the container is no longer running (or no longer exists).
    pub async fn ended(&self, id: &str) {
        let options = WaitContainerOptions {
            condition: "not-running".to_owned(),
        };
        let mut stream = self.docker.wait_container(id, Some(options));
        let _ = stream.next().await;
    }

    /// Removes the container, killing what runs in it; one already gone is fine.
    pub async fn remove(&self, id: &str) {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        let removed =
            tokio::time::timeout(API_TIMEOUT, self.docker.remove_container(id, Some(options)))
                .await;
        match removed {
            Ok(Ok(()))
            | Ok(Err(ApiError::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            })) => {}
            Ok(Err(error)) => tracing::warn!(
                container = id,
                %error,
                "could not remove a sandbox's container; remove it with `podman rm -f`"
            ),
            Err(_) => tracing::warn!(container = id, "removing a sandbox's container timed out"),
        }
    }

    /// Removes the containers a deft that was killed outright left: exited ones (the engine
    /// removes a sandbox's container when its init ends, so these are rare), and ones created
    /// more than ten minutes ago and never started.
    pub async fn sweep(&self) {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_owned(),
                vec![LABEL.to_owned()],
            )])),
            ..Default::default()
        };
        let Ok(Ok(containers)) =
            tokio::time::timeout(API_TIMEOUT, self.docker.list_containers(Some(options))).await
        else {
            return;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs() as i64);
        for container in containers {
            use bollard::models::ContainerSummaryStateEnum as State;
            let stale = match container.state {
                Some(State::EXITED | State::DEAD) => true,
                Some(State::CREATED) => container.created.is_some_and(|at| now - at > 600),
                _ => false,
            };
            if let (true, Some(id)) = (stale, container.id) {
                self.remove(&id).await;
            }
        }
    }
}

/// Runs `work` with a connection of its own to the engine at `socket`, on a thread of its own
/// with its own runtime, and waits for it: for the few calls made where no `await` is
/// possible (pausing programs, a guard's drop).
pub(crate) fn blocking<T: Send + 'static>(
    engine: &Engine,
    work: impl AsyncFnOnce(&Engine) -> T + Send + 'static,
) -> Option<T> {
    let socket = engine.socket.clone();
    let (podman, security_opt) = (engine.podman, engine.security_opt.clone());
    std::thread::Builder::new()
        .name("deft-container-call".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let docker = Docker::connect_with_unix(
                    socket.to_str()?,
                    API_TIMEOUT.as_secs(),
                    bollard::API_DEFAULT_VERSION,
                )
                .ok()?;
                let engine = Engine {
                    docker,
                    socket,
                    podman,
                    security_opt,
                };
                Some(work(&engine).await)
            })
        })
        .ok()?
        .join()
        .ok()
        .flatten()
}
