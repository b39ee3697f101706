//! Commands that talk to a running server over the HTTP API: tasks, secrets, env vars and the
//! network level. Data goes to stdout (text, or the server's JSON with `--json`).

#![allow(clippy::print_stdout, reason = "these commands print their results")]

use std::io::Read as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use eventsource_stream::Eventsource as _;
use futures_util::StreamExt as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::{EnvCommand, NameArgs, NetworkCommand, SecretCommand, ServerArgs, TaskCommand};
use crate::local;

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    json: bool,
}

impl Client {
    fn new(args: &ServerArgs) -> anyhow::Result<Client> {
        let token = match &args.token {
            Some(token) => token.trim().to_owned(),
            None => {
                let path = local::data_dir(args.data_dir.as_deref())?.join(local::ADMIN_TOKEN_FILE);
                fs_err::read_to_string(&path)
                    .with_context(|| "no token: pass `--token`, set DEFT_TOKEN, or run on the server's machine where `deft serve` wrote admin-token".to_string())?
                    .trim()
                    .to_owned()
            }
        };
        let base = args.server.trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&base).with_context(|| {
            format!(
                "`--server` (or DEFT_SERVER) is `{base}`, not a URL; use e.g. http://127.0.0.1:7878"
            )
        })?;
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        // A proxy from the environment has no business relaying traffic to this machine.
        if matches!(
            url.host_str(),
            Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
        ) {
            builder = builder.no_proxy();
        }
        Ok(Client {
            http: builder.build()?,
            base,
            token,
            json: args.json,
        })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends a request and returns the JSON answer, or the server's error as the error.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut request = self.request(method, path).timeout(Duration::from_secs(30));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|error| self.unreachable(error))?;
        let status = response.status();
        let text = response.text().await?;
        if status.is_success() {
            return Ok(if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text)?
            });
        }
        let envelope: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match envelope["error"]["message"].as_str() {
            Some(message) => bail!(
                "{message} (HTTP {status}, {})",
                envelope["error"]["code"].as_str().unwrap_or("error")
            ),
            None => bail!("the server answered HTTP {status}: {text}"),
        }
    }

    fn unreachable(&self, error: reqwest::Error) -> anyhow::Error {
        anyhow::anyhow!(
            "cannot reach the deft server at {} ({error}); start it with `deft serve`, or pass `--server URL`",
            self.base
        )
    }

    fn print_json(&self, value: &Value) -> bool {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        }
        self.json
    }
}

