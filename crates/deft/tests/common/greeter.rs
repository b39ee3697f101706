//! The greeter: a repository whose `./test.sh` passes once greeting.txt says hello, the
//! scripted turns of a task on it, and `deft run` against the scripted model.

use std::path::{Path, PathBuf};

use deft_testkit::model_server::{ScriptedCall, ScriptedModel, Step, Turn};

use super::{DEFT, call, sh};

/// A repository whose `./test.sh` passes once greeting.txt says hello.
pub fn greeting_repo(dir: &Path) -> PathBuf {
    let repo = dir.join("greeter");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(repo.join("test.sh"), "#!/bin/sh\ntest \"$(cat greeting.txt 2>/dev/null)\" = hello || { echo 'greeting.txt must say hello'; exit 1; }\n").unwrap();
    std::fs::write(
        repo.join("AGENTS.md"),
        "Steering: keep every file under ten lines.\n",
    )
    .unwrap();
    sh(
        &repo,
        "chmod +x test.sh && git init -q -b main && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init",
    );
    repo
}

pub fn plan_turn() -> Step {
    Step::Reply(Turn::calls(vec![ScriptedCall::new(
        "p1",
        "submit_plan",
        r#"{"requirements": ["greeting.txt contains hello"], "acceptance_criteria": ["./test.sh passes"], "steps": ["Create greeting.txt saying hello"]}"#,
    )]))
}

pub fn create_turn() -> Step {
    Step::Reply(Turn::calls(vec![ScriptedCall::new(
        "e1",
        "str_replace_based_edit_tool",
        r#"{"command": "create", "path": "greeter/greeting.txt", "file_text": "hello\n"}"#,
    )]))
}

/// The task's branch in `repo`, as deft pushed it there.
pub fn task_branch(repo: &Path) -> String {
    sh(
        repo,
        "git branch --list 'deft/*' --format='%(refname:short)'",
    )
    .trim()
    .to_owned()
}

/// The self-review's verdict.
pub fn review(verdict: &str) -> Step {
    Step::Reply(Turn::text(verdict))
}

pub fn review_pass() -> Step {
    review(r#"{"verdict": "pass", "checked": ["the diff meets each criterion"]}"#)
}

pub fn finish_turn(id: &str) -> Step {
    Step::Reply(Turn::calls(vec![ScriptedCall::new(
        id,
        "finish",
        r#"{"summary": "Created greeting.txt saying hello"}"#,
    )]))
}

pub async fn deft_run(
    server: &ScriptedModel,
    data: &Path,
    repo: &Path,
    description: &str,
) -> std::process::Output {
    tokio::process::Command::new(DEFT)
        .args(["run", "--data-dir"])
        .arg(data)
        .arg("--repo")
        .arg(repo)
        .arg(description)
        .env("DEFT_MODEL", "anthropic/scripted-model")
        .env("DEFT_MODEL_BASE_URL", &server.url)
        .env("DEFT_MODEL_API_KEY", "test-key")
        .env_remove("DEFT_CONFIG")
        .output()
        .await
        .unwrap()
}

/// `deft run`'s standard output, once it is known to have exited 0 (both streams shown if not).
pub fn succeeded(output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The calls of a task that plans one step, writes `greeting.txt`, and passes its review.
pub fn greeting_task() -> Vec<Step> {
    let plan = r#"{"requirements": ["a greeting"], "acceptance_criteria": ["./test.sh passes"], "steps": ["Write greeting.txt"]}"#;
    vec![
        call("p", "submit_plan", plan),
        call(
            "e",
            "str_replace_based_edit_tool",
            r#"{"command": "create", "path": "greeter/greeting.txt", "file_text": "hello\n"}"#,
        ),
        call("f", "finish", r#"{"summary": "Wrote a greeting"}"#),
        Step::Reply(Turn::text(
            r#"{"verdict": "pass", "checked": ["the diff meets each criterion"]}"#,
        )),
    ]
}
