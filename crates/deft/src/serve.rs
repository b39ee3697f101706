//! `deft serve`: open the data dir, make the first admin on an empty one, and serve until told
//! to stop (Ctrl-C or SIGTERM), finishing the requests in flight.

use std::process::ExitCode;

use anyhow::Context as _;
use deft_server::{AppState, ModelReadiness};
use tokio_util::sync::CancellationToken;

use crate::cli::{DataArgs, ModelArgs};
use crate::env_vars::DEFT_LOG;
use crate::{config, local};

#[allow(
    clippy::print_stderr,
    reason = "what a person starting the server needs to read"
)]
pub async fn run(
    listen: &str,
    workers: Option<usize>,
    data: &DataArgs,
    model: &ModelArgs,
) -> anyhow::Result<ExitCode> {
    init_logging("info");
    crate::tuning::Tuning::load()?;
    let (dir, store) = local::open_store(data).await?;
    let config = config::load(model.config.as_deref(), &dir)?;
    let local_roots = config::local_roots(&config)?;
    let trusted_proxies = config::trusted_proxies(&config)?;
    let github_config = config::github(&config)?;
    let github = match &github_config {
        Some(github) => Some(std::sync::Arc::new(deft_github::GitHub::new(github)?)),
        None => None,
    };
    // No model is not a crash: the server runs, and new tasks say what to set.
    let models = config::models(model, &config).await;
    let readiness = match &models {
        Ok(models) => {
            let default = &models.default;
            eprintln!(
                "model: {} (because {}) at {}",
                default.label(),
                default.source,
                default.base_url
            );
            ModelReadiness::Ready {
                label: default.label(),
            }
        }
        Err(error) => {
            eprintln!("model: none usable: {error}");
            ModelReadiness::Missing {
                message: format!("{error}; then restart `deft serve` and answer this task"),
            }
        }
    };
    let first_admin = store.bootstrap_admin().await?;
    if let Some(admin) = &first_admin {
        let path = local::write_admin_token(&dir, &admin.token)?;
        eprintln!(
            "first start: created the user `admin`; its API token is in {}",
            path.display()
        );
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen}; pass `--listen ADDR` with a free port")
        })?;
    let address = listener.local_addr()?;
    eprintln!(
        "deft is serving the API on http://{address}/api/v1 and the web app on http://{address}/ (data dir {})",
        dir.display()
    );
    if let Some(admin) = &first_admin {
        let link = store
            .create_login_link(&admin.user.id, local::LOGIN_LINK_MS)
            .await?;
        eprintln!(
            "sign in as admin (once, within an hour), then set a password: http://{address}/login/link/{link}"
        );
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let mut runners = Vec::new();
    let capacity = workers.unwrap_or_else(crate::capacity::machine_default);
    if let Ok(models) = &models
        && capacity > 0
    {
        let mut engine = crate::run::engine(
            &store,
            &dir,
            models,
            &config,
            github.clone(),
            crate::run::sandbox_pool()?,
        )
        .await?;
        engine.drain = shutdown.clone();
        let engine = std::sync::Arc::new(engine);
        // On SQLite this process holds every worker, so a task still in progress was left by
        // a deft that died: it goes back to the queue and continues from its last step.
        if store.backend() == deft_store::Backend::Sqlite {
            for task in store.in_progress().await? {
                let note = (
                    deft_core::EventKind::Step,
                    serde_json::json!({"step": "recovery", "status": "requeued", "reason": "deft restarted while the task ran"}),
                );
                store
                    .transition(
                        deft_store::Actor::Deft,
                        &task,
                        deft_core::Transition::Requeue,
                        Some(note),
                    )
                    .await?;
                eprintln!("requeued task {task}, left running by a deft that stopped");
            }
        }
        let per_user = config.limits.concurrent_tasks_per_user.unwrap_or(10);
        eprintln!(
            "running up to {capacity} tasks at once, at most {per_user} of one user ({})",
            match workers {
                Some(_) => "--workers".to_owned(),
                None => crate::capacity::explain(capacity),
            }
        );
        runners.push(tokio::spawn(dispatch(
            engine.clone(),
            "serve".to_owned(),
            capacity,
            per_user,
            shutdown.clone(),
        )));
        runners.push(tokio::spawn(sweep_workspaces(
            engine.clone(),
            config.retention.idle_workspaces_bytes(),
            shutdown.clone(),
        )));
    }
    runners.push(tokio::spawn(sweep(
        store.clone(),
        config.retention.days,
        shutdown.clone(),
    )));
    let mut state = AppState::new(store.clone(), readiness, shutdown.clone());
    state.local_roots = local_roots;
    if !trusted_proxies.is_empty() {
        eprintln!("believing X-Forwarded-For and X-Forwarded-Proto from: {trusted_proxies}");
    }
    state.trusted_proxies = trusted_proxies;
    state.weekly_tokens = config.limits.weekly_tokens;
    if let (Some(github), Some(config)) = (&github, &github_config) {
        state.github = Some(deft_server::GithubHooks::new(
            github.clone(),
            config.webhook_secret.clone(),
            config.label.clone(),
        ));
    }
    if let Ok(models) = &models {
        let client =
            deft_llm::ModelClient::new(models.for_role(deft_llm::ModelRole::Planner).clone())?;
        state.chat = Some(std::sync::Arc::new(crate::chat::ModelChat {
            client,
            stop: shutdown,
        }));
    }
    // Deliveries answered just before the last stop are acted on now, in the background.
    {
        let state = state.clone();
        runners.push(tokio::spawn(async move {
            match deft_server::resume_github_deliveries(&state).await {
                Ok(0) => {}
                Ok(count) => {
                    tracing::info!(count, "acted on GitHub deliveries left from the last run")
                }
                Err(error) => tracing::error!(error = %error, "cannot resume GitHub deliveries"),
            }
        }));
    }
    deft_server::serve(listener, state).await?;
    for runner in runners {
        let _ = runner.await;
    }
    store.close().await;
    eprintln!("deft stopped");
    Ok(ExitCode::SUCCESS)
}

