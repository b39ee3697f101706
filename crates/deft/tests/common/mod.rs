//! What the tests of `deft serve` share: starting it against the scripted model, calling its
//! API, waiting for a task's state, running shell steps in fixture repositories.

#![allow(
    dead_code,
    reason = "each test file uses its own part of these helpers"
)]

pub mod browser;
pub mod greeter;

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use deft_testkit::model_server::{ScriptedCall, ScriptedModel, Step, Turn};
use serde_json::{Value, json};

pub const DEFT: &str = env!("CARGO_BIN_EXE_deft");

pub struct Server {
    pub child: std::process::Child,
    pub url: String,
    pub token: String,
    /// Lines of the server's standard error that hold a login link, as they come.
    links: std::sync::mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes another user with the CLI and returns their API token.
pub fn user_with_token(data: &Path, name: &str) -> String {
    let made = Command::new(DEFT)
        .args(["user", "create", name, "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(made.status.success());
    token_for(data, name)
}

/// A new API token for `name`, made with the CLI.
pub fn token_for(data: &Path, name: &str) -> String {
    let output = Command::new(DEFT)
        .args(["token", "create", "--user", name, "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap()
        .to_owned()
}

pub fn start(data: &Path, model: &ScriptedModel) -> Server {
    start_with(data, model, 1)
}

pub fn start_with(data: &Path, model: &ScriptedModel, workers: usize) -> Server {
    start_with_env(data, model, workers, &[])
}

/// [`start_with`], with more environment variables for `deft serve`.
pub fn start_with_env(
    data: &Path,
    model: &ScriptedModel,
    workers: usize,
    env: &[(&str, &str)],
) -> Server {
    spawn_serve(data, model, Some(workers), env)
}

/// `deft serve` as a newcomer starts it: no `--workers`, the machine's default.
pub fn start_on_defaults(data: &Path, model: &ScriptedModel, env: &[(&str, &str)]) -> Server {
    spawn_serve(data, model, None, env)
}

fn spawn_serve(
    data: &Path,
    model: &ScriptedModel,
    workers: Option<usize>,
    env: &[(&str, &str)],
) -> Server {
    let mut command = Command::new(DEFT);
    command.arg("serve");
    if let Some(workers) = workers {
        command.args(["--workers", &workers.to_string()]);
    }
    let mut child = command
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env_remove("DEFT_WORKERS")
        .env("DEFT_MODEL", "anthropic/scripted-model")
        .env("DEFT_MODEL_BASE_URL", &model.url)
        .env("DEFT_MODEL_API_KEY", "test-key")
        .env_remove("DEFT_CONFIG")
        // Ordinary users may register repositories from here.
        .env("DEFT_LOCAL_ROOTS", data.parent().unwrap())
        // A stopping deft lets a running step go on this long before cutting it short.
        .env("DEFT_SHUTDOWN_GRACE_MS", "1500")
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("deft serve exited").unwrap();
        if let Some(rest) = line.split("serving the API on ").nth(1) {
            break rest.split("/api/v1").next().unwrap().to_owned();
        }
    };
    let (tell, links) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            // Shown with a failing test's output, which is when it is needed.
            #[allow(clippy::print_stderr, reason = "the server's log, for a failing test")]
            {
                eprintln!("deft serve: {line}");
            }
            if let Some(link) = line
                .split_whitespace()
                .find(|word| word.contains("/login/link/"))
            {
                let _ = tell.send(link.to_owned());
            }
        }
    });
    let token = std::fs::read_to_string(data.join("admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    Server {
        child,
        url,
        token,
        links,
    }
}

impl Server {
    /// The one-time login link the first start printed.
    pub fn login_link(&self) -> String {
        self.links
            .recv_timeout(Duration::from_secs(10))
            .expect("deft serve printed no login link")
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.call_as(&self.token, method, path, body).await
    }

    /// Creates a task on `repo` through the API; its id.
    pub async fn create_task(&self, description: &str, repo: &Path) -> String {
        self.create_task_with(description, repo, json!({})).await
    }

    /// As [`Server::create_task`], with `extra`'s fields added to the request's body.
    pub async fn create_task_with(&self, description: &str, repo: &Path, extra: Value) -> String {
        let mut body = json!({"description": description, "repos": [repo]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let task = self.call(reqwest::Method::POST, "/tasks", Some(body)).await;
        task["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no task: {task}"))
            .to_owned()
    }

    /// Calls the API with another user's token.
    pub async fn call_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut request = client
            .request(method, format!("{}/api/v1{path}", self.url))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap().json().await.unwrap()
    }

    /// Waits for the task to reach `state`.
    pub async fn until(&self, id: &str, state: &str) -> Value {
        self.until_as(&self.token, id, state).await
    }

    /// Waits for another user's task to reach `state`.
    pub async fn until_as(&self, token: &str, id: &str, state: &str) -> Value {
        let started = Instant::now();
        loop {
            let task = self
                .call_as(token, reqwest::Method::GET, &format!("/tasks/{id}"), None)
                .await;
            if task["state"] == state {
                return task;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the task never became {state}: {task}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn sh(dir: &Path, script: &str) -> String {
    let output = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn call(id: &str, name: &str, arguments: &str) -> Step {
    Step::Reply(Turn::calls(vec![ScriptedCall::new(id, name, arguments)]))
}