pub async fn task(command: TaskCommand) -> anyhow::Result<ExitCode> {
    match command {
        TaskCommand::Create {
            description,
            repos,
            approve_plan,
            server,
        } => {
            let client = Client::new(&server)?;
            let body = json!({ "description": description.join(" "), "repos": repos, "approve_plan": approve_plan });
            let task = client.call(Method::POST, "/tasks", Some(body)).await?;
            if !client.print_json(&task) {
                println!("created task, {}:", task["state"].as_str().unwrap_or("?"));
                println!("{}", task["id"].as_str().unwrap_or("?"));
            }
        }
        TaskCommand::List {
            state,
            limit,
            server,
        } => {
            let client = Client::new(&server)?;
            let mut path = format!("/tasks?limit={limit}");
            if let Some(state) = state {
                path.push_str(&format!("&state={state}"));
            }
            let page = client.call(Method::GET, &path, None).await?;
            if !client.print_json(&page) {
                let tasks = page["tasks"].as_array().cloned().unwrap_or_default();
                if tasks.is_empty() {
                    println!("no tasks");
                }
                for task in tasks {
                    println!(
                        "{:36}  {:15}  {}",
                        task["id"].as_str().unwrap_or(""),
                        task["state"].as_str().unwrap_or(""),
                        one_line(task["description"].as_str().unwrap_or(""), 70)
                    );
                }
            }
        }
        TaskCommand::Show { id, server } => {
            let client = Client::new(&server)?;
            let task = client
                .call(Method::GET, &format!("/tasks/{id}"), None)
                .await?;
            if !client.print_json(&task) {
                print_task(&task);
            }
        }
        TaskCommand::Logs {
            id,
            follow,
            after,
            server,
        } => {
            let client = Client::new(&server)?;
            return logs(&client, &id, after, follow).await;
        }
        TaskCommand::Cancel { id, server } => lifecycle(&server, &id, "cancel", None).await?,
        TaskCommand::Answer {
            id,
            message,
            server,
        } => lifecycle(&server, &id, "answer", Some(said(&message))).await?,
        TaskCommand::Approve { id, server } => lifecycle(&server, &id, "approve", None).await?,
        TaskCommand::Feedback {
            id,
            message,
            server,
        } => lifecycle(&server, &id, "feedback", Some(said(&message))).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The body of an answer or feedback: the words given, as one message.
fn said(message: &[String]) -> serde_json::Value {
    json!({ "message": message.join(" ") })
}

async fn lifecycle(
    server: &ServerArgs,
    id: &str,
    action: &str,
    body: Option<Value>,
) -> anyhow::Result<()> {
    let client = Client::new(server)?;
    let task = client
        .call(
            Method::POST,
            &format!("/tasks/{id}/{action}"),
            body.or(Some(json!({}))),
        )
        .await?;
    if !client.print_json(&task) {
        println!(
            "task {} is now {}",
            task["id"].as_str().unwrap_or(id),
            task["state"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

fn print_task(task: &Value) {
    print!("{}", task_text(task));
}

/// `deft task show`'s text for a task as the API gives it.
fn task_text(task: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "task      {}", task["id"].as_str().unwrap_or(""));
    let _ = writeln!(out, "state     {}", task["state"].as_str().unwrap_or(""));
    if let Some(position) = task["queue_position"].as_i64() {
        let _ = writeln!(out, "queue     #{position} of your queued tasks");
    }
    if let Some(attention) = task.get("attention") {
        let _ = writeln!(
            out,
            "waiting   {}: {}",
            attention["kind"].as_str().unwrap_or(""),
            attention["message"].as_str().unwrap_or("")
        );
    }
    let repos: Vec<&str> = task["repos"]
        .as_array()
        .map(|repos| {
            repos
                .iter()
                .map(|r| r["name"].as_str().or(r["id"].as_str()).unwrap_or("?"))
                .collect()
        })
        .unwrap_or_default();
    let _ = writeln!(out, "repos     {}", repos.join(", "));
    let _ = writeln!(
        out,
        "created   {}",
        task["created_at"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        out,
        "updated   {}",
        task["updated_at"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        out,
        "usage     {} input, {} output tokens",
        task["usage"]["input_tokens"].as_i64().unwrap_or(0),
        task["usage"]["output_tokens"].as_i64().unwrap_or(0)
    );
    for pr in task["pull_requests"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "pr        {} ({} ← {}) {}",
            pr["title"].as_str().unwrap_or(""),
            pr["base"].as_str().unwrap_or(""),
            pr["head"].as_str().unwrap_or(""),
            pr["status"].as_str().unwrap_or("")
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "{}", task["description"].as_str().unwrap_or(""));
    out
}

/// The state changes after which following a task's log stops: it is done, or waits for you.
fn ends_follow(event: &Value) -> bool {
    event["kind"] == "state_changed" && is_final_for_follow(event["data"]["to"].as_str())
}

/// Events per page when reading the backlog.
const LOG_PAGE: i64 = 1000;

/// Prints every event after `last`, page by page, moving `last` on. Returns the destination of
/// the last state change printed, if any.
async fn print_backlog(
    client: &Client,
    id: &str,
    last: &mut i64,
) -> anyhow::Result<Option<String>> {
    let mut state = None;
    loop {
        let path = format!("/tasks/{id}/events?after={last}&limit={LOG_PAGE}");
        let page = client.call(Method::GET, &path, None).await?;
        let events = page["events"].as_array().cloned().unwrap_or_default();
        for event in &events {
            print_event(client, event);
            *last = event["seq"].as_i64().unwrap_or(*last);
            if event["kind"] == "state_changed" {
                state = event["data"]["to"].as_str().map(str::to_owned);
            }
        }
        if (events.len() as i64) < LOG_PAGE {
            return Ok(state);
        }
    }
}

fn is_final_for_follow(state: Option<&str>) -> bool {
    matches!(state, Some("completed" | "cancelled" | "needs_attention"))
}

async fn logs(client: &Client, id: &str, after: i64, follow: bool) -> anyhow::Result<ExitCode> {
    let mut last = after;
    let seen = print_backlog(client, id, &mut last).await?;
    if !follow || is_final_for_follow(seen.as_deref()) {
        return Ok(ExitCode::SUCCESS);
    }
    let task = client
        .call(Method::GET, &format!("/tasks/{id}"), None)
        .await?;
    if is_final_for_follow(task["state"].as_str()) {
        // It ended while the backlog was read: print what came after it, then stop.
        print_backlog(client, id, &mut last).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut backoff = Duration::from_millis(250);
    loop {
        let response = client
            .request(Method::GET, &format!("/tasks/{id}/events/stream"))
            .header("Last-Event-ID", last.to_string())
            .send()
            .await;
        match response {
            Ok(response) if response.status().is_success() => {
                backoff = Duration::from_millis(250);
                let mut events = response.bytes_stream().eventsource();
                while let Some(message) = events.next().await {
                    let Ok(message) = message else { break };
                    let event: Value = serde_json::from_str(&message.data)
                        .context("the server sent an event that is not JSON")?;
                    print_event(client, &event);
                    last = event["seq"].as_i64().unwrap_or(last);
                    if ends_follow(&event) {
                        return Ok(ExitCode::SUCCESS);
                    }
                }
            }
            Ok(response) => {
                let status = response.status();
                bail!(
                    "the server refused the event stream: HTTP {status}: {}",
                    response.text().await.unwrap_or_default()
                );
            }
            Err(error) => tracing::warn!(error = %error, "event stream lost; reconnecting"),
        }
        // The stream ended (server restart, network): pick up after the last event printed.
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

fn print_event(client: &Client, event: &Value) {
    if client.json {
        println!("{event}");
        return;
    }
    let data = &event["data"];
    let summary = match event["kind"].as_str() {
        Some("task_created") => one_line(data["description"].as_str().unwrap_or(""), 100),
        Some("state_changed") => {
            let mut line = format!(
                "{} → {}",
                data["from"].as_str().unwrap_or("?"),
                data["to"].as_str().unwrap_or("?")
            );
            if let Some(message) = data["attention"]["message"].as_str() {
                line.push_str(&format!(": {message}"));
            }
            line
        }
        Some("user_message") => format!(
            "{} from {}: {}",
            data["kind"].as_str().unwrap_or("message"),
            data["author"].as_str().unwrap_or("?"),
            one_line(data["message"].as_str().unwrap_or(""), 100)
        ),
        _ => one_line(&data.to_string(), 100),
    };
    println!(
        "#{:<4} {}  {:14} {}",
        event["seq"].as_i64().unwrap_or(0),
        event["at"].as_str().unwrap_or(""),
        event["kind"].as_str().unwrap_or(""),
        summary
    );
}

/// `text` on one line of at most `max` characters, for a listing or a log line.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        format!("{}…", flat.chars().take(max - 1).collect::<String>())
    }
}

pub async fn secret(command: SecretCommand) -> anyhow::Result<ExitCode> {
    match command {
        SecretCommand::Set(NameArgs { name, server }) => {
            let client = Client::new(&server)?;
            let mut value = String::new();
            std::io::stdin()
                .read_to_string(&mut value)
                .context("cannot read the secret's value from standard input")?;
            let value = value
                .strip_suffix('\n')
                .map(|v| v.strip_suffix('\r').unwrap_or(v))
                .unwrap_or(&value);
            let info = client
                .call(
                    Method::PUT,
                    &format!("/secrets/{name}"),
                    Some(json!({ "value": value })),
                )
                .await?;
            if !client.print_json(&info) {
                println!("secret {name} is set");
            }
        }
        SecretCommand::List(server) => {
            let client = Client::new(&server)?;
            let list = client.call(Method::GET, "/secrets", None).await?;
            if !client.print_json(&list) {
                for secret in list["secrets"].as_array().into_iter().flatten() {
                    println!("{}", secret["name"].as_str().unwrap_or(""));
                }
            }
        }
        SecretCommand::Rm(NameArgs { name, server }) => {
            let client = Client::new(&server)?;
            client
                .call(Method::DELETE, &format!("/secrets/{name}"), None)
                .await?;
            println!("secret {name} is deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn env(command: EnvCommand) -> anyhow::Result<ExitCode> {
    // One variable at a time on the server, so two people changing different variables at
    // once do not undo each other.
    let (client, environment) = match &command {
        EnvCommand::Set {
            name,
            value,
            server,
        } => {
            let client = Client::new(server)?;
            let path = format!("/settings/environment/env/{name}");
            let saved = client
                .call(Method::PUT, &path, Some(json!({ "value": value })))
                .await?;
            (client, saved)
        }
        EnvCommand::Rm(NameArgs { name, server }) => {
            let client = Client::new(server)?;
            let path = format!("/settings/environment/env/{name}");
            client
                .call(Method::DELETE, &path, None)
                .await
                .map_err(|error| {
                    if error.to_string().contains("not_found") {
                        anyhow::anyhow!(
                            "no environment variable named `{name}`; see them with `deft env list`"
                        )
                    } else {
                        error
                    }
                })?;
            let saved = client
                .call(Method::GET, "/settings/environment", None)
                .await?;
            (client, saved)
        }
        EnvCommand::List(server) => {
            let client = Client::new(server)?;
            let saved = client
                .call(Method::GET, "/settings/environment", None)
                .await?;
            (client, saved)
        }
        EnvCommand::From {
            repo,
            setting,
            server,
        } => {
            let client = Client::new(server)?;
            let id = repository_id(&client, repo).await?;
            let saved = client
                .call(
                    Method::PUT,
                    &format!("/repos/{id}/environment"),
                    Some(json!({ "environment": setting.join(" ") })),
                )
                .await?;
            if !client.print_json(&saved) {
                println!(
                    "{}: {}",
                    saved["name"].as_str().unwrap_or(""),
                    saved["environment"].as_str().unwrap_or("")
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        EnvCommand::Build { .. } => {
            anyhow::bail!("`deft env build` runs on this machine, not through the server")
        }
    };
    let env = environment["env"].as_object().cloned().unwrap_or_default();
    if !client.print_json(&Value::Object(env.clone())) {
        for (name, value) in &env {
            println!("{name}={}", value.as_str().unwrap_or(""));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The id of the user's repository named by its id, its name or its local path.
async fn repository_id(client: &Client, wanted: &str) -> anyhow::Result<String> {
    let listed = client.call(Method::GET, "/repos", None).await?;
    let path = std::path::Path::new(wanted)
        .canonicalize()
        .ok()
        .map(|path| path.to_string_lossy().into_owned());
    let repos = listed["repos"].as_array().cloned().unwrap_or_default();
    let found = repos.iter().find(|repo| {
        repo["id"] == wanted
            || repo["name"] == wanted
            || repo["location"] == wanted
            || path.as_deref().is_some_and(|path| repo["location"] == path)
    });
    match found.and_then(|repo| repo["id"].as_str()) {
        Some(id) => Ok(id.to_owned()),
        None => anyhow::bail!(
            "no repository of yours is `{wanted}`; give its id, its name, or the path it was registered with (the settings page lists them)"
        ),
    }
}

pub async fn network(command: NetworkCommand) -> anyhow::Result<ExitCode> {
    let NetworkCommand::Set {
        level,
        allow,
        server,
    } = command;
    let client = Client::new(&server)?;
    let allow: Vec<String> = allow
        .into_iter()
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty())
        .collect();
    let saved = client
        .call(
            Method::PUT,
            "/settings/environment",
            Some(json!({ "network": { "level": level, "allow": allow } })),
        )
        .await?;
    if !client.print_json(&saved["network"]) {
        let allow: Vec<&str> = saved["network"]["allow"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "network level: {}",
            saved["network"]["level"].as_str().unwrap_or("?")
        );
        if !allow.is_empty() {
            println!("allowed: {}", allow.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::task_text;

    /// `deft task show` as a person reads it; a change to it shows in review.
    #[test]
    fn task_show_text() {
        let task = serde_json::json!({
            "id": "01a24d00-4827-72b4-85ed-10695cd23499",
            "state": "needs_attention",
            "attention": {"kind": "question", "message": "Which port should the health check use?"},
            "repos": [{"id": "r1", "name": "widgets"}, {"id": "r2"}],
            "created_at": "2026-12-06T20:16:33.837Z",
            "updated_at": "2026-12-06T20:17:02.001Z",
            "usage": {"input_tokens": 1200, "output_tokens": 340},
            "pull_requests": [{"title": "Add a health check", "base": "main", "head": "deft/01a24d00-add-a-health-check", "status": "open"}],
            "description": "Add a health check endpoint",
        });
        insta::assert_snapshot!(task_text(&task));
    }
}
