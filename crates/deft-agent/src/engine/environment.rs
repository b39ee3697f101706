//! The environment a task's commands run on: a repository's Dockerfile (or its setting, or
//! the operator's default image) built into an image root, or the host's tools with the
//! repositories' dependencies installed by their own tools, once per task.

use deft_core::{Attention, AttentionKind, StepEvent, StepStatus, Task, TaskId, WorkStep};
use deft_sandbox::ExecRequest;
use tokio_util::sync::CancellationToken;

use super::{Engine, EngineError, TaskRepo, TaskSandbox, attention};

/// The environment chosen for a task, before anything is built.
pub(super) struct Chosen {
    wanted: crate::setup::Wanted,
    /// A repository's own Dockerfile or setting chose it: its dependencies are its own.
    own: bool,
}

/// The root a task's commands get, the image that must outlive the run, and whether a
/// repository's own Dockerfile (or setting) made it: else its dependencies are installed.
pub(super) type EnvironmentRoot = (
    Option<deft_sandbox::ImageRoot>,
    Option<deft_images::Prepared>,
    bool,
);

impl Engine {
    /// What the task's commands will run on, chosen from the bases' trees in git's objects:
    /// a repository's Dockerfile (or setting), the operator's default image, or the host.
    pub(super) async fn choose_environment(
        &self,
        task: &Task,
        repos: &[TaskRepo],
    ) -> Result<Result<Chosen, Attention>, EngineError> {
        let bases = self.bases(&task.id);
        let mut found = Vec::new();
        for (repo, dir, facts) in repos {
            let Some(commit) = bases.get(repo.id.as_str()) else {
                continue;
            };
            // The analysis listed the base's tree already when it read the base.
            let regular = facts
                .listed
                .as_ref()
                .filter(|(listed, _)| listed == commit)
                .map(|(_, regular)| regular.clone());
            found.push(crate::setup::RepoBase {
                name: repo.name.clone(),
                private: self.private_repo(&task.id, dir),
                commit: commit.clone(),
                environment: repo.environment.clone(),
                regular,
            });
        }
        let wanted = match crate::setup::wanted(&found).await {
            Ok(wanted) => wanted,
            Err(error) => {
                return Ok(Err(attention(
                    AttentionKind::Error,
                    format!("cannot choose the task's environment: {error}"),
                )));
            }
        };
        // No Dockerfile: the operator's default image, when there is one and a builder.
        let own = !matches!(wanted, crate::setup::Wanted::Host);
        let wanted = match (&wanted, &self.default_image, &self.images) {
            (crate::setup::Wanted::Host, Some(image), Some(_)) => {
                crate::setup::default_image(image)
            }
            _ => wanted,
        };
        Ok(Ok(Chosen { wanted, own }))
    }

    /// Whether the chosen environment is an image to prepare (and so a build may run).
    pub(super) fn builds_image(&self, chosen: &Chosen) -> bool {
        self.images.is_some() && matches!(chosen.wanted, crate::setup::Wanted::Dockerfile { .. })
    }

    /// The root filesystem the task's commands get, with the image that must outlive the run
    /// (the cache never prunes an image in use); or why the task stops. A build's output goes
    /// to the task's log, folded.
    pub(super) async fn environment_root(
        &self,
        task: &Task,
        chosen: Chosen,
        environment: &deft_store::Environment,
    ) -> Result<Result<EnvironmentRoot, Attention>, EngineError> {
        let id = &task.id;
        let Chosen { wanted, own } = chosen;
        let crate::setup::Wanted::Dockerfile {
            repo,
            path,
            context,
            tree,
            ignored,
        } = wanted
        else {
            return Ok(Ok((None, None, false)));
        };
        let mut summary = format!("{repo}/{path}");
        if !ignored.is_empty() {
            summary.push_str(&format!(
                " (one environment per task: {} not used)",
                ignored.join(", ")
            ));
        }
        let Some(crate::setup::ImageBuilder(images)) = &self.images else {
            self.step(
                id,
                StepEvent::new(WorkStep::Image, StepStatus::Skipped).summary(format!("{summary} is not built: no image builder is configured, so commands use the host's tools; set `[environments] builder` (Podman's or Docker's Engine API socket) and restart")),
            )
            .await?;
            return Ok(Ok((None, None, own)));
        };
        self.step(
            id,
            StepEvent::new(WorkStep::Image, StepStatus::Started).summary(summary.clone()),
        )
        .await?;
        let mut lines = Vec::new();
        let request = deft_images::BuildRequest {
            context_tar: context,
            dockerfile: path.clone(),
            // One owner's builds never become another's: what a build fetches, it fetches
            // under its owner's network policy.
            contents_id: Some(format!("{} {tree}", task.owner.as_str())),
            network: deft_images::BuildNetwork::None,
        };
        // A built image is used as it is: no builder asked, no network made for a build that
        // will not run.
        let prepared = match images.cached(&request).await {
            Ok(Some(prepared)) => Ok(prepared),
            Ok(None) => {
                self.build_image(id, images, request, environment, &mut lines)
                    .await
            }
            Err(error) => Err(error),
        };
        let output = crate::setup::tail(&lines, 400);
        match prepared {
            Ok(prepared) => {
                let status = if prepared.built {
                    StepStatus::Built
                } else {
                    StepStatus::Reused
                };
                let mut event = StepEvent::new(WorkStep::Image, status).summary(format!(
                    "{summary} as {}",
                    &prepared.key[..12.min(prepared.key.len())]
                ));
                if !output.is_empty() {
                    event = event.output(output);
                }
                self.step(id, event).await?;
                let root = deft_sandbox::ImageRoot {
                    rootfs: prepared.rootfs.clone(),
                    env: prepared.config.env.clone(),
                };
                Ok(Ok((Some(root), Some(prepared), own)))
            }
            Err(error) => {
                self.step(
                    id,
                    StepEvent::new(WorkStep::Image, StepStatus::Failed)
                        .summary(summary)
                        .output(output),
                )
                .await?;
                Ok(Err(attention(
                    AttentionKind::Error,
                    format!(
                        "the environment from {repo}/{path} cannot be made: {error}. Fix the Dockerfile (`deft env build --repo PATH` builds it alone), then answer this task"
                    ),
                )))
            }
        }
    }

