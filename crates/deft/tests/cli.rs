//! The real `deft` binary, run as a person would: `deft serve` on an empty data dir, and the
//! CLI against it.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DEFT: &str = env!("CARGO_BIN_EXE_deft");

/// A `deft serve` process, stopped when dropped.
struct Server {
    child: Child,
    url: String,
    started: Instant,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(data_dir: &Path) -> Server {
        let started = Instant::now();
        let mut child = Command::new(DEFT)
            .args([
                "serve",
                "--workers",
                "0",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .env_remove("DEFT_DATABASE_URL")
            .env_remove("DEFT_MASTER_KEY")
            .env_remove("DEFT_CONFIG")
            // A model is configured (never called: nothing runs tasks yet), so new tasks queue.
            .env("DEFT_MODEL", "openai-compatible/scripted")
            .env("DEFT_MODEL_BASE_URL", "http://127.0.0.1:9/v1")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("deft serve exited before it was serving")
                .unwrap();
            if let Some(rest) = line.split("serving the API on ").nth(1) {
                break rest.split("/api/v1").next().unwrap().to_owned();
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            url,
            started,
        }
    }
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
}

/// Runs `deft ARGS` against `server` with the data dir's admin token.
fn deft(server: &Server, data_dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(DEFT)
        .args(args)
        .env("DEFT_SERVER", &server.url)
        .env("DEFT_HOME", data_dir)
        .env_remove("DEFT_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        stdout(output),
        stderr(output)
    );
    stdout(output)
}

fn git_repo(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(&path).unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg("git init -q -b main && git -c user.name=t -c user.email=t@t commit -q --allow-empty -m init")
        .current_dir(&path)
        .status()
        .unwrap();
    assert!(status.success());
    path
}

/// Starts `deft serve` on `data_dir` and checks the first start: healthy within a second, the
/// admin token private and working, and everything written private to its owner.
fn check_first_start(data_dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let server = Server::start(data_dir);
    let client = http();
    let healthy = loop {
        if let Ok(response) = client.get(format!("{}/healthz", server.url)).send()
            && response.status().is_success()
        {
            break server.started.elapsed();
        }
        assert!(
            server.started.elapsed() < Duration::from_secs(10),
            "never became healthy"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(
        healthy < Duration::from_secs(1),
        "healthy after {healthy:?}"
    );
    let token = std::fs::read_to_string(data_dir.join("admin-token")).unwrap();
    let me: serde_json::Value = client
        .get(format!("{}/api/v1/me", server.url))
        .bearer_auth(token.trim())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(me["name"], "admin");
    for entry in std::fs::read_dir(data_dir).unwrap() {
        let entry = entry.unwrap();
        let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode & 0o077,
            0,
            "{} is readable by others ({mode:o})",
            entry.path().display()
        );
    }
    let names: Vec<String> = std::fs::read_dir(data_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for expected in ["admin-token", "master-key", "deft.db"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[test]
fn serve_on_an_empty_data_dir_is_healthy_within_a_second_with_a_private_admin_token() {
    use std::os::unix::fs::PermissionsExt as _;
    // An existing, empty directory, as `mktemp -d` makes it.
    let dir = tempfile::tempdir().unwrap();
    check_first_start(dir.path());
    // One that others can read: deft's files in it are still private.
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    check_first_start(shared.path());
    // One that does not exist yet: made private.
    let parent = tempfile::tempdir().unwrap();
    let fresh = parent.path().join("data");
    check_first_start(&fresh);
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "a data dir deft makes is private");
}

#[test]
fn logs_print_the_whole_of_a_long_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data);
    let repo = git_repo(dir.path(), "widgets");
    let created = succeeded(&deft(
        &server,
        &data,
        &["task", "create", "--repo", repo.to_str().unwrap(), "long"],
        None,
    ));
    let id = created.lines().last().unwrap().trim().to_owned();
    // Write 1,100 events straight into the server's database, as a worker would.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let key = deft_store::MasterKey::load(None, &data).unwrap();
        let store = deft_store::Store::open_data_dir(&data, key).await.unwrap();
        let task = deft_core::TaskId::from_stored(id.clone());
        for n in 0..1100 {
            store
                .append_event(
                    &task,
                    deft_core::EventKind::ToolCall,
                    serde_json::json!({"n": n}),
                )
                .await
                .unwrap();
        }
        store.close().await;
    });
    let logs = succeeded(&deft(&server, &data, &["task", "logs", &id], None));
    assert_eq!(logs.lines().count(), 1101, "every event, across pages");
    let tail = succeeded(&deft(
        &server,
        &data,
        &["task", "logs", &id, "--after", "1090"],
        None,
    ));
    assert_eq!(tail.lines().count(), 11);
}

#[test]
fn the_cli_drives_tasks_secrets_and_settings() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data);
    let repo = git_repo(dir.path(), "widgets");
    let run = |args: &[&str]| deft(&server, &data, args, None);

    let created = succeeded(&run(&[
        "task",
        "create",
        "--repo",
        repo.to_str().unwrap(),
        "Add",
        "a",
        "health",
        "check",
    ]));
    let id = created.lines().last().unwrap().trim().to_owned();
    assert!(created.contains("queued"), "{created}");
    let list = succeeded(&run(&["task", "list"]));
    assert!(
        list.contains(&id) && list.contains("Add a health check"),
        "{list}"
    );
    let shown = succeeded(&run(&["task", "show", &id]));
    assert!(
        shown.contains("repos     widgets") && shown.contains("queue     #1"),
        "{shown}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&succeeded(&run(&["task", "show", &id, "--json"]))).unwrap();
    assert_eq!(json["state"], "queued");

    // A follower started now ends when the task is cancelled, having printed the change.
    let follower = Command::new(DEFT)
        .args(["task", "logs", "--follow", &id])
        .env("DEFT_SERVER", &server.url)
        .env("DEFT_HOME", &data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(succeeded(&run(&["task", "cancel", &id])).contains("is now cancelled"));
    let followed = follower.wait_with_output().unwrap();
    let followed_text = succeeded(&followed);
    assert!(
        followed_text.contains("queued → cancelled"),
        "{followed_text}"
    );

    let again = run(&["task", "cancel", &id]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("cannot cancel a task that is cancelled"),
        "{}",
        stderr(&again)
    );
    let logs = succeeded(&run(&["task", "logs", &id]));
    assert_eq!(logs.lines().count(), 2, "{logs}");

    let set = deft(
        &server,
        &data,
        &["secret", "set", "NPM_TOKEN"],
        Some("s3cr3t\n"),
    );
    succeeded(&set);
    assert_eq!(succeeded(&run(&["secret", "list"])).trim(), "NPM_TOKEN");
    succeeded(&run(&["secret", "rm", "NPM_TOKEN"]));
    assert_eq!(succeeded(&run(&["secret", "list"])).trim(), "");

    succeeded(&run(&["env", "set", "RUST_LOG", "debug"]));
    assert_eq!(succeeded(&run(&["env", "list"])).trim(), "RUST_LOG=debug");
    succeeded(&run(&["env", "rm", "RUST_LOG"]));
    let missing = run(&["env", "rm", "RUST_LOG"]);
    assert!(stderr(&missing).contains("no environment variable named `RUST_LOG`"));

    let network = succeeded(&run(&[
        "network",
        "set",
        "custom",
        "--allow",
        "api.example.com,.example.org",
    ]));
    assert!(
        network.contains("allowed: api.example.com, .example.org"),
        "{network}"
    );
    let bad = run(&["network", "set", "custom", "--allow", "https://example.com"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("network.allow[0]") && stderr(&bad).contains("has a scheme"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn accounts_and_tokens_are_made_on_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let local = |args: &[&str]| {
        Command::new(DEFT)
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap()
    };
    succeeded(&local(&["user", "create", "ada"]));
    let duplicate = local(&["user", "create", "ada"]);
    assert!(
        stderr(&duplicate).contains("a user named `ada` already exists"),
        "{}",
        stderr(&duplicate)
    );
    let output = succeeded(&local(&["token", "create", "--user", "ada"]));
    let token = output.lines().last().unwrap().trim().to_owned();
    let unknown = local(&["token", "create", "--user", "nobody"]);
    assert!(
        stderr(&unknown).contains("deft user create nobody"),
        "{}",
        stderr(&unknown)
    );

    // The web app's password comes on standard input, never as an argument.
    let passwd = |password: &str| {
        let mut child = Command::new(DEFT)
            .args(["user", "passwd", "ada", "--data-dir"])
            .arg(&data)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let short = passwd("hunter2");
    assert!(!short.status.success());
    assert!(
        stderr(&short).contains("password") && stderr(&short).contains("at least 12 characters"),
        "{}",
        stderr(&short)
    );
    succeeded(&passwd("correct horse battery"));

    let server = Server::start(&data);
    let me: serde_json::Value = http()
        .get(format!("{}/api/v1/me", server.url))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        (me["name"].as_str(), me["is_admin"].as_bool()),
        (Some("ada"), Some(false))
    );
    assert!(
        !data.join("admin-token").exists(),
        "a data dir that has users gets no new admin"
    );
}

#[test]
fn a_worker_needs_postgresql() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(DEFT)
        .args(["worker", "--data-dir"])
        .arg(dir.path())
        .env_remove("DEFT_DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("`deft worker` needs `--database-url postgres://…`"),
        "{}",
        stderr(&output)
    );
    let sqlite = format!("sqlite://{}/x.db?mode=rwc", dir.path().display());
    let output = Command::new(DEFT)
        .args(["worker", "--database-url", &sqlite, "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        stderr(&output).contains("`deft serve --workers N` runs the workers"),
        "{}",
        stderr(&output)
    );
}

/// `deft doctor` with no model settings from the developer's own environment.
fn doctor(data_dir: &Path) -> Command {
    let mut command = Command::new(DEFT);
    command
        .args(["doctor", "--data-dir"])
        .arg(data_dir)
        .env_remove("DEFT_DATABASE_URL")
        .env_remove("DEFT_CONFIG");
    for name in [
        "DEFT_MODEL",
        "DEFT_MODEL_BASE_URL",
        "DEFT_MODEL_API_KEY",
        "ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
    ] {
        command.env_remove(name);
    }
    // Nothing listens here, so the Ollama probe finds nothing.
    command.env("DEFT_OLLAMA_URL", "http://127.0.0.1:9");
    command
}

#[test]
fn doctor_checks_the_machine_and_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let report = succeeded(&doctor(dir.path()).output().unwrap());
    // As root, tasks run as the dedicated sandbox user, which the report names.
    let sandbox = "ok    sandbox     bubblewrap";
    if rustix::process::geteuid().is_root() {
        assert!(report.contains("tasks run as host uid"), "{report}");
    }
    for line in [
        "ok    git",
        sandbox,
        "ok    database    Sqlite database answers",
        "ok    workspaces  0 MiB in 0 tasks' workspaces",
        "warn  model       no model is configured; set DEFT_MODEL=PROVIDER/NAME",
        "warn  web search  not configured: the agent has no web_search or web_fetch; set `[web_search] provider",
    ] {
        assert!(report.contains(line), "{line:?} missing from:\n{report}");
    }
    // A provider without what it needs is named with the key to set.
    std::fs::write(
        dir.path().join("config.toml"),
        "[web_search]\nprovider = \"brave\"\n",
    )
    .unwrap();
    let report = stdout(&doctor(dir.path()).output().unwrap());
    assert!(
        report.contains("[web_search]") && report.contains("needs api_key"),
        "{report}"
    );
    let bad = doctor(dir.path())
        .args(["--database-url", "mysql://nope"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(stdout(&bad).contains("FAIL  database"), "{}", stdout(&bad));
}

#[test]
fn an_unreachable_server_is_reported_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(DEFT)
        .args([
            "task",
            "list",
            "--server",
            "http://127.0.0.1:9",
            "--token",
            "deft_x",
        ])
        .env("DEFT_HOME", dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("cannot reach the deft server at http://127.0.0.1:9"),
        "{}",
        stderr(&output)
    );
    assert!(stderr(&output).contains("deft serve"));
}

/// `deft doctor` against the scripted model server: which model, why, and whether it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_says_which_model_and_whether_it_answers() {
    use deft_testkit::model_server::{ScriptedModel, Step, Turn};
    let dir = tempfile::tempdir().unwrap();
    let server = ScriptedModel::start(vec![Step::Reply(Turn::text("ok"))]).await;
    let run = |key: &'static str| {
        let mut command = tokio::process::Command::from(doctor(dir.path()));
        command
            .env("DEFT_MODEL", "anthropic/scripted-model")
            .env("DEFT_MODEL_BASE_URL", &server.url)
            .env("DEFT_MODEL_API_KEY", key);
        async move { command.output().await.unwrap() }
    };
    let output = run("test-key").await;
    let report = succeeded(&output);
    let line = format!(
        "ok    model       anthropic/scripted-model (because DEFT_MODEL) at {} answers",
        server.url
    );
    assert!(report.contains(&line), "{line:?} missing from:\n{report}");

    let output = run("wrong-key-value").await;
    assert_eq!(output.status.code(), Some(1));
    let report = stdout(&output);
    assert!(
        report.contains("FAIL  model       anthropic/scripted-model (because DEFT_MODEL)"),
        "{report}"
    );
    assert!(
        report.contains("refused the API key")
            && report.contains("set DEFT_MODEL_API_KEY to a valid key"),
        "{report}"
    );
    assert!(
        !report.contains("wrong-key-value") && !stderr(&output).contains("wrong-key-value"),
        "the key must never be printed"
    );

    // Nothing but an Ollama server: deft finds it and says so.
    server.set_ollama_models(&["qwen2.5-coder:7b"]);
    server.expect_api_key(None);
    server.push(Step::Reply(Turn::text("ok")));
    let mut command = tokio::process::Command::from(doctor(dir.path()));
    command.env("DEFT_OLLAMA_URL", &server.url);
    let report = succeeded(&command.output().await.unwrap());
    let line = format!(
        "ok    model       openai-compatible/qwen2.5-coder:7b (because an Ollama server answers at {0}) at {0}/v1 answers",
        server.url
    );
    assert!(report.contains(&line), "{line:?} missing from:\n{report}");
}

#[test]
fn a_bad_model_setting_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let output = doctor(dir.path())
        .env("DEFT_MODEL", "claude")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("FAIL  model       DEFT_MODEL: `claude` is not PROVIDER/NAME"),
        "{}",
        stdout(&output)
    );
    std::fs::write(dir.path().join("config.toml"), "[limit]\ntask_tokens = 1\n").unwrap();
    let output = doctor(dir.path()).output().unwrap();
    assert!(
        stdout(&output).contains("unknown setting `limit`"),
        "{}",
        stdout(&output)
    );
}

