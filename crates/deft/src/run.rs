//! `deft run`: one task in the foreground, on the data dir, with the same engine as the
//! server, its events printed as they happen. Exit codes (SPEC §5): 0 completed, 3 needs
//! attention (the question or error printed last), 1 anything else.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the command's live log and its verdict"
)]

use std::process::ExitCode;

use anyhow::Context as _;
use deft_agent::{Engine, RunLimits, RunOutcome};
use deft_core::{
    Attention, AttentionKind, Event, EventKind, Task, TaskId, Transition, User, UserId,
};
use deft_llm::{ModelClient, ModelRole};
use deft_sandbox::HostSupport;
use deft_sandbox::bwrap::BwrapBackend;
use deft_store::{Actor, NewRepository, NewTask, Store};
use tokio_util::sync::CancellationToken;

use crate::cli::{DataArgs, ModelArgs};
use crate::client::one_line;
use crate::{config, local, serve};

pub async fn run(
    paths: &[String],
    approve_plan: bool,
    description: &str,
    data: &DataArgs,
    model: &ModelArgs,
) -> anyhow::Result<ExitCode> {
    serve::init_logging("warn")?;
    crate::tuning::Tuning::load()?;
    let (dir, store) = local::open_store(data).await?;
    let user = local_admin(&store, &dir).await?;
    let task = queue_task(&store, &user.id, paths, description, approve_plan).await?;
    println!("task {}", task.id);

    let config = config::load(model.config.as_deref(), &dir)?;
    let models = match config::models(model, &config).await {
        Ok(models) => models,
        Err(error) => {
            let attention = Attention {
                kind: AttentionKind::Error,
                message: error.to_string(),
            };
            store
                .transition(
                    Actor::Deft,
                    &task.id,
                    Transition::NeedAttention(attention),
                    None,
                )
                .await?;
            return Ok(verdict(
                &store,
                &task.id,
                RunOutcome::NeedsAttention(Attention {
                    kind: AttentionKind::Error,
                    message: error.to_string(),
                }),
            )
            .await);
        }
    };
    // One task: a sandbox started ahead would never be used.
    let engine = engine(&store, &dir, &models, &config, github(&config)?, 0).await?;
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            stop.cancel();
        }
    });
    let printing = CancellationToken::new();
    let printer = tokio::spawn(write_events(
        store.clone(),
        user.id.clone(),
        task.id.clone(),
        printing.clone(),
        std::io::stdout(),
    ));
    let outcome = run_task(&engine, &task.id, &cancel).await?;
    // The printer prints what is left, then stops.
    printing.cancel();
    let _ = printer.await;
    Ok(verdict(&store, &task.id, outcome).await)
}

/// The `admin` user of a data dir opened by a command that runs tasks itself (`deft run`,
/// `deft eval`): made, with its token file, on the data dir's first use.
pub async fn local_admin(store: &Store, dir: &std::path::Path) -> anyhow::Result<User> {
    if let Some(admin) = store.bootstrap_admin().await? {
        local::write_admin_token(dir, &admin.token)?;
    }
    store
        .user_by_name("admin")
        .await
        .context("no `admin` user in this data dir")
}

/// Registers the local repositories at `paths` for `owner` and queues a task on them: what
/// `deft run` and `deft eval` do before the engine runs it.
pub async fn queue_task(
    store: &Store,
    owner: &UserId,
    paths: &[String],
    description: &str,
    approve_plan: bool,
) -> anyhow::Result<Task> {
    let mut repos = Vec::new();
    for path in paths {
        let local = deft_forge::inspect_local(path)
            .await
            .with_context(|| format!("--repo {path}"))?;
        let repo = store
            .add_repository(
                owner,
                NewRepository::local(local.name, &local.path, local.default_branch),
            )
            .await?;
        repos.push(repo.id);
    }
    Ok(store
        .create_task(
            owner,
            NewTask {
                description: description.to_owned(),
                repos,
                chat_id: None,
                approve_plan,
            },
        )
        .await?)
}

/// Runs a queued task to its end, as a worker would: held first when its owner's weekly
/// token limit is reached.
pub async fn run_task(
    engine: &Engine,
    task: &TaskId,
    cancel: &CancellationToken,
) -> anyhow::Result<RunOutcome> {
    Ok(match engine.hold_for_weekly_limit(task).await? {
        Some(reason) => RunOutcome::NeedsAttention(reason),
        None => engine.run(task, cancel).await?,
    })
}

