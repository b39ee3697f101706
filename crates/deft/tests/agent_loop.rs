//! How the agent's loop treats what a real model does (issue: the agent with a real model):
//! a reply in words, checks that tests discover, with the real `deft run`, bubblewrap and git,
//! and the scripted model server.

mod common;

use common::greeter::{
    create_turn, deft_run, greeting_repo, plan_turn, review_pass, succeeded, task_branch,
};
use common::{call, sh};
use deft_testkit::model_server::{ScriptedModel, Step, Turn};

/// "Most models end a turn by answering in text": a reply without a tool call ends the step
/// as `finish` would, and the checks decide. A reply before the work is done is sent back
/// with the checks' failure; the reply after it ends the step with the reply as its summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_in_words_ends_the_step_and_the_checks_decide() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    let server = ScriptedModel::start(vec![
        plan_turn(),
        Step::Reply(Turn::text("I will create the file now.")),
        create_turn(),
        Step::Reply(Turn::text(
            "Created greeting.txt saying hello.\n\nThe test passes now.",
        )),
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
    let stdout = succeeded(&output);
    assert!(stdout.contains("completed"), "{stdout}");
    let requests = server.requests();
    // The early reply came back with the checks' failure, not a bare "use the tools".
    let told = requests[2].body["messages"].to_string();
    assert!(
        told.contains("The checks failed") && told.contains("greeting.txt must say hello"),
        "{told}"
    );
    let message = sh(
        &repo,
        &format!("git log -1 --format=%B {}", task_branch(&repo)),
    );
    assert!(
        message.contains("Created greeting.txt saying hello."),
        "the reply is the step's summary: {message}"
    );
    assert_eq!(requests.len(), 5, "no turn after the step ended");
}

