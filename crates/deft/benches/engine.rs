//! The engine's own cost per step: a 200-step task run against a scripted model that answers
//! at once, in a repository without checks, so that what remains after the model calls is
//! the harness (events, progress, prompts, tool dispatch, the sandbox's setup shared by all).
//!
//! Run with `cargo bench -p deft --bench engine`. Target: under 2 ms per step.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports on stdout, and its misses on stderr"
)]

use std::time::{Duration, Instant};

use deft_agent::{Engine, RunLimits, RunOutcome};
use deft_core::{EventKind, ForgeKind};
use deft_llm::{ApiKey, ModelClient, ModelConfig, Provider};
use deft_sandbox::HostSupport;
use deft_sandbox::bwrap::BwrapBackend;
use deft_store::{MasterKey, NewRepository, NewTask, Store};
use deft_testkit::model_server::{ScriptedCall, ScriptedModel, Step, Turn};
use tokio_util::sync::CancellationToken;

const STEPS: usize = 200;

fn main() {
    // `DEFT_BENCH_LOG=sqlx=debug` shows each statement a step makes.
    if let Ok(filter) = std::env::var("DEFT_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let Measured {
        total,
        model,
        steps,
        window,
        window_model,
        window_steps,
    } = runtime.block_on(run());
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let whole = (total - model) / steps as u32;
    // The run's start (clone, sandbox) and end (commit, push, pull request) are paid once a
    // task, not once a step: the per-step figure is the steady cost between the first step's
    // start and the last one's end, from the log's own times.
    let overhead = (window - window_model) / window_steps as u32;
    println!("engine benchmark: a {steps}-step task, scripted model answering at once");
    println!("| measure | value |");
    println!("| --- | --- |");
    println!("| whole run | {:.0} ms |", ms(total));
    println!("| inside model calls | {:.0} ms |", ms(model));
    println!(
        "| whole run less model calls, per step | {:.2} ms |",
        ms(whole)
    );
    println!(
        "| steps 1 to {window_steps}: {:.0} ms, {:.0} ms of it in model calls |",
        ms(window),
        ms(window_model)
    );
    println!("| harness per step | {:.2} ms |", ms(overhead));
    if overhead >= Duration::from_millis(2) {
        eprintln!(
            "target missed: {:.2} ms per step, not under 2 ms",
            overhead.as_secs_f64() * 1000.0
        );
        std::process::exit(1);
    }
    println!("all targets met");
}

/// What one run measured.
struct Measured {
    total: Duration,
    model: Duration,
    steps: usize,
    /// From the first execution step's start to the last one's end, by the log.
    window: Duration,
    window_model: Duration,
    window_steps: usize,
}

async fn run() -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("plain");
    std::fs::create_dir(&repo).unwrap();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg("git init -q -b main && echo x > README && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init")
        .current_dir(&repo)
        .status()
        .unwrap();
    assert!(status.success());
    let store = Store::open_data_dir(dir.path(), MasterKey::generate())
        .await
        .unwrap();
    let admin = store.bootstrap_admin().await.unwrap().unwrap().user;
    let repo = store
        .add_repository(
            &admin.id,
            NewRepository {
                name: "plain".into(),
                forge: ForgeKind::Local,
                location: repo.display().to_string(),
                default_branch: "main".into(),
            },
        )
        .await
        .unwrap();
    let task = store
        .create_task(
            &admin.id,
            NewTask {
                description: "many small steps".into(),
                repos: vec![repo.id],
                chat_id: None,
                approve_plan: false,
            },
        )
        .await
        .unwrap();
    let steps: Vec<String> = (0..STEPS).map(|n| format!("step {n}")).collect();
    let plan =
        serde_json::json!({"requirements": ["r"], "acceptance_criteria": ["a"], "steps": steps})
            .to_string();
    let mut script = vec![Step::Reply(Turn::calls(vec![ScriptedCall::new(
        "p",
        "submit_plan",
        &plan,
    )]))];
    // The work changes one file: a run that changes none is not completed.
    script.push(Step::Reply(Turn::calls(vec![ScriptedCall::new(
        "w",
        "str_replace_based_edit_tool",
        r#"{"command": "create", "path": "done.txt", "file_text": "done\n"}"#,
    )])));
    for n in 0..STEPS {
        script.push(Step::Reply(Turn::calls(vec![ScriptedCall::new(
            &format!("f{n}"),
            "finish",
            r#"{"summary": "done"}"#,
        )])));
    }
    script.push(Step::Reply(Turn::text(
        r#"{"verdict": "pass", "checked": ["the diff meets each criterion"]}"#,
    )));
    let server = ScriptedModel::start(script).await;
    let config = ModelConfig {
        provider: Provider::Anthropic,
        model: "scripted".into(),
        base_url: server.url.clone(),
        api_key: Some(ApiKey::new("test-key")),
        source: "the benchmark".into(),
        model_setting: "DEFT_MODEL".into(),
        key_setting: "DEFT_MODEL_API_KEY".into(),
    };
    if let Some(user) = deft_sandbox::user::sandbox_user().unwrap() {
        deft_forge::set_clone_owner(user.uid, user.gid);
    }
    let engine = Engine {
        store: store.clone(),
        planner: ModelClient::new(config.clone()).unwrap(),
        executor: ModelClient::new(config).unwrap(),
        sandboxes: std::sync::Arc::new(
            BwrapBackend::new(
                HostSupport::probe().await,
                env!("CARGO_BIN_EXE_deft").into(),
            )
            .unwrap(),
        ),
        workspaces: dir.path().join("workspaces"),
        limits: RunLimits::default(),
        drain: CancellationToken::new(),
        forges: deft_agent::forge::Forges::default(),
        active: Default::default(),
        images: None,
        default_image: None,
        image_sandboxes: None,
        edit_format: Default::default(),
        web: None,
    };
    let started = Instant::now();
    let outcome = engine
        .run(&task.id, &CancellationToken::new())
        .await
        .unwrap();
    let total = started.elapsed();
    assert_eq!(outcome, RunOutcome::Completed);
    let events = store
        .events_after(&admin.id, &task.id, 0, 100_000)
        .await
        .unwrap();
    let model_us = |events: &[deft_core::Event]| -> u64 {
        events
            .iter()
            .filter(|e| e.kind == EventKind::ModelCall)
            .map(|e| e.data["duration_us"].as_u64().unwrap_or(0))
            .sum()
    };
    let execution = |e: &&deft_core::Event| {
        e.kind == EventKind::Step
            && e.data["step"] == "execution"
            && e.data["index"].as_u64().is_some()
    };
    let first = events.iter().position(|e| execution(&e)).unwrap();
    let last = events.iter().rposition(|e| execution(&e)).unwrap();
    let window_events = &events[first..=last];
    let window_ms = events[last].at.unix_millis() - events[first].at.unix_millis();
    Measured {
        total,
        model: Duration::from_micros(model_us(&events)),
        steps: STEPS,
        window: Duration::from_millis(window_ms as u64),
        window_model: Duration::from_micros(model_us(window_events)),
        window_steps: STEPS,
    }
}
