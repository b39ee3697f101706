//! Web search and page fetch in a task (issue: web search with citations): `deft serve` with a
//! SearXNG-shaped stand-in serving a kept SearXNG payload and a page server on loopback, a
//! scripted model that searches and fetches, the real sandbox and git.

mod common;

use std::net::SocketAddr;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use common::call;
use common::greeter::{create_turn, greeting_repo, plan_turn, review_pass};
use deft_testkit::model_server::{ScriptedModel, Step, Turn};
use serde_json::{Value, json};

/// SearXNG's answer as its JSON API gives it, kept with deft-web's tests.
const SEARXNG_PAYLOAD: &str = include_str!("../../deft-web/tests/payloads/searxng-search.json");

/// The search stand-in and the pages, on one loopback server that stops with the test.
async fn web_server() -> SocketAddr {
    let app = Router::new()
        .route(
            "/search",
            get(|query: axum::extract::RawQuery| async move {
                let query = query.0.unwrap_or_default();
                assert!(query.contains("format=json"), "{query}");
                ([(header::CONTENT_TYPE, "application/json")], SEARXNG_PAYLOAD)
            }),
        )
        .route(
            "/guide",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    "<html><head><title>Greeting guide</title><script>stealTokens()</script></head>\
                     <body><h1>Greetings</h1><p>A greeting file says hello, in lower case.</p></body></html>",
                )
            }),
        )
        .route(
            "/members",
            get(|| async { (StatusCode::UNAUTHORIZED, "sign in first").into_response() }),
        )
        .route(
            "/huge",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain")],
                    "hello ".repeat(5 * 1024 * 1024 / 6),
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

fn web_call(id: &str, name: &str, arguments: Value) -> Step {
    call(id, name, &arguments.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_searches_and_fetches_and_its_pull_request_lists_the_sources() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    let web = web_server().await;
    let page = |path: &str| format!("http://{web}{path}");
    let model = ScriptedModel::start(vec![
        plan_turn(),
        web_call("w1", "web_search", json!({"query": "tokio runtime"})),
        web_call(
            "w2",
            "web_fetch",
            json!({"url": page("/guide"), "query": "greeting"}),
        ),
        web_call("w3", "web_fetch", json!({"url": page("/members")})),
        web_call("w4", "web_fetch", json!({"url": page("/huge")})),
        web_call("w5", "web_fetch", json!({"url": "http://refused.invalid/"})),
        create_turn(),
        Step::Reply(Turn::text(
            "Wrote greeting.txt as the guide says [4], in the spirit of [1].",
        )),
        review_pass(),
    ])
    .await;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("config.toml"),
        format!("[web_search]\nprovider = \"searxng\"\nbase_url = \"http://{web}\"\n"),
    )
    .unwrap();
    let server = common::start(&data, &model);
    // The task's network reaches this machine's loopback page server only because a custom
    // rule names 127.0.0.1.
    let settings = server
        .call(
            reqwest::Method::PUT,
            "/settings/environment",
            Some(json!({"network": {"level": "custom", "allow": ["127.0.0.1"]}})),
        )
        .await;
    assert_eq!(settings["network"]["level"], "custom", "{settings}");
    let task = server
        .call(
            reqwest::Method::POST,
            "/tasks",
            Some(json!({
                "description": "create greeting.txt as the web's greeting guide says",
                "repos": [repo.to_string_lossy()],
            })),
        )
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    let done = server.until(&id, "completed").await;

    // Each call's result, as the next request showed it to the model.
    let requests = model.requests();
    let result_of = |call_id: &str| -> String {
        requests
            .iter()
            .flat_map(|request| {
                request.body["messages"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .flat_map(|message| message["content"].as_array().cloned().unwrap_or_default())
            .find(|content| content["tool_use_id"] == call_id)
            .map(|content| content.to_string())
            .unwrap_or_else(|| panic!("no result for {call_id}"))
    };
    let searched = result_of("w1");
    assert!(
        searched.contains("[1]")
            && searched.contains("https://tokio.rs/")
            && searched.contains("untrusted_web_content"),
        "{searched}"
    );
    let fetched = result_of("w2");
    assert!(
        fetched.contains("in lower case") && !fetched.contains("stealTokens"),
        "{fetched}"
    );
    let behind_login = result_of("w3");
    assert!(
        behind_login.contains("\"is_error\":true") && behind_login.contains("401"),
        "{behind_login}"
    );
    let huge = result_of("w4");
    assert!(
        huge.len() < 64 * 1024,
        "a 5 MB page reached the model whole"
    );
    let refused = result_of("w5");
    assert!(
        refused.contains("no rule of the `custom` level allows refused.invalid"),
        "{refused}"
    );

    // Both tools are in the task's log, and the pull request lists what was cited.
    let events = server
        .call(reqwest::Method::GET, &format!("/tasks/{id}/events"), None)
        .await
        .to_string();
    assert!(
        events.contains("web_search") && events.contains("web_fetch"),
        "{events}"
    );
    // Listed: the page it read, and the result it cited; a result it only saw is not.
    let body = done["pull_requests"][0]["body"]
        .as_str()
        .unwrap_or_default();
    assert!(
        body.contains("## Sources\n1. [Tokio")
            && body.contains(&format!("\n4. [Greeting guide]({})", page("/guide")))
            && !body.contains("docs.rs"),
        "{body}"
    );
}

/// A chat searches and reads the web under the person's network level before it answers, and
/// its reply lists what it read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_searches_the_web_and_its_reply_lists_the_sources() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeting_repo(dir.path());
    let web = web_server().await;
    let guide = format!("http://{web}/guide");
    let model = ScriptedModel::start(vec![
        web_call(
            "w1",
            "web_search",
            json!({"query": "greeting file convention"}),
        ),
        web_call(
            "w2",
            "web_fetch",
            json!({"url": guide, "query": "greeting"}),
        ),
        Step::Reply(Turn::text("A greeting file says hello, in lower case [4].")),
    ])
    .await;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("config.toml"),
        format!("[web_search]\nprovider = \"searxng\"\nbase_url = \"http://{web}\"\n"),
    )
    .unwrap();
    let server = common::start(&data, &model);
    server
        .call(
            reqwest::Method::PUT,
            "/settings/environment",
            Some(json!({"network": {"level": "custom", "allow": ["127.0.0.1"]}})),
        )
        .await;
    let chat = server
        .call(
            reqwest::Method::POST,
            "/chats",
            Some(json!({"repos": [repo.to_string_lossy()]})),
        )
        .await;
    let chat = chat["id"].as_str().unwrap().to_owned();
    let answered = server
        .call(
            reqwest::Method::POST,
            &format!("/chats/{chat}/messages"),
            Some(json!({"message": "What should the greeting file say?"})),
        )
        .await;
    let reply = answered["reply"]["message"].as_str().unwrap_or_default();
    assert!(
        reply.starts_with("A greeting file says hello, in lower case [4].")
            && reply.contains("## Sources")
            && reply.contains(&format!("4. [Greeting guide]({guide})")),
        "{answered}"
    );
    let read = model.requests()[2].body["messages"].to_string();
    assert!(
        read.contains("A greeting file says hello") && !read.contains("stealTokens"),
        "{read}"
    );
}
