//! `deft doctor`: checks what deft needs on this machine and says how to fix each gap.

#![allow(clippy::print_stdout, reason = "the report is the command's output")]

use std::process::ExitCode;
use std::time::Duration;

use deft_llm::{Message, ModelClient, ModelError, Request};
use tokio_util::sync::CancellationToken;

use crate::cli::{DataArgs, ModelArgs};
use crate::{config, local};

enum Check {
    Ok(String),
    /// Works, but something a task will need is missing.
    Warn(String),
    /// deft cannot do its job until this is fixed.
    Fail(String),
}

pub async fn run(data: &DataArgs, model_args: &ModelArgs) -> anyhow::Result<ExitCode> {
    let checks = [
        (
            "git",
            program("git", &["--version"], "install it: `apt-get install git`").await,
        ),
        ("sandbox", sandbox().await),
        ("database", database(data).await),
        ("model", model(data, model_args).await),
        ("workspaces", workspaces(data, model_args)),
        ("images", images(data, model_args).await),
        ("web search", web_search(data, model_args)),
    ];
    let mut failed = false;
    for (name, check) in checks {
        let (mark, text) = match check {
            Check::Ok(text) => ("ok  ", text),
            Check::Warn(text) => ("warn", text),
            Check::Fail(text) => {
                failed = true;
                ("FAIL", text)
            }
        };
        println!("{mark}  {name:<11} {text}");
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn program(name: &str, args: &[&str], fix: &str) -> Check {
    match tokio::process::Command::new(name).args(args).output().await {
        Ok(output) if output.status.success() => Check::Ok(
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned(),
        ),
        Ok(output) => Check::Fail(format!("`{name}` fails ({}); {fix}", output.status)),
        Err(_) => Check::Fail(format!("`{name}` is not installed; {fix}")),
    }
}

/// Whether bubblewrap runs here, and what the sandbox can enforce.
async fn sandbox() -> Check {
    let support = deft_sandbox::HostSupport::probe().await;
    match support.refusal(&deft_sandbox::Limits::default()) {
        // When deft is root, tasks run as a dedicated user (made on first use).
        None if rustix::process::geteuid().is_root() => match deft_sandbox::user::sandbox_user() {
            Ok(Some(user)) => Check::Ok(format!(
                "{}; tasks run as host uid {} (the user `{}` unless {} names another)",
                support.describe(),
                user.uid,
                deft_sandbox::user::DEFAULT_USER,
                deft_sandbox::user::USER_VARIABLE
            )),
            Ok(None) => Check::Ok(support.describe()),
            Err(error) => Check::Fail(error.to_string()),
        },
        None => Check::Ok(support.describe()),
        Some(why) => Check::Fail(why),
    }
}

async fn database(data: &DataArgs) -> Check {
    match local::open_store(data).await {
        Ok((dir, store)) => {
            let result = store.ping().await;
            store.close().await;
            match result {
                Ok(()) => Check::Ok(format!(
                    "{:?} database answers (data dir {})",
                    store.backend(),
                    dir.display()
                )),
                Err(error) => Check::Fail(format!("{error}")),
            }
        }
        Err(error) => Check::Fail(format!("{error:#}")),
    }
}

/// The data dir and its config file, where most checks start; failing to read either fails
/// the check.
fn data_and_config(
    data: &DataArgs,
    args: &ModelArgs,
) -> Result<(std::path::PathBuf, config::ConfigFile), Check> {
    let fail = |error: anyhow::Error| Check::Fail(format!("{error:#}"));
    let dir = local::data_dir(data.data_dir.as_deref()).map_err(fail)?;
    let config = config::load(args.config.as_deref(), &dir).map_err(fail)?;
    Ok((dir, config))
}

/// How much disk the tasks' workspaces take, beside the budget for idle ones.
fn workspaces(data: &DataArgs, args: &ModelArgs) -> Check {
    let (dir, config) = match data_and_config(data, args) {
        Ok(found) => found,
        Err(check) => return check,
    };
    let budget = config.retention.idle_workspaces_mib;
    let files = deft_agent::workspaces::Workspaces::new(dir.join("workspaces"));
    let tasks = files.tasks().map(|tasks| tasks.len()).unwrap_or(0);
    let mib = files.total_bytes() / (1024 * 1024);
    Check::Ok(format!(
        "{mib} MiB in {tasks} tasks' workspaces at {}; idle ones are kept within {budget} MiB (`[retention] idle_workspaces_mib`)",
        files.root().display()
    ))
}

/// The image builder for repositories with a Dockerfile, and the cache of their images.
async fn images(data: &DataArgs, args: &ModelArgs) -> Check {
    let (dir, config) = match data_and_config(data, args) {
        Ok(found) => found,
        Err(check) => return check,
    };
    let builder = match config::images(&config, &dir) {
        Ok(Some(deft_agent::setup::ImageBuilder(images))) => images,
        Ok(None) => {
            return Check::Warn(format!(
                "no image builder: tasks on repositories with a Dockerfile use the host's tools; start one (`podman system service --time=0 unix:///run/deft-podman.sock`) and set `[environments] builder` or {}",
                crate::env_vars::DEFT_IMAGE_BUILDER
            ));
        }
        Err(error) => return Check::Fail(format!("{error:#}")),
    };
    match builder.describe().await {
        Ok(version) => {
            let cache = dir.join("images");
            Check::Ok(format!(
                "{version}; {} MiB of images at {} (kept within {} MiB, `[environments] cache_mib`)",
                disk_bytes(&cache) / (1024 * 1024),
                cache.display(),
                config.environments.cache_mib
            ))
        }
        Err(error) => Check::Fail(error.to_string()),
    }
}

/// Whether tasks and chats get `web_search` and `web_fetch`, and how to give them.
fn web_search(data: &DataArgs, args: &ModelArgs) -> Check {
    let config = match data_and_config(data, args) {
        Ok((_, config)) => config,
        Err(check) => return check,
    };
    match (config::web_search(&config), &config.web_search.provider) {
        (Err(error), _) => Check::Fail(format!("{error:#}")),
        (Ok(None), _) => Check::Warn(
            "not configured: the agent has no web_search or web_fetch; set `[web_search] provider = \"searxng\"` with `base_url` (a SearXNG server with its JSON format on), or `provider = \"brave\"` with `api_key`".into(),
        ),
        (Ok(Some(_)), provider) => Check::Ok(format!(
            "{}: the agent gets web_search and web_fetch (fetches under each task's network level)",
            provider.as_deref().unwrap_or_default()
        )),
    }
}

/// The bytes of the files under `dir`, links not followed.
fn disk_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            match entry.path().symlink_metadata() {
                Ok(meta) if meta.is_dir() => pending.push(entry.path()),
                Ok(meta) => total += meta.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Which model deft would use and why, and whether it answers a one-line prompt.
async fn model(data: &DataArgs, args: &ModelArgs) -> Check {
    let (_, config) = match data_and_config(data, args) {
        Ok(found) => found,
        Err(check) => return check,
    };
    let models = match config::models(args, &config).await {
        Ok(models) => models,
        Err(error @ ModelError::NotConfigured { .. }) => return Check::Warn(error.to_string()),
        Err(error) => return Check::Fail(error.to_string()),
    };
    let chosen = &models.default;
    let what = format!(
        "{} (because {}) at {}",
        chosen.label(),
        chosen.source,
        chosen.base_url
    );
    let mut client = match ModelClient::new(chosen.clone()) {
        Ok(client) => client,
        Err(error) => return Check::Fail(format!("{what}: {error}")),
    };
    client.policy.stream = false;
    client.policy.max_retries = 0;
    client.policy.call_timeout = Duration::from_secs(30);
    let mut request = Request::new(
        "You are a health check. Reply with the single word: ok",
        vec![Message::user("ping")],
    );
    request.max_tokens = 16;
    match client.complete(&request, &CancellationToken::new()).await {
        Ok(done) => Check::Ok(format!("{what} answers ({} ms)", done.duration.as_millis())),
        Err(error) => Check::Fail(format!("{what} does not answer: {error}")),
    }
}
