//! A run's start: the workspace, a clone of each repository, their analysis, the environment
//! commands run on (a repository's image, or the host's tools with the dependencies
//! installed), and the sandbox with its egress proxy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use deft_core::{
    Attention, AttentionKind, EventKind, Progress, RepoFound, StepEvent, StepStatus, Task, TaskId,
    User, WorkStep,
};
use deft_egress::{DomainSet, EgressPolicy, ProxyEvent, Resolver};
use deft_sandbox::{Limits, Sandbox, SandboxSpec};
use deft_store::Store;

use super::{Engine, EngineError, TaskRepo, attention};
use crate::analysis::{RepoFacts, analyse};
use crate::workspaces::Workspaces;

/// What the run starts with.
pub(super) struct Prepared {
    pub repos: Vec<TaskRepo>,
    pub branch: String,
    pub sandbox: Box<dyn Sandbox>,
    pub environment: deft_store::Environment,
    pub secrets: BTreeMap<String, String>,
    pub network_log: NetworkLog,
    pub caches: Caches,
    /// The image the sandbox's root comes from, held until the run ends: the cache never
    /// prunes an image in use.
    pub image: Option<deft_images::Prepared>,
}

/// The egress proxy's decisions, written to the task's log as they come; the refusals are
/// also counted for the pull request's body.
pub(super) struct NetworkLog {
    writer: tokio::task::JoinHandle<()>,
    refused: Arc<Mutex<BTreeMap<(String, u16), u32>>>,
}

impl NetworkLog {
    /// Records each decision of a sandbox's egress proxy as a network event of the task
    /// (`build`: the proxy of an image's build), until the proxy goes.
    pub(super) fn start(
        store: &Store,
        id: &TaskId,
        mut decisions: tokio::sync::mpsc::UnboundedReceiver<ProxyEvent>,
        build: bool,
    ) -> NetworkLog {
        let store = store.clone();
        let task = id.clone();
        let refused = Arc::new(Mutex::new(BTreeMap::new()));
        let counts = refused.clone();
        let writer = tokio::spawn(async move {
            while let Some(event) = decisions.recv().await {
                if !event.allowed && !build {
                    *counts
                        .lock()
                        .expect("the refusals lock is never held across a panic")
                        .entry((event.host.clone(), event.port))
                        .or_default() += 1;
                }
                let mut data = serde_json::json!({"host": event.host, "port": event.port, "allowed": event.allowed, "rule": event.rule});
                if build {
                    data["build"] = serde_json::json!(true);
                }
                let _ = store.append_event(&task, EventKind::Network, data).await;
            }
        });
        NetworkLog { writer, refused }
    }

    /// Moves the refusals counted since the last call into `progress`, which keeps them.
    pub(super) fn count_into(&self, progress: &mut Progress) {
        let counted = std::mem::take(
            &mut *self
                .refused
                .lock()
                .expect("the refusals lock is never held across a panic"),
        );
        for ((host, port), count) in counted {
            for _ in 0..count {
                progress.refused(&host, port);
            }
        }
    }

    pub(super) fn stop(&self) {
        self.writer.abort();
    }

    /// Waits, at most `patience`, for the decisions already made to be written.
    async fn finish(self, patience: std::time::Duration) {
        let _ = tokio::time::timeout(patience, self.writer).await;
    }
}

/// The task's repositories as the run starts with them: read, and their clones being made.
pub(super) struct Cloned {
    pub repos: Vec<TaskRepo>,
    pub checkouts: Checkouts,
}

/// A fresh clone being made in the workspace while the run goes on.
pub(super) struct Checkout {
    name: String,
    dir: PathBuf,
    /// A file in deft's own directory of the task, there while the clone is being made: a
    /// clone whose run ended before it was whole is made again, never used.
    marker: PathBuf,
    making: tokio::task::JoinHandle<Result<(), String>>,
}

/// The fresh clones still being made while the repositories are read from git's objects and
/// the environment is chosen: awaited before the sandbox is made over them, and stopped if the
/// run ends first.
pub(super) struct Checkouts(Vec<Checkout>);

