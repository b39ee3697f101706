//! The user's MCP servers in a real task: the reference server `mcp-server-everything` (from
//! npm, installed by `scripts/test`) started inside the task's bubblewrap sandbox, its tools
//! offered to the scripted model and called through them; a server that does not exist is
//! left out and the task says so.

mod common;

use common::{call, sh, start};
use deft_testkit::model_server::{ScriptedModel, Step, Turn};
use serde_json::json;

const SECRET: &str = "s3cret-mcp-probe-value";

/// A repository with one commit, for the task to work in.
fn notes_repo(dir: &std::path::Path) -> std::path::PathBuf {
    let repo = dir.join("notes");
    std::fs::create_dir(&repo).unwrap();
    sh(
        &repo,
        "git init -q -b main && echo notes > README && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init",
    );
    repo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_servers_tools_run_in_the_sandbox_with_the_users_secret_and_a_missing_server_is_skipped()
 {
    let dir = tempfile::tempdir().unwrap();
    let repo = notes_repo(dir.path());
    let plan = r#"{"requirements": ["a note"], "acceptance_criteria": ["NOTE exists"], "steps": ["Write NOTE"]}"#;
    let model = ScriptedModel::start(vec![
        call("m1", "mcp__everything__get-env", "{}"),
        call("p1", "submit_plan", plan),
        call(
            "m2",
            "mcp__everything__echo",
            r#"{"message": "hello from deft"}"#,
        ),
        call(
            "e1",
            "str_replace_based_edit_tool",
            r#"{"command": "create", "path": "notes/NOTE", "file_text": "hello\n"}"#,
        ),
        call("f1", "finish", r#"{"summary": "Wrote NOTE"}"#),
        Step::Reply(Turn::text(
            r#"{"verdict": "pass", "checked": ["the diff meets each criterion"]}"#,
        )),
    ])
    .await;
    let server = start(&dir.path().join("data"), &model);
    server
        .call(
            reqwest::Method::PUT,
            "/secrets/PROBE_KEY",
            Some(json!({"value": SECRET})),
        )
        .await;
    let saved = server
        .call(
            reqwest::Method::PUT,
            "/settings/environment",
            Some(json!({"mcp": {"mcpServers": {
                "everything": {"command": "mcp-server-everything", "args": [], "env": {"PROBE_TOKEN": "${PROBE_KEY}"}},
                "ghost": {"command": "no-such-mcp-server", "args": ["--stdio"]}
            }}})),
        )
        .await;
    assert!(
        saved["mcp"]["mcpServers"]["everything"].is_object(),
        "{saved}"
    );

    let task = server
        .call(
            reqwest::Method::POST,
            "/tasks",
            Some(json!({"description": "Write a note", "repos": [repo]})),
        )
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    let done = server.until(&id, "completed").await;
    assert_eq!(done["pull_requests"].as_array().unwrap().len(), 1, "{done}");

    let events = server
        .call(reqwest::Method::GET, &format!("/tasks/{id}/events"), None)
        .await;
    let events = events["events"].as_array().unwrap().clone();
    let step = |status: &str, name: &str| {
        events
            .iter()
            .find(|e| {
                e["kind"] == "step"
                    && e["data"]["step"] == "mcp"
                    && e["data"]["status"] == status
                    && e["data"]["server"] == name
            })
            .unwrap_or_else(|| panic!("no `{status}` event for {name}"))
            .clone()
    };
    let running = step("started", "everything");
    let tools = running["data"]["tools"].as_array().unwrap();
    assert!(
        tools.contains(&json!("echo")) && tools.contains(&json!("get-env")),
        "{running}"
    );
    let ghost = step("failed", "ghost");
    let reason = ghost["data"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("`ghost` is not available, and the task goes on without it"),
        "{reason}"
    );

    // The tools ran inside the sandbox: get-env shows the sandbox's environment, with the
    // secret that `${PROBE_KEY}` named, masked.
    let result_of = |call_id: &str| {
        events
            .iter()
            .find(|e| e["kind"] == "tool_result" && e["data"]["id"] == call_id)
            .unwrap_or_else(|| panic!("no result for {call_id}"))["data"]
            .clone()
    };
    let env = result_of("m1");
    let content = env["content"].as_str().unwrap();
    assert_eq!(env["is_error"], false, "{env}");
    assert!(content.contains("PROBE_TOKEN"), "{content}");
    assert!(
        content.contains("[secret:PROBE_KEY]"),
        "the secret reached the server: {content}"
    );
    assert!(
        content.contains("\"HOME\": \"/home/deft\"") || content.contains("/home/deft"),
        "{content}"
    );
    let echo = result_of("m2");
    assert!(
        echo["content"]
            .as_str()
            .unwrap()
            .contains("hello from deft"),
        "{echo}"
    );

    // The model was offered the server's tools, and never saw the secret; nor did the log.
    let first = &model.requests()[0].body;
    let offered: Vec<&str> = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(offered.contains(&"mcp__everything__echo"), "{offered:?}");
    assert!(!offered.iter().any(|name| name.contains("ghost")));
    for request in model.requests() {
        assert!(
            !request.body.to_string().contains(SECRET),
            "the secret reached the model"
        );
    }
    assert!(!serde_json::to_string(&events).unwrap().contains(SECRET));
    assert_eq!(model.violations(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_tool_that_hangs_is_cut_at_its_timeout_and_the_task_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let repo = notes_repo(dir.path());
    let model = ScriptedModel::start(vec![
        call(
            "slow",
            "mcp__everything__trigger-long-running-operation",
            r#"{"duration": 60, "steps": 2}"#,
        ),
        call("q", "ask_user", r#"{"question": "Go on?"}"#),
    ])
    .await;
    let server = common::start_with_env(
        &dir.path().join("data"),
        &model,
        1,
        &[("DEFT_MCP_CALL_TIMEOUT_MS", "1500")],
    );
    server
        .call(
            reqwest::Method::PUT,
            "/settings/environment",
            Some(json!({"mcp": {"mcpServers": {"everything": {"command": "mcp-server-everything"}}}})),
        )
        .await;
    let task = server
        .call(
            reqwest::Method::POST,
            "/tasks",
            Some(json!({"description": "Try the slow tool", "repos": [repo]})),
        )
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    // The cut-off call came back to the model as an error; it asked its question next.
    server.until(&id, "needs_attention").await;
    let events = server
        .call(reqwest::Method::GET, &format!("/tasks/{id}/events"), None)
        .await;
    let result = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "tool_result" && e["data"]["id"] == "slow")
        .expect("the slow call's result")
        .clone();
    assert_eq!(result["data"]["is_error"], true, "{result}");
    assert!(
        result["data"]["content"]
            .as_str()
            .unwrap()
            .contains("did not answer within 1.5 s and was cut off"),
        "{result}"
    );
}

/// A small MCP server over stdio (newline-delimited JSON-RPC, as the protocol's stdio transport
/// is): it offers `add_tool`, which adds a tool `b` and says so with `tools/list_changed`.
const GROWING_SERVER: &str = r#"
import json, sys

tools = [{"name": "add_tool", "description": "Adds the tool b", "inputSchema": {"type": "object", "properties": {}}}]

def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()

for line in sys.stdin:
    request = json.loads(line)
    method, ident = request.get("method"), request.get("id")
    if ident is None:
        continue
    if method == "initialize":
        version = request["params"].get("protocolVersion", "2025-06-18")
        send({"jsonrpc": "2.0", "id": ident, "result": {"protocolVersion": version, "capabilities": {"tools": {"listChanged": True}}, "serverInfo": {"name": "growing", "version": "1"}}})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": ident, "result": {"tools": tools}})
    elif method == "tools/call" and request["params"]["name"] == "add_tool":
        tools.append({"name": "b", "description": "The new tool", "inputSchema": {"type": "object", "properties": {}}})
        send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        send({"jsonrpc": "2.0", "id": ident, "result": {"content": [{"type": "text", "text": "added b"}]}})
    elif method == "tools/call" and request["params"]["name"] == "b":
        send({"jsonrpc": "2.0", "id": ident, "result": {"content": [{"type": "text", "text": "b ran"}]}})
    else:
        send({"jsonrpc": "2.0", "id": ident, "error": {"code": -32601, "message": "no such method"}})
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_adds_a_tool_has_it_offered_at_the_next_turn() {
    let dir = tempfile::tempdir().unwrap();
    let repo = notes_repo(dir.path());
    std::fs::write(repo.join("growing.py"), GROWING_SERVER).unwrap();
    sh(
        &repo,
        "git add -A && git -c user.name=t -c user.email=t@t commit -q -m server",
    );
    let model = ScriptedModel::start(vec![
        call("a", "mcp__growing__add_tool", "{}"),
        call("b", "mcp__growing__b", "{}"),
        call("q", "ask_user", r#"{"question": "Enough?"}"#),
    ])
    .await;
    let server = start(&dir.path().join("data"), &model);
    server
        .call(
            reqwest::Method::PUT,
            "/settings/environment",
            Some(json!({"mcp": {"mcpServers": {"growing": {"command": "python3", "args": ["/workspace/notes/growing.py"]}}}})),
        )
        .await;
    let task = server
        .call(
            reqwest::Method::POST,
            "/tasks",
            Some(json!({"description": "Grow the tools", "repos": [repo]})),
        )
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    server.until(&id, "needs_attention").await;
    let offered = |n: usize| -> Vec<String> {
        model.requests()[n].body["tools"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["name"].as_str().map(str::to_owned))
            .filter(|name| name.starts_with("mcp__"))
            .collect()
    };
    assert_eq!(offered(0), ["mcp__growing__add_tool"]);
    assert_eq!(offered(1), ["mcp__growing__add_tool", "mcp__growing__b"]);
    let events = server
        .call(reqwest::Method::GET, &format!("/tasks/{id}/events"), None)
        .await;
    let ran = events["events"].as_array().unwrap().iter().any(|e| {
        e["kind"] == "tool_result" && e["data"]["id"] == "b" && e["data"]["content"] == "b ran"
    });
    assert!(ran, "{events}");
}
