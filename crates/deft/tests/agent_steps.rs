//! What the agent's loop gives a real model to work with (issue: the agent with a real model):
//! commands in the repository, plans made after reading, notes from step to step, questions
//! that are questions, and turns that change nothing caught; with the real `deft run`,
//! bubblewrap and git, and the scripted model server.

mod common;

use common::greeter::{deft_run, greeting_repo, plan_turn, review_pass, succeeded, task_branch};
use common::{call, sh};
use deft_testkit::model_server::{ScriptedCall, ScriptedModel, Step, Turn};

/// "Commands run in `/workspace` … while the only repository is at `/workspace/NAME`": with
/// one repository, commands start in it, and `cd NAME`, as a model told where it is writes,
/// still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_start_in_the_one_repository() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    let server = ScriptedModel::start(vec![
        plan_turn(),
        call(
            "e1",
            "bash",
            r#"{"command": "pwd > where.txt && cd greeter && pwd >> where.txt && echo hello > greeting.txt"}"#,
        ),
        Step::Reply(Turn::text("Wrote greeting.txt.")),
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
    let branch = task_branch(&repo);
    assert_eq!(
        sh(&repo, &format!("git show {branch}:where.txt")),
        "/workspace/greeter\n/workspace/greeter\n"
    );
    assert_eq!(
        sh(&repo, &format!("git show {branch}:greeting.txt")),
        "hello\n"
    );
}

