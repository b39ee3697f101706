//! The calls to the image builder (Podman's or Docker's Engine API, through bollard): build
//! the Dockerfile, read the image's config, export its root filesystem, and clean up after.
//!
//! deft never builds images itself; the builder does, with its own Dockerfile parser and
//! isolation. What deft adds: no network for `RUN` steps, no registry credentials, intermediate
//! containers always removed, and timeouts on every wait.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as ApiError;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, RemoveContainerOptions, RemoveImageOptions,
};
use futures_util::StreamExt as _;
use tokio::sync::mpsc;

use crate::unpack::{self, CancelOnDrop, ChannelReader};
use crate::{ImageConfig, ImageError};

/// How long a whole build may take.
pub(crate) const BUILD_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// How long the export may go without sending a byte.
const EXPORT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// How many of the builder's last lines a failed build reports.
const LAST_LINES: usize = 20;

/// One JSON message of the build's answer: its text goes to the output; an error ends it.
fn build_message(line: &[u8], output: &mut Output<'_>) -> Result<(), String> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let message: serde_json::Value = serde_json::from_slice(line)
        .map_err(|error| format!("the builder answered something not JSON ({error})"))?;
    if let Some(error) = message["error"]
        .as_str()
        .or_else(|| message["errorDetail"]["message"].as_str())
    {
        return Err(error.to_owned());
    }
    for key in ["stream", "status"] {
        if let Some(text) = message[key].as_str() {
            output.push(text);
        }
    }
    Ok(())
}

/// The builder, as the rest of the crate uses it.
pub(crate) struct Builder {
    pub docker: Docker,
    pub socket: PathBuf,
    /// Whether the engine is Podman, asked once.
    pub podman: tokio::sync::OnceCell<bool>,
}

impl Builder {
    fn api_error(&self, action: &'static str) -> impl FnOnce(ApiError) -> ImageError + '_ {
        move |error| ImageError::from_api(&self.socket, action, error)
    }

    /// The builder's name and version, as `Podman Engine 4.3.1 (Engine API 1.41)`.
    pub(crate) async fn describe(&self) -> Result<String, ImageError> {
        let version = self
            .docker
            .version()
            .await
            .map_err(self.api_error("say its version"))?;
        let engine = version
            .components
            .as_deref()
            .and_then(|components| components.first())
            .map(|component| format!("{} {}", component.name, component.version))
            .or_else(|| version.version.clone().map(|v| format!("Engine {v}")))
            .unwrap_or_else(|| "an unnamed engine".to_owned());
        let api = version.api_version.unwrap_or_else(|| "?".to_owned());
        Ok(format!("{engine} (Engine API {api})"))
    }

    /// Whether the builder is Podman, whose Engine API takes the network of a build's `RUN`
    /// steps as `nsoptions` (its `networkmode` is another setting) where Docker's takes
    /// `networkmode`.
    pub(crate) async fn is_podman(&self) -> bool {
        *self
            .podman
            .get_or_init(|| async {
                self.describe()
                    .await
                    .is_ok_and(|engine| engine.contains("Podman"))
            })
            .await
    }

    /// The query of a build: what to build, and the network its `RUN` steps get.
    async fn build_query(
        &self,
        dockerfile: &str,
        tag: &str,
        network: &crate::BuildNetwork,
    ) -> Result<Vec<(&'static str, String)>, ImageError> {
        let mut query = vec![
            ("dockerfile", dockerfile.to_owned()),
            ("t", tag.to_owned()),
            ("rm", "1".to_owned()),
            ("forcerm", "1".to_owned()),
            // deft caches whole images by their context; the builder's layer cache would only
            // be looked up, and Podman's lookup fails when another build removes an image
            // meanwhile ("layer not known").
            ("nocache", "1".to_owned()),
        ];
        let podman = self.is_podman().await;
        match network {
            crate::BuildNetwork::None if podman => {
                // Without `nsoptions`, Podman runs `RUN` in the host's network namespace.
                query.push(("networkmode", "NetworkDisabled".to_owned()));
                query.push((
                    "nsoptions",
                    r#"[{"Name":"network","Host":false}]"#.to_owned(),
                ));
            }
            crate::BuildNetwork::None => query.push(("networkmode", "none".to_owned())),
            crate::BuildNetwork::Egress { namespace, proxy } => {
                if !podman {
                    return Err(ImageError::Refused {
                        reason: "this builder cannot run `RUN` steps behind deft's egress proxy (Docker's Engine API joins no network namespace by path); use Podman's (`podman system service`)".to_owned(),
                    });
                }
                let namespace = namespace.to_str().ok_or_else(|| ImageError::Refused {
                    reason: "the build's network namespace has no UTF-8 path".to_owned(),
                })?;
                // No `networkmode` here: Podman's `NetworkDisabled` would make a namespace of
                // its own rather than join this one.
                query.push((
                    "nsoptions",
                    serde_json::json!([{"Name": "network", "Path": namespace}]).to_string(),
                ));
                // Docker's predefined build arguments: every `RUN` sees them, no `ARG` needed,
                // and they stay out of the image's history.
                let mut args = serde_json::Map::new();
                for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
                    args.insert(name.to_owned(), serde_json::json!(proxy));
                }
                for name in ["NO_PROXY", "no_proxy"] {
                    args.insert(name.to_owned(), serde_json::json!(""));
                }
                query.push(("buildargs", serde_json::Value::Object(args).to_string()));
            }
        }
        Ok(query)
    }

