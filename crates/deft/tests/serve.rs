//! `deft serve` running tasks: created through the API, asked a question, answered, completed,
//! then given feedback that lands on the same branch and pull request.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, call, sh, start, start_on_defaults, start_with, user_with_token};
use deft_testkit::model_server::{ScriptedCall, ScriptedModel, Step, Turn};
use serde_json::{Value, json};

/// A one-step plan most scripts below submit.
const GREETING_PLAN: &str = r#"{"requirements": ["a greeting"], "acceptance_criteria": ["greeting.txt exists"], "steps": ["Write greeting.txt"]}"#;

/// Whether a process whose command line matches `pattern` (anchored) runs on this machine.
fn command_running(pattern: &str) -> bool {
    !Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .unwrap()
        .stdout
        .is_empty()
}

/// Waits (up to 30 s) until a sandboxed command matching `pattern` runs.
async fn until_command_runs(pattern: &str) {
    let started = Instant::now();
    while !command_running(pattern) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "`{pattern}` never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_asks_is_answered_completes_and_takes_feedback() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("greeter");
    std::fs::create_dir(&repo).unwrap();
    sh(
        &repo,
        "echo '#!/bin/sh' > test.sh && echo 'test -s greeting.txt' >> test.sh && chmod +x test.sh && git init -q -b main && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init",
    );
    let plan = r#"{"requirements": ["a greeting"], "acceptance_criteria": ["./test.sh passes"], "steps": ["Write greeting.txt"]}"#;
    let model = ScriptedModel::start(vec![
        call("q1", "ask_user", r#"{"question": "Which language should the greeting be in?"}"#),
        call("p1", "submit_plan", plan),
        call("e1", "str_replace_based_edit_tool", r#"{"command": "create", "path": "greeter/greeting.txt", "file_text": "hello\n"}"#),
        call("e2", "finish", r#"{"summary": "Wrote an English greeting"}"#),
        Step::Reply(Turn::text(r#"{"verdict": "pass", "checked": ["the diff meets each criterion"]}"#)),
        // The feedback round: what it teaches, then plan again, edit, finish.
        Step::Reply(Turn::text(r#"["Greet the whole world, not only hello"]"#)),
        call("p2", "submit_plan", plan),
        call("e3", "str_replace_based_edit_tool", r#"{"command": "str_replace", "path": "greeter/greeting.txt", "old_str": "hello", "new_str": "hello, world"}"#),
        call("e4", "finish", r#"{"summary": "Made the greeting friendlier"}"#),
        Step::Reply(Turn::text(r#"{"verdict": "pass", "checked": ["the diff meets each criterion"]}"#)),
    ])
    .await;
    let data = dir.path().join("data");
    let server = start(&data, &model);

    let task = server
        .call(
            reqwest::Method::POST,
            "/tasks",
            Some(json!({"description": "Add a greeting file", "repos": [repo]})),
        )
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    let waiting = server.until(&id, "needs_attention").await;
    assert_eq!(
        waiting["attention"],
        json!({"kind": "question", "message": "Which language should the greeting be in?"})
    );

    server
        .call(
            reqwest::Method::POST,
            &format!("/tasks/{id}/answer"),
            Some(json!({"message": "English, please"})),
        )
        .await;
    let done = server.until(&id, "completed").await;
    assert_eq!(done["pull_requests"].as_array().unwrap().len(), 1, "{done}");
    assert_eq!(
        done["plan"]["acceptance_criteria"],
        json!(["./test.sh passes"])
    );
    let head = done["pull_requests"][0]["head"]
        .as_str()
        .unwrap()
        .to_owned();
    let diffs = server
        .call(reqwest::Method::GET, &format!("/tasks/{id}/diff"), None)
        .await;
    let diff = diffs["diffs"][0]["diff"].as_str().unwrap_or_default();
    assert!(diff.contains("+hello"), "the pull request's diff: {diffs}");
    assert_eq!(
        sh(&repo, &format!("git show {head}:greeting.txt")),
        "hello\n"
    );
    let planning_after_answer = model
        .requests()
        .iter()
        .any(|r| r.body.to_string().contains("answer: English, please"));
    assert!(planning_after_answer, "the answer reached the model");

    server
        .call(
            reqwest::Method::POST,
            &format!("/tasks/{id}/feedback"),
            Some(json!({"message": "Make it friendlier"})),
        )
        .await;
    server.until(&id, "in_progress").await;
    let again = server.until(&id, "completed").await;
    assert_eq!(
        again["pull_requests"].as_array().unwrap().len(),
        1,
        "the same pull request: {again}"
    );
    assert_eq!(
        again["pull_requests"][0]["head"],
        json!(head),
        "the same branch"
    );
    assert_eq!(
        sh(&repo, &format!("git show {head}:greeting.txt")),
        "hello, world\n"
    );
    assert_eq!(
        sh(&repo, &format!("git rev-list --count main..{head}")).trim(),
        "2",
        "a new commit on top, no force-push"
    );
    assert_eq!(model.violations(), Vec::<String>::new());
    assert_eq!(model.remaining_steps(), 0);

    // The feedback taught a convention: listed, and in the next task's prompt, in another
    // repository; not in another user's.
    let learnings = server.call(reqwest::Method::GET, "/learnings", None).await;
    assert_eq!(
        learnings["learnings"][0]["text"], "Greet the whole world, not only hello",
        "{learnings}"
    );
    let other = dir.path().join("farewell");
    std::fs::create_dir(&other).unwrap();
    sh(
        &other,
        "git init -q -b main && git -c user.name=t -c user.email=t@t commit -q --allow-empty -m init",
    );
    let question = || call("q", "ask_user", r#"{"question": "Which farewell?"}"#);
    model.push(question());
    let second = server
        .call(
            reqwest::Method::POST,
            "/tasks",
            Some(json!({"description": "Add a farewell", "repos": [other]})),
        )
        .await;
    server
        .until(second["id"].as_str().unwrap(), "needs_attention")
        .await;
    let prompt = model.requests().last().unwrap().body["system"].to_string();
    assert!(
        prompt.contains("Greet the whole world, not only hello"),
        "{prompt}"
    );
    // A chat knows them too, before its task exists.
    model.push(Step::Reply(Turn::text("I will greet the whole world.")));
    let chat = server
        .call(
            reqwest::Method::POST,
            "/chats",
            Some(json!({"repos": [other]})),
        )
        .await;
    server
        .call(
            reqwest::Method::POST,
            &format!("/chats/{}/messages", chat["id"].as_str().unwrap()),
            Some(json!({"message": "Add a farewell"})),
        )
        .await;
    let prompt = model.requests().last().unwrap().body["system"].to_string();
    assert!(
        prompt.contains("Greet the whole world, not only hello")
            && prompt.contains("Create the task"),
        "{prompt}"
    );

    let bob = user_with_token(&data, "bob");
    model.push(question());
    let created = server
        .call_as(
            &bob,
            reqwest::Method::POST,
            "/tasks",
            Some(json!({"description": "Add a farewell", "repos": [other]})),
        )
        .await;
    let bob_task = created["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();
    let started = Instant::now();
    while model.remaining_steps() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "bob's task never reached the model"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let prompt = model.requests().last().unwrap().body["system"].to_string();
    assert!(
        !prompt.contains("Greet the whole world"),
        "another user's learning leaked: {bob_task}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_plan_approval_the_task_waits_and_approving_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("greeter");
    std::fs::create_dir(&repo).unwrap();
    sh(
        &repo,
        "git init -q -b main && git -c user.name=t -c user.email=t@t commit -q --allow-empty -m init",
    );
    let plan = GREETING_PLAN;
    let model = ScriptedModel::start(vec![
        call("p1", "submit_plan", plan),
        call(
            "e1",
            "str_replace_based_edit_tool",
            r#"{"command": "create", "path": "greeter/greeting.txt", "file_text": "hello\n"}"#,
        ),
        call("e2", "finish", r#"{"summary": "Wrote the greeting"}"#),
        Step::Reply(Turn::text(
            r#"{"verdict": "pass", "checked": ["the diff meets each criterion"]}"#,
        )),
    ])
    .await;
    let server = start(&dir.path().join("data"), &model);
    // The owner's default: every new task waits for plan approval.
    let settings = server
        .call(
            reqwest::Method::PUT,
            "/settings/environment",
            Some(json!({"approve_plan": true})),
        )
        .await;
    assert_eq!(settings["approve_plan"], true, "{settings}");
    let task = server
        .call(
            reqwest::Method::POST,
            "/tasks",
            Some(json!({"description": "Add a greeting", "repos": [repo]})),
        )
        .await;
    assert_eq!(task["approve_plan"], true);
    let id = task["id"].as_str().unwrap().to_owned();
    let waiting = server.until(&id, "needs_attention").await;
    assert_eq!(waiting["attention"]["kind"], "plan_approval", "{waiting}");
    assert_eq!(
        waiting["plan"]["steps"],
        json!(["Write greeting.txt"]),
        "the plan is shown while it waits"
    );
    assert_eq!(model.remaining_steps(), 3, "nothing ran past planning");
    server
        .call(
            reqwest::Method::POST,
            &format!("/tasks/{id}/approve"),
            Some(json!({})),
        )
        .await;
    let done = server.until(&id, "completed").await;
    assert_eq!(done["pull_requests"].as_array().unwrap().len(), 1, "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_task_stops_its_command_within_two_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("greeter");
    std::fs::create_dir(&repo).unwrap();
    sh(
        &repo,
        "git init -q -b main && git -c user.name=t -c user.email=t@t commit -q --allow-empty -m init",
    );
    let plan =
        r#"{"requirements": ["r"], "acceptance_criteria": ["a"], "steps": ["Wait a long time"]}"#;
    let model = ScriptedModel::start(vec![
        call("p1", "submit_plan", plan),
        call(
            "b1",
            "bash",
            r#"{"command": "sleep 4591", "timeout_secs": 600}"#,
        ),
    ])
    .await;
    let server = start(&dir.path().join("data"), &model);
    let task = server
        .call(
            reqwest::Method::POST,
            "/tasks",
            Some(json!({"description": "Wait", "repos": [repo]})),
        )
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    until_command_runs("^sleep 4591$").await;
    let cancelled = server
        .call(
            reqwest::Method::POST,
            &format!("/tasks/{id}/cancel"),
            Some(json!({})),
        )
        .await;
    assert_eq!(cancelled["state"], "cancelled");
    let at = Instant::now();
    while command_running("^sleep 4591$") {
        assert!(
            at.elapsed() < Duration::from_secs(2),
            "the command outlived the cancel by 2 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = server
        .call(reqwest::Method::GET, &format!("/tasks/{id}"), None)
        .await;
    assert_eq!(after["state"], "cancelled", "cancelled is final: {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_survives_kill_9_of_the_server() {
    a_task_survives_a_stop(Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_the_running_task_back_and_a_restart_finishes_it() {
    a_task_survives_a_stop(Stop::Terminate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_running_step_finish_and_hands_the_task_back_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = empty_repo(dir.path());
    let plan = GREETING_PLAN;
    let model = ScriptedModel::start(vec![
        call("p1", "submit_plan", plan),
        call(
            "b1",
            "bash",
            r#"{"command": "sleep 0.3 && echo hello > greeting.txt"}"#,
        ),
        call("e1", "finish", r#"{"summary": "Wrote the greeting"}"#),
        // After the restart: only the review is left.
        Step::Reply(Turn::text(
            r#"{"verdict": "pass", "checked": ["the diff meets each criterion"]}"#,
        )),
    ])
    .await;
    let data = dir.path().join("data");
    let mut server = start(&data, &model);
    let task = server
        .call(
            reqwest::Method::POST,
            "/tasks",
            Some(json!({"description": "Add a greeting", "repos": [repo]})),
        )
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    // The bash call has been handed out: the step is running.
    while model.requests().len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the step never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = server.terminate().await;
    assert!(status.success(), "{status}");
    assert_eq!(
        model.requests().len(),
        3,
        "the step finished (its `finish` call was made) before deft stopped, and the review waited"
    );
    drop(server);

    let server = start(&data, &model);
    server.until(&id, "completed").await;
    let events = server
        .call(reqwest::Method::GET, &format!("/tasks/{id}/events"), None)
        .await;
    let events = events["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["data"]["step"] == "shutdown"),
        "the hand-back is in the log"
    );
    let bash_calls = events
        .iter()
        .filter(|e| e["kind"] == "tool_call" && e["data"]["name"] == "bash")
        .count();
    assert_eq!(bash_calls, 1, "the finished step was not redone");
    assert_eq!(model.remaining_steps(), 0);
}

enum Stop {
    /// `kill -9`: the restart finds the task still `in_progress`.
    Kill,
    /// SIGTERM: deft stops the step, puts the task back in the queue and exits.
    Terminate,
}

async fn a_task_survives_a_stop(stop: Stop) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("greeter");
    std::fs::create_dir(&repo).unwrap();
    sh(
        &repo,
        "git init -q -b main && git -c user.name=t -c user.email=t@t commit -q --allow-empty -m init",
    );
    let plan = GREETING_PLAN;
    let model = ScriptedModel::start(vec![
        call("p1", "submit_plan", plan),
        call("b1", "bash", r#"{"command": "sleep 4592"}"#),
        // After the restart, step 1 runs again with a fresh sub-agent.
        call(
            "e1",
            "str_replace_based_edit_tool",
            r#"{"command": "create", "path": "greeter/greeting.txt", "file_text": "hello\n"}"#,
        ),
        call("e2", "finish", r#"{"summary": "Wrote the greeting"}"#),
        Step::Reply(Turn::text(
            r#"{"verdict": "pass", "checked": ["the diff meets each criterion"]}"#,
        )),
    ])
    .await;
    let data = dir.path().join("data");
    let server = start(&data, &model);
    let task = server
        .call(
            reqwest::Method::POST,
            "/tasks",
            Some(json!({"description": "Add a greeting", "repos": [repo]})),
        )
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    until_command_runs("^sleep 4592$").await;
    let note = match stop {
        Stop::Kill => {
            // Drop kills and reaps the process.
            drop(server);
            "recovery"
        }
        Stop::Terminate => {
            let mut server = server;
            let status = server.terminate().await;
            assert!(status.success(), "deft exits cleanly on SIGTERM: {status}");
            assert!(
                !command_running("^sleep 4592$"),
                "the running command stopped with deft"
            );
            "shutdown"
        }
    };

    let server = start(&data, &model);
    let done = server.until(&id, "completed").await;
    assert_eq!(done["pull_requests"].as_array().unwrap().len(), 1, "{done}");
    let events = server
        .call(reqwest::Method::GET, &format!("/tasks/{id}/events"), None)
        .await;
    let events = events["events"].as_array().unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "no event twice, none missing"
    );
    let count = |kind: &str| events.iter().filter(|e| e["kind"] == kind).count();
    assert_eq!(
        (count("task_created"), count("plan"), count("pull_request")),
        (1, 1, 1),
        "planning was not redone"
    );
    assert!(
        events.iter().any(|e| e["data"]["step"] == note),
        "the stop is in the log as {note}"
    );
    assert_eq!(model.remaining_steps(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_message_sent_while_the_task_runs_reaches_the_agent_at_its_next_turn() {
    let dir = tempfile::tempdir().unwrap();
    let repo = empty_repo(dir.path());
    let plan = GREETING_PLAN;
    let model = ScriptedModel::start(vec![
        // The chat's reply to the first message, through the API as on the page.
        Step::Reply(Turn::text("I can add greeting.txt.")),
        call("p1", "submit_plan", plan),
        call("b1", "bash", r#"{"command": "sleep 2.4597"}"#),
        call(
            "e1",
            "str_replace_based_edit_tool",
            r#"{"command": "create", "path": "plain/greeting.txt", "file_text": "bonjour\n"}"#,
        ),
        call(
            "e2",
            "finish",
            r#"{"summary": "Wrote the greeting in French"}"#,
        ),
        Step::Reply(Turn::text(
            r#"{"verdict": "pass", "checked": ["the diff meets each criterion"]}"#,
        )),
    ])
    .await;
    let server = start(&dir.path().join("data"), &model);
    let (chat, id) = server.chat_task(&repo, "Add a greeting file").await;
    let talked = server
        .call(reqwest::Method::GET, &format!("/chats/{chat}"), None)
        .await
        .to_string();
    assert!(talked.contains("I can add greeting.txt."), "{talked}");
    until_command_runs("^sleep 2.4597$").await;
    server.say(&chat, "Make the greeting French, please").await;
    let running = server
        .call(reqwest::Method::GET, &format!("/tasks/{id}"), None)
        .await;
    assert_eq!(
        running["state"], "in_progress",
        "steering does not stop a run"
    );

    server.until(&id, "completed").await;
    let requests = model.requests();
    // The chat's reply, the plan, the bash call, then the turn after it: that one carries the
    // message (the steering itself gets no chat reply).
    let after_bash = requests[3].body.to_string();
    assert!(
        after_bash.contains("The owner has just said")
            && after_bash.contains("Make the greeting French, please"),
        "the next turn tells the agent: {after_bash}"
    );
    assert!(
        !requests[2]
            .body
            .to_string()
            .contains("Make the greeting French"),
        "the turn before the message did not have it"
    );
    assert_eq!(model.remaining_steps(), 0);
}

/// Before its task exists, a chat reads the code: the agent views a file of the chat's
/// repository (its default branch, read in the jail) and a search, then answers through the
/// API with what it read; a `create` is refused, since a chat changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_reads_the_repository_before_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("plain");
    std::fs::create_dir(&repo).unwrap();
    sh(
        &repo,
        "printf 'def greet():\\n    return \"hallo\"\\n' > app.py && git init -q -b main && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init && printf 'uncommitted\\n' > app.py",
    );
    let model = ScriptedModel::start(vec![
        Step::Reply(Turn::calls(vec![
            ScriptedCall::new(
                "v1",
                "str_replace_based_edit_tool",
                r#"{"command": "view", "path": "plain/app.py"}"#,
            ),
            ScriptedCall::new(
                "s1",
                "search",
                r#"{"pattern": "def [a-z]+\\(", "path": "plain"}"#,
            ),
            ScriptedCall::new(
                "c1",
                "str_replace_based_edit_tool",
                r#"{"command": "create", "path": "plain/new.py", "file_text": "x"}"#,
            ),
        ])),
        Step::Reply(Turn::text(
            "`greet` returns **hallo**; I will make it return hello.",
        )),
    ])
    .await;
    let server = start(&dir.path().join("data"), &model);
    let chat = server
        .call(
            reqwest::Method::POST,
            "/chats",
            Some(json!({"repos": [repo]})),
        )
        .await;
    let chat = chat["id"].as_str().unwrap().to_owned();
    let answered = server
        .call(
            reqwest::Method::POST,
            &format!("/chats/{chat}/messages"),
            Some(json!({"message": "What does greet return?"})),
        )
        .await;
    assert_eq!(
        answered["reply"]["message"], "`greet` returns **hallo**; I will make it return hello.",
        "{answered}"
    );
    let requests = model.requests();
    let tools = requests[0].body["tools"].to_string();
    assert!(
        tools.contains("\"view\"") && tools.contains("search"),
        "{tools}"
    );
    let read = requests[1].body["messages"].to_string();
    // The committed file, not what the working tree holds now.
    assert!(
        read.contains("return \\\"hallo\\\"") && !read.contains("uncommitted"),
        "{read}"
    );
    assert!(read.contains("plain/app.py:1:def greet():"), "{read}");
    assert!(read.contains("a chat changes nothing"), "{read}");
    assert!(!repo.join("new.py").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_while_the_task_finishes_opens_a_new_round() {
    let dir = tempfile::tempdir().unwrap();
    let repo = empty_repo(dir.path());
    let plan = GREETING_PLAN;
    let model = ScriptedModel::start(vec![
        Step::Reply(Turn::text("I can add greeting.txt.")),
        call("p1", "submit_plan", plan),
        call(
            "e1",
            "str_replace_based_edit_tool",
            r#"{"command": "create", "path": "plain/greeting.txt", "file_text": "hello\n"}"#,
        ),
        call("e2", "finish", r#"{"summary": "Wrote the greeting"}"#),
        // The review takes a while; the owner writes meanwhile.
        Step::Stall {
            turn: Turn::text(
                r#"{"verdict": "pass", "checked": ["the diff meets each criterion"]}"#,
            ),
            after_events: 0,
            pause: Duration::from_millis(1500),
        },
        // The new round.
        call("p2", "submit_plan", plan),
        call("e3", "finish", r#"{"summary": "Nothing more to do"}"#),
        Step::Reply(Turn::text(
            r#"{"verdict": "pass", "checked": ["the diff meets each criterion"]}"#,
        )),
    ])
    .await;
    let server = start(&dir.path().join("data"), &model);
    let (chat, id) = server.chat_task(&repo, "Add a greeting file").await;
    let started = Instant::now();
    while model.requests().len() < 5 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the review never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.say(&chat, "Also sign it from the team").await;
    while model.remaining_steps() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the message did not open a new round"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.until(&id, "completed").await;
    let requests = model.requests();
    assert!(
        requests[5]
            .body
            .to_string()
            .contains("Also sign it from the team"),
        "the new round's planning hears the message"
    );
    let events = server
        .call(reqwest::Method::GET, &format!("/tasks/{id}/events"), None)
        .await;
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["data"]["status"] == "reopened"),
        "the log says why the task ran again"
    );
}

/// A model that takes a quarter of a second per answer and plans, finishes and passes review
/// for any task, so that tasks queue up behind each other.
async fn slow_model() -> ScriptedModel {
    let model = ScriptedModel::start(vec![]).await;
    model.set_delay(Duration::from_millis(250));
    model.respond_with(|_, body| {
        let system = body["system"].to_string();
        if system.contains("You review a change") {
            return Turn::text(
                r#"{"verdict": "pass", "checked": ["the diff meets each criterion"]}"#,
            );
        }
        let call = if system.contains("Work step: planning") {
            ScriptedCall::new(
                "p",
                "submit_plan",
                r#"{"requirements": ["r"], "acceptance_criteria": ["a"], "steps": ["s"]}"#,
            )
        } else if !body["messages"].to_string().contains("done.txt") {
            // The work changes a file: a run that changes none is not completed.
            ScriptedCall::new(
                "w",
                "str_replace_based_edit_tool",
                r#"{"command": "create", "path": "done.txt", "file_text": "done\n"}"#,
            )
        } else {
            ScriptedCall::new("f", "finish", r#"{"summary": "done"}"#)
        };
        Turn::calls(vec![call])
    });
    model
}

fn empty_repo(dir: &Path) -> std::path::PathBuf {
    let repo = dir.join("plain");
    std::fs::create_dir(&repo).unwrap();
    sh(
        &repo,
        "git init -q -b main && git -c user.name=t -c user.email=t@t commit -q --allow-empty -m init",
    );
    repo
}

/// When a task's events say it started.
fn started_at(events: &Value) -> String {
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["data"]["to"] == "in_progress")
        .unwrap_or_else(|| panic!("the task never started: {events}"))["at"]
        .as_str()
        .unwrap()
        .to_owned()
}

impl Server {
    /// Sends SIGTERM and waits (up to 30 s) for deft to exit.
    async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "deft did not stop after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts a chat on `repo`, says `message` and makes the chat's task: (chat id, task id).
    async fn chat_task(&self, repo: &Path, message: &str) -> (String, String) {
        let chat = self
            .call(
                reqwest::Method::POST,
                "/chats",
                Some(json!({"repos": [repo]})),
            )
            .await;
        let chat = chat["id"].as_str().unwrap().to_owned();
        self.say(&chat, message).await;
        let task = self
            .call(
                reqwest::Method::POST,
                &format!("/chats/{chat}/task"),
                Some(json!({})),
            )
            .await;
        (chat, task["id"].as_str().unwrap().to_owned())
    }

    /// A chat message: before the task, what it is about; after, steering.
    async fn say(&self, chat: &str, message: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/chats/{chat}/messages"),
            Some(json!({"message": message})),
        )
        .await;
    }

    async fn create_tasks(&self, count: usize, repo: &Path) -> Vec<String> {
        let mut ids = Vec::new();
        for n in 0..count {
            let task = self
                .call(
                    reqwest::Method::POST,
                    "/tasks",
                    Some(json!({"description": format!("task {n}"), "repos": [repo]})),
                )
                .await;
            ids.push(task["id"].as_str().unwrap().to_owned());
        }
        ids
    }

    async fn started_at(&self, ids: &[String]) -> Vec<String> {
        let mut starts = Vec::new();
        for id in ids {
            let events = self
                .call(reqwest::Method::GET, &format!("/tasks/{id}/events"), None)
                .await;
            starts.push(started_at(&events));
        }
        starts
    }

    /// Waits for `count` tasks to complete; returns the most seen `in_progress` at once.
    async fn await_completed(&self, count: usize) -> usize {
        let started = Instant::now();
        let mut most_running = 0;
        loop {
            let running = self
                .call(
                    reqwest::Method::GET,
                    "/tasks?state=in_progress&limit=100",
                    None,
                )
                .await;
            most_running = most_running.max(running["tasks"].as_array().unwrap().len());
            let done = self
                .call(
                    reqwest::Method::GET,
                    "/tasks?state=completed&limit=100",
                    None,
                )
                .await;
            if done["tasks"].as_array().unwrap().len() == count {
                return most_running;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the tasks did not all complete"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_ten_of_a_users_tasks_run_at_once_first_in_first_out() {
    let dir = tempfile::tempdir().unwrap();
    let repo = empty_repo(dir.path());
    let model = slow_model().await;
    let server = start_with(&dir.path().join("data"), &model, 12);
    let tasks = server.create_tasks(25, &repo).await;

    let most_running = server.await_completed(25).await;
    assert!(
        most_running <= 10,
        "{most_running} of one user's tasks ran at once"
    );
    assert!(
        most_running >= 5,
        "the workers ran tasks side by side ({most_running} at most)"
    );
    // Timestamps render with fixed precision, so they sort as text.
    let starts = server.started_at(&tasks).await;
    let mut sorted = starts.clone();
    sorted.sort();
    assert_eq!(
        starts, sorted,
        "tasks started in the order they were created"
    );

    // The workers' work shows in /metrics.
    let metrics = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find(|line| line.starts_with(prefix))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in {metrics}"))
    };
    assert_eq!(value(r#"deft_tasks{state="completed"}"#), 25.0);
    assert_eq!(
        value(r#"deft_task_state_changes_total{to="completed"}"#),
        25.0
    );
    assert!(
        value("deft_model_calls_total") >= 75.0,
        "plan, work and review for each task"
    );
}

/// A newcomer's `deft serve`, with no `--workers`: one user's burst runs ten at once (the
/// per-user limit), never more, and the rest wait their turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_serve_runs_ten_of_a_users_tasks_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let repo = empty_repo(dir.path());
    let model = slow_model().await;
    // Each call waits long enough that twelve tasks overlap on two cores.
    model.set_delay(Duration::from_millis(1500));
    let server = start_on_defaults(&dir.path().join("data"), &model, &[]);
    server.create_tasks(12, &repo).await;
    let most_running = server.await_completed(12).await;
    assert_eq!(
        most_running, 10,
        "one user's tasks at once on the default serve"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_queued_behind_another_users_tasks_is_not_starved() {
    let dir = tempfile::tempdir().unwrap();
    let repo = empty_repo(dir.path());
    let model = slow_model().await;
    let data = dir.path().join("data");
    // Two workers, fewer than the per-user limit: the workers are what tasks wait for.
    let server = start_with(&data, &model, 2);
    let bob = user_with_token(&data, "bob");
    let admin_tasks = server.create_tasks(8, &repo).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let bob_task: Value = client
        .post(format!("{}/api/v1/tasks", server.url))
        .bearer_auth(&bob)
        .json(&json!({"description": "bob's task", "repos": [repo]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bob_id = bob_task["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{bob_task}"));
    let bob_created = bob_task["created_at"].as_str().unwrap().to_owned();
    server.await_completed(8).await;
    let bob_events: Value = loop {
        let events: Value = client
            .get(format!("{}/api/v1/tasks/{bob_id}/events", server.url))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["data"]["to"] == "completed")
        {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let bob_start = started_at(&bob_events);

    // First in, first out across users would run bob after all eight of admin's tasks. Fair
    // scheduling gives bob the next free worker: at most the two claims already under way
    // when bob's task arrived go to admin first.
    let admin_starts = server.started_at(&admin_tasks).await;
    let admin_between = admin_starts
        .iter()
        .filter(|at| **at > bob_created && **at < bob_start)
        .count();
    assert!(
        admin_between <= 2,
        "{admin_between} of admin's tasks started while bob waited (bob queued {bob_created}, \
         started {bob_start}; admin's starts {admin_starts:?})"
    );
    assert!(
        admin_starts.iter().any(|at| *at > bob_start),
        "admin still had tasks waiting when bob started"
    );
}

/// Sandboxes started ahead of tasks belong to the server: killed outright, it leaves none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_started_ahead_of_tasks_die_with_a_killed_server() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::start(vec![]).await;
    let data = dir.path().join("data");
    let mut server = start(&data, &model);
    // The bubblewraps binding a stage whose mounts show this server's directory of workspaces
    // (as root the launcher stages it, so the command line names the staged copy).
    let ours = data.join("workspaces").display().to_string();
    let sandboxes = || -> Vec<String> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|entry| {
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline);
                cmdline.starts_with("/usr/bin/bwrap")
                    && cmdline.contains("/.deft/stage")
                    && (cmdline.contains(&ours)
                        || std::fs::read_to_string(entry.path().join("mountinfo"))
                            .unwrap_or_default()
                            .contains(&ours))
            })
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let started = Instant::now();
    while sandboxes().len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the pool never filled: {:?}",
            sandboxes()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Each bubblewrap's child is a waiting init, pid 1 of its sandbox (a sandbox just started
    // may still be bubblewrap's own fork, about to become the init: it is given a moment).
    let inits = || -> Vec<(String, String)> {
        sandboxes()
            .iter()
            .flat_map(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(|child| {
                        let cmdline =
                            std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
                        (
                            child.to_owned(),
                            String::from_utf8_lossy(&cmdline).into_owned(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let started = Instant::now();
    let inits: Vec<String> = loop {
        let found = inits();
        if !found.is_empty()
            && found
                .iter()
                .all(|(_, cmdline)| cmdline.contains("__sandbox-init"))
        {
            break found.into_iter().map(|(pid, _)| pid).collect();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not every sandbox's child is its init: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    server.child.kill().unwrap();
    let _ = server.child.wait();
    let killed = Instant::now();
    while !sandboxes().is_empty()
        || inits
            .iter()
            .any(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
    {
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "sandboxes outlived the server: {:?}",
            sandboxes()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What only the owner knows is asked, and what nothing checked is shown before it is called
/// done: a change that writes an address no one gave stops at a question naming the guess;
/// the answer's address is then taken without another question; a change that no check ran
/// and whose review named nothing it looked at (here the answer format copied back) is shown
/// to the owner before a pull request says the task is done, once, with the owner's secrets
/// redacted from the diff it quotes: after "open it", a fresh review, and the pull request,
/// whose push is refused here for the secret the change holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guessed_address_is_asked_for_and_an_unchecked_change_is_shown_before_it_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("widgets");
    std::fs::create_dir(&repo).unwrap();
    sh(
        &repo,
        "echo 'API_URL = \"http://localhost:8000\"' > client.py && git init -q -b main && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init",
    );
    let echoed = r#"{"verdict": "pass", "checked": ["each criterion, and what in the diff or the output shows it met"]}"#;
    let model = ScriptedModel::start(vec![
        call(
            "p1",
            "submit_plan",
            r#"{"requirements": ["the client uses production"], "acceptance_criteria": ["API_URL is production's"], "steps": ["Set API_URL"]}"#,
        ),
        call(
            "e1",
            "str_replace_based_edit_tool",
            r#"{"command": "str_replace", "path": "widgets/client.py", "old_str": "http://localhost:8000", "new_str": "http://widgets-service:8000"}"#,
        ),
        call("e2", "finish", r#"{"summary": "Pointed the client at production"}"#),
        // After the answer, the step again.
        call(
            "e3",
            "str_replace_based_edit_tool",
            r#"{"command": "str_replace", "path": "widgets/client.py", "old_str": "API_URL = \"http://widgets-service:8000\"", "new_str": "API_URL = \"https://widgets.prod.example.net\"\nTOKEN = \"tok-9f8e7d6c5b4a\""}"#,
        ),
        call("e4", "finish", r#"{"summary": "Used the address the owner gave"}"#),
        Step::Reply(Turn::text(echoed)),
        // After "open it": a fresh review, which says no more; then the push, refused for the
        // secret the change holds.
        Step::Reply(Turn::text(echoed)),
    ])
    .await;
    let data = dir.path().join("data");
    let server = start(&data, &model);
    // A question that quotes the workspace may go to a public issue: the owner's secrets in
    // it are redacted as in the log.
    server
        .call(
            reqwest::Method::PUT,
            "/secrets/PROD_TOKEN",
            Some(json!({"value": "tok-9f8e7d6c5b4a"})),
        )
        .await;
    let task = server
        .call(
            reqwest::Method::POST,
            "/tasks",
            Some(json!({"description": "Point the client at the production widgets service", "repos": [repo]})),
        )
        .await;
    let id = task["id"].as_str().unwrap().to_owned();

    let asked = server.until(&id, "needs_attention").await;
    let question = asked["attention"]["message"].as_str().unwrap().to_owned();
    assert_eq!(asked["attention"]["kind"], "question", "{asked}");
    assert!(
        question.contains("`http://widgets-service:8000` (in `client.py`)"),
        "{question}"
    );
    assert!(asked["pull_requests"].as_array().unwrap().is_empty());
    server
        .call(
            reqwest::Method::POST,
            &format!("/tasks/{id}/answer"),
            Some(json!({"message": "It is https://widgets.prod.example.net"})),
        )
        .await;

    server.until(&id, "in_progress").await;
    let shown = server.until(&id, "needs_attention").await;
    let question = shown["attention"]["message"].as_str().unwrap().to_owned();
    assert!(
        question.starts_with("Nothing could check this change")
            && question.contains("+API_URL = \"https://widgets.prod.example.net\"")
            && question.contains("```diff")
            && question.contains("+TOKEN = \"[secret:PROD_TOKEN]\"")
            && !question.contains("tok-9f8e7d6c5b4a"),
        "{question}"
    );
    assert!(shown["pull_requests"].as_array().unwrap().is_empty());
    server
        .call(
            reqwest::Method::POST,
            &format!("/tasks/{id}/answer"),
            Some(json!({"message": "open it"})),
        )
        .await;
    server.until(&id, "in_progress").await;
    let refused = server.until(&id, "needs_attention").await;
    let why = refused["attention"]["message"].as_str().unwrap();
    assert!(why.contains("secret PROD_TOKEN"), "{refused}");
    assert!(refused["pull_requests"].as_array().unwrap().is_empty());
    assert_eq!(model.remaining_steps(), 0);

    // The token is meant to be public: the owner deletes the secret and answers. The commit
    // the refused push carried is still the branch's, and goes out now, with no more turns.
    let deleted = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .delete(format!("{}/api/v1/secrets/PROD_TOKEN", server.url))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), reqwest::StatusCode::NO_CONTENT);
    server
        .call(
            reqwest::Method::POST,
            &format!("/tasks/{id}/answer"),
            Some(json!({"message": "The token is public; push it"})),
        )
        .await;
    server.until(&id, "in_progress").await;
    let done = server.until(&id, "completed").await;
    let branch = done["pull_requests"][0]["head"].as_str().unwrap();
    let pushed = sh(&repo, &format!("git show {branch}:client.py"));
    assert!(
        pushed.contains("https://widgets.prod.example.net")
            && pushed.contains("TOKEN = \"tok-9f8e7d6c5b4a\""),
        "{pushed}"
    );
    assert_eq!(model.remaining_steps(), 0);
}