    /// The ecosystems of each repository, from its base in its private repository. A
    /// repository that cannot be read is left out (its dependencies are the agent's to fetch).
    pub(super) async fn dependencies(
        &self,
        id: &TaskId,
        repos: &[TaskRepo],
    ) -> Vec<crate::install::RepoDependencies> {
        let bases = self.bases(id);
        let mut found = Vec::new();
        for (repo, dir, _) in repos {
            let Some(commit) = bases.get(repo.id.as_str()) else {
                continue;
            };
            let name = dir
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            match crate::install::detect(&self.private_repo(id, dir), commit).await {
                Ok(ecosystems) => found.push(crate::install::RepoDependencies {
                    name,
                    repo_id: repo.id.as_str().to_owned(),
                    ecosystems,
                }),
                Err(error) => {
                    tracing::warn!(task.id = %id, repo = %repo.name, %error, "cannot look for the repository's ecosystems");
                }
            }
        }
        found
    }

    /// Installs each repository's dependencies once per task (a resumed task does not again),
    /// in its sandbox, recording each install as a step with its output. A failed install does
    /// not stop the task: the agent sees the step and can do better.
    pub(super) async fn install(
        &self,
        id: &TaskId,
        sandbox: &TaskSandbox,
        dependencies: &[crate::install::RepoDependencies],
        cancel: &CancellationToken,
    ) -> Result<(), EngineError> {
        let marker = crate::workspaces::Workspaces::new(&self.workspaces)
            .private_dir(id)
            .join("installed.json");
        let mut done: Vec<String> = std::fs::read(&marker)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        for found in dependencies {
            for ecosystem in &found.ecosystems {
                let dir = if ecosystem.dir.is_empty() {
                    found.name.clone()
                } else {
                    format!("{}/{}", found.name, ecosystem.dir)
                };
                let key = format!("{dir} {}", ecosystem.kind);
                if done.contains(&key) {
                    continue;
                }
                done.push(key.clone());
                let outcome = self.install_one(id, sandbox, ecosystem, &dir, cancel).await;
                if let Err(error) = std::fs::write(
                    &marker,
                    serde_json::to_vec(&done).expect("strings serialize"),
                ) {
                    tracing::warn!(task.id = %id, %error, "cannot record an install");
                }
                outcome?;
            }
        }
        Ok(())
    }

    async fn install_one(
        &self,
        id: &TaskId,
        sandbox: &TaskSandbox,
        ecosystem: &deft_ecosystems::Ecosystem,
        dir: &str,
        cancel: &CancellationToken,
    ) -> Result<(), EngineError> {
        let what = format!("{dir} ({})", ecosystem.kind);
        let Some(install) = &ecosystem.install else {
            let note = ecosystem.note.clone().unwrap_or_default();
            return self
                .step(
                    id,
                    StepEvent::new(WorkStep::Install, StepStatus::Skipped)
                        .summary(format!("{what}: {note}")),
                )
                .await;
        };
        let probe = ExecRequest {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("command -v '{}'", ecosystem.program.replace('\'', "")),
            ],
            cwd: Some(dir.to_owned()),
            timeout: std::time::Duration::from_secs(30),
            output_cap: 4096,
        };
        let found = sandbox.exec(&probe, &mut |_| {}).await;
        if !found.as_ref().is_ok_and(|outcome| outcome.exit_code() == 0) {
            return self
                .step(
                    id,
                    StepEvent::new(WorkStep::Install, StepStatus::Skipped).summary(format!("{what}: this environment has no `{}`; install it on the host, or add a Dockerfile that does", ecosystem.program)),
                )
                .await;
        }
        self.step(
            id,
            StepEvent::new(WorkStep::Install, StepStatus::Started).summary(what.clone()),
        )
        .await?;
        let request = ExecRequest {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                crate::install::script(ecosystem, install),
            ],
            cwd: Some(dir.to_owned()),
            timeout: std::time::Duration::from_secs(20 * 60),
            output_cap: 64 * 1024,
        };
        let mut ignore = |_: &str| {};
        let ran = tokio::select! {
            _ = cancel.cancelled() => return Err(EngineError::Cancelled),
            ran = sandbox.exec(&request, &mut ignore) => ran,
        };
        let (status, output) = match ran {
            Ok(outcome) if outcome.exit_code() == 0 => (StepStatus::Done, outcome.output),
            Ok(outcome) => (
                StepStatus::Failed,
                format!("{}\n[exit status {}]", outcome.output, outcome.exit_code()),
            ),
            Err(error) => (StepStatus::Failed, error.to_string()),
        };
        self.step(
            id,
            StepEvent::new(WorkStep::Install, status)
                .summary(what)
                .output(output),
        )
        .await
    }
}