    /// Builds `context` into the image `tag`, sending each output line to `on_line`. The
    /// request is made here rather than through bollard, whose build options cannot carry
    /// Podman's `nsoptions`.
    pub(crate) async fn build(
        &self,
        context: Vec<u8>,
        dockerfile: &str,
        tag: &str,
        base_images: &[String],
        network: &crate::BuildNetwork,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), ImageError> {
        let query = self.build_query(dockerfile, tag, network).await?;
        let client = reqwest::Client::builder()
            .unix_socket(self.socket.clone())
            .build()
            .map_err(|error| ImageError::Builder {
                action: "be reached",
                message: error.to_string(),
            })?;
        let mut output = Output::new(on_line);
        // No credentials, ever: a base image that needs them fails to pull.
        let outcome = tokio::time::timeout(BUILD_TIMEOUT, async {
            let query = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&query)
                .finish();
            let response = client
                .post(format!("http://builder/v1.41/build?{query}"))
                .header("Content-Type", "application/x-tar")
                .body(context)
                .send()
                .await
                .map_err(|error| error.to_string())?;
            if !response.status().is_success() {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                let message = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|value| value["message"].as_str().map(str::to_owned))
                    .unwrap_or(body);
                return Err(format!("{status}: {message}"));
            }
            let mut body = response.bytes_stream();
            let mut pending = Vec::new();
            while let Some(chunk) = body.next().await {
                pending.extend_from_slice(&chunk.map_err(|error| error.to_string())?);
                while let Some(end) = pending.iter().position(|byte| *byte == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    build_message(&line, &mut output)?;
                }
            }
            build_message(&pending, &mut output)
        })
        .await;
        output.finish();
        let failure = match outcome {
            Ok(Ok(())) => return Ok(()),
            Err(_elapsed) => format!(
                "deft stopped the build after {} minutes",
                BUILD_TIMEOUT.as_secs() / 60
            ),
            Ok(Err(message)) => message,
        };
        let failure = failure.trim().to_owned();
        if let Some(image) = private_image(&failure, base_images) {
            return Err(ImageError::PrivateImage { image });
        }
        output.tail.push_back(format!("error: {failure}"));
        while output.tail.len() > LAST_LINES {
            output.tail.pop_front();
        }
        Err(ImageError::BuildFailed {
            last_lines: Vec::from(output.tail).join("\n"),
        })
    }

    /// Refuses base images that carry `ONBUILD` triggers: the builder would run them as part of
    /// this build, and no lint has read them. A base image missing here is pulled first, as
    /// the build would (without credentials); a pull that fails is left for the build to report.
    pub(crate) async fn refuse_triggers(&self, base_images: &[String]) -> Result<(), ImageError> {
        for image in base_images {
            if self.docker.inspect_image(image).await.is_err() {
                let options = CreateImageOptions {
                    from_image: Some(image.clone()),
                    ..Default::default()
                };
                let pull = self.docker.create_image(Some(options), None, None);
                futures_util::pin_mut!(pull);
                while let Some(progress) = pull.next().await {
                    if progress.is_err() {
                        break;
                    }
                }
            }
            let Ok(inspect) = self.docker.inspect_image(image).await else {
                continue;
            };
            let mut triggers = inspect
                .config
                .and_then(|config| config.on_build)
                .unwrap_or_default();
            // Podman's Engine API does not report them in the config: its history does.
            // An ancestor's triggers, already spent, show there too, and are refused all the
            // same: a false refusal costs a base image, a missed trigger runs unread code.
            if let Ok(history) = self.docker.image_history(image).await {
                triggers.extend(
                    history
                        .into_iter()
                        .map(|layer| layer.created_by)
                        .filter(|created_by| created_by.contains("ONBUILD")),
                );
            }
            if !triggers.is_empty() {
                return Err(ImageError::Refused {
                    reason: format!(
                        "the base image `{image}` carries ONBUILD triggers ({}), which would run in this build unchecked; use a base image without them",
                        triggers.join("; ")
                    ),
                });
            }
        }
        Ok(())
    }

    /// The parts of the image's config deft uses.
    pub(crate) async fn config(&self, tag: &str) -> Result<ImageConfig, ImageError> {
        let inspect = self
            .docker
            .inspect_image(tag)
            .await
            .map_err(self.api_error("read the built image's config"))?;
        let config = inspect.config.unwrap_or_default();
        let env = config
            .env
            .unwrap_or_default()
            .into_iter()
            .map(|pair| match pair.split_once('=') {
                Some((name, value)) => (name.to_owned(), value.to_owned()),
                None => (pair, String::new()),
            })
            .collect();
        let non_empty = |value: Option<String>| value.filter(|value| !value.is_empty());
        Ok(ImageConfig {
            env,
            workdir: non_empty(config.working_dir),
            user: non_empty(config.user),
        })
    }

    /// Exports the root filesystem of `tag` into `target` (which must not exist) through a
    /// container that is created, never started, and removed. Returns the unpacked size, and
    /// `keep`, which the unpacking thread holds until it ends (even when this is dropped).
    pub(crate) async fn export<K: Send + 'static>(
        &self,
        tag: &str,
        container_name: &str,
        target: &Path,
        keep: K,
    ) -> (Result<u64, ImageError>, K) {
        // A container of this name is left over from a preparation that was dropped midway.
        self.remove_container(container_name).await;
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(container_name.to_owned()),
                    ..Default::default()
                }),
                ContainerCreateBody {
                    image: Some(tag.to_owned()),
                    // Never run; the API wants a command all the same.
                    cmd: Some(vec!["true".to_owned()]),
                    network_disabled: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(self.api_error("create a container to export the image"));
        let created = match created {
            Ok(created) => created,
            Err(error) => return (Err(error), keep),
        };
        let unpacked = self.unpack_container(&created.id, target, keep).await;
        self.remove_container(&created.id).await;
        unpacked
    }

    async fn unpack_container<K: Send + 'static>(
        &self,
        container: &str,
        target: &Path,
        keep: K,
    ) -> (Result<u64, ImageError>, K) {
        let (sender, receiver) = mpsc::channel::<io::Result<bytes::Bytes>>(16);
        let cancelled = Arc::new(AtomicBool::new(false));
        let _cancel = CancelOnDrop(cancelled.clone());
        let target_owned = target.to_owned();
        let unpacking = tokio::task::spawn_blocking(move || {
            let unpacked = unpack::unpack(
                ChannelReader::new(receiver),
                &target_owned,
                unpack::LIMITS,
                &cancelled,
            );
            (unpacked, keep)
        });
        let stream = self.docker.export_container(container);
        let pump = async move {
            futures_util::pin_mut!(stream);
            loop {
                let chunk = match tokio::time::timeout(EXPORT_IDLE_TIMEOUT, stream.next()).await {
                    Ok(Some(chunk)) => chunk.map_err(io::Error::other),
                    Ok(None) => break,
                    Err(_elapsed) => Err(io::Error::other(format!(
                        "the builder sent nothing for {} minutes",
                        EXPORT_IDLE_TIMEOUT.as_secs() / 60
                    ))),
                };
                let failed = chunk.is_err();
                // The unpacking thread stopped (an error or a limit): stop reading.
                if sender.send(chunk).await.is_err() || failed {
                    break;
                }
            }
        };
        let ((), unpacked) = tokio::join!(pump, unpacking);
        match unpacked {
            Ok(done) => done,
            // The thread panicked, and `keep` went with it: go on panicking here. (A blocking
            // task is cancelled only when its runtime shuts down, which no longer polls this.)
            Err(error) => std::panic::resume_unwind(
                error
                    .try_into_panic()
                    .expect("a blocking task's error is a panic while its runtime runs"),
            ),
        }
    }

    async fn remove_container(&self, container: &str) {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.docker.remove_container(container, Some(options)).await {
            Ok(())
            | Err(ApiError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(error) => tracing::warn!(
                container,
                error = %error,
                "could not remove the export container; remove it with `podman rm`"
            ),
        }
    }

    /// Removes the image `tag` from the builder's storage. The unpacked copy in the cache is
    /// what the sandbox uses, so keeping the builder's copy too would cost the image's size a
    /// second time, outside the cache's budget. Base images pulled by `FROM` stay in the
    /// builder's storage, which its operator prunes.
    ///
    /// Never forced: a forced removal also removes the containers using the image, and another
    /// build that shares this one's first steps may be running one from it right now. An
    /// image still in use (or with child images) then stays, tagged, until the operator prunes.
    pub(crate) async fn forget(&self, tag: &str) {
        let options = RemoveImageOptions {
            force: false,
            noprune: false,
            ..Default::default()
        };
        if let Err(error) = self.docker.remove_image(tag, Some(options), None).await {
            tracing::info!(image = tag, error = %error, "the built image stays with the builder");
        }
    }
}