impl Checkouts {
    /// Waits for every clone still being made; why the task stops when one failed.
    pub(super) async fn wait(&mut self) -> Result<(), Attention> {
        let outcome = self.wait_each().await;
        if outcome.is_err() {
            // None of the rest may go on writing in the workspace behind the next run.
            for checkout in std::mem::take(&mut self.0) {
                checkout.making.abort();
                let _ = checkout.making.await;
                let _ = std::fs::remove_dir_all(&checkout.dir);
                let _ = std::fs::remove_file(&checkout.marker);
            }
        }
        outcome
    }

    async fn wait_each(&mut self) -> Result<(), Attention> {
        while !self.0.is_empty() {
            let checkout = self.0.remove(0);
            let made = match checkout.making.await {
                Ok(made) => made,
                Err(error) => Err(error.to_string()),
            };
            if let Err(error) = made {
                // A clone half made is not a clone: the next run makes it again.
                let _ = std::fs::remove_dir_all(&checkout.dir);
                let _ = std::fs::remove_file(&checkout.marker);
                return Err(attention(
                    AttentionKind::Error,
                    format!("cannot clone {}: {error}", checkout.name),
                ));
            }
            if !std::fs::symlink_metadata(&checkout.dir).is_ok_and(|meta| meta.is_dir()) {
                return Err(not_the_clone(&checkout.name));
            }
            let _ = std::fs::remove_file(&checkout.marker);
        }
        Ok(())
    }
}

impl Drop for Checkouts {
    fn drop(&mut self) {
        for checkout in &self.0 {
            checkout.making.abort();
        }
    }
}

/// Why a task stops whose clone was replaced by what its commands left.
fn not_the_clone(name: &str) -> Attention {
    attention(
        AttentionKind::Error,
        format!(
            "`{name}` in the task's workspace is no longer the clone deft made (a link or a file?); cancel the task and start it again"
        ),
    )
}

/// The download caches kept for the task's repository between tasks: in its workspace while
/// it runs, given back when nothing of it runs any more.
pub(super) struct Caches {
    kept: Option<PathBuf>,
    workspace: PathBuf,
}

impl Caches {
    pub(super) fn give_back(&self) {
        if let Some(kept) = &self.kept {
            crate::install::give_back_caches(&self.workspace, kept);
        }
    }
}

impl Engine {
    /// Everything before the agent's first turn; or why the task stops.
    pub(super) async fn read_repositories(
        &self,
        task: &Task,
        owner: &User,
    ) -> Result<Result<Cloned, Attention>, EngineError> {
        let id = &task.id;
        let workspace = self.workspaces.join(id.as_str());
        std::fs::create_dir_all(&workspace).map_err(|e| deft_store::StoreError::Corrupt {
            what: format!("workspace {}: {e}", workspace.display()),
        })?;
        let branch = deft_forge::branch_name(id.as_str(), &task.description);
        // The copies are made while the steps are written: nothing in them waits for the store.
        let steps = async {
            self.step(
                id,
                StepEvent::new(WorkStep::Environment, StepStatus::Started),
            )
            .await?;
            self.step(id, StepEvent::new(WorkStep::Analysis, StepStatus::Started))
                .await
        };
        let (stepped, cloned) =
            tokio::join!(steps, self.clone_and_read(task, owner, &workspace, &branch));
        if let Err(error) = stepped {
            // No clone goes on being written behind a run that ended.
            if let Ok(Ok(mut cloned)) = cloned {
                let _ = cloned.checkouts.wait().await;
            }
            return Err(error);
        }
        let cloned = match cloned? {
            Ok(cloned) => cloned,
            Err(stop) => return Ok(Err(stop)),
        };
        let mut analysed = StepEvent::new(WorkStep::Analysis, StepStatus::Done);
        analysed.branch = Some(branch);
        analysed.repos = cloned
            .repos
            .iter()
            .map(|(repo, _, facts)| RepoFound {
                repo: repo.name.clone(),
                steering: facts
                    .steering
                    .iter()
                    .map(|(path, _)| path.clone())
                    .collect(),
                checks: facts.checks.clone(),
            })
            .collect();
        self.step(id, analysed).await?;
        Ok(Ok(cloned))
    }