/// A name no other run has, on this machine or another: the pid alone repeats across
/// containers (often 1), and two runs sharing a name could renew each other's leases.
fn worker_name(kind: &str, n: u64) -> String {
    format!(
        "{kind}-{}-{n}-{}",
        std::process::id(),
        // The random tail of a v7 UUID (its head is the time).
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    )
}

/// How long a stopping deft lets a running step go on before cutting it short: 10 s, or
/// `DEFT_SHUTDOWN_GRACE_MS`.
fn shutdown_grace() -> std::time::Duration {
    crate::tuning::Tuning::get().shutdown_grace
}

/// How long a claim lasts without a heartbeat; a worker that dies loses its task after this.
/// `DEFT_LEASE_MS` shortens it (tests that kill workers).
fn lease_ms() -> i64 {
    i64::try_from(crate::tuning::Tuning::get().lease.as_millis()).unwrap_or(i64::MAX)
}

/// `deft worker`: workers only, against a PostgreSQL database shared with `deft serve` and
/// other workers, until SIGTERM or Ctrl-C.
#[allow(
    clippy::print_stderr,
    reason = "what a person starting a worker needs to read"
)]
pub async fn worker(
    workers: Option<usize>,
    data: &DataArgs,
    model: &ModelArgs,
) -> anyhow::Result<ExitCode> {
    init_logging("info");
    crate::tuning::Tuning::load()?;
    let Some(url) = &data.database_url else {
        anyhow::bail!(
            "`deft worker` needs `--database-url postgres://…` (or DEFT_DATABASE_URL): on SQLite, `deft serve` runs every worker itself"
        );
    };
    if !url.starts_with("postgres") {
        anyhow::bail!(
            "`deft worker` runs against PostgreSQL; on SQLite, `deft serve --workers N` runs the workers"
        );
    }
    let (dir, store) = local::open_store(data).await?;
    let config = config::load(model.config.as_deref(), &dir)?;
    let models = config::models(model, &config)
        .await
        .context("a worker needs a model")?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let mut engine = crate::run::engine(
        &store,
        &dir,
        &models,
        &config,
        crate::run::github(&config)?,
        crate::run::sandbox_pool()?,
    )
    .await?;
    engine.drain = shutdown.clone();
    let engine = std::sync::Arc::new(engine);
    let per_user = config.limits.concurrent_tasks_per_user.unwrap_or(10);
    let capacity = workers.unwrap_or_else(crate::capacity::machine_default);
    eprintln!(
        "deft worker: up to {capacity} tasks at once on the shared database, model {}",
        models.default.label()
    );
    let sweeper = tokio::spawn(sweep_workspaces(
        engine.clone(),
        config.retention.idle_workspaces_bytes(),
        shutdown.clone(),
    ));
    dispatch(
        engine.clone(),
        "worker".to_owned(),
        capacity,
        per_user,
        shutdown.clone(),
    )
    .await;
    let _ = sweeper.await;
    store.close().await;
    eprintln!("deft worker stopped");
    Ok(ExitCode::SUCCESS)
}