/// The builder's output, split into lines for `on_line`, with the last ones kept.
struct Output<'a> {
    on_line: &'a mut (dyn FnMut(&str) + Send),
    partial: String,
    tail: VecDeque<String>,
}

impl<'a> Output<'a> {
    fn new(on_line: &'a mut (dyn FnMut(&str) + Send)) -> Output<'a> {
        Output {
            on_line,
            partial: String::new(),
            tail: VecDeque::with_capacity(LAST_LINES + 1),
        }
    }

    fn push(&mut self, text: &str) {
        self.partial.push_str(text);
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            self.line(line.trim_end_matches(['\n', '\r']));
        }
    }

    fn finish(&mut self) {
        let rest = std::mem::take(&mut self.partial);
        if !rest.is_empty() {
            self.line(rest.trim_end_matches('\r'));
        }
    }

    fn line(&mut self, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        (self.on_line)(line);
        if self.tail.len() == LAST_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_owned());
    }
}

/// The base image a failed build's error blames for missing credentials, if it does. A failed
/// `RUN` step quotes the step's own text, so its errors are never read as a pull's.
fn private_image(error: &str, base_images: &[String]) -> Option<String> {
    let lowered = error.to_ascii_lowercase();
    let run_failed = [
        "while running runtime",
        "returned a non-zero code",
        "exit status",
        "exit code",
    ]
    .iter()
    .any(|marker| lowered.contains(marker));
    let needs_credentials = [
        "unauthorized",
        "authentication required",
        "access denied",
        "requested access to the resource is denied",
    ]
    .iter()
    .any(|marker| lowered.contains(marker));
    if run_failed || !needs_credentials {
        return None;
    }
    let named = base_images
        .iter()
        .find(|image| error.contains(image.as_str()));
    Some(
        named
            .or(base_images.first())
            .cloned()
            .unwrap_or_else(|| "(unnamed)".to_owned()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_private(error: &str, expect: Option<&str>) {
        let bases = [
            "localhost/base:1".to_owned(),
            "registry.test/team/private:2".to_owned(),
        ];
        assert_eq!(private_image(error, &bases).as_deref(), expect, "{error}");
    }

    #[test]
    fn pull_refusals_are_private_images_and_failed_steps_are_not() {
        check_private(
            "creating build container: initializing source docker://registry.test/team/private:2: \
             reading manifest 2 in registry.test/team/private: unauthorized: access to the \
             requested resource is not authorized",
            Some("registry.test/team/private:2"),
        );
        check_private(
            "pull access denied for x, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
            Some("localhost/base:1"),
        );
        check_private(
            "Head \"https://registry.test/v2/x/manifests/1\": authentication required",
            Some("localhost/base:1"),
        );
        check_private(
            "building at STEP \"RUN echo unauthorized && exit 3\": while running runtime: exit status 3",
            None,
        );
        check_private(
            "The command '/bin/sh -c cat /denied: x' returned a non-zero code: 1",
            None,
        );
        check_private("no such file or directory", None);
        check_private("open /var/lib/containers/x: permission denied", None);
    }

    #[test]
    fn output_is_split_into_lines_and_the_tail_kept() {
        let mut seen = Vec::new();
        let mut on_line = |line: &str| seen.push(line.to_owned());
        let mut output = Output::new(&mut on_line);
        output.push("STEP 1/2: FROM a\nhal");
        output.push("f a line\r\n\n");
        for n in 0..30 {
            output.push(&format!("line {n}\n"));
        }
        output.push("no newline at the end");
        output.finish();
        let tail: Vec<String> = output.tail.iter().cloned().collect();
        assert_eq!(tail.len(), LAST_LINES);
        assert_eq!(tail.last().unwrap(), "no newline at the end");
        assert_eq!(seen[..2], ["STEP 1/2: FROM a", "half a line"]);
        assert_eq!(seen.len(), 33);
    }
}