/// The engine both `deft run` and `deft serve`'s workers use.
pub async fn engine(
    store: &Store,
    dir: &std::path::Path,
    models: &deft_llm::Models,
    config: &config::ConfigFile,
    github: Option<std::sync::Arc<deft_github::GitHub>>,
    sandbox_pool: usize,
) -> anyhow::Result<Engine> {
    let helper = std::env::current_exe().context("cannot find deft's own executable")?;
    let sandboxes = BwrapBackend::new(HostSupport::probe().await, helper)?.with_pool(sandbox_pool);
    // When deft is root, its sandboxes run as their own user, and task clones belong to it.
    if let Some(user) = deft_sandbox::user::sandbox_user()? {
        deft_forge::set_clone_owner(user.uid, user.gid);
    }
    let workspaces = dir.join("workspaces");
    if sandbox_pool > 0 {
        std::fs::create_dir_all(&workspaces)
            .with_context(|| format!("cannot create {}", workspaces.display()))?;
        sandboxes.prewarm(&workspaces, &deft_sandbox::Limits::default());
    }
    let client = |role| -> anyhow::Result<ModelClient> {
        let mut client = ModelClient::new(models.for_role(role).clone())?;
        client.policy.temperature = config::temperature(config);
        Ok(client)
    };
    Ok(Engine {
        store: store.clone(),
        planner: client(ModelRole::Planner)?,
        executor: client(ModelRole::Executor)?,
        sandboxes: std::sync::Arc::new(sandboxes),
        workspaces,
        limits: RunLimits {
            task_tokens: config.limits.task_tokens,
            weekly_tokens: config.limits.weekly_tokens,
            step_attempts: config
                .limits
                .step_attempts
                .map_or(RunLimits::default().step_attempts, |attempts| {
                    attempts as u32
                }),
            mcp_call_timeout: crate::tuning::Tuning::load()?.mcp_call_timeout,
            ..RunLimits::default()
        },
        drain: tokio_util::sync::CancellationToken::new(),
        forges: deft_agent::forge::Forges::new(github),
        active: Default::default(),
        images: config::images(config, dir)?,
        default_image: config.environments.default_image.clone(),
        image_sandboxes: config::image_sandboxes(config).await?,
        web: config::web_search(config)?,
        edit_format: config::edit_format(config),
    })
}

/// The GitHub connection, when `[github]` configures one.
pub fn github(
    config: &config::ConfigFile,
) -> anyhow::Result<Option<std::sync::Arc<deft_github::GitHub>>> {
    match config::github(config)? {
        Some(github) => Ok(Some(std::sync::Arc::new(deft_github::GitHub::new(
            &github,
        )?))),
        None => Ok(None),
    }
}

/// Writes the task's events to `out`, a line each, as they are written, until `stop`, then
/// whatever is left: `deft run`'s live log on standard output, `deft eval`'s log per task.
pub async fn write_events(
    store: Store,
    user: UserId,
    task: TaskId,
    stop: CancellationToken,
    mut out: impl std::io::Write + Send,
) {
    let mut wake = store.events().subscribe(&task);
    let mut last = 0;
    loop {
        wake.borrow_and_update();
        write_backlog(&store, &user, &task, &mut last, &mut out).await;
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = wake.changed() => {}
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
    }
    write_backlog(&store, &user, &task, &mut last, &mut out).await;
}

async fn write_backlog(
    store: &Store,
    user: &UserId,
    task: &TaskId,
    last: &mut i64,
    out: &mut (impl std::io::Write + Send),
) {
    loop {
        let Ok(events) = store.events_after(user, task, *last, 1000).await else {
            return;
        };
        if events.is_empty() {
            return;
        }
        for event in events {
            // A log that can no longer be written is not worth stopping the task for.
            let _ = writeln!(out, "{}", describe(&event));
            *last = event.seq;
        }
        let _ = out.flush();
    }
}

fn describe(event: &Event) -> String {
    let data = &event.data;
    let text = |key: &str| data[key].as_str().unwrap_or("").to_owned();
    let line = match event.kind {
        EventKind::TaskCreated => format!("created: {}", text("description")),
        EventKind::StateChanged => format!("{} → {}", text("from"), text("to")),
        EventKind::Step => match deft_core::StepEvent::from_data(data) {
            Some(step) => {
                let mut line = format!("{} {}", step.step.as_str(), step.status.as_str());
                let said = [&step.summary, &step.reason, &step.output];
                if let Some(more) = said.into_iter().flatten().next() {
                    line.push_str(": ");
                    line.push_str(more.lines().last().unwrap_or_default());
                }
                line
            }
            None => data.to_string(),
        },
        EventKind::Plan => format!(
            "plan: {} steps",
            data["steps"].as_array().map_or(0, Vec::len)
        ),
        EventKind::ModelCall => format!(
            "{} {} ({} in, {} out)",
            text("role"),
            text("model"),
            data["input_tokens"],
            data["output_tokens"]
        ),
        EventKind::ToolCall => format!(
            "{} {}",
            text("name"),
            one_line(&data["arguments"].to_string(), 100)
        ),
        EventKind::ToolResult => format!(
            "{}{}",
            if data["is_error"] == true {
                "error: "
            } else {
                ""
            },
            one_line(&text("content"), 100)
        ),
        EventKind::PullRequest => format!(
            "pull request {} ← {}: {}",
            text("base"),
            text("head"),
            text("title")
        ),
        EventKind::Network => format!(
            "network {} {}:{} ({})",
            if data["allowed"] == true {
                "allowed"
            } else {
                "denied"
            },
            text("host"),
            data["port"],
            text("rule")
        ),
        _ => one_line(&data.to_string(), 100),
    };
    format!("#{:<4} {:12} {line}", event.seq, event.kind.as_str())
}

async fn verdict(store: &Store, task: &TaskId, outcome: RunOutcome) -> ExitCode {
    match outcome {
        RunOutcome::Completed => {
            if let Ok(task) = store.task_by_id(task).await {
                for pr in &task.pull_requests {
                    println!("pull request: {} ← {} ({})", pr.base, pr.head, pr.title);
                }
            }
            println!("completed");
            ExitCode::SUCCESS
        }
        RunOutcome::NeedsAttention(attention) => {
            eprintln!(
                "needs attention ({}): {}",
                attention.kind.as_str(),
                attention.message
            );
            ExitCode::from(3)
        }
        RunOutcome::Cancelled => {
            eprintln!("cancelled");
            ExitCode::FAILURE
        }
    }
}
