//! The agent's tools against a real workspace: one `check` per behaviour, from the model's
//! call to the result it reads back.

use std::collections::BTreeMap;

use deft_agent::{Effect, Tools, specs};
use deft_core::NetworkLevel;
use deft_egress::{DomainSet, EgressPolicy, Resolver};
use deft_llm::{ToolArguments, ToolCall};
use deft_sandbox::host::HostSandbox;
use deft_sandbox::{Limits, SandboxSpec};
use serde_json::{Value, json};

fn sandbox(workspace: &std::path::Path) -> HostSandbox {
    HostSandbox::create(SandboxSpec {
        workspace: workspace.to_owned(),
        state_dir: workspace.join(".state"),
        env: BTreeMap::new(),
        secrets: BTreeMap::new(),
        network: EgressPolicy::new(NetworkLevel::Open, vec![], DomainSet::default()),
        resolver: Resolver::System,
        limits: Limits::default(),
        root: None,
    })
    .unwrap()
}

fn call(name: &str, arguments: Value) -> ToolCall {
    ToolCall {
        id: "c".into(),
        name: name.into(),
        arguments: ToolArguments::Valid(arguments),
    }
}

/// Runs one call and compares the result: `Ok(text)` for a success containing `text`,
/// `Err(text)` for an error containing it.
async fn check(
    tools: &mut Tools<'_, HostSandbox>,
    name: &str,
    arguments: Value,
    expect: Result<&str, &str>,
) {
    let output = tools
        .call(&call(name, arguments.clone()), &mut |_| {})
        .await;
    let (wanted, text) = match expect {
        Ok(text) => (false, text),
        Err(text) => (true, text),
    };
    assert_eq!(
        output.is_error, wanted,
        "{name} {arguments}: {}",
        output.content
    );
    assert!(
        output.content.contains(text),
        "{name} {arguments}: {:?} should contain {text:?}",
        output.content
    );
}

#[tokio::test]
async fn the_editor_views_creates_replaces_inserts_and_undoes() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = sandbox(dir.path());
    let mut tools = Tools::new(&sandbox, dir.path());
    let edit = "str_replace_based_edit_tool";
    check(&mut tools, edit, json!({"command": "create", "path": "src/lib.rs", "file_text": "fn a() {}\nfn b() {}\nfn b() {}\n"}), Ok("created /workspace/src/lib.rs")).await;
    // `create` over a file writes it whole, and `undo_edit` brings back what it held.
    check(
        &mut tools,
        edit,
        json!({"command": "create", "path": "src/lib.rs", "file_text": "x\n"}),
        Ok("wrote the whole of /workspace/src/lib.rs (1 lines; it had 3)"),
    )
    .await;
    check(
        &mut tools,
        edit,
        json!({"command": "undo_edit", "path": "src/lib.rs"}),
        Ok("reverted"),
    )
    .await;
    check(
        &mut tools,
        edit,
        json!({"command": "create", "path": "src", "file_text": "x"}),
        Err("is a directory"),
    )
    .await;
    // A `str_replace` without `new_str` used to delete `old_str`; one with a range but no
    // `old_str` is told what the range is for.
    check(
        &mut tools,
        edit,
        json!({"command": "str_replace", "path": "src/lib.rs", "old_str": "fn a() {}"}),
        Err("`new_str` is required"),
    )
    .await;
    check(
        &mut tools,
        edit,
        json!({"command": "str_replace", "path": "src/lib.rs", "view_range": [1, 2]}),
        Err("`view_range` belongs to `view`"),
    )
    .await;
    // An empty `old_str` occurs everywhere; it was once answered with hundreds of line numbers.
    check(
        &mut tools,
        edit,
        json!({"command": "str_replace", "path": "src/lib.rs", "old_str": "", "new_str": "x"}),
        Err("`old_str` is empty"),
    )
    .await;
    check(
        &mut tools,
        edit,
        json!({"command": "view", "path": "/workspace/src/lib.rs"}),
        Ok("     1\tfn a() {}\n     2\tfn b() {}"),
    )
    .await;
    check(
        &mut tools,
        edit,
        json!({"command": "view", "path": "src/lib.rs", "view_range": [2, -1]}),
        Ok("     2\tfn b() {}\n     3\tfn b() {}\n"),
    )
    .await;
    check(
        &mut tools,
        edit,
        json!({"command": "view", "path": "src/lib.rs", "view_range": [9, 10]}),
        Err("outside"),
    )
    .await;
    check(
        &mut tools,
        edit,
        json!({"command": "view", "path": "/workspace"}),
        Ok("src/\n  src/lib.rs"),
    )
    .await;
    check(&mut tools, edit, json!({"command": "str_replace", "path": "src/lib.rs", "old_str": "fn b() {}", "new_str": "fn c() {}"}), Err("occurs 2 times")).await;
    check(
        &mut tools,
        edit,
        json!({"command": "str_replace", "path": "src/lib.rs", "old_str": "fn z()", "new_str": ""}),
        Err("does not occur verbatim"),
    )
    .await;
    check(&mut tools, edit, json!({"command": "str_replace", "path": "src/lib.rs", "old_str": "fn a() {}", "new_str": "fn a() { b() }"}), Ok("fn a() { b() }")).await;
    check(&mut tools, edit, json!({"command": "insert", "path": "src/lib.rs", "insert_line": 0, "new_str": "// header"}), Ok("// header")).await;
    check(
        &mut tools,
        edit,
        json!({"command": "insert", "path": "src/lib.rs", "insert_line": 99, "new_str": "x"}),
        Err("past the end"),
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(dir.path().join("src/lib.rs")).unwrap(),
        "// header\nfn a() { b() }\nfn b() {}\nfn b() {}\n"
    );
    check(
        &mut tools,
        edit,
        json!({"command": "undo_edit", "path": "src/lib.rs"}),
        Ok("reverted"),
    )
    .await;
    check(
        &mut tools,
        edit,
        json!({"command": "undo_edit", "path": "src/lib.rs"}),
        Ok("reverted"),
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(dir.path().join("src/lib.rs")).unwrap(),
        "fn a() {}\nfn b() {}\nfn b() {}\n"
    );
    check(
        &mut tools,
        edit,
        json!({"command": "view", "path": "/etc/passwd"}),
        Err("outside the workspace"),
    )
    .await;
    check(
        &mut tools,
        edit,
        json!({"command": "delete", "path": "src/lib.rs"}),
        Err("unknown command `delete`"),
    )
    .await;
}