/// The quick tour's first command, on a data dir no `deft serve` has made: it runs, on the
/// defaults, and says so; a user named outright must exist.
#[test]
fn sandbox_run_works_on_a_fresh_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let output = Command::new(DEFT)
        .args(["sandbox", "run", "--data-dir"])
        .arg(&data)
        .args(["--", "sh", "-c", "id -un; echo $HOME"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "deft\n/home/deft\n");
    assert!(
        stderr(&output)
            .contains("no user yet on this data dir: no env vars or secrets, network connections"),
        "{}",
        stderr(&output)
    );
    let named = Command::new(DEFT)
        .args(["sandbox", "run", "--user", "ada", "--data-dir"])
        .arg(&data)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(named.status.code(), Some(1));
    assert!(
        stderr(&named).contains("no user named `ada`; `deft user create ada` makes one"),
        "{}",
        stderr(&named)
    );
}

#[test]
fn sandbox_run_runs_a_command_as_a_task_would() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = |args: &[&str]| {
        Command::new(DEFT)
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap()
    };
    succeeded(&run(&["user", "create", "admin", "--admin"]));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let key = deft_store::MasterKey::load(None, &data).unwrap();
        let store = deft_store::Store::open_data_dir(&data, key).await.unwrap();
        let admin = store.user_by_name("admin").await.unwrap();
        store
            .put_secret(&admin.id, "API_KEY", "sk-cli-7a6b5c4d3e")
            .await
            .unwrap();
        store.close().await;
    });
    let output = Command::new(DEFT)
        .args(["sandbox", "run", "--data-dir"])
        .arg(&data)
        .args(["--", "sh", "-c", "echo key=$API_KEY; id -u; exit 3"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert_eq!(stdout(&output), "key=[secret:API_KEY]\n1000\n");
    let denied = Command::new(DEFT)
        .args([
            "sandbox",
            "run",
            "--network",
            "custom",
            "--allow",
            ".example.com",
            "--data-dir",
        ])
        .arg(&data)
        .args([
            "--",
            "curl",
            "-sS",
            "--max-time",
            "5",
            "https://denied.test/",
        ])
        .output()
        .unwrap();
    assert_ne!(denied.status.code(), Some(0));
    assert!(
        stderr(&denied).contains("deft: network denied denied.test:443"),
        "{}",
        stderr(&denied)
    );
}

#[test]
fn a_sandbox_dies_with_deft() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    succeeded(
        &Command::new(DEFT)
            .args(["user", "create", "admin", "--admin", "--data-dir"])
            .arg(&data)
            .output()
            .unwrap(),
    );
    let mut deft = Command::new(DEFT)
        .args(["sandbox", "run", "--data-dir"])
        .arg(&data)
        .args(["--", "sh", "-c", "sleep 4567 & sleep 4568"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let running = || {
        let found = Command::new("pgrep")
            // The sleeps themselves: deft's and bwrap's command lines mention them too.
            .args(["-f", "^sleep 456[78]$"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&found.stdout).lines().count()
    };
    let started = std::time::Instant::now();
    while running() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the sandbox never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    deft.kill().unwrap();
    let _ = deft.wait();
    let killed = std::time::Instant::now();
    while running() > 0 {
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "the sandbox outlived deft"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_sandbox_still_starting_dies_with_deft() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    succeeded(
        &Command::new(DEFT)
            .args(["user", "create", "admin", "--admin", "--data-dir"])
            .arg(&data)
            .output()
            .unwrap(),
    );
    for delay in [5, 15, 30, 60] {
        let mut deft = Command::new(DEFT)
            .args(["sandbox", "run", "--data-dir"])
            .arg(&data)
            .args(["--", "sh", "-c", "sleep 4577 & sleep 4578"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        deft.kill().unwrap();
        let _ = deft.wait();
        std::thread::sleep(Duration::from_millis(1500));
        let found = Command::new("pgrep")
            .args(["-f", "^sleep 457[78]$"])
            .output()
            .unwrap();
        assert!(
            found.stdout.is_empty(),
            "killed after {delay} ms, the sandbox lived on: {}",
            String::from_utf8_lossy(&found.stdout)
        );
    }
}
