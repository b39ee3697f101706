//! `deft serve`: open the data dir, make the first admin on an empty one, and serve until told
//! to stop (Ctrl-C or SIGTERM), finishing the requests in flight; and `deft worker`.

#![allow(
    clippy::print_stderr,
    reason = "what a person starting the server or a worker needs to read"
)]

use std::process::ExitCode;

use anyhow::Context as _;
use deft_scheduler::capacity::{FLOOR, MEMORY_PER_TASK, Machine, TASKS_PER_CORE};
use deft_scheduler::{Retention, Scheduler, SchedulerConfig};
use deft_server::{AppState, ModelReadiness};
use tokio_util::sync::CancellationToken;

use crate::cli::{ServeArgs, WorkerArgs};
use crate::env_vars::{DEFT_LISTEN, DEFT_LOG};
use crate::tuning::Tuning;
use crate::{config, local};

pub async fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging("info")?;
    let tuning = Tuning::load()?;
    let (dir, store) = local::open_store(&args.engine.data).await?;
    let config = config::load(args.engine.model.config.as_deref(), &dir)?;
    let local_roots = config::local_roots(&config)?;
    let trusted_proxies = config::trusted_proxies(&config)?;
    let github_config = config::github(&config)?;
    let github = match &github_config {
        Some(github) => Some(std::sync::Arc::new(deft_github::GitHub::new(github)?)),
        None => None,
    };
    // No model is not a crash: the server runs, and new tasks say what to set.
    let models = config::models(&args.engine.model, &config).await;
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
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| {
            format!("cannot listen on {}; give `--listen` or {DEFT_LISTEN} an address of this machine with a free port", args.listen)
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
    // Listening before any task runs, so that no state change goes untold.
    let notifier = notifier(&store, &config)?;
    runners.push(notifier.clone().start(shutdown.clone()));
    let machine = Machine::probe();
    let capacity = args.workers.unwrap_or_else(|| machine.capacity());
    if let Ok(models) = &models
        && capacity > 0
    {
        let engine = crate::run::engine(
            &store,
            &dir,
            models,
            &config,
            github.clone(),
            tuning.sandbox_pool,
        )
        .await?;
        let scheduler = Scheduler::new(
            engine,
            scheduler_config("serve", capacity, &config, &tuning),
            shutdown.clone(),
        )?;
        for task in scheduler.recover_abandoned().await? {
            eprintln!("requeued task {task}, left running by a deft that stopped");
        }
        eprintln!(
            "running up to {capacity} tasks at once, at most {} of one user ({})",
            per_user(&config),
            match args.workers {
                Some(_) => "--workers".to_owned(),
                None => explain(&machine, capacity),
            }
        );
        runners.push(tokio::spawn(scheduler.run()));
    }
    let retention = Retention {
        days: config.retention.days,
        ..Retention::default()
    };
    runners.push(tokio::spawn(
        retention.keep(store.clone(), shutdown.clone()),
    ));
    let mut state = AppState::new(store.clone(), readiness, shutdown.clone());
    state.local_roots = local_roots;
    if !trusted_proxies.is_empty() {
        eprintln!("believing X-Forwarded-For and X-Forwarded-Proto from: {trusted_proxies}");
    }
    state.trusted_proxies = trusted_proxies;
    state.weekly_tokens = config.limits.weekly_tokens;
    state.notifier = Some(notifier);
    if let (Some(github), Some(config)) = (&github, &github_config) {
        state.github = Some(deft_server::GithubHooks::new(
            github.clone(),
            config.webhook_secret.clone(),
            config.label.clone(),
        ));
    }
    if let Ok(models) = &models {
        let mut client =
            deft_llm::ModelClient::new(models.for_role(deft_llm::ModelRole::Planner).clone())?;
        client.policy.temperature = crate::config::temperature(&config);
        state.chat = Some(std::sync::Arc::new(crate::chat::ModelChat {
            client,
            stop: shutdown,
            web: crate::config::web_search(&config)?,
            store: state.store.clone(),
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

/// The notifier of this process's state changes, as `[notifications]` and `[smtp]` say.
fn notifier(
    store: &deft_store::Store,
    config: &config::ConfigFile,
) -> anyhow::Result<deft_notify::Notifier> {
    let notify = crate::notifications::notify_config(config)?;
    if let Some(smtp) = &notify.smtp {
        eprintln!("e-mail notifications through {}:{}", smtp.host, smtp.port);
    }
    Ok(deft_notify::Notifier::new(store.clone(), notify))
}

/// What this process's scheduler runs with: the timings read at start, the config file's
/// limits, and `capacity` runs at once.
fn scheduler_config(
    role: &str,
    capacity: usize,
    config: &config::ConfigFile,
    tuning: &Tuning,
) -> SchedulerConfig {
    SchedulerConfig {
        role: role.to_owned(),
        capacity,
        per_user: per_user(config),
        lease: tuning.lease,
        shutdown_grace: tuning.shutdown_grace,
        workspace_sweep: tuning.workspace_sweep,
        idle_workspaces_bytes: config.retention.idle_workspaces_bytes(),
    }
}

/// `[limits] concurrent_tasks_per_user`, or the scheduler's default.
fn per_user(config: &config::ConfigFile) -> i64 {
    config
        .limits
        .concurrent_tasks_per_user
        .unwrap_or(deft_scheduler::DEFAULT_PER_USER)
}

/// Why the default capacity is what it is, for the line `deft serve` prints at start.
fn explain(machine: &Machine, capacity: usize) -> String {
    let memory = machine
        .memory
        .map(|bytes| format!("{} MiB", bytes / (1024 * 1024)))
        .unwrap_or_else(|| "unknown memory".to_owned());
    format!(
        "{capacity} from {} cores and {memory}: {TASKS_PER_CORE} a core, {} MiB each, at least {FLOOR}; `--workers N` sets it",
        machine.cores,
        MEMORY_PER_TASK / (1024 * 1024)
    )
}

/// `deft worker`: workers only, against a PostgreSQL database shared with `deft serve` and
/// other workers, until SIGTERM or Ctrl-C.
pub async fn worker(args: &WorkerArgs) -> anyhow::Result<ExitCode> {
    init_logging("info")?;
    let tuning = Tuning::load()?;
    let Some(url) = &args.engine.data.database_url else {
        anyhow::bail!(
            "`deft worker` needs `--database-url postgres://…` (or DEFT_DATABASE_URL): on SQLite, `deft serve` runs every worker itself"
        );
    };
    if !url.starts_with("postgres") {
        anyhow::bail!(
            "`deft worker` runs against PostgreSQL; on SQLite, `deft serve --workers N` runs the workers"
        );
    }
    let (dir, store) = local::open_store(&args.engine.data).await?;
    let config = config::load(args.engine.model.config.as_deref(), &dir)?;
    let models = config::models(&args.engine.model, &config)
        .await
        .context("a worker needs a model")?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let notified = notifier(&store, &config)?.start(shutdown.clone());
    let engine = crate::run::engine(
        &store,
        &dir,
        &models,
        &config,
        crate::run::github(&config)?,
        tuning.sandbox_pool,
    )
    .await?;
    let capacity = args.workers.unwrap_or_else(|| Machine::probe().capacity());
    let scheduler = Scheduler::new(
        engine,
        scheduler_config("worker", capacity, &config, &tuning),
        shutdown,
    )?;
    eprintln!(
        "deft worker: up to {capacity} tasks at once on the shared database, model {}",
        models.default.label()
    );
    scheduler.run().await;
    let _ = notified.await;
    store.close().await;
    eprintln!("deft worker stopped");
    Ok(ExitCode::SUCCESS)
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

/// Logs to standard error, filtered by `DEFT_LOG` (else `default`); a filter that does not
/// parse stops the command rather than leaving it quiet.
pub fn init_logging(default: &str) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var(DEFT_LOG) {
        Ok(text) if !text.trim().is_empty() => EnvFilter::try_new(&text).map_err(|error| {
            anyhow::anyhow!(
                "{DEFT_LOG} is `{}`, not a log filter ({error}); set it to a level such as `info`, or `deft_scheduler=debug,info`",
                text.chars().take(80).collect::<String>()
            )
        })?,
        Err(std::env::VarError::NotUnicode(_)) => {
            anyhow::bail!("{DEFT_LOG} is not text; set it to a level such as `info`")
        }
        _ => EnvFilter::new(default),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    Ok(())
}
