//! Several `deft worker` processes on one PostgreSQL database: every task runs to completion
//! exactly once, and killing a worker mid-task loses nothing.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deft_core::{EventKind, ForgeKind, TaskState};
use deft_store::{MasterKey, NewRepository, NewTask, Store, TaskFilter};
use deft_testkit::TestDatabase;
use deft_testkit::model_server::{ScriptedCall, ScriptedModel, Turn};

const DEFT: &str = env!("CARGO_BIN_EXE_deft");
const KEY: &str = "3333333333333333333333333333333333333333333333333333333333333333";
const TASKS: usize = 60;

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn worker(url: &str, data: &std::path::Path, model: &ScriptedModel) -> Worker {
    let child = Command::new(DEFT)
        .args(["worker", "--database-url", url, "--data-dir"])
        .arg(data)
        .env("DEFT_MASTER_KEY", KEY)
        .env("DEFT_LEASE_MS", "3000")
        .env("DEFT_MODEL", "anthropic/scripted-model")
        .env("DEFT_MODEL_BASE_URL", &model.url)
        .env("DEFT_MODEL_API_KEY", "test-key")
        .env_remove("DEFT_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Worker(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_run_every_task_once_and_survive_losing_one() {
    let db = TestDatabase::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("plain");
    std::fs::create_dir(&repo).unwrap();
    let made = Command::new("sh")
        .arg("-c")
        .arg("git init -q -b main && echo x > README && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init")
        .current_dir(&repo)
        .status()
        .unwrap();
    assert!(made.success());

    let store = Store::open(&db.url, MasterKey::from_hex(KEY).unwrap())
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
    let mut ids = Vec::new();
    for n in 0..TASKS {
        let task = NewTask {
            description: format!("short task {n}"),
            repos: vec![repo.id.clone()],
            chat_id: None,
            approve_plan: false,
        };
        ids.push(store.create_task(&admin.id, task).await.unwrap().id);
    }

    // Whatever the order of requests, plan one step, finish it, pass the review.
    let model = ScriptedModel::start(vec![]).await;
    model.respond_with(|_, body| {
        let system = body["system"].to_string();
        let turn = if system.contains("You review a change") {
            return Turn::text(
                r#"{"verdict": "pass", "checked": ["the diff meets each criterion"]}"#,
            );
        } else if system.contains("Work step: planning") {
            ScriptedCall::new(
                "p",
                "submit_plan",
                r#"{"requirements": ["r"], "acceptance_criteria": ["a"], "steps": ["s"]}"#,
            )
        } else if !body["messages"].to_string().contains("done.txt") {
            // A file written: a run that changes none is not completed.
            ScriptedCall::new(
                "w",
                "str_replace_based_edit_tool",
                r#"{"command": "create", "path": "done.txt", "file_text": "done\n"}"#,
            )
        } else {
            // A little work, so that a worker can be caught mid-task.
            ScriptedCall::new("f", "finish", r#"{"summary": "done"}"#)
        };
        Turn::calls(vec![turn])
    });
    let mut workers: Vec<Worker> = (0..3)
        .map(|n| worker(&db.url, &dir.path().join(format!("w{n}")), &model))
        .collect();

    // Kill a worker while it holds a task.
    let started = Instant::now();
    let victim_pid = 'found: loop {
        let page = store
            .list_tasks(
                &admin.id,
                &TaskFilter {
                    state: Some(TaskState::InProgress),
                    limit: 100,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        for task in &page.tasks {
            let Some(owner) = store.lease_owner(&task.id).await.unwrap() else {
                continue;
            };
            let pid: u32 = owner
                .split('-')
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap();
            if started.elapsed() > Duration::from_millis(300) {
                break 'found pid;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no task ever started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let victim = workers
        .iter()
        .position(|w| w.0.id() == victim_pid)
        .expect("the lease names a worker of this test");
    drop(workers.remove(victim));

    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let done = store
            .list_tasks(
                &admin.id,
                &TaskFilter {
                    state: Some(TaskState::Completed),
                    limit: 500,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        if done.tasks.len() == TASKS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {TASKS} tasks completed",
            done.tasks.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut recovered = 0;
    for id in &ids {
        let events = store.events_after(&admin.id, id, 0, 10_000).await.unwrap();
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as i64).collect::<Vec<_>>(),
            "gap-free, no event twice"
        );
        let completions = events
            .iter()
            .filter(|e| e.kind == EventKind::StateChanged && e.data["to"] == "completed")
            .count();
        assert_eq!(completions, 1, "task {id} completed {completions} times");
        let starts = events
            .iter()
            .filter(|e| e.kind == EventKind::StateChanged && e.data["to"] == "in_progress")
            .count();
        if events.iter().any(|e| e.data["step"] == "recovery") {
            recovered += 1;
            assert_eq!(
                starts, 2,
                "a recovered task started once more, and only once"
            );
        } else {
            assert_eq!(starts, 1, "task {id} ran {starts} times");
            // Numbers are gap-free by construction; what two workers running one task would
            // leave is twice the work: count it.
            let kinds = |kind: EventKind| events.iter().filter(|e| e.kind == kind).count();
            assert_eq!(
                (kinds(EventKind::Plan), kinds(EventKind::ModelCall)),
                (1, 4),
                "task {id} was planned once, with one call to plan, two to work and one to review"
            );
        }
    }
    assert!(
        recovered >= 1,
        "the killed worker ({victim_pid}) held a task that another finished"
    );

    // The survivors stop cleanly on SIGTERM.
    for worker in &mut workers {
        let pid = worker.0.id().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let stopping = Instant::now();
        let status = loop {
            if let Some(status) = worker.0.try_wait().unwrap() {
                break status;
            }
            assert!(
                stopping.elapsed() < Duration::from_secs(10),
                "worker {pid} did not stop after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(status.success(), "worker {pid} exits cleanly: {status}");
    }
}
