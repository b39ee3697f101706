//! `deft eval` end to end: the real binary on a suite made in a temp dir, real git, real
//! bubblewrap for the tasks and for their checks, and the scripted model in place of a real
//! one. What it reports, its JSON and its comparison; what it refuses; and that a task's
//! result never runs on the host, whatever it holds.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{DEFT, call};
use deft_testkit::model_server::{ScriptedModel, Step, Turn};
use serde_json::Value;

/// Makes task `name` in `suite`: its setup, description and check.
fn task(suite: &Path, name: &str, setup: &str, description: &str, check: &str) {
    let dir = suite.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let commit = "git init -q -b main && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init";
    std::fs::write(dir.join("setup.sh"), format!("set -e\n{setup}\n{commit}\n")).unwrap();
    std::fs::write(dir.join("task.md"), description).unwrap();
    std::fs::write(dir.join("check.sh"), check).unwrap();
}

/// Two tasks: a greeting (a repository whose ./test.sh deft finds as its check) and a
/// farewell (no test in the repository: only the suite's check knows what is right).
fn two_task_suite(dir: &Path) -> PathBuf {
    let suite = dir.join("suite");
    task(
        &suite,
        "a-greeting",
        r#"printf '#!/bin/sh\ntest "$(cat greeting.txt 2>/dev/null)" = hello || { echo "greeting.txt must say hello"; exit 1; }\n' > test.sh; chmod +x test.sh"#,
        "Create greeting.txt containing hello.",
        "test \"$(cat greeting.txt)\" = hello || { echo \"greeting.txt says $(cat greeting.txt)\"; exit 1; }\n",
    );
    task(
        &suite,
        "b-farewell",
        "echo '# notes' > README.md",
        "Create farewell.txt containing goodbye.",
        "test \"$(cat farewell.txt)\" = goodbye || { echo \"farewell.txt says $(cat farewell.txt)\"; exit 1; }\n",
    );
    std::fs::write(suite.join("README.md"), "Not a task.\n").unwrap();
    suite
}

