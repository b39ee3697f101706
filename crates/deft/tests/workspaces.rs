//! A task's files on the host (its clone, `ID.bases.json`, `ID.sandbox`) are given back when it
//! can no longer run (cancelled, its pull requests merged or closed, swept by retention), and
//! idle ones are kept within a disk budget: a real `deft serve`, real git and sandboxes, and
//! the scripted model.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{sh, start_with_env};
use deft_testkit::model_server::{ScriptedCall, ScriptedModel, Turn};
use serde_json::{Value, json};

/// Sweeps often, so that a test sees one within a second.
const FAST_SWEEP: (&str, &str) = ("DEFT_WORKSPACE_SWEEP_MS", "200");

/// A model that plans one step, writes `plain/NAME-ROUND.txt` (NAME from `make-NAME` in the
/// task, ROUND 2 once the owner asked for a `second-round`), finishes, and passes the review.
async fn editing_model(delay: Duration) -> ScriptedModel {
    let model = ScriptedModel::start(vec![]).await;
    model.set_delay(delay);
    model.respond_with(|_, body| {
        let system = body["system"].to_string();
        if system.contains("You review a change") {
            return Turn::text(r#"{"verdict": "pass", "checked": ["the diff meets each criterion"]}"#);
        }
        if system.contains("Work step: planning") {
            return Turn::calls(vec![ScriptedCall::new(
                "p",
                "submit_plan",
                r#"{"requirements": ["r"], "acceptance_criteria": ["a"], "steps": ["s"]}"#,
            )]);
        }
        if system.contains("conventions") && !system.contains("Work step") {
            // A feedback round first asks what the feedback teaches: nothing here.
            return Turn::text("[]");
        }
        let messages = body["messages"].as_array().map_or(0, Vec::len);
        let text = body.to_string();
        let name = text
            .split("make-")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_alphanumeric()).next())
            .unwrap_or("change")
            .to_owned();
        let round = if text.contains("second-round") { "2" } else { "1" };
        if messages <= 1 {
            let arguments = json!({"command": "create", "path": format!("plain/{name}-{round}.txt"), "file_text": format!("{name}\n")});
            Turn::calls(vec![ScriptedCall::new(
                "e",
                "str_replace_based_edit_tool",
                &arguments.to_string(),
            )])
        } else {
            Turn::calls(vec![ScriptedCall::new("f", "finish", r#"{"summary": "done"}"#)])
        }
    });
    model
}

/// A repository with `megabytes` of incompressible data, so that its clones weigh that much.
fn repo(dir: &Path, megabytes: usize) -> PathBuf {
    let repo = dir.join("plain");
    std::fs::create_dir(&repo).unwrap();
    sh(
        &repo,
        &format!(
            "head -c {} /dev/urandom > blob && git init -q -b main && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init",
            megabytes * 1024 * 1024
        ),
    );
    repo
}

/// The task's workspace and its side files that exist: its base commits, its sandbox's
/// directory, and its private repositories (`DATA_DIR/private-repos/ID`).
fn files_of(data: &Path, id: &str) -> Vec<PathBuf> {
    let workspaces = data.join("workspaces");
    [
        workspaces.join(id),
        workspaces.join(format!("{id}.bases.json")),
        workspaces.join(format!("{id}.sandbox")),
        data.join("private-repos").join(id),
    ]
    .into_iter()
    .filter(|path| path.symlink_metadata().is_ok())
    .collect()
}

/// Waits (up to 30 s) until `check` holds.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < Duration::from_secs(30), "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_tasks_files_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), 0);
    let model = editing_model(Duration::from_millis(1500)).await;
    let data = dir.path().join("data");
    let server = start_with_env(&data, &model, 2, &[FAST_SWEEP]);
    let id = server.create_task("make-alpha", &repo).await;
    let clone = data.join("workspaces").join(&id).join("plain");
    until("the task cloned its repository", || {
        clone.join(".git").is_dir()
    })
    .await;
    server
        .call(reqwest::Method::POST, &format!("/tasks/{id}/cancel"), None)
        .await;
    until("a cancelled task's files are deleted", || {
        files_of(&data, &id).is_empty()
    })
    .await;
    assert!(repo.join(".git").is_dir(), "the repository itself stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_or_closed_pull_request_gives_its_workspace_back() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), 0);
    let model = editing_model(Duration::ZERO).await;
    let data = dir.path().join("data");
    let server = start_with_env(&data, &model, 2, &[FAST_SWEEP]);
    let merged = server.create_task("make-alpha", &repo).await;
    let closed = server.create_task("make-beta", &repo).await;
    let mut heads = Vec::new();
    for id in [&merged, &closed] {
        let done = server.until(id, "completed").await;
        heads.push(
            done["pull_requests"][0]["head"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Open pull requests: feedback may still come, so the clones stay, with their bases and
    // private repositories (the sandbox's own directory went with the sandbox).
    tokio::time::sleep(Duration::from_millis(600)).await;
    for id in [&merged, &closed] {
        assert_eq!(files_of(&data, id).len(), 3, "{:?}", files_of(&data, id));
    }

    sh(&repo, &format!("git merge -q --no-edit {}", heads[0]));
    sh(&repo, &format!("git branch -q -D {}", heads[1]));
    for id in [&merged, &closed] {
        until("a finished pull request's workspace is deleted", || {
            files_of(&data, id).is_empty()
        })
        .await;
    }
    let status = |task: Value| task["pull_requests"][0]["status"].clone();
    let task = server
        .call(reqwest::Method::GET, &format!("/tasks/{merged}"), None)
        .await;
    assert_eq!(status(task), json!("merged"));
    let task = server
        .call(reqwest::Method::GET, &format!("/tasks/{closed}"), None)
        .await;
    assert_eq!(status(task), json!("closed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_workspaces_stay_within_the_budget_oldest_first_and_clone_again() {
    let dir = tempfile::tempdir().unwrap();
    // Each clone holds the blob twice (its object and its checkout): about 4 MiB.
    let repo = repo(dir.path(), 2);
    let model = editing_model(Duration::ZERO).await;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("config.toml"),
        "[retention]\nidle_workspaces_mib = 10\n",
    )
    .unwrap();
    let server = start_with_env(&data, &model, 1, &[FAST_SWEEP]);
    let mut tasks = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        let id = server.create_task(&format!("make-{name}"), &repo).await;
        server.until(&id, "completed").await;
        tasks.push(id);
    }
    let workspace = |id: &str| data.join("workspaces").join(id);
    until("the oldest idle workspace is given back", || {
        !workspace(&tasks[0]).exists()
    })
    .await;
    assert!(workspace(&tasks[1]).is_dir() && workspace(&tasks[2]).is_dir());
    assert!(
        data.join("workspaces")
            .join(format!("{}.bases.json", tasks[0]))
            .is_file(),
        "the base stays, for the next round's review"
    );

    // Feedback on the evicted task: it clones its branch again and carries on.
    server
        .call(
            reqwest::Method::POST,
            &format!("/tasks/{}/feedback", tasks[0]),
            Some(json!({"message": "make-alpha second-round"})),
        )
        .await;
    server.until(&tasks[0], "in_progress").await;
    let done = server.until(&tasks[0], "completed").await;
    let head = done["pull_requests"][0]["head"].as_str().unwrap();
    let files = sh(&repo, &format!("git ls-tree --name-only {head}"));
    assert!(
        files.contains("alpha-1.txt") && files.contains("alpha-2.txt"),
        "the second round built on the first: {files}"
    );
    let diff = server
        .call(
            reqwest::Method::GET,
            &format!("/tasks/{}/diff", tasks[0]),
            None,
        )
        .await;
    assert!(
        !diff.to_string().contains("beta"),
        "judged against the first base: {diff}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_swept_by_retention_loses_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), 0);
    let model = editing_model(Duration::ZERO).await;
    let data = dir.path().join("data");
    let mut server = Some(start_with_env(&data, &model, 1, &[FAST_SWEEP]));
    let id = server
        .as_ref()
        .unwrap()
        .create_task("make-alpha", &repo)
        .await;
    server.as_ref().unwrap().until(&id, "completed").await;
    // The sandbox's own directory goes a moment after the run; the rest stays.
    until("the sandbox's directory goes with it", || {
        files_of(&data, &id).len() == 3
    })
    .await;
    let kept = files_of(&data, &id);
    assert!(
        kept.iter()
            .all(|path| !path.to_string_lossy().ends_with(".sandbox")),
        "the workspace, its bases and its private repository: {kept:?}"
    );
    drop(server.take());

    // Ninety days later, as the retention sweep sees it.
    {
        let key = deft_store::MasterKey::load(None, &data).unwrap();
        let store = deft_store::Store::open_data_dir(&data, key).await.unwrap();
        let (tasks, _) = store
            .sweep_inactive(deft_core::Timestamp::now().plus_millis(1))
            .await
            .unwrap();
        assert_eq!(tasks, 1);
        store.close().await;
    }
    let _server = start_with_env(&data, &model, 1, &[FAST_SWEEP]);
    until("a swept task's files are deleted", || {
        files_of(&data, &id).is_empty()
    })
    .await;
}