/// The dispatcher of this process, named after `kind` (`serve` or `worker`): claims the next
/// task (first in, first out per user, fair across users, at most `per_user` running per user)
/// whenever one of its `capacity` slots is free, runs it beside the others, so the number
/// running follows demand up to the machine's cap, and puts back the tasks of runs that died. (Several processes on
/// PostgreSQL come with `deft worker`.) Stopping waits for every run to drain.
async fn dispatch(
    engine: std::sync::Arc<deft_agent::Engine>,
    kind: String,
    capacity: usize,
    per_user: i64,
    shutdown: CancellationToken,
) {
    use deft_core::Timestamp;
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(capacity));
    let mut runs = tokio::task::JoinSet::new();
    let mut changes = engine.store.events().queue_changes();
    let mut claims: u64 = 0;
    loop {
        while runs.try_join_next().is_some() {}
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        if shutdown.is_cancelled() {
            break;
        }
        changes.mark_seen();
        if let Err(error) = engine.store.requeue_expired(Timestamp::now()).await {
            tracing::error!(error = %error, "cannot requeue expired leases");
        }
        let name = worker_name(&kind, claims);
        let claimed = match engine
            .store
            .claim_next(&name, Timestamp::now().plus_millis(lease_ms()), per_user)
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::error!(error = %error, "cannot read the queue");
                None
            }
        };
        let Some(task) = claimed else {
            drop(slot);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = changes.wait(std::time::Duration::from_millis(200)) => continue,
            }
        };
        claims += 1;
        runs.spawn(run_claimed(
            engine.clone(),
            task,
            name,
            shutdown.clone(),
            slot,
        ));
    }
    while runs.join_next().await.is_some() {}
}

/// One claimed task's run, holding its slot until it ends: the lease kept alive, a cancel
/// watched for, and on a stop the task handed back at once.
async fn run_claimed(
    engine: std::sync::Arc<deft_agent::Engine>,
    task: deft_core::TaskId,
    name: String,
    shutdown: CancellationToken,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    match engine.hold_for_weekly_limit(&task).await {
        Ok(Some(_)) => return,
        Ok(None) => {}
        Err(error) => {
            tracing::error!(task.id = %task, error = %error, "cannot check the weekly limit");
            return;
        }
    }
    tracing::info!(task.id = %task, worker = %name, "running task");
    // Stopping drains the run (it ends at its next checkpoint); only a step still going after
    // the grace period is cut short.
    let cancel = CancellationToken::new();
    let hard_stop = tokio::spawn({
        let (shutdown, cancel) = (shutdown.clone(), cancel.clone());
        async move {
            shutdown.cancelled().await;
            tokio::time::sleep(shutdown_grace()).await;
            cancel.cancel();
        }
    });
    let watcher = tokio::spawn(stop_when_cancelled(
        engine.store.clone(),
        task.clone(),
        cancel.clone(),
    ));
    let heartbeat = tokio::spawn(keep_lease(
        engine.store.clone(),
        task.clone(),
        name.clone(),
        cancel.clone(),
    ));
    if let Err(error) = engine.run(&task, &cancel).await {
        tracing::error!(task.id = %task, error = %error, "the run failed");
    }
    watcher.abort();
    heartbeat.abort();
    hard_stop.abort();
    if shutdown.is_cancelled() {
        // Stopping: hand the task back now rather than when the lease runs out, so that
        // another worker (or this deft, restarted) continues it from its last step.
        match engine.store.release_lease(&task, &name).await {
            Ok(true) => tracing::info!(task.id = %task, "put the task back in the queue"),
            Ok(false) => {}
            Err(error) => {
                tracing::error!(task.id = %task, error = %error, "cannot put the task back")
            }
        }
    }
    // A task that can no longer run again gives its workspace back at once.
    engine.tidy_workspace(&task).await;
}