/// "Plans are written blind": the planner's first message holds the files the task names
/// (here `test.sh`, which shows what the test wants), planning may not change a file (what a
/// command changed is undone), and
/// each step's prompt says what the steps before it read, changed and ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_are_made_after_reading_and_steps_know_what_came_before() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    let server = ScriptedModel::start(vec![
        call(
            "p2",
            "bash",
            r#"{"command": "echo draft > scratch.txt && cat test.sh"}"#,
        ),
        call("p3", "submit_plan", r#"{"requirements": ["greeting.txt says hello"], "acceptance_criteria": ["./test.sh passes"], "steps": ["Write greeting.txt", "Run the test"]}"#),
        call(
            "e1",
            "str_replace_based_edit_tool",
            r#"{"command": "view", "path": "test.sh"}"#,
        ),
        call(
            "e2",
            "str_replace_based_edit_tool",
            r#"{"command": "create", "path": "greeting.txt", "file_text": "hello\n"}"#,
        ),
        call("e3", "bash", r#"{"command": "./test.sh"}"#),
        call("e4", "finish", r#"{"summary": "Wrote greeting.txt"}"#),
        call("e5", "finish", r#"{"summary": "The test passes"}"#),
        review_pass(),
    ])
    .await;
    let output = deft_run(
        &server,
        &dir.path().join("data"),
        &repo,
        "Make ./test.sh pass.",
    )
    .await;
    succeeded(&output);
    let requests = server.requests();
    let first = requests[0].body["messages"].to_string();
    assert!(
        first.contains("The files the task names")
            && first.contains("greeter/test.sh")
            && first.contains("greeting.txt must say hello"),
        "{first}"
    );
    // The self-review reads the checks' output on the change, and must name what it checked.
    let review = requests.last().unwrap().body["messages"].to_string();
    assert!(
        review.contains("`./test.sh` in /workspace/greeter") && review.contains("exited 0"),
        "{review}"
    );
    let undone = requests[1].body["messages"].to_string();
    assert!(
        undone.contains("what this command changed in the repositories was undone"),
        "{undone}"
    );
    let pushed = sh(
        &repo,
        &format!("git ls-tree --name-only {}", task_branch(&repo)),
    );
    assert!(!pushed.contains("scratch.txt"), "{pushed}");
    // The second step's prompt carries the first step's note.
    let second_step = requests[6].body["system"].to_string();
    assert!(
        second_step.contains("Step 1: Wrote greeting.txt; changed greeting.txt; read test.sh; ran `./test.sh` (exit 0)"),
        "{second_step}"
    );
}

/// With several repositories, a path that is not in the workspace's top but in a repository
/// is named with where it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_several_repositories_a_path_not_found_names_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    let other = dir.path().join("library");
    std::fs::create_dir(&other).unwrap();
    sh(
        &other,
        "echo 'def slug(s): return s' > util.py && git init -q -b main && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init",
    );
    let server = ScriptedModel::start(vec![
        call(
            "p1",
            "str_replace_based_edit_tool",
            r#"{"command": "view", "path": "util.py"}"#,
        ),
        plan_turn(),
        call(
            "e1",
            "str_replace_based_edit_tool",
            r#"{"command": "create", "path": "greeter/greeting.txt", "file_text": "hello\n"}"#,
        ),
        Step::Reply(Turn::text("Wrote greeting.txt.")),
        review_pass(),
    ])
    .await;
    let output = tokio::process::Command::new(common::DEFT)
        .args(["run", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--repo")
        .arg(&repo)
        .arg("--repo")
        .arg(&other)
        .arg("create greeting.txt containing hello")
        .env("DEFT_MODEL", "anthropic/scripted-model")
        .env("DEFT_MODEL_BASE_URL", &server.url)
        .env("DEFT_MODEL_API_KEY", "test-key")
        .env_remove("DEFT_CONFIG")
        .output()
        .await
        .unwrap();
    succeeded(&output);
    let told = server.requests()[1].body["messages"].to_string();
    assert!(
        told.contains("util.py does not exist; it is in /workspace/library/util.py"),
        "{told}"
    );
}

/// "A question is an escape hatch": a question about the sandbox's tools is sent back with
/// why, however it is put, twice in a step; asked a third time, it goes to the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_about_the_sandbox_is_sent_back_twice() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    let question = r#"{"question": "The command 'nano' could not be found. Did you perhaps forget to install it?"}"#;
    let server = ScriptedModel::start(vec![
        plan_turn(),
        call("e1", "ask_user", question),
        call(
            "e2",
            "ask_user",
            r#"{"question": "What went wrong with nano? Did you try it yourself?"}"#,
        ),
        call("e3", "ask_user", question),
    ])
    .await;
    let output = deft_run(
        &server,
        &dir.path().join("data"),
        &repo,
        "create greeting.txt containing hello",
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    let requests = server.requests();
    let told = requests[2].body["messages"].to_string();
    assert!(
        told.contains("Not asked: it is about the sandbox or a command"),
        "{told}"
    );
    let rephrased = requests[3].body["messages"].to_string();
    assert!(
        rephrased.contains("Not asked: it asks the owner to run, check or explain"),
        "{rephrased}"
    );
    assert!(
        stderr.contains("could not be found"),
        "asked a third time, it reached the owner: {stderr}"
    );
}

/// "Loops run to the step's 40-turn limit": turns whose calls all differ but change no file
/// are told once, then end the step, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_that_change_no_file_end_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    let server = ScriptedModel::start(vec![plan_turn()]).await;
    server.respond_with(|_, body| {
        let turn = body["messages"].as_array().map_or(0, Vec::len);
        Turn::calls(vec![ScriptedCall::new(
            &format!("c{turn}"),
            "bash",
            &format!(r#"{{"command": "ls -la | head -{turn}"}}"#),
        )])
    });
    let output = deft_run(
        &server,
        &dir.path().join("data"),
        &repo,
        "create greeting.txt containing hello",
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("more turns changed no file after the agent was told"),
        "{stderr}"
    );
    let requests = server.requests();
    assert!(
        requests.iter().any(|request| request.body["messages"]
            .to_string()
            .contains("changed no file. Looking further")),
        "told once before the step ended"
    );
    // Two attempts (the default), each ended before the step's 40 turns; the second was
    // told why the first ended.
    assert!(
        requests.iter().any(|request| request.body["messages"]
            .to_string()
            .contains("An earlier attempt at this step ended")),
        "the step was tried again"
    );
    assert!(
        requests.len() < 2 * 40,
        "ended before the step's turn limit: {}",
        requests.len()
    );
}

/// "A self-review that answered pass in 15 tokens": a command an acceptance criterion names,
/// run on the change, that fails is not outvoted by a reviewer's pass; its failure becomes
/// the fix the next step makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_criterions_failing_command_outvotes_a_reviewers_pass() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    sh(
        &repo,
        "printf '#!/bin/sh\\ntest -f NOTES.md || { echo NOTES.md is missing; exit 1; }\\n' > notes.sh && chmod +x notes.sh \
         && git add notes.sh && git -c user.name=t -c user.email=t@t commit -q -m notes",
    );
    let server = ScriptedModel::start(vec![
        call("p1", "submit_plan", r#"{"requirements": ["a greeting and notes"], "acceptance_criteria": ["`./notes.sh` exits 0"], "steps": ["Write greeting.txt"]}"#),
        call(
            "e1",
            "str_replace_based_edit_tool",
            r#"{"command": "create", "path": "greeting.txt", "file_text": "hello\n"}"#,
        ),
        Step::Reply(Turn::text("Wrote greeting.txt.")),
        review_pass(),
        call(
            "e2",
            "str_replace_based_edit_tool",
            r#"{"command": "create", "path": "NOTES.md", "file_text": "notes\n"}"#,
        ),
        Step::Reply(Turn::text("Wrote NOTES.md.")),
        review_pass(),
    ])
    .await;
    let output = deft_run(
        &server,
        &dir.path().join("data"),
        &repo,
        "create greeting.txt containing hello, with notes",
    )
    .await;
    succeeded(&output);
    let requests = server.requests();
    let fix_step = requests[4].body["messages"].to_string();
    assert!(
        fix_step.contains("Address the self-review") && fix_step.contains("NOTES.md is missing"),
        "{fix_step}"
    );
    let branch = task_branch(&repo);
    assert_eq!(sh(&repo, &format!("git show {branch}:NOTES.md")), "notes\n");
}

/// Seen in the evaluation: the planner ran the same `grep` eleven times. A planner repeating
/// itself is told once, then planning ends with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planner_repeating_itself_is_told_once_then_stops() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    let same = || call("p", "bash", r#"{"command": "grep -n hello test.sh"}"#);
    let server = ScriptedModel::start((0..7).map(|_| same()).collect()).await;
    let output = deft_run(
        &server,
        &dir.path().join("data"),
        &repo,
        "create greeting.txt containing hello",
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("planning: the agent kept repeating itself"),
        "{stderr}"
    );
    let requests = server.requests();
    assert!(
        requests[3].body["messages"]
            .to_string()
            .contains("You are repeating yourself"),
        "told once on the third call"
    );
    assert_eq!(requests.len(), 6, "stopped on the sixth call");
}