#[tokio::test]
async fn links_cannot_carry_an_edit_out_of_the_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("workspace");
    std::fs::create_dir(&workspace).unwrap();
    std::fs::write(dir.path().join("host.txt"), "host").unwrap();
    std::os::unix::fs::symlink(dir.path().join("host.txt"), workspace.join("link")).unwrap();
    let sandbox = sandbox(&workspace);
    let mut tools = Tools::new(&sandbox, &workspace);
    let edit = "str_replace_based_edit_tool";
    check(
        &mut tools,
        edit,
        json!({"command": "view", "path": "link"}),
        Err("outside the workspace"),
    )
    .await;
    check(
        &mut tools,
        edit,
        json!({"command": "str_replace", "path": "link", "old_str": "host", "new_str": "pwned"}),
        Err("outside the workspace"),
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(dir.path().join("host.txt")).unwrap(),
        "host"
    );
}

#[tokio::test]
async fn search_respects_gitignore_and_globs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::create_dir_all(dir.path().join("target")).unwrap();
    std::fs::write(dir.path().join(".gitignore"), "target/\n").unwrap();
    std::fs::write(
        dir.path().join("src/main.rs"),
        "fn main() {\n    greet();\n}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("src/notes.md"), "greet the user\n").unwrap();
    std::fs::write(dir.path().join("target/out.rs"), "greet();\n").unwrap();
    let sandbox = sandbox(dir.path());
    let mut tools = Tools::new(&sandbox, dir.path());
    let all = tools
        .call(&call("search", json!({"pattern": "greet"})), &mut |_| {})
        .await;
    assert!(
        all.content.contains("src/main.rs:2:    greet();")
            && all.content.contains("src/notes.md:1:"),
        "{}",
        all.content
    );
    assert!(
        !all.content.contains("target/"),
        "ignored files are not searched: {}",
        all.content
    );
    check(
        &mut tools,
        "search",
        json!({"pattern": "greet", "glob": "*.rs"}),
        Ok("src/main.rs:2"),
    )
    .await;
    let only_rs = tools
        .call(
            &call("search", json!({"pattern": "greet", "glob": "*.rs"})),
            &mut |_| {},
        )
        .await;
    assert!(!only_rs.content.contains("notes.md"), "{}", only_rs.content);
    check(
        &mut tools,
        "search",
        json!({"pattern": "nothing-like-this"}),
        Ok("no match"),
    )
    .await;
    check(
        &mut tools,
        "search",
        json!({"pattern": "("}),
        Err("not a valid regular expression"),
    )
    .await;
    check(
        &mut tools,
        "search",
        json!({"pattern": "x", "path": "missing"}),
        Err("does not exist"),
    )
    .await;
}

