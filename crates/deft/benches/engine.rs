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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (total, model, steps) = runtime.block_on(run());
    let overhead = (total - model) / steps as u32;
    println!("engine benchmark: a {steps}-step task, scripted model answering at once");
    println!("| measure | value |");
    println!("| --- | --- |");
    println!("| whole run | {:.0} ms |", total.as_secs_f64() * 1000.0);
    println!(
        "| inside model calls | {:.0} ms |",
        model.as_secs_f64() * 1000.0
    );
    println!(
        "| harness per step | {:.2} ms |",
        overhead.as_secs_f64() * 1000.0
    );
    if overhead >= Duration::from_millis(2) {
        eprintln!(
            "target missed: {:.2} ms per step, not under 2 ms",
            overhead.as_secs_f64() * 1000.0
        );
        std::process::exit(1);
    }
    println!("all targets met");
}

async fn run() -> (Duration, Duration, usize) {
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
    for n in 0..STEPS {
        script.push(Step::Reply(Turn::calls(vec![ScriptedCall::new(
            &format!("f{n}"),
            "finish",
            r#"{"summary": "done"}"#,
        )])));
    }
    script.push(Step::Reply(Turn::text(r#"{"verdict": "pass"}"#)));
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
    let model: u64 = events
        .iter()
        .filter(|e| e.kind == EventKind::ModelCall)
        .map(|e| e.data["duration_us"].as_u64().unwrap_or(0))
        .sum();
    (total, Duration::from_micros(model), STEPS)
}
