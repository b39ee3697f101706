//! Chats found again: the list of a person's chats in a real browser (headless Chromium over
//! WebDriver) against a real `deft serve`, most recently active first, each named by its first
//! message (escaped), with its repositories, its size, a local time and its task.
//!
//! Screenshots (`chats-*`) go to `target/web-screenshots/` at 1280 and 390 px.

mod common;

use common::browser::{Browser, greeter_repo, set_password, sign_in_with_password};
use common::start;
use deft_testkit::model_server::{ScriptedModel, Step, Turn};
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persons_chats_are_listed_most_recent_first_and_open_again() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeter_repo(dir.path());
    let model = ScriptedModel::start(vec![
        Step::Reply(Turn::text("It greets; **nothing else**.")),
        Step::Reply(Turn::text("Yes, a farewell fits beside it.")),
        Step::Reply(Turn::text("Noted.")),
    ])
    .await;
    let data = dir.path().join("data");
    let server = start(&data, &model);
    let post = |path: String, body: serde_json::Value| {
        let server = &server;
        async move { server.call(reqwest::Method::POST, &path, Some(body)).await }
    };
    let older = post("/chats".into(), json!({"repos": [repo]})).await;
    let older = older["id"].as_str().unwrap().to_owned();
    post(
        format!("/chats/{older}/messages"),
        json!({"message": "What does greet.py do? <script>document.title='owned'</script>"}),
    )
    .await;
    let newer = post("/chats".into(), json!({"repos": [repo]})).await;
    let newer = newer["id"].as_str().unwrap().to_owned();
    post(
        format!("/chats/{newer}/messages"),
        json!({"message": "Add a farewell\nwith a second line that is not the title"}),
    )
    .await;
    // The older chat moves again: it is listed above the newer one (and below the one
    // started after that).
    post(
        format!("/chats/{older}/messages"),
        json!({"message": "And its tests?"}),
    )
    .await;
    let empty = post("/chats".into(), json!({"repos": [repo]})).await;
    let empty = empty["id"].as_str().unwrap().to_owned();

    set_password(&data, "admin", PASSWORD);
    let browser = Browser::start().await;
    sign_in_with_password(&browser, &server, "admin", PASSWORD).await;
    browser.goto(&format!("{}/tasks", server.url)).await;
    browser.click("nav a[href='/chats']").await;
    browser
        .until("document.getElementById('chat-list')", "the chat list")
        .await;

    let ids = browser
        .js("return [...document.querySelectorAll('#chat-list li')].map(li => li.id);")
        .await;
    assert_eq!(
        ids,
        json!([
            format!("chat-{empty}"),
            format!("chat-{older}"),
            format!("chat-{newer}")
        ])
    );
    let first = browser.text(&format!("#chat-{older} .title")).await;
    assert_eq!(
        first,
        "What does greet.py do? <script>document.title='owned'</script>"
    );
    assert_eq!(
        browser.js("return document.title;").await,
        json!("Chats · deft"),
        "the message's script never ran"
    );
    let meta = browser.text(&format!("#chat-{older} .meta")).await;
    assert!(
        meta.starts_with("greeter · 4 messages · updated "),
        "{meta}"
    );
    assert!(!meta.contains("UTC"), "the time is the reader's: {meta}");
    assert_eq!(
        browser.text(&format!("#chat-{newer} .title")).await,
        "Add a farewell"
    );
    assert_eq!(
        browser.text(&format!("#chat-{empty} .title")).await,
        "(no message yet)"
    );
    assert_eq!(
        browser
            .js("return document.querySelector(\"nav a[aria-current='page']\").textContent;")
            .await,
        json!("Chats")
    );
    browser.capture("chats").await;

    // A chat opens again from the list, its reply drawn from Markdown, its times local.
    browser.click(&format!("#chat-{older} .title")).await;
    browser
        .until("document.getElementById('messages')", "the chat")
        .await;
    assert_eq!(
        browser.text("#messages .reply strong").await,
        "nothing else"
    );
    let stamp = browser
        .js("return document.querySelector('#messages time').getAttribute('title');")
        .await;
    assert!(stamp.as_str().unwrap().ends_with("UTC)"), "{stamp}");
    browser.goto(&format!("{}/chats", server.url)).await;
    browser.click("#new-chat-link").await;
    browser
        .until("document.getElementById('new-chat')", "the new chat form")
        .await;
    browser.close().await;
}