#[tokio::test]
async fn bash_reports_exit_codes_and_cuts_long_output() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = sandbox(dir.path());
    let mut tools = Tools::new(&sandbox, dir.path());
    check(
        &mut tools,
        "bash",
        json!({"command": "echo hi"}),
        Ok("hi\n[exit code: 0]"),
    )
    .await;
    check(
        &mut tools,
        "bash",
        json!({"command": "echo oops >&2; exit 2"}),
        Err("oops\n[exit code: 2]"),
    )
    .await;
    check(
        &mut tools,
        "bash",
        json!({"command": "sleep 5", "timeout_secs": 1}),
        Err("[killed after 1 s"),
    )
    .await;
    let long = tools
        .call(
            &call("bash", json!({"command": "seq 1 20000"})),
            &mut |_| {},
        )
        .await;
    assert!(
        long.content.starts_with("1\n2\n") && long.content.contains("20000\n[exit code: 0]"),
        "head and tail are kept"
    );
    assert!(
        long.content.contains("bytes of output cut"),
        "and the cut is marked"
    );
}

#[tokio::test]
async fn plan_question_and_finish_are_effects() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = sandbox(dir.path());
    let mut tools = Tools::new(&sandbox, dir.path());
    let plan = tools
        .call(
            &call(
                "submit_plan",
                json!({"requirements": ["r"], "acceptance_criteria": ["a"], "steps": ["s1", "s2"]}),
            ),
            &mut |_| {},
        )
        .await;
    assert!(
        matches!(plan.effect, Effect::Plan(ref p) if p.steps == ["s1", "s2"]),
        "{plan:?}"
    );
    check(
        &mut tools,
        "submit_plan",
        json!({"requirements": [], "acceptance_criteria": ["a"], "steps": ["s"]}),
        Err("`requirements` must be a non-empty array"),
    )
    .await;
    let ask = tools
        .call(
            &call("ask_user", json!({"question": "Which port?"})),
            &mut |_| {},
        )
        .await;
    assert_eq!(ask.effect, Effect::Ask("Which port?".into()));
    let finish = tools
        .call(&call("finish", json!({"summary": "done"})), &mut |_| {})
        .await;
    assert_eq!(finish.effect, Effect::Finish("done".into()));
    check(
        &mut tools,
        "rm_rf",
        json!({}),
        Err("there is no tool named `rm_rf`"),
    )
    .await;
    let malformed = ToolCall {
        id: "c".into(),
        name: "bash".into(),
        arguments: ToolArguments::parse("{\"command\": "),
    };
    assert!(
        tools
            .call(&malformed, &mut |_| {})
            .await
            .content
            .contains("not valid JSON")
    );
}

#[test]
fn the_tools_have_the_names_and_arguments_of_the_spec() {
    let specs = specs();
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "bash",
            "str_replace_based_edit_tool",
            "search",
            "submit_plan",
            "ask_user",
            "finish"
        ]
    );
    let properties = |name: &str| -> Vec<String> {
        let spec = specs.iter().find(|s| s.name == name).unwrap();
        let mut keys: Vec<String> = spec.input_schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    };
    assert_eq!(properties("bash"), ["command", "timeout_secs"]);
    assert_eq!(
        properties("str_replace_based_edit_tool"),
        [
            "command",
            "file_text",
            "insert_line",
            "new_str",
            "old_str",
            "path",
            "view_range"
        ]
    );
    assert_eq!(properties("search"), ["glob", "path", "pattern"]);
    assert_eq!(
        properties("submit_plan"),
        ["acceptance_criteria", "requirements", "steps"]
    );
    assert_eq!(properties("ask_user"), ["question"]);
    assert_eq!(properties("finish"), ["summary"]);
}