/// Renews the lease a third of its length before it runs out; a lease lost (taken back
/// after a stall) stops the run, since another worker may now have the task.
async fn keep_lease(
    store: deft_store::Store,
    task: deft_core::TaskId,
    worker: String,
    cancel: CancellationToken,
) {
    // The lease is good until this instant; the first renewal is a third of a lease after the
    // claim, which gave a whole lease.
    let mut valid_until =
        std::time::Instant::now() + std::time::Duration::from_millis(lease_ms() as u64);
    loop {
        tokio::time::sleep(std::time::Duration::from_millis((lease_ms() / 3) as u64)).await;
        let asked = std::time::Instant::now();
        match store
            .renew_lease(
                &task,
                &worker,
                deft_core::Timestamp::now().plus_millis(lease_ms()),
            )
            .await
        {
            Ok(true) => valid_until = asked + std::time::Duration::from_millis(lease_ms() as u64),
            Ok(false) => {
                // The task finished, waits for its owner, or was taken back: stop either way.
                cancel.cancel();
                return;
            }
            Err(error) => {
                tracing::warn!(task.id = %task, error = %error, "cannot renew the lease");
                // Another worker may take the task once the lease runs out: stop before then
                // rather than run it twice.
                let margin = std::time::Duration::from_millis((lease_ms() / 3) as u64);
                if std::time::Instant::now() + margin >= valid_until {
                    tracing::error!(task.id = %task, "the lease is about to run out; stopping the run");
                    cancel.cancel();
                    return;
                }
            }
        }
    }
}

/// Retention: at start and every hour, deletes the finished tasks and chats that have been
/// inactive for `days` (never anything on a forge).
async fn sweep(store: deft_store::Store, days: u32, shutdown: CancellationToken) {
    loop {
        let cutoff = deft_core::Timestamp::now().plus_millis(-i64::from(days) * 86_400_000);
        match store.sweep_inactive(cutoff).await {
            Ok((0, 0)) => {}
            Ok((tasks, chats)) => tracing::info!(
                tasks,
                chats,
                days,
                "retention deleted inactive tasks and chats"
            ),
            Err(error) => tracing::error!(error = %error, "retention sweep failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
        }
    }
}

/// The workspaces' sweep: at start and every `DEFT_WORKSPACE_SWEEP_MS` (a minute), the files
/// of tasks that can no longer run are deleted (tasks swept by retention among them), and
/// idle workspaces kept within `budget` bytes.
async fn sweep_workspaces(
    engine: std::sync::Arc<deft_agent::Engine>,
    budget: u64,
    shutdown: CancellationToken,
) {
    let every = crate::tuning::Tuning::get().workspace_sweep;
    loop {
        let swept = engine.sweep_workspaces(budget).await;
        if swept.removed > 0 || swept.evicted > 0 {
            tracing::info!(
                removed = swept.removed,
                evicted = swept.evicted,
                bytes = swept.bytes,
                "gave back task workspaces"
            );
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Cancels a run as soon as its task is cancelled: the model call in flight is dropped and
/// the sandboxed command killed with its children.
async fn stop_when_cancelled(
    store: deft_store::Store,
    task: deft_core::TaskId,
    cancel: CancellationToken,
) {
    let mut wake = store.events().subscribe(&task);
    loop {
        wake.borrow_and_update();
        if store
            .task_by_id(&task)
            .await
            .is_ok_and(|t| t.state() == deft_core::TaskState::Cancelled)
        {
            cancel.cancel();
            return;
        }
        tokio::select! {
            _ = wake.changed() => {}
            _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
        }
    }
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        tracing::warn!("cannot listen for SIGTERM; stop the server with Ctrl-C");
        let _ = tokio::signal::ctrl_c().await;
        shutdown.cancel();
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping: finishing the requests in flight");
    shutdown.cancel();
}

pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env(DEFT_LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