/// Seen in the evaluation: asked to plan, the real model set out to write the file at once,
/// turn after turn, until planning ran out of turns. A planner that sets out to change a file
/// gets a plan of one step, the task, which opens with that call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planner_that_sets_out_to_write_gets_a_plan_of_one_step() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    let create = || {
        call(
            "w",
            "str_replace_based_edit_tool",
            r#"{"command": "create", "path": "greeting.txt", "file_text": "hello\n"}"#,
        )
    };
    let server = ScriptedModel::start(vec![
        create(),
        Step::Reply(Turn::text("Created greeting.txt.")),
        review_pass(),
    ])
    .await;
    let output = deft_run(
        &server,
        &dir.path().join("data"),
        &repo,
        "Create greeting.txt containing hello.",
    )
    .await;
    succeeded(&output);
    let requests = server.requests();
    let executor = requests[1].body["system"].to_string();
    assert!(
        executor.contains("Work step: execution")
            && executor.contains("1. Create greeting.txt containing hello.   <- this step")
            && executor.contains("`./test.sh` passes in greeter"),
        "{executor}"
    );
    // The step opens with the planner's call, made: the executor only has to say it is done.
    let opened = requests[1].body["messages"].to_string();
    assert!(
        opened.contains("greeting.txt") && opened.contains("tool_result"),
        "{opened}"
    );
    assert_eq!(requests.len(), 3, "planner, executor, reviewer");
    assert_eq!(
        sh(
            &repo,
            &format!("git show {}:greeting.txt", task_branch(&repo))
        ),
        "hello\n"
    );
}