/// A command may leave a FIFO, a device link or a huge file where the model expects text: the
/// editor and the search answer at once with why, and never block (as they did: `view` of a
/// FIFO held a runtime thread for ever). A watchdog fails the test instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_files_are_refused_without_blocking() {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let done = done.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(60));
            if !done.load(std::sync::atomic::Ordering::SeqCst) {
                #[allow(clippy::print_stderr, reason = "why the test process fails")]
                {
                    eprintln!("a file tool blocked for a minute on a special file");
                }
                std::process::exit(101);
            }
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(
            "mkfifo pipe && mkdir -p src && mkfifo src/.gitignore && echo 'needle' > src/a.txt \
              && ln -s /dev/zero zero && ln -s pipe pipelink && truncate -s 20M huge.txt",
        )
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let sandbox = sandbox(dir.path());
    let mut tools = Tools::new(&sandbox, dir.path());
    let edit = "str_replace_based_edit_tool";
    for arguments in [
        json!({"command": "view", "path": "pipe"}),
        json!({"command": "str_replace", "path": "pipe", "old_str": "a", "new_str": "b"}),
        json!({"command": "insert", "path": "pipe", "insert_line": 0, "new_str": "x"}),
    ] {
        check(
            &mut tools,
            edit,
            arguments,
            Err("is a FIFO, not a regular file"),
        )
        .await;
    }
    check(
        &mut tools,
        edit,
        json!({"command": "view", "path": "zero"}),
        Err("outside the workspace"),
    )
    .await;
    check(
        &mut tools,
        edit,
        json!({"command": "view", "path": "pipelink"}),
        Err("is a symbolic link, not a regular file"),
    )
    .await;
    check(
        &mut tools,
        edit,
        json!({"command": "view", "path": "huge.txt"}),
        Err("over the 16777216 a file tool reads"),
    )
    .await;
    // The search skips what is not a regular file, and an ignore file that is a FIFO, or a
    // link to an endless device, is passed over rather than read.
    std::os::unix::fs::symlink("/dev/zero", dir.path().join(".ignore")).unwrap();
    check(
        &mut tools,
        "search",
        json!({"pattern": "needle"}),
        Ok("src/a.txt:1:needle"),
    )
    .await;
    check(
        &mut tools,
        "search",
        json!({"pattern": "needle", "path": "src"}),
        Ok("src/a.txt:1:needle"),
    )
    .await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// "The model cannot find the code": with one repository, `/workspace/util.py` (the path of a
/// model that takes the workspace for the repository) is the repository's file for the editor,
/// and a command that fails on such a path is told where the file is.
#[tokio::test]
async fn with_one_repository_a_workspace_path_finds_the_repositorys_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("app")).unwrap();
    std::fs::write(dir.path().join("app/util.py"), "def f():\n    return 1\n").unwrap();
    let sandbox = sandbox(dir.path());
    let mut tools = Tools::new(&sandbox, dir.path()).with_repositories(vec!["app".into()]);
    let edit = "str_replace_based_edit_tool";
    check(
        &mut tools,
        edit,
        json!({"command": "view", "path": "/workspace/util.py"}),
        Ok("     2\t    return 1"),
    )
    .await;
    check(
        &mut tools,
        edit,
        json!({"command": "create", "path": "/workspace/notes.txt", "file_text": "n\n"}),
        Ok("created /workspace/app/notes.txt"),
    )
    .await;
    assert!(dir.path().join("app/notes.txt").is_file());
    // The shell's own words about a path of the workspace that is not there.
    let said = r#"{"command": "echo 'cat: /workspace/util.py: No such file or directory' >&2; echo '/workspace/missing.py'; exit 1"}"#;
    check(
        &mut tools,
        "bash",
        serde_json::from_str(said).unwrap(),
        Err("[/workspace/util.py is not there: the repository is /workspace/app, and commands start in it; write `util.py`]"),
    )
    .await;
    let output = tools
        .call(
            &call("bash", serde_json::from_str(said).unwrap()),
            &mut |_| {},
        )
        .await;
    assert!(
        !output.content.contains("missing.py is not there"),
        "{}",
        output.content
    );
    assert_eq!(
        output.content.matches("is not there").count(),
        1,
        "{}",
        output.content
    );
}
