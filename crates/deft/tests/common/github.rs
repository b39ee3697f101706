//! What the GitHub tests share: the stand-in with an App key made by `openssl` and a bare
//! repository it serves, `deft serve` connected to it as the App, deliveries built from the
//! real payload examples and signed as GitHub signs them, and waits on what follows.

#![allow(
    dead_code,
    reason = "each GitHub test file uses its own part of these helpers"
)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use deft_testkit::github_server::{GithubStandIn, fixture};
use deft_testkit::model_server::{ScriptedModel, Step, Turn};
use serde_json::{Value, json};

use super::common::{self, Server, call, sh, start_with_env, user_with_token};

pub const REPO: &str = "octo-org/widgets";
pub const SECRET: &str = "webhook-secret-for-tests";
pub const APP_ID: u64 = 4242;
pub const INSTALLATION: u64 = 77;
/// The App's OAuth client, as deft and the stand-in know it.
pub const CLIENT_ID: &str = "Iv1.deft-tests";
pub const CLIENT_SECRET: &str = "oauth-client-secret-for-tests";

/// A 2048-bit RSA key pair made now: (private PEM path, public PEM).
pub fn app_key(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let private = dir.join("app.pem");
    let public = dir.join("app.pub.pem");
    sh(
        dir,
        &format!(
            "openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out {} && openssl rsa -in {} -pubout -out {} 2>/dev/null",
            private.display(),
            private.display(),
            public.display()
        ),
    );
    (private, std::fs::read(public).unwrap())
}

/// A bare repository with one commit on `main`, served over git's HTTP protocol.
pub fn bare_repo(dir: &Path) -> std::path::PathBuf {
    let work = dir.join("widgets-work");
    std::fs::create_dir_all(&work).unwrap();
    sh(
        &work,
        "git init -q -b main && echo '#!/bin/sh' > test.sh && echo 'test -s greeting.txt' >> test.sh && chmod +x test.sh && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init",
    );
    let bare = dir.join("hub").join("widgets.git");
    std::fs::create_dir_all(bare.parent().unwrap()).unwrap();
    sh(
        dir,
        &format!(
            "git clone -q --bare {} {} && git -C {} config http.receivepack true",
            work.display(),
            bare.display(),
            bare.display()
        ),
    );
    bare
}

/// `deft serve` connected to the stand-in as the App, with ada linked to @octocat and mallory
/// to @mallory; their API tokens.
pub fn serve(
    data: &Path,
    model: &ScriptedModel,
    github: &GithubStandIn,
    key_path: &Path,
    workers: usize,
) -> (Server, String, String) {
    let key = key_path.display().to_string();
    let app_id = APP_ID.to_string();
    let server = start_with_env(
        data,
        model,
        workers,
        &[
            ("DEFT_GITHUB_API_URL", &github.url),
            ("DEFT_GITHUB_APP_ID", &app_id),
            ("DEFT_GITHUB_PRIVATE_KEY_PATH", &key),
            ("DEFT_GITHUB_WEBHOOK_SECRET", SECRET),
            ("DEFT_GITHUB_CLIENT_ID", CLIENT_ID),
            ("DEFT_GITHUB_CLIENT_SECRET", CLIENT_SECRET),
        ],
    );
    let ada = user_with_token(data, "ada");
    let mallory = user_with_token(data, "mallory");
    for (name, login) in [("ada", "octocat"), ("mallory", "mallory")] {
        let linked = Command::new(common::DEFT)
            .args(["user", "github", name, login, "--data-dir"])
            .arg(data)
            .output()
            .unwrap();
        assert!(
            linked.status.success(),
            "{}",
            String::from_utf8_lossy(&linked.stderr)
        );
    }
    (server, ada, mallory)
}

/// Sends a delivery the way GitHub does; the answer's status and body.
pub async fn deliver(
    server: &Server,
    event: &str,
    id: &str,
    payload: &Value,
    secret: &str,
) -> (u16, Value) {
    let body = serde_json::to_vec(payload).unwrap();
    let signature = deft_github::webhook::sign(secret.as_bytes(), &body);
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}/webhooks/github", server.url))
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", id)
        .header("x-hub-signature-256", signature)
        .header("user-agent", "GitHub-Hookshot/044aadd")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The real example, pointed at our repository and sender.