/// "Weak models cannot express edits as tool calls": with `edit_format = "code_blocks"` the
/// model gets no tools and no planner; it names a file to see it, writes a function under the
/// file's path, is shown the checks' failure with the file as it now reads, and its second
/// block (the whole file) passes. The file's other function is kept by the first merge; the
/// test named nearer the block than the code is left alone, its lines placing nothing; and
/// the edits are in the log as the editor's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_writes_code_in_its_replies_changes_files_through_them() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("stats");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(
        repo.join("stats.py"),
        "\"\"\"Statistics.\"\"\"\n\n\ndef mean(values):\n    return sum(values) / (len(values) - 1)\n\n\ndef total(values):\n    return sum(values)\n",
    )
    .unwrap();
    std::fs::write(
        repo.join("test.sh"),
        "#!/bin/sh\npython3 -c 'from stats import mean, total; assert mean([1, 2, 3]) == 2; assert total([1]) == 1' || { echo 'mean is wrong'; exit 1; }\n",
    )
    .unwrap();
    sh(
        &repo,
        "chmod +x test.sh && git init -q -b main && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init",
    );
    let data = code_blocks_data(dir.path());
    let server = ScriptedModel::start(vec![
        Step::Reply(Turn::text("Let me look at stats.py first.")),
        Step::Reply(Turn::text(
            "The divisor is wrong. In `stats.py`, which ./test.sh checks:\n\n```python\ndef mean(values):\n    return sum(values) / (len(values) + 1)\n```\n",
        )),
        // The whole file again, under no path: the file shown to it is the one it is for.
        Step::Reply(Turn::text(
            "```python\n\"\"\"Statistics.\"\"\"\n\n\ndef mean(values):\n    return sum(values) / len(values)\n\n\ndef total(values):\n    return sum(values)\n```",
        )),
        review_pass(),
    ])
    .await;
    let output = deft_run(&server, &data, &repo, "Fix mean so that ./test.sh passes.").await;
    let stdout = succeeded(&output);
    let requests = server.requests();
    // No tools and no planner: the first request is the executor's, with no tools.
    assert!(
        requests[0].body["tools"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{}",
        requests[0].body
    );
    assert!(
        requests[0].body["system"]
            .to_string()
            .contains("You change files by writing them out in full"),
        "{}",
        requests[0].body["system"]
    );
    let shown = requests[1].body["messages"].to_string();
    assert!(shown.contains("(len(values) - 1)"), "{shown}");
    // The first block replaced `mean` alone; the failure came back with the file as it read.
    let told = requests[2].body["messages"].to_string();
    assert!(
        told.contains("Changed stats.py: `def mean(values):`")
            && told.contains("mean is wrong")
            && told.contains("(len(values) + 1)")
            && told.contains("def total(values)"),
        "{told}"
    );
    let branch = task_branch(&repo);
    assert!(
        sh(&repo, &format!("git show {branch}:test.sh")).contains("mean is wrong"),
        "the test was rewritten"
    );
    assert_eq!(
        sh(&repo, &format!("git show {branch}:stats.py")),
        "\"\"\"Statistics.\"\"\"\n\n\ndef mean(values):\n    return sum(values) / len(values)\n\n\ndef total(values):\n    return sum(values)\n"
    );
    assert!(stdout.contains("str_replace_based_edit_tool"), "{stdout}");
}

