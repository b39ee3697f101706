//! `deft run` end to end: the real binary, a real git repository, real bubblewrap sandboxes,
//! and the scripted model server in place of a hosted model.

mod common;

use common::greeter::{
    create_turn, deft_run, finish_turn, greeting_repo, plan_turn, review, review_pass,
};
use common::{DEFT, sh};
use deft_testkit::model_server::{ScriptedCall, ScriptedModel, Step, Turn};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_goes_from_description_to_a_pull_request() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    let server = ScriptedModel::start(vec![
        plan_turn(),
        create_turn(),
        finish_turn("e2"),
        review_pass(),
    ])
    .await;
    let output = deft_run(
        &server,
        &dir.path().join("data"),
        &repo,
        "create greeting.txt containing hello, and make ./test.sh pass",
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("completed") && stdout.contains("pull request: main ← deft/"),
        "{stdout}"
    );
    assert_eq!(server.violations(), Vec::<String>::new());

    let branch = sh(
        &repo,
        "git branch --list 'deft/*' --format='%(refname:short)'",
    )
    .trim()
    .to_owned();
    assert!(
        branch.contains("-create-greeting-txt-containing-hello"),
        "{branch}"
    );
    assert_eq!(
        sh(&repo, &format!("git show {branch}:greeting.txt")),
        "hello\n"
    );
    let message = sh(&repo, &format!("git log -1 --format=%B {branch}"));
    assert!(
        message.contains("Co-authored-by: admin <admin@deft.invalid>")
            && message.contains("Co-authored-by: deft <deft@deft.invalid>"),
        "{message}"
    );
    assert_eq!(
        sh(&repo, "git rev-parse --abbrev-ref HEAD").trim(),
        "main",
        "the original's checkout is untouched"
    );

    // The steering file reached the model, fenced as data.
    let requests = server.requests();
    let system = requests[0].body["system"].to_string();
    assert!(
        system.contains("keep every file under ten lines") && system.contains("<data source="),
        "{system}"
    );
    assert!(
        stdout.contains("plan: 1 steps") && stdout.contains("execution verified"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_verification_goes_back_to_the_model_then_a_stuck_step_asks_for_help() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    // Finishes too early once, is told why, then does the work.
    let server = ScriptedModel::start(vec![
        plan_turn(),
        finish_turn("e0"),
        create_turn(),
        finish_turn("e2"),
        review_pass(),
    ])
    .await;
    let output = deft_run(
        &server,
        &dir.path().join("data"),
        &repo,
        "create greeting.txt containing hello",
    )
    .await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let told = server.requests().iter().any(|r| {
        r.body.to_string().contains("The checks failed")
            && r.body.to_string().contains("greeting.txt must say hello")
    });
    assert!(told, "the failure was shown to the model");

    // Never does the work: after the allowed retries, the task needs attention.
    let repo = {
        let other = dir.path().join("again");
        std::fs::create_dir(&other).unwrap();
        greeting_repo(&other)
    };
    // Two attempts of three tries each (the defaults): the second attempt starts afresh.
    let server = ScriptedModel::start(vec![
        plan_turn(),
        finish_turn("f1"),
        finish_turn("f2"),
        finish_turn("f3"),
        finish_turn("g1"),
        finish_turn("g2"),
        finish_turn("g3"),
    ])
    .await;
    let output = deft_run(
        &server,
        &dir.path().join("data2"),
        &repo,
        "create greeting.txt containing hello",
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    let second = server.requests()[4].body["messages"].to_string();
    assert!(
        second.contains("An earlier attempt at this step ended: step 1 keeps failing its checks")
            && !second.contains("Created greeting.txt saying hello"),
        "the second attempt began afresh, told why: {second}"
    );
    assert_eq!(server.remaining_steps(), 0);
    // The reason is printed last, with the failure that keeps coming back.
    let reason =
        stderr.rfind("needs attention (error): step 1 keeps failing its checks after 3 tries");
    assert!(
        reason.is_some_and(|at| stderr[at..].contains("greeting.txt must say hello")),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_stops_the_run_with_exit_code_3() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    let ask = Step::Reply(Turn::calls(vec![ScriptedCall::new(
        "q1",
        "ask_user",
        r#"{"question": "Should the greeting be in English?"}"#,
    )]));
    let server = ScriptedModel::start(vec![ask]).await;
    let output = deft_run(
        &server,
        &dir.path().join("data"),
        &repo,
        "create a greeting",
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("needs attention (question): Should the greeting be in English?"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_model_run_says_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    let output = tokio::process::Command::new(DEFT)
        .args(["run", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--repo")
        .arg(&repo)
        .arg("anything")
        .env_remove("DEFT_MODEL")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_API_KEY")
        .env_remove("DEFT_MODEL_API_KEY")
        .env("DEFT_OLLAMA_URL", "http://127.0.0.1:9")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no model is configured; set DEFT_MODEL")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_repositories_get_two_branches_and_two_pull_requests() {
    let dir = tempfile::tempdir().unwrap();
    let first = greeting_repo(dir.path());
    let second = dir.path().join("welcomer");
    std::fs::create_dir(&second).unwrap();
    sh(
        &second,
        &format!(
            "cp {}/test.sh . && git init -q -b trunk && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init",
            first.display()
        ),
    );
    let create = |id: &str, path: &str| {
        Step::Reply(Turn::calls(vec![ScriptedCall::new(
            id,
            "str_replace_based_edit_tool",
            &format!(r#"{{"command": "create", "path": "{path}", "file_text": "hello\n"}}"#),
        )]))
    };
    let server = ScriptedModel::start(vec![
        plan_turn(),
        create("c1", "greeter/greeting.txt"),
        create("c2", "/workspace/welcomer/greeting.txt"),
        finish_turn("c3"),
        review_pass(),
    ])
    .await;
    let data = dir.path().join("data");
    let output = tokio::process::Command::new(DEFT)
        .args(["run", "--data-dir"])
        .arg(&data)
        .arg("--repo")
        .arg(&first)
        .arg("--repo")
        .arg(&second)
        .arg("greet in both")
        .env("DEFT_MODEL", "anthropic/scripted-model")
        .env("DEFT_MODEL_BASE_URL", &server.url)
        .env("DEFT_MODEL_API_KEY", "test-key")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.matches("pull request: ").count(), 2, "{stdout}");
    assert!(
        stdout.contains("pull request: main ← deft/")
            && stdout.contains("pull request: trunk ← deft/"),
        "{stdout}"
    );
    for (repo, base) in [(&first, "main"), (&second, "trunk")] {
        let branch = sh(
            repo,
            "git branch --list 'deft/*' --format='%(refname:short)'",
        )
        .trim()
        .to_owned();
        assert_eq!(
            sh(repo, &format!("git show {branch}:greeting.txt")),
            "hello\n"
        );
        assert!(
            sh(
                repo,
                &format!("git merge-base --is-ancestor {base} {branch} && echo ok")
            )
            .contains("ok")
        );
    }
    let runtime_store =
        deft_store::Store::open_data_dir(&data, deft_store::MasterKey::load(None, &data).unwrap())
            .await
            .unwrap();
    let admin = runtime_store.user_by_name("admin").await.unwrap();
    let page = runtime_store
        .list_tasks(
            &admin.id,
            &deft_store::TaskFilter {
                limit: 5,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let bodies: Vec<&str> = page.tasks[0]
        .pull_requests
        .iter()
        .map(|pr| pr.body.as_str())
        .collect();
    assert_eq!(bodies.len(), 2);
    for body in bodies {
        assert!(
            body.contains("merge in this order:\n1. greeter") && body.contains("2. welcomer"),
            "{body}"
        );
        assert!(
            body.contains("- [x] ./test.sh passes"),
            "the acceptance criteria are a checklist: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_failing_command_again_and_again_stops_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    let failing = |id: &str| {
        Step::Reply(Turn::calls(vec![ScriptedCall::new(
            id,
            "bash",
            r#"{"command": "cat missing.txt"}"#,
        )]))
    };
    // Three in a row: told; three more after that: the step ends.
    let server = ScriptedModel::start(
        ["l1", "l2", "l3", "l4", "l5", "l6", "l7"]
            .into_iter()
            .map(failing)
            .fold(vec![plan_turn()], |mut steps, step| {
                steps.push(step);
                steps
            }),
    )
    .await;
    // One attempt, so that the loop's end is the run's.
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("config.toml"), "[limits]\nstep_attempts = 1\n").unwrap();
    let output = deft_run(
        &server,
        &data,
        &repo,
        "create greeting.txt containing hello",
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(
            "kept repeating itself after it was told: the same `bash` call 3 times in a row"
        ),
        "{stderr}"
    );
    let told = server.requests()[4].body["messages"].to_string();
    assert!(told.contains("You are repeating yourself"), "{told}");
    assert_eq!(
        server.remaining_steps(),
        1,
        "it stopped before spending the rest"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_plan_waits_after_planning() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    let server = ScriptedModel::start(vec![plan_turn()]).await;
    let output = tokio::process::Command::new(DEFT)
        .args(["run", "--approve-plan", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--repo")
        .arg(&repo)
        .arg("create greeting.txt containing hello")
        .env("DEFT_MODEL", "anthropic/scripted-model")
        .env("DEFT_MODEL_BASE_URL", &server.url)
        .env("DEFT_MODEL_API_KEY", "test-key")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("plan: 1 steps"), "{stdout}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("needs attention (plan_approval)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_stops_at_its_token_budget_never_over() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let budget = 6000;
    std::fs::write(
        data.join("config.toml"),
        format!("[limits]\ntask_tokens = {budget}\n"),
    )
    .unwrap();
    let expensive = |step: Step| match step {
        Step::Reply(turn) => Step::Reply(turn.with_usage(1500, 500, 0)),
        other => other,
    };
    let wander = |id: &str| {
        expensive(Step::Reply(Turn::calls(vec![ScriptedCall::new(
            id,
            "bash",
            &format!(r#"{{"command": "echo {id}"}}"#),
        )])))
    };
    let server = ScriptedModel::start(vec![
        expensive(plan_turn()),
        wander("w1"),
        wander("w2"),
        wander("w3"),
        wander("w4"),
    ])
    .await;
    let output = deft_run(
        &server,
        &data,
        &repo,
        "create greeting.txt containing hello",
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("needs attention (token_budget): the task's token budget is spent"),
        "{stderr}"
    );
    let store =
        deft_store::Store::open_data_dir(&data, deft_store::MasterKey::load(None, &data).unwrap())
            .await
            .unwrap();
    let admin = store.user_by_name("admin").await.unwrap();
    let task = &store
        .list_tasks(
            &admin.id,
            &deft_store::TaskFilter {
                limit: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .tasks[0];
    let spent = task.usage.input_tokens + task.usage.output_tokens;
    assert!(spent > 0 && spent <= budget, "spent {spent} of {budget}");
    assert!(
        server.remaining_steps() > 0,
        "it stopped before the script ran out"
    );
    for request in server.requests() {
        assert!(request.body["max_tokens"].as_u64().unwrap() <= budget as u64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_self_review_sends_fixes_back_before_the_pull_request() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    let fix = Step::Reply(Turn::calls(vec![ScriptedCall::new(
        "x1",
        "str_replace_based_edit_tool",
        r#"{"command": "create", "path": "greeter/NOTES.md", "file_text": "Says hello.\n"}"#,
    )]));
    let server = ScriptedModel::start(vec![
        plan_turn(),
        create_turn(),
        finish_turn("e2"),
        review(r#"{"verdict": "fix", "fixes": ["Add NOTES.md saying what the greeting is"]}"#),
        fix,
        finish_turn("x2"),
        review_pass(),
    ])
    .await;
    let data = dir.path().join("data");
    let output = deft_run(
        &server,
        &data,
        &repo,
        "create greeting.txt containing hello",
    )
    .await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let requests = server.requests();
    let reviewed = requests
        .iter()
        .find(|r| r.body["system"].to_string().contains("You review a change"))
        .unwrap();
    assert!(
        reviewed.body.to_string().contains("+hello"),
        "the reviewer saw the diff"
    );
    let fixing = requests.iter().any(|r| {
        r.body
            .to_string()
            .contains("Address the self-review: Add NOTES.md")
    });
    assert!(fixing, "the fixes went back to execution");
    let branch = sh(
        &repo,
        "git branch --list 'deft/*' --format='%(refname:short)'",
    )
    .trim()
    .to_owned();
    assert_eq!(
        sh(&repo, &format!("git show {branch}:NOTES.md")),
        "Says hello.\n"
    );
    let store =
        deft_store::Store::open_data_dir(&data, deft_store::MasterKey::load(None, &data).unwrap())
            .await
            .unwrap();
    let admin = store.user_by_name("admin").await.unwrap();
    let task = &store
        .list_tasks(
            &admin.id,
            &deft_store::TaskFilter {
                limit: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .tasks[0];
    assert!(
        task.pull_requests[0]
            .body
            .contains("## Self-review\nVerdict: pass."),
        "{}",
        task.pull_requests[0].body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_over_the_weekly_limit_waits_saying_when_it_resets() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("config.toml"), "[limits]\nweekly_tokens = 300\n").unwrap();
    let server = ScriptedModel::start(vec![
        plan_turn(),
        create_turn(),
        finish_turn("e2"),
        review_pass(),
    ])
    .await;
    let first = deft_run(
        &server,
        &data,
        &repo,
        "create greeting.txt containing hello",
    )
    .await;
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let second = deft_run(&server, &data, &repo, "another task this week").await;
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("needs attention (weekly_limit): this week's token limit is reached"),
        "{stderr}"
    );
    assert!(stderr.contains("(Monday 00:00 UTC)"), "{stderr}");
    assert_eq!(
        server.requests().len(),
        4,
        "the second task never called the model"
    );
}

/// Commands can commit in the clone and move its `origin/main`; the self-review still sees
/// everything changed since the clone was made, from the base recorded outside the sandbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_self_review_sees_what_a_command_tried_to_hide_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    let hide = "cd greeter && echo hello > greeting.txt && echo sneaky > hidden.txt && git add -A && git -c user.name=x -c user.email=x@x commit -qm hide && git update-ref refs/remotes/origin/main HEAD && git diff --stat origin/main | wc -l";
    let server = ScriptedModel::start(vec![
        plan_turn(),
        Step::Reply(Turn::calls(vec![ScriptedCall::new(
            "b1",
            "bash",
            &serde_json::json!({ "command": hide }).to_string(),
        )])),
        finish_turn("e2"),
        review_pass(),
    ])
    .await;
    let output = deft_run(
        &server,
        &dir.path().join("data"),
        &repo,
        "create greeting.txt containing hello, and make ./test.sh pass",
    )
    .await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let requests = server.requests();
    // The command saw its trick work: against the moved `origin/main`, nothing differs.
    let bash_result = requests
        .iter()
        .map(|r| r.body.to_string())
        .find(|body| body.contains("\"b1\"") && body.contains("tool_result"))
        .expect("the command's result reached the model");
    assert!(bash_result.contains("0\\n"), "{bash_result}");
    let reviewed = requests
        .iter()
        .find(|r| r.body["system"].to_string().contains("You review a change"))
        .expect("a review request");
    let body = reviewed.body.to_string();
    assert!(
        body.contains("hidden.txt") && body.contains("+sneaky"),
        "the reviewer was shown the hidden change: {body}"
    );
}

/// A data dir deep in a project's folders (200 characters): every unix socket deft makes
/// under it must still bind, however long the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_with_a_data_dir_200_characters_deep() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    let prefix = dir.path().as_os_str().len();
    let data = dir
        .path()
        .join("projects")
        .join("d".repeat(200 - prefix - "/projects/".len()));
    assert_eq!(data.as_os_str().len(), 200);
    let server = ScriptedModel::start(vec![
        plan_turn(),
        create_turn(),
        finish_turn("e2"),
        review_pass(),
    ])
    .await;
    let output = deft_run(
        &server,
        &data,
        &repo,
        "create greeting.txt containing hello",
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("completed"), "{stdout}");
}