/// "Check discovery misses `python3 -m unittest` with `test_*.py`": a Python repository with
/// unittest tests and no runner configured has them as its checks, so a step that leaves the
/// bug in place is not verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_repositorys_unittest_tests_are_its_checks() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("slugs");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(
        repo.join("util.py"),
        "def slug(text):\n    return text.lower()\n",
    )
    .unwrap();
    std::fs::write(
        repo.join("test_util.py"),
        "import unittest\nfrom util import slug\n\n\nclass SlugTest(unittest.TestCase):\n    def test_spaces(self):\n        self.assertEqual(slug('Hello World'), 'hello-world')\n",
    )
    .unwrap();
    sh(
        &repo,
        "git init -q -b main && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init",
    );
    let server = ScriptedModel::start(vec![
        call("p1", "submit_plan", r#"{"requirements": ["slug joins words with -"], "acceptance_criteria": ["the tests pass"], "steps": ["Fix slug"]}"#),
        Step::Reply(Turn::text("The function looks right to me.")),
        call("e1", "str_replace_based_edit_tool", r#"{"command": "str_replace", "path": "slugs/util.py", "old_str": "text.lower()", "new_str": "text.lower().replace(' ', '-')"}"#),
        Step::Reply(Turn::text("slug now joins words with a hyphen.")),
        review_pass(),
    ])
    .await;
    let output = deft_run(
        &server,
        &dir.path().join("data"),
        &repo,
        "slug('Hello World') should be hello-world",
    )
    .await;
    let stdout = succeeded(&output);
    assert!(
        stdout.contains("execution verification_failed: FAILED (failures=1)")
            && stdout.contains("execution verified"),
        "{stdout}"
    );
    let told = server.requests()[2].body["messages"].to_string();
    assert!(
        told.contains("The checks failed") && told.contains("hello-world"),
        "unittest's failure reached the model: {told}"
    );
}

/// "37 identical successful `search` calls, and `sudo apt-get install sudo` / `nano …`
/// alternating for 30 turns, both went unnoticed": a call repeated whether it fails or not,
/// and a short cycle of calls, are loops; the agent is told once, then the step ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_successful_calls_and_short_cycles_are_loops() {
    let search = r#"{"pattern": "hello", "path": "greeter"}"#;
    let sudo = r#"{"command": "sudo apt-get install sudo"}"#;
    let nano = r#"{"command": "nano greeter/greeting.txt"}"#;
    // A stray file, three identical searches (told), then the alternation, three rounds of it
    // (the attempt's end); the second attempt, from where the step began, does the work.
    let mut steps = vec![
        plan_turn(),
        call("w0", "bash", r#"{"command": "echo junk > stray.txt"}"#),
    ];
    for n in 0..3 {
        steps.push(call(&format!("s{n}"), "search", search));
    }
    for n in 0..3 {
        steps.push(call(&format!("a{n}"), "bash", sudo));
        steps.push(call(&format!("b{n}"), "bash", nano));
    }
    steps.extend([
        create_turn(),
        Step::Reply(Turn::text("Created greeting.txt.")),
        review_pass(),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    let server = ScriptedModel::start(steps).await;
    let output = deft_run(
        &server,
        &dir.path().join("data"),
        &repo,
        "create greeting.txt containing hello",
    )
    .await;
    let stdout = succeeded(&output);
    assert!(stdout.contains("completed"), "{stdout}");
    let requests = server.requests();
    let after_searches = requests[5].body["messages"].to_string();
    assert!(
        after_searches.contains("the same `search` call 3 times in a row"),
        "{after_searches}"
    );
    // The attempt that looped ended; the next began afresh, told why, its leftovers gone.
    let restarted = requests[11].body["messages"].to_string();
    assert!(
        restarted.contains("An earlier attempt at this step ended")
            && restarted.contains("the same 2 calls (bash, bash) in turn, 3 times over")
            && !restarted.contains("sudo apt-get"),
        "{restarted}"
    );
    assert!(
        stdout.contains("restarted"),
        "the restart is in the log: {stdout}"
    );
    let files = sh(
        &repo,
        &format!("git ls-tree -r --name-only {}", task_branch(&repo)),
    );
    assert!(
        files.contains("greeting.txt") && !files.contains("stray.txt"),
        "{files}"
    );
}

/// "The model cannot find the code": with one repository, a relative path resolves in it,
/// `/workspace` itself is a place to search, and an editor that would wait for a terminal is
/// refused at once, naming the tool to use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_repository_relative_paths_resolve_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    let server = ScriptedModel::start(vec![
        plan_turn(),
        call(
            "e1",
            "str_replace_based_edit_tool",
            r#"{"command": "view", "path": "."}"#,
        ),
        call(
            "e2",
            "search",
            r#"{"pattern": "greeting", "path": "/workspace"}"#,
        ),
        call("e3", "bash", r#"{"command": "nano greeting.txt"}"#),
        call(
            "e4",
            "str_replace_based_edit_tool",
            r#"{"command": "create", "path": "greeting.txt", "file_text": "hello\n"}"#,
        ),
        Step::Reply(Turn::text("Created greeting.txt.")),
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
    succeeded(&output);
    let requests = server.requests();
    let result = |n: usize| {
        let messages = requests[n].body["messages"].as_array().unwrap();
        messages.last().unwrap().to_string()
    };
    assert!(
        result(2).contains("test.sh") && result(2).contains("AGENTS.md"),
        "view .: {}",
        result(2)
    );
    assert!(result(3).contains("test.sh"), "search: {}", result(3));
    assert!(
        result(4).contains("waits for a person at a terminal")
            && result(4).contains("str_replace_based_edit_tool"),
        "nano: {}",
        result(4)
    );
    assert_eq!(
        sh(
            &repo,
            &format!("git show {}:greeting.txt", task_branch(&repo))
        ),
        "hello\n",
        "the relative path was the repository's"
    );
}

/// "One task ended `completed`, exit 0, with no change in the repository at all (its file was
/// written beside the repository, not in it)": work that changes no file of any repository
/// is not completed; the owner is told why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_that_changes_no_file_is_not_completed() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("notes");
    std::fs::create_dir(&repo).unwrap();
    sh(
        &repo,
        "echo '# notes' > README.md && git init -q -b main && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init",
    );
    let server = ScriptedModel::start(vec![
        call("p1", "submit_plan", r#"{"requirements": ["a todo file"], "acceptance_criteria": ["TODO.md exists"], "steps": ["Write TODO.md"]}"#),
        call("e1", "bash", r#"{"command": "echo '- ship it' > /workspace/TODO.md"}"#),
        Step::Reply(Turn::text("Wrote TODO.md.")),
        review_pass(),
    ])
    .await;
    let output = deft_run(&server, &dir.path().join("data"), &repo, "add a TODO.md").await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("the work changed no file in notes") && stderr.contains("Wrote TODO.md."),
        "{stderr}"
    );
    assert_eq!(
        sh(&repo, "git branch --list 'deft/*'"),
        "",
        "no branch was pushed"
    );
}