/// In code blocks, a reply that ends in a question is a question, through the same gate: one
/// about the environment is sent back, one about what to build reaches the owner. A task that
/// names no file of a small repository is shown all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_in_words_goes_through_the_gate() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    let data = code_blocks_data(dir.path());
    let server = ScriptedModel::start(vec![
        Step::Reply(Turn::text(
            "The command 'nano' could not be found. Should I install it?",
        )),
        Step::Reply(Turn::text(
            "Which language should the greeting be in, English or French?",
        )),
    ])
    .await;
    let output = deft_run(&server, &data, &repo, "Write a greeting into greeting.txt.").await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{stdout}");
    // The task names no file of the repository, which is small: all of it is shown.
    let first = requests[0].body["messages"].to_string();
    assert!(
        first.contains("test.sh\\n```sh\\n#!/bin/sh") && first.contains("AGENTS.md\\n```markdown"),
        "{first}"
    );
    let sent_back = requests[1].body["messages"].to_string();
    assert!(sent_back.contains("Not asked:"), "{sent_back}");
    assert!(
        stdout.contains("Which language should the greeting be in"),
        "{stdout}"
    );
}

/// In code blocks, a shell block under no path is a command, run in the sandbox as the bash
/// tool runs one, its output sent back; the file it writes is the repository's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_block_under_no_path_is_run() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    let data = code_blocks_data(dir.path());
    let server = ScriptedModel::start(vec![
        Step::Reply(Turn::text(
            "I will write the file:\n```bash\nls && printf 'hello\\n' > greeting.txt && ./test.sh && echo passed\n```",
        )),
        review_pass(),
    ])
    .await;
    let output = deft_run(&server, &data, &repo, "Make ./test.sh pass.").await;
    succeeded(&output);
    // The checks passed after the command, so the step ended there; then the review.
    assert_eq!(server.requests().len(), 2);
    assert_eq!(server.remaining_steps(), 0);
    assert_eq!(
        sh(
            &repo,
            &format!("git show {}:greeting.txt", task_branch(&repo))
        ),
        "hello\n"
    );
}

/// A command that changes nothing is a look around: the checks wait for a change, and the
/// model is asked for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_changes_nothing_does_not_end_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    let data = code_blocks_data(dir.path());
    let server = ScriptedModel::start(vec![
        Step::Reply(Turn::text("```sh\ncat test.sh\n```")),
        Step::Reply(Turn::text("greeting.txt\n```\nhello\n```")),
        review_pass(),
    ])
    .await;
    let output = deft_run(&server, &data, &repo, "Make ./test.sh pass.").await;
    succeeded(&output);
    let asked = server.requests()[1].body["messages"].to_string();
    assert!(
        asked.contains("greeting.txt must say hello") && asked.contains("Write the change now"),
        "{asked}"
    );
    assert!(!asked.contains("The work is not done"), "{asked}");
}

/// The commands the owner says must work are run after each change, and what they must print
/// is checked: with no checks in the repository, a change that breaks `python3 greet.py Ada
/// --shout` does not end the step. Files are shown as the model is asked to write them (a
/// path, then a fenced block), each turn is one fresh message with the files as they are
/// now, and a block headed by a comment naming its file goes into that file without the
/// comment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_the_task_names_must_work_before_the_step_ends() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("greet");
    std::fs::create_dir(&repo).unwrap();
    let before = "import sys\n\nprint(f\"Hello, {sys.argv[1]}!\")\n";
    std::fs::write(repo.join("greet.py"), before).unwrap();
    sh(
        &repo,
        "git init -q -b main && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init",
    );
    let data = code_blocks_data(dir.path());
    let server = ScriptedModel::start(vec![
        // Shouts the wrong word: it runs, but does not print what the task says.
        Step::Reply(Turn::text(
            "```python\n# greet.py\nimport sys\n\nprint(f\"Hello, {sys.argv[2]}!\".upper())\n```",
        )),
        Step::Reply(Turn::text(
            "```python\n# greet.py\nimport sys\n\nname = sys.argv[1]\nif \"--shout\" in sys.argv:\n    print(f\"Hello, {name}!\".upper())\nelse:\n    print(f\"Hello, {name}!\")\n```",
        )),
        review_pass(),
    ])
    .await;
    let output = deft_run(
        &server,
        &data,
        &repo,
        "Add a --shout flag to greet.py: `python3 greet.py Ada --shout` prints `HELLO, ADA!`.",
    )
    .await;
    succeeded(&output);
    let requests = server.requests();
    let first = requests[0].body["messages"].to_string();
    assert!(
        first.contains("greet.py\\n```python\\nimport sys") && !first.contains("~~~~"),
        "{first}"
    );
    // The failure came back in a fresh message: no earlier reply in it, the file as it reads.
    let second = requests[1].body["messages"].to_string();
    assert!(
        second.contains("`python3 greet.py Ada --shout` must print HELLO, ADA!, the task says; it printed:\\nHELLO, --SHOUT!")
            && second.contains("sys.argv[2]")
            && !second.contains("\"assistant\""),
        "{second}"
    );
    assert_eq!(
        sh(&repo, &format!("git show {}:greet.py", task_branch(&repo))),
        "import sys\n\nname = sys.argv[1]\nif \"--shout\" in sys.argv:\n    print(f\"Hello, {name}!\".upper())\nelse:\n    print(f\"Hello, {name}!\")\n"
    );
}