/// The turns of a task that writes `text` to `file` and completes.
fn writes(file: &str, text: &str) -> Vec<Step> {
    vec![
        call(
            "p1",
            "submit_plan",
            &format!(
                r#"{{"requirements": ["{file} says {text}"], "acceptance_criteria": ["{file} exists"], "steps": ["Write {file}"]}}"#
            ),
        ),
        call(
            "e1",
            "str_replace_based_edit_tool",
            &format!(r#"{{"command": "create", "path": "{file}", "file_text": "{text}\n"}}"#),
        ),
        call("e2", "finish", &format!(r#"{{"summary": "Wrote {file}"}}"#)),
        Step::Reply(Turn::text(
            r#"{"verdict": "pass", "checked": ["the diff meets each criterion"]}"#,
        )),
    ]
}

async fn deft_eval(server: &ScriptedModel, dir: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(DEFT)
        .arg("eval")
        .args(args)
        .current_dir(dir)
        .env("DEFT_MODEL", "anthropic/scripted-model")
        .env("DEFT_MODEL_BASE_URL", &server.url)
        .env("DEFT_MODEL_API_KEY", "test-key")
        .env("DEFT_HOME", dir.join("home"))
        .env_remove("DEFT_CONFIG")
        .output()
        .await
        .unwrap()
}

fn stdout_of(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The line of `table` that starts with `name`, its columns.
fn row(table: &str, name: &str) -> Vec<String> {
    table
        .lines()
        .find(|line| line.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no line for {name}: {table}"))
        .split("  ")
        .map(str::trim)
        .filter(|column| !column.is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suite_is_reported_per_task_and_compared_with_an_earlier_run() {
    let dir = tempfile::tempdir().unwrap();
    let suite = two_task_suite(dir.path());
    let suite_arg = suite.to_str().unwrap();

    // The greeting done right; the farewell completed with the wrong word.
    let mut script = writes("greeting.txt", "hello");
    script.extend(writes("farewell.txt", "see you"));
    let server = ScriptedModel::start(script).await;
    let first = dir.path().join("first.json");
    let output = deft_eval(
        &server,
        dir.path(),
        &[suite_arg, "--json", first.to_str().unwrap()],
    )
    .await;
    let table = stdout_of(&output);
    assert_eq!(
        row(&table, "a-greeting")[..4],
        ["a-greeting", "yes", "completed", "passed"],
        "{table}"
    );
    assert_eq!(
        row(&table, "b-farewell")[..4],
        ["b-farewell", "no", "completed", "failed"],
        "a completion the check does not accept is not solved: {table}"
    );
    assert_eq!(row(&table, "total")[1], "1/2", "{table}");
    assert!(
        table.contains("b-farewell: the check failed: farewell.txt says see you"),
        "{table}"
    );

    let report: Value = serde_json::from_slice(&std::fs::read(&first).unwrap()).unwrap();
    assert_eq!(report["version"], 1);
    assert_eq!(report["runner"], "deft");
    assert_eq!(report["model"], "anthropic/scripted-model");
    let tasks = report["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    for (task, solved, check) in [(&tasks[0], true, "passed"), (&tasks[1], false, "failed")] {
        assert_eq!(task["solved"], solved, "{task}");
        assert_eq!(task["state"], "completed", "{task}");
        assert_eq!(task["check"], check, "{task}");
        // From the store: four requests (plan, write, finish, review), 100 prompt tokens each.
        assert_eq!(task["requests"], 4, "{task}");
        assert_eq!(task["prompt_tokens"], 400, "{task}");
        assert_eq!(task["completion_tokens"], 3 * 30 + 20, "{task}");
        assert!(task["wall_ms"].as_u64().unwrap() > 0, "{task}");
    }
    assert_eq!(
        report["totals"]["requests"].as_u64().unwrap(),
        server.requests().len() as u64,
        "every request the model server saw is counted"
    );
    assert_eq!(report["totals"]["solved"], 1);
    assert_eq!(report["totals"]["tasks"], 2);

    // Again, the other way round, against the first report: a question where the greeting
    // was written, the right farewell.
    let mut script = vec![call("q1", "ask_user", r#"{"question": "Which greeting?"}"#)];
    script.extend(writes("farewell.txt", "goodbye"));
    let server = ScriptedModel::start(script).await;
    let output = deft_eval(
        &server,
        dir.path(),
        &[suite_arg, "--compare", first.to_str().unwrap()],
    )
    .await;
    let text = stdout_of(&output);
    let comparison = text.split("against ").nth(1).expect("a comparison");
    assert_eq!(
        row(comparison, "a-greeting")[..2],
        ["a-greeting", "lost"],
        "{text}"
    );
    assert_eq!(
        row(comparison, "b-farewell")[..2],
        ["b-farewell", "gained"],
        "{text}"
    );
    assert!(row(comparison, "b-farewell")[3] == "4 (+0)", "{text}");
    assert_eq!(row(comparison, "total")[1], "1/2 (+0)", "{text}");
    assert!(comparison.contains("solved: 1 gained, 1 lost"), "{text}");
    assert_eq!(
        row(&text, "a-greeting")[..3],
        ["a-greeting", "no", "needs_attention"],
        "{text}"
    );
    assert!(
        text.contains("a-greeting: question: Which greeting?"),
        "{text}"
    );
}

/// A task may end with a question; only a task whose description leaves one open counts
/// that as solved, and `--only` runs just the tasks named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_is_solved_only_where_the_suite_expects_one() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("suite");
    for name in ["asks", "asks-too", "skipped"] {
        task(
            &suite,
            name,
            "echo 'API_URL = \"http://localhost\"' > config.py",
            "Point config.py at the production server.",
            "grep -q prod.example config.py\n",
        );
    }
    std::fs::write(suite.join("asks/task.toml"), "expect_question = true\n").unwrap();
    let question = || {
        call(
            "q1",
            "ask_user",
            r#"{"question": "What is the production server's address?"}"#,
        )
    };
    let server = ScriptedModel::start(vec![question(), question()]).await;
    let json = dir.path().join("report.json");
    let output = deft_eval(
        &server,
        dir.path(),
        &[
            // A suite given relative to the working directory: its scripts still run.
            "suite",
            "--only",
            "asks",
            "--only",
            "asks-too",
            "--json",
            json.to_str().unwrap(),
        ],
    )
    .await;
    let table = stdout_of(&output);
    assert_eq!(
        row(&table, "asks")[..4],
        ["asks", "yes", "needs_attention", "not_run"],
        "{table}"
    );
    assert_eq!(
        row(&table, "asks-too")[..4],
        ["asks-too", "no", "needs_attention", "not_run"],
        "{table}"
    );
    assert!(!table.contains("skipped"), "{table}");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(
        report["tasks"][1]["reason"],
        "question: What is the production server's address?"
    );
}

/// "The result is written by a model acting on possibly hostile input": the task makes its
/// file a link to a host file that would pass the check, and replaces the repository's test
/// and adds a check of its own with commands that mark the host. The check still runs the
/// suite's check.sh, in a sandbox, where the host's file is not there to read and no mark
/// can be made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_result_is_checked_in_a_sandbox_with_the_suites_check() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("hello.txt"), "hello\n").unwrap();
    let host = host.to_str().unwrap();
    let suite = dir.path().join("suite");
    task(
        &suite,
        "greeter",
        r#"printf '#!/bin/sh\ntest "$(cat greeting.txt 2>/dev/null)" = hello\n' > test.sh; chmod +x test.sh"#,
        "Create greeting.txt containing hello.",
        "echo \"the suite's check\"\nsh ./test.sh\ntest \"$(cat greeting.txt)\" = hello\n",
    );
    let attack = format!(
        "ln -s {host}/hello.txt greeting.txt && printf '#!/bin/sh\\ntouch {host}/marker-test\\nexit 0\\n' > test.sh && printf '#!/bin/sh\\ntouch {host}/marker-check\\nexit 0\\n' > check.sh && chmod +x check.sh"
    );
    let server = ScriptedModel::start(vec![
        call(
            "p1",
            "submit_plan",
            r#"{"requirements": ["greeting.txt says hello"], "acceptance_criteria": ["./test.sh passes"], "steps": ["Write greeting.txt"]}"#,
        ),
        call(
            "e1",
            "bash",
            &serde_json::json!({ "command": attack }).to_string(),
        ),
        call("e2", "finish", r#"{"summary": "Wrote greeting.txt"}"#),
        Step::Reply(Turn::text(r#"{"verdict": "pass", "checked": ["the diff meets each criterion"]}"#)),
    ])
    .await;
    let work = dir.path().join("work");
    let json = dir.path().join("report.json");
    let output = deft_eval(
        &server,
        dir.path(),
        &[
            suite.to_str().unwrap(),
            "--work-dir",
            work.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
    )
    .await;
    let table = stdout_of(&output);
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let result = &report["tasks"][0];
    assert_eq!(result["state"], "completed", "{table}");
    assert_eq!(result["solved"], false, "{table}");
    assert_eq!(result["check"], "failed", "{table}");
    assert!(
        result["check_output"]
            .as_str()
            .unwrap()
            .contains("the suite's check"),
        "the suite's check.sh ran, not the task's: {result}"
    );
    for marker in ["marker-test", "marker-check"] {
        assert!(
            !Path::new(host).join(marker).exists(),
            "{marker} was made on the host"
        );
    }
    // The attack was real: the branch holds the link and the scripts, and on the host the
    // link would have read "hello" and the test would have made its mark.
    let repo = work.join("tasks/greeter/greeter");
    let branch = common::sh(
        &repo,
        "git branch --list 'deft/*' --format='%(refname:short)'",
    );
    let branch = branch.trim();
    assert_eq!(
        common::sh(&repo, &format!("git cat-file -p {branch}:greeting.txt")),
        format!("{host}/hello.txt")
    );
    assert!(common::sh(&repo, &format!("git show {branch}:test.sh")).contains("marker-test"));
    assert!(common::sh(&repo, &format!("git show {branch}:check.sh")).contains("marker-check"));
    // The task's events are kept with the work dir.
    let log = std::fs::read_to_string(work.join("tasks/greeter/events.log")).unwrap();
    assert!(log.contains("bash"), "{log}");
}

/// Bad input is refused before any task runs, naming the path and the fix.
#[test]
fn a_bad_suite_or_report_is_refused_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let eval = |args: &[&str]| {
        let output = std::process::Command::new(DEFT)
            .arg("eval")
            .args(args)
            .env("DEFT_HOME", dir.path().join("home"))
            .env_remove("DEFT_CONFIG")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let suite = dir.path().join("suite");
    std::fs::create_dir(&suite).unwrap();
    let suite_arg = suite.to_str().unwrap();
    let said = eval(&[suite_arg]);
    assert!(
        said.contains(&format!("{suite_arg} holds no task"))
            && said.contains("setup.sh, task.md and check.sh"),
        "{said}"
    );
    task(&suite, "a", "true", "Do it.", "true\n");
    std::fs::remove_file(suite.join("a/setup.sh")).unwrap();
    let said = eval(&[suite_arg]);
    assert!(
        said.contains(&format!("{suite_arg}/a/setup.sh: missing")),
        "{said}"
    );
    task(&suite, "a", "true", "Do it.", "true\n");
    let missing = dir.path().join("earlier.json");
    let said = eval(&[suite_arg, "--compare", missing.to_str().unwrap()]);
    assert!(
        said.contains("--compare") && said.contains(missing.to_str().unwrap()),
        "{said}"
    );
    std::fs::write(&missing, "not json").unwrap();
    let said = eval(&[suite_arg, "--compare", missing.to_str().unwrap()]);
    assert!(said.contains("not a report of deft eval"), "{said}");
    let said = eval(&[suite_arg, "--only", "b"]);
    assert!(
        said.contains("`--only b`") && said.contains("its tasks are a"),
        "{said}"
    );
}