    /// The rest of a run's start, once the repositories are read: the environment, the
    /// sandbox over whole clones, the dependencies installed.
    pub(super) async fn prepare(
        &self,
        task: &Task,
        owner: &User,
        cloned: Cloned,
        chosen: super::environment::Chosen,
        environment: deft_store::Environment,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<Result<Prepared, Attention>, EngineError> {
        let id = &task.id;
        let workspace = self.workspaces.join(id.as_str());
        let branch = deft_forge::branch_name(id.as_str(), &task.description);
        let Cloned {
            repos,
            mut checkouts,
        } = cloned;
        // What commands run on: a repository's Dockerfile, built once per version, or the
        // host's tools.
        // A build's network is a sandbox of the task's: it is made over whole clones.
        if self.builds_image(&chosen)
            && let Err(stop) = checkouts.wait().await
        {
            return Ok(Err(stop));
        }
        let (root, image, own_environment) =
            match self.environment_root(task, chosen, &environment).await? {
                Ok(found) => found,
                Err(stop) => return Ok(Err(stop)),
            };
        // The sandbox is made over whole clones: its init makes each one's git hooks and
        // configuration read-only as it starts. The dependencies are read from the private
        // copies, which are whole once the clones are.
        if let Err(stop) = checkouts.wait().await {
            return Ok(Err(stop));
        }
        // Without a Dockerfile, the repositories' own tools install their dependencies.
        let dependencies = if own_environment {
            Vec::new()
        } else {
            self.dependencies(id, &repos).await
        };
        let secrets = self.store.secret_values(&owner.id).await?;
        let (events, decisions) = tokio::sync::mpsc::unbounded_channel::<ProxyEvent>();
        // The caches' variables, under the user's own (which win).
        let mut env: BTreeMap<String, String> = crate::install::cache_env(
            &dependencies
                .iter()
                .flat_map(|found| found.ecosystems.iter().cloned())
                .collect::<Vec<_>>(),
        )
        .into_iter()
        .collect();
        env.extend(environment.env.as_map().clone());
        let spec = SandboxSpec {
            workspace: workspace.clone(),
            state_dir: Workspaces::new(&self.workspaces).sandbox_dir(id),
            env,
            secrets: secrets.clone(),
            network: egress_policy(&environment.network),
            resolver: Resolver::System,
            limits: Limits::default(),
            root,
        };
        let backend = match (&spec.root, &self.image_sandboxes) {
            (Some(_), Some(containers)) => containers,
            _ => &self.sandboxes,
        };
        let sandbox = match backend.create(spec, events).await {
            Ok(sandbox) => sandbox,
            Err(error) => {
                return Ok(Err(attention(
                    AttentionKind::Error,
                    format!("the sandbox is unavailable: {error}"),
                )));
            }
        };
        let network_log = NetworkLog::start(&self.store, id, decisions, false);
        let mut ready = StepEvent::new(WorkStep::Environment, StepStatus::Done);
        ready.network = Some(environment.network.level.as_str().to_owned());
        self.step(id, ready).await?;
        // One repository's kept caches come into the workspace (one set per task).
        let caches = Caches {
            kept: dependencies
                .iter()
                .find(|found| !found.ecosystems.is_empty())
                .map(|found| {
                    crate::install::kept_caches(&self.workspaces, owner.id.as_str(), &found.repo_id)
                }),
            workspace,
        };
        if let Some(kept) = &caches.kept {
            crate::install::take_caches(kept, &caches.workspace);
        }
        if let Err(error) = self.install(id, &*sandbox, &dependencies, cancel).await {
            caches.give_back();
            network_log.stop();
            return Err(error);
        }
        Ok(Ok(Prepared {
            repos,
            branch,
            sandbox,
            environment,
            secrets,
            network_log,
            caches,
            image,
        }))
    }

    /// A clone of each of the task's repositories in its workspace (made once; a resumed task
    /// continues in the clone it has), on the task's branch, with what analysis found.
    async fn clone_and_read(
        &self,
        task: &Task,
        owner: &User,
        workspace: &Path,
        branch: &str,
    ) -> Result<Result<Cloned, Attention>, EngineError> {
        let id = &task.id;
        let mut found = Cloned {
            repos: Vec::new(),
            checkouts: Checkouts(Vec::new()),
        };
        // One jail at a time in a workspace: a jail's mounts cover the other clones there.
        let one_jail = std::sync::Arc::new(tokio::sync::Mutex::new(()));
        for repo_id in &task.repos {
            let repo = self.store.repository(&owner.id, repo_id.as_str()).await?;
            // One directory per repository, named after it; two of one name get a suffix.
            let mut name = repo.name.clone();
            let mut n = 2;
            while found
                .repos
                .iter()
                .any(|(_, dir, _)| dir.file_name() == Some(std::ffi::OsStr::new(&name)))
            {
                name = format!("{}-{n}", repo.name);
                n += 1;
            }
            let dir = workspace.join(&name);
            let marker = Workspaces::new(&self.workspaces)
                .private_dir(id)
                .join(format!("cloning-{name}"));
            if marker.exists() {
                // A clone an earlier run left half made (a link there is removed, not
                // followed).
                let _ = std::fs::remove_dir_all(&dir).or_else(|_| std::fs::remove_file(&dir));
                let _ = std::fs::remove_file(&marker);
            }
            if std::fs::symlink_metadata(&dir).is_err() {
                // A fresh clone: read from git's objects while it is made.
                match self
                    .start_clone(task, &repo, &dir, &name, branch, (one_jail.clone(), marker))
                    .await
                {
                    Ok((facts, checkout)) => {
                        found.checkouts.0.push(checkout);
                        found.repos.push((repo, dir, facts));
                    }
                    Err(error) => {
                        return Ok(Err(attention(
                            AttentionKind::Error,
                            format!("cannot clone {}: {error}", repo.name),
                        )));
                    }
                }
                continue;
            }
            // What commands left may have replaced the clone with a link (to another
            // repository of the host): then it is not used, nor read.
            if !std::fs::symlink_metadata(&dir).is_ok_and(|meta| meta.is_dir()) {
                return Ok(Err(not_the_clone(&name)));
            }
            // A kept clone is put back on the task's branch, in the one jail of the workspace.
            let checked_out = {
                let _jail = one_jail.lock().await;
                deft_forge::checkout_branch(&dir, branch, &repo.default_branch).await
            };
            if let Err(error) = checked_out {
                return Ok(Err(attention(
                    AttentionKind::Error,
                    format!("cannot check out {branch} in {}: {error}", repo.name),
                )));
            }
            // Off the async threads, with a deadline: the clone holds what commands left.
            let facts = {
                let (dir, name) = (dir.clone(), name.clone());
                tokio::time::timeout(
                    std::time::Duration::from_secs(60),
                    tokio::task::spawn_blocking(move || analyse(&dir, &name)),
                )
                .await
            };
            let Ok(Ok(facts)) = facts else {
                return Ok(Err(attention(
                    AttentionKind::Error,
                    format!(
                        "reading {} took over a minute (a file that never answers, such as a FIFO?); remove it, then answer this task",
                        repo.name
                    ),
                )));
            };
            found.repos.push((repo, dir, facts));
        }
        Ok(Ok(found))
    }

    /// The task's private repository for the clone `dir`: outside every sandbox.
    pub(super) fn private_repo(&self, task: &TaskId, dir: &Path) -> PathBuf {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Workspaces::new(&self.workspaces).private_repo(task, &name)
    }

    /// Starts a fresh clone of the repository in `dir`, on the task's branch, and reads what
    /// it will hold from git's objects meanwhile: the facts, and the clone being made. The
    /// clone is made from the task's private repository, copied from the forge first; a first
    /// clone of a registered local repository is read in the jail while that copy is made,
    /// unless choosing its environment will read the copy. The base commit the work starts
    /// from is recorded where commands cannot rewrite it (they can move the clone's own
    /// `origin/…`).
    async fn start_clone(
        &self,
        task: &Task,
        repo: &deft_core::Repository,
        dir: &Path,
        name: &str,
        branch: &str,
        (one_jail, marker): (std::sync::Arc<tokio::sync::Mutex<()>>, PathBuf),
    ) -> Result<(RepoFacts, Checkout), String> {
        let id = &task.id;
        // Every git on the host reads the private copy, which has no configuration of the
        // repository's owner (filters and the programs they name never run here).
        let private = self.private_repo(id, dir);
        let began = std::time::Instant::now();
        let mut copying = {
            let (forges, repo, private) = (self.forges.clone(), repo.clone(), private.clone());
            tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
                forges
                    .mirror(&repo, &private)
                    .await
                    .map_err(|e| e.to_string())
            }))
        };
        let recorded = self.bases(id).get(repo.id.as_str()).cloned();
        let mut copied = None;
        if let (deft_core::ForgeKind::Local, None) = (repo.forge, &recorded) {
            // The jail's read races the copy, and is given up when the copy is first or the
            // read is slow: it may only ever make a start sooner.
            let read =
                tokio::time::timeout(EARLY_READ, self.read_registered(task, repo, name, branch));
            tokio::select! {
                early = read => if let Ok(Some(Early { base, facts })) = early {
                    self.record_base(id, repo.id.as_str(), &base);
                    tracing::debug!(task.id = %id.as_str(), ms = began.elapsed().as_millis(), "registered repository read in the jail");
                    let clone = Self::clone_after(
                        Some(copying),
                        (&private, dir, branch, &base),
                        Some(&base),
                        one_jail,
                    );
                    let making = Self::begin_clone(clone, &marker)?;
                    return Ok((facts, Self::checkout(repo, dir, marker, making)));
                },
                done = &mut copying => copied = Some(done),
            }
        }
        let copied = match copied {
            Some(done) => done,
            None => copying.await,
        };
        copied.map_err(|error| format!("the copy stopped: {error}"))??;
        tracing::debug!(task.id = %id.as_str(), ms = began.elapsed().as_millis(), "private copy made");
        let objects = deft_forge::Objects::Private(&private);
        let (now, tip) = branches_of(&objects, repo, branch).await?;
        // A clone made again keeps the base its first clone recorded, when the forge still has
        // it: the branch grew from there, and the diff and the review measure from there.
        let base = match recorded {
            Some(recorded)
                if deft_forge::private::has_commit(&private, &recorded)
                    .await
                    .unwrap_or(false) =>
            {
                recorded
            }
            _ => now,
        };
        self.record_base(id, repo.id.as_str(), &base);
        // A later round whose clone was given back continues the branch the forge has
        // (`tip`).
        let clone = Self::clone_after(None, (&private, dir, branch, &base), None, one_jail);
        let making = Self::begin_clone(clone, &marker)?;
        tracing::debug!(task.id = %id.as_str(), ms = began.elapsed().as_millis(), "clone begun");
        let facts = match read_commit(
            &objects,
            tip.as_deref().unwrap_or(&base),
            name,
            &task.description,
        )
        .await
        {
            Ok(facts) => facts,
            Err(error) => {
                // The clone being made stops with the start: nothing writes the workspace
                // behind a run that ended.
                making.abort();
                let _ = making.await;
                return Err(error);
            }
        };
        tracing::debug!(task.id = %id.as_str(), ms = began.elapsed().as_millis(), "commit analysed");
        Ok((facts, Self::checkout(repo, dir, marker, making)))
    }

    /// The first clone of a registered local repository read in the jail, while its private
    /// copy is made: its base and facts, or `None` when the start must wait for the copy (the
    /// jail could not read it, or choosing the environment will read the copy).
    async fn read_registered(
        &self,
        task: &Task,
        repo: &deft_core::Repository,
        name: &str,
        branch: &str,
    ) -> Option<Early> {
        let read = async {
            let objects = deft_forge::Objects::registered(Path::new(&repo.location));
            let (base, tip) = branches_of(&objects, repo, branch).await?;
            // A first round starts from the default branch; a branch of the task's name
            // already there is the copy's to find.
            if tip.is_some() {
                return Err(format!("a branch {branch} is there already"));
            }
            let facts = read_commit(&objects, &base, name, &task.description).await?;
            Ok::<_, String>(Early { base, facts })
        };
        let early = match read.await {
            Ok(early) => early,
            Err(why) => {
                tracing::debug!(task.id = %task.id.as_str(), %why, "the copy is waited for");
                return None;
            }
        };
        let regular = early
            .facts
            .listed
            .as_ref()
            .map(|(_, regular)| regular.as_slice())
            .unwrap_or_default();
        let reads_copy = match &repo.environment {
            deft_core::RepoEnvironment::Host | deft_core::RepoEnvironment::Image(_) => false,
            deft_core::RepoEnvironment::Dockerfile(_) => true,
            deft_core::RepoEnvironment::Auto => crate::setup::DOCKERFILES
                .iter()
                .chain([&crate::devcontainer::PATH])
                .any(|wanted| regular.iter().any(|file| file == wanted)),
        };
        (!reads_copy).then_some(early)
    }

    /// The clone of `private` at `dir` on `branch` from `base`, made once `copying` (the
    /// private copy, when it is still being made) is done, in the workspace's one jail; when
    /// the base was read elsewhere (`expected`), the copy must hold it, and the branch must be
    /// deft's to make.
    fn clone_after(
        copying: Option<tokio_util::task::AbortOnDropHandle<Result<(), String>>>,
        (private, dir, branch, base): (&Path, &Path, &str, &str),
        expected: Option<&str>,
        one_jail: std::sync::Arc<tokio::sync::Mutex<()>>,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send + 'static {
        let (private, dir, branch, base) = (
            private.to_owned(),
            dir.to_owned(),
            branch.to_owned(),
            base.to_owned(),
        );
        let expected = expected.map(str::to_owned);
        async move {
            if let Some(copying) = copying {
                copying
                    .await
                    .map_err(|error| format!("the copy stopped: {error}"))??;
            }
            // What the jail read and what was copied are the same commit, and the branch
            // starts there, or nothing goes on.
            if let Some(commit) = expected {
                let changed = |what: String| {
                    format!(
                        "the repository changed while the task started ({what}); answer the task to try again"
                    )
                };
                if !deft_forge::private::has_commit(&private, &commit)
                    .await
                    .unwrap_or(false)
                {
                    return Err(changed(format!("commit {commit} is not in the copy")));
                }
                let there =
                    deft_forge::private::resolve_ref(&private, &format!("refs/heads/{branch}"))
                        .await
                        .map_err(|e| e.to_string())?;
                if there.is_some() {
                    return Err(changed(format!("a branch {branch} appeared in it")));
                }
            }
            let _jail = one_jail.lock().await;
            deft_forge::private::clone_on_branch(&private, &dir, &branch, &base)
                .await
                .map_err(|e| e.to_string())
        }
    }

    /// Marks the clone as begun and makes it in the background.
    fn begin_clone(
        clone: impl std::future::Future<Output = Result<(), String>> + Send + 'static,
        marker: &Path,
    ) -> Result<tokio::task::JoinHandle<Result<(), String>>, String> {
        if let Some(parent) = marker.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::write(marker, b"").map_err(|e| format!("cannot mark the clone as begun: {e}"))?;
        Ok(tokio::spawn(clone))
    }

    /// The clone of `repo` at `dir` as the run keeps it while it is made.
    fn checkout(
        repo: &deft_core::Repository,
        dir: &Path,
        marker: PathBuf,
        making: tokio::task::JoinHandle<Result<(), String>>,
    ) -> Checkout {
        Checkout {
            name: repo.name.clone(),
            dir: dir.to_owned(),
            marker,
            making,
        }
    }

    /// The base commit of each of the task's clones, by repository id, as cloned.
    pub(super) fn bases(&self, id: &TaskId) -> std::collections::HashMap<String, String> {
        std::fs::read(Workspaces::new(&self.workspaces).bases_file(id))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Records the base a repository's clone starts from (`start_clone` keeps the first one
    /// while the forge still has it: the branch grew from there).
    fn record_base(&self, id: &TaskId, repo: &str, commit: &str) {
        let mut bases = self.bases(id);
        if bases.get(repo).is_some_and(|recorded| recorded == commit) {
            return;
        }
        bases.insert(repo.to_owned(), commit.to_owned());
        if let Err(error) = std::fs::write(
            Workspaces::new(&self.workspaces).bases_file(id),
            serde_json::to_vec(&bases).expect("a map of strings serializes"),
        ) {
            tracing::warn!(task.id = %id.as_str(), %error, "cannot record a clone's base commit");
        }
    }

    /// Builds the image, its `RUN` steps going out only through the egress proxy under the
    /// task's network policy where the builder can join a namespace (Podman); else nowhere.
    pub(super) async fn build_image(
        &self,
        id: &TaskId,
        images: &deft_images::Images,
        mut request: deft_images::BuildRequest,
        environment: &deft_store::Environment,
        lines: &mut Vec<String>,
    ) -> Result<deft_images::Prepared, deft_images::ImageError> {
        let (events, decisions) = tokio::sync::mpsc::unbounded_channel::<ProxyEvent>();
        let mut network_hold = None;
        if images.joins_namespaces().await {
            let policy = egress_policy(&environment.network);
            match crate::setup::build_network(
                self.sandboxes.as_ref(),
                &self.workspaces,
                id,
                policy,
                events,
            )
            .await
            {
                Ok((network, hold)) => {
                    request.network = network;
                    network_hold = Some(hold);
                }
                Err(error) => lines.push(format!("deft: RUN steps get no network ({error})")),
            }
        } else {
            drop(events);
            lines.push(
                "deft: RUN steps get no network (this builder cannot join deft's egress proxy)"
                    .to_owned(),
            );
        }
        let network_log = NetworkLog::start(&self.store, id, decisions, true);
        let prepared = images
            .prepare(&request, &mut |line: &str| lines.push(line.to_owned()))
            .await;
        drop(network_hold);
        // What the proxy decided is written before the build's step.
        network_log.finish(std::time::Duration::from_secs(2)).await;
        prepared
    }
}