/// A data dir whose config has the model write code in its replies.
fn code_blocks_data(dir: &std::path::Path) -> std::path::PathBuf {
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(
        data.join("config.toml"),
        "[model]\nedit_format = \"code_blocks\"\n",
    )
    .unwrap();
    data
}

/// Replies whose code is what the files already hold change nothing: the model is told so,
/// each turn samples warmer than the last (from `[model] temperature`), and after three in a
/// row the attempt gives up and the step starts again, cold, told why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_that_change_nothing_warm_the_sampling_then_end_the_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    let data = code_blocks_data(dir.path());
    std::fs::write(
        data.join("config.toml"),
        "[model]\nedit_format = \"code_blocks\"\ntemperature = 0.0\n",
    )
    .unwrap();
    let as_it_is = "test.sh\n```sh\n#!/bin/sh\ntest \"$(cat greeting.txt 2>/dev/null)\" = hello || { echo 'greeting.txt must say hello'; exit 1; }\n```";
    let server = ScriptedModel::start(vec![
        Step::Reply(Turn::text(&format!("Here it is:\n{as_it_is}"))),
        Step::Reply(Turn::text(&format!("Again:\n{as_it_is}"))),
        Step::Reply(Turn::text(&format!("Once more:\n{as_it_is}"))),
        Step::Reply(Turn::text("greeting.txt\n```\nhello\n```")),
        review_pass(),
    ])
    .await;
    let output = deft_run(&server, &data, &repo, "Make ./test.sh pass.").await;
    succeeded(&output);
    let requests = server.requests();
    let temperatures: Vec<f64> = requests[..4]
        .iter()
        .map(|request| request.body["temperature"].as_f64().unwrap())
        .collect();
    assert_eq!(temperatures, [0.0, 0.25, 0.5, 0.0]);
    let told = requests[1].body["messages"].to_string();
    assert!(
        told.contains("test.sh already reads as the block says")
            && told.contains("Nothing changed: your code is what the files already hold"),
        "{told}"
    );
    let again = requests[3].body["messages"].to_string();
    assert!(
        again.contains("An earlier attempt at this step ended")
            && again.contains("3 replies in a row changed nothing"),
        "{again}"
    );
}