pub fn patched(event: &str, file: &str, sender: &str) -> Value {
    let mut payload = fixture(event, file);
    payload["repository"]["full_name"] = json!(REPO);
    payload["repository"]["name"] = json!("widgets");
    payload["repository"]["owner"]["login"] = json!("octo-org");
    payload["sender"]["login"] = json!(sender);
    payload["installation"] = json!({"id": INSTALLATION, "node_id": "MDIzOkludGVncmF0aW9uNzc="});
    payload
}

pub fn labeled(number: u64, title: &str, body: &str, sender: &str) -> Value {
    let mut payload = patched("issues", "labeled.payload.json", sender);
    payload["label"]["name"] = json!("deft");
    payload["issue"]["number"] = json!(number);
    payload["issue"]["title"] = json!(title);
    payload["issue"]["body"] = json!(body);
    payload["issue"]["user"]["login"] = json!("reporter");
    payload
}

pub fn git_log(bare: &Path, range: &str) -> String {
    sh(bare, &format!("git log --format=%H%n%B%n--- {range}"))
}

pub async fn until<F: Fn() -> bool>(what: &str, done: F) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} never happened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn tasks_of(server: &Server, token: &str) -> Vec<Value> {
    server
        .call_as(token, reqwest::Method::GET, "/tasks", None)
        .await["tasks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until the branch on the stand-in holds `commits` commits over `main`: the task went
/// back to work and pushed (it may pass through `queued` faster than a poll sees).
pub async fn until_pushed(bare: &Path, branch: &str, commits: usize) {
    let started = Instant::now();
    loop {
        let count = sh(bare, &format!("git rev-list --count main..{branch}"));
        if count.trim() == commits.to_string() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the branch has {count} commits, not {commits}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn round(plan: &str, edit: Step) -> Vec<Step> {
    vec![
        call("p", "submit_plan", plan),
        edit,
        call("f", "finish", r#"{"summary": "Greeting updated"}"#),
        Step::Reply(Turn::text(
            r#"{"verdict": "pass", "checked": ["the diff meets each criterion"]}"#,
        )),
    ]
}

/// The first task of the user with `token`, once the delivery that makes it was acted on.
pub async fn first_task(server: &Server, token: &str) -> String {
    let started = Instant::now();
    loop {
        if let Some(task) = tasks_of(server, token).await.first() {
            return task["id"].as_str().unwrap().to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no task was made"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A comment by `sender` on issue (or pull request) `number`, as GitHub delivers it.
pub fn comment_on(number: u64, sender: &str, body: &str, pull_url: Option<&str>) -> Value {
    let mut payload = patched("issue_comment", "created.payload.json", sender);
    payload["issue"]["number"] = json!(number);
    payload["issue"]["user"]["login"] = json!("reporter");
    payload["comment"]["body"] = json!(body);
    payload["comment"]["id"] = json!(700_000 + number);
    match pull_url {
        Some(url) => {
            payload["issue"]["pull_request"] = json!({"html_url": url});
            payload["issue"]["html_url"] = json!(url);
        }
        None => {
            payload["issue"]
                .as_object_mut()
                .unwrap()
                .remove("pull_request");
        }
    }
    payload
}

/// The owner's messages in a task's log: `(kind, message)`.
pub async fn messages(server: &Server, token: &str, id: &str) -> Vec<(String, String)> {
    let events = server
        .call_as(
            token,
            reqwest::Method::GET,
            &format!("/tasks/{id}/events"),
            None,
        )
        .await;
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "user_message")
        .map(|e| {
            (
                e["data"]["kind"].as_str().unwrap_or_default().to_owned(),
                e["data"]["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The App uninstalled from the repository, as GitHub delivers it.
pub fn uninstalled() -> Value {
    let mut payload = fixture("installation", "deleted.payload.json");
    payload["installation"]["id"] = json!(INSTALLATION);
    payload["repositories"] =
        json!([{"id": 1, "name": "widgets", "full_name": REPO, "private": false}]);
    payload
}

/// A task's whole log as text, to search.
pub async fn events_text(server: &Server, token: &str, id: &str) -> String {
    let path = format!("/tasks/{id}/events");
    server
        .call_as(token, reqwest::Method::GET, &path, None)
        .await
        .to_string()
}