/// How long a first clone's read in the jail may take before the start waits for the copy.
const EARLY_READ: std::time::Duration = std::time::Duration::from_secs(10);

/// A first clone's base and facts, read before its private copy was whole.
struct Early {
    base: String,
    facts: RepoFacts,
}

/// Where the repository's default branch and the task's `branch` are in `objects`.
async fn branches_of(
    objects: &deft_forge::Objects<'_>,
    repo: &deft_core::Repository,
    branch: &str,
) -> Result<(String, Option<String>), String> {
    let heads = objects
        .resolve_branches(&[&repo.default_branch, branch])
        .await
        .map_err(|e| e.to_string())?;
    match <[Option<String>; 2]>::try_from(heads) {
        Ok([Some(now), tip]) => Ok((now, tip)),
        _ => Err(format!(
            "its default branch `{}` is not in the repository; set the right one, then answer this task",
            repo.default_branch
        )),
    }
}

/// The facts of `commit` in `objects`, with the files `description` names, within a minute.
async fn read_commit(
    objects: &deft_forge::Objects<'_>,
    commit: &str,
    name: &str,
    description: &str,
) -> Result<RepoFacts, String> {
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        crate::analysis::analyse_commit(objects, commit, name, description),
    )
    .await
    .map_err(|_| "reading its files from git took over a minute".to_owned())?
    .map_err(|e| e.to_string())
}

/// The egress policy of a task's network setting: what its sandbox, its image's build and its
/// web fetches may reach (no forge hosts: the local forge has none, and GitHub's go through
/// deft, not the task).
pub fn egress_policy(network: &deft_core::NetworkPolicy) -> EgressPolicy {
    EgressPolicy::new(network.level, network.allow.clone(), DomainSet::default())
}