/// A weak reviewer's wrong fix does not cost a change whose checks passed: the fix step
/// breaks the checks until it gives up, its changes are undone, and the task completes with
/// the verified change, the reviewer's fix left open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_fix_that_breaks_the_checks_is_undone_and_the_verified_change_stands() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    let data = code_blocks_data(dir.path());
    std::fs::write(
        data.join("config.toml"),
        "[model]\nedit_format = \"code_blocks\"\n\n[limits]\nstep_attempts = 1\n",
    )
    .unwrap();
    let server = ScriptedModel::start(vec![
        Step::Reply(Turn::text("greeting.txt\n```\nhello\n```")),
        common::greeter::review(
            r#"{"verdict": "fix", "checked": ["greeting.txt"], "fixes": ["write HELLO in capitals"]}"#,
        ),
        Step::Reply(Turn::text("greeting.txt\n```\nHELLO\n```")),
        Step::Reply(Turn::text("greeting.txt\n```\nHello\n```")),
        Step::Reply(Turn::text("greeting.txt\n```\nHELLO!\n```")),
    ])
    .await;
    let output = deft_run(&server, &data, &repo, "Make ./test.sh pass.").await;
    let stdout = succeeded(&output);
    assert_eq!(server.remaining_steps(), 0, "{stdout}");
    assert!(
        stdout.contains("execution given_up")
            && stdout.contains("state_changed in_progress → completed"),
        "{stdout}"
    );
    assert_eq!(
        sh(
            &repo,
            &format!("git show {}:greeting.txt", task_branch(&repo))
        ),
        "hello\n"
    );
}

/// A repository whose client talks to a development server, with no production address
/// anywhere in it.
fn widgets_repo(root: &std::path::Path) -> std::path::PathBuf {
    let repo = root.join("widgets");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(
        repo.join("client.py"),
        "API_URL = \"http://localhost:8000\"\n",
    )
    .unwrap();
    std::fs::write(
        repo.join("README.md"),
        "The production address is given by the operations team.\nDocs: https://docs.widgets.test/\n",
    )
    .unwrap();
    sh(
        &repo,
        "git init -q -b main && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init",
    );
    repo
}

/// "A question is an escape hatch", turned around: the one thing only the owner knows is
/// asked. A change that writes an address in neither the task nor the repository passes
/// every check and is still a guess, so the task asks for it (naming the guess and its file)
/// instead of completing; an address the owner gave, or one the repository already has, is
/// not asked about. In both edit formats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_no_one_gave_is_asked_for_not_guessed() {
    let dir = tempfile::tempdir().unwrap();
    let repo = widgets_repo(dir.path());
    let data = code_blocks_data(dir.path());
    let server = ScriptedModel::start(vec![Step::Reply(Turn::text(
        "client.py\n```python\nAPI_URL = \"http://widgets-service:8000\"\n```",
    ))])
    .await;
    let output = deft_run(
        &server,
        &data,
        &repo,
        "Point the client at the production widgets service.",
    )
    .await;
    let stdout = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("Which address should the change use?")
            && stdout.contains("`http://widgets-service:8000` (in `client.py`)"),
        "{stdout}"
    );
    // Asked, not completed: nothing was pushed.
    assert_eq!(task_branch(&repo), "");

    // Given by the owner (and a host the repository names): no question, the task completes.
    let repo = {
        let other = dir.path().join("second");
        std::fs::create_dir(&other).unwrap();
        widgets_repo(&other)
    };
    let server = ScriptedModel::start(vec![
        call(
            "p1",
            "submit_plan",
            r#"{"requirements": ["the client uses production"], "acceptance_criteria": ["API_URL is the production address"], "steps": ["Set API_URL"]}"#,
        ),
        call(
            "e1",
            "str_replace_based_edit_tool",
            r#"{"command": "create", "path": "widgets/client.py", "file_text": "API_URL = \"https://widgets.prod.example.net\"\nDOCS = \"https://docs.widgets.test/api\"\n"}"#,
        ),
        Step::Reply(Turn::text("Pointed the client at production.")),
        review_pass(),
    ])
    .await;
    let output = deft_run(
        &server,
        &dir.path().join("second/data"),
        &repo,
        "Point the client at the production widgets service, https://widgets.prod.example.net",
    )
    .await;
    succeeded(&output);
    assert!(
        sh(&repo, &format!("git show {}:client.py", task_branch(&repo)))
            .contains("widgets.prod.example.net")
    );
}
