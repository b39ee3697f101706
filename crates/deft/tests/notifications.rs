//! Notifications from a real `deft serve`: a task that asks and then completes tells its
//! owner's webhook (signed, checked here with our own HMAC) and e-mail (an SMTP sink), set
//! through the API; the settings page sets a webhook and e-mail, refuses bad values naming the
//! field, and turns on browser notifications, which the task list then shows when a task asks.
//!
//! Screenshots go to `target/web-screenshots/settings-notifications-*.png`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::browser::{Browser, DESKTOP, PHONE, greeter_repo, set_password, sign_in_with_password};
use common::greeter::greeting_task;
use common::{Server, call, start_with_env};
use deft_testkit::model_server::{ScriptedModel, Step};
use deft_testkit::smtp_sink::SmtpSink;
use deft_testkit::webhook_sink::{Received, WebhookSink};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const PUBLIC: &str = "https://deft.example.com";
const WAIT: Duration = Duration::from_secs(30);

/// A question, then (after the answer) a plan, an edit, the finish and a passing review.
fn asks_then_completes() -> Vec<Step> {
    let mut script = vec![call("q", "ask_user", r#"{"question": "Which language?"}"#)];
    script.extend(greeting_task());
    script
}

/// `deft serve` with a config file: `[notifications]` (private targets allowed when asked, for
/// receivers on 127.0.0.1) and, with a sink, `[smtp]` in the clear.
fn serve(
    dir: &Path,
    model: &ScriptedModel,
    allow_private: bool,
    smtp: Option<&SmtpSink>,
) -> Server {
    let mut config = format!(
        "[notifications]\npublic_url = \"{PUBLIC}\"\nallow_private_targets = {allow_private}\n"
    );
    if let Some(sink) = smtp {
        config.push_str(&format!(
            "[smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"deft <deft@example.com>\"\n",
            sink.address.port()
        ));
    }
    let path = dir.join("deft.toml");
    std::fs::write(&path, config).unwrap();
    let data = dir.join("data");
    start_with_env(&data, model, 1, &[("DEFT_CONFIG", path.to_str().unwrap())])
}

/// Checks the signature as a receiver would: HMAC-SHA256 of the raw body under the secret.
fn verify(request: &Received, secret: &str) {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&request.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(
        request.header("x-deft-signature-256"),
        Some(expected),
        "the signature of {:?}",
        request.json()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_asks_and_completes_tells_the_webhook_and_the_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeter_repo(dir.path());
    let hooks = WebhookSink::start().await;
    let mail = SmtpSink::start().await;
    let model = ScriptedModel::start(asks_then_completes()).await;
    let server = serve(dir.path(), &model, true, Some(&mail));

    // Settings through the API; the secret deft makes is in this answer only.
    let put = server
        .call(
            reqwest::Method::PUT,
            "/settings/notifications",
            Some(json!({
                "webhook": {"url": hooks.url("/deft"), "format": "json"},
                "email": {"address": "admin@example.com", "enabled": true},
            })),
        )
        .await;
    let secret = put["webhook"]["secret"]
        .as_str()
        .unwrap_or_else(|| panic!("{put}"))
        .to_owned();
    assert_eq!(secret.len(), 64, "{put}");
    let shown = server
        .call(reqwest::Method::GET, "/settings/notifications", None)
        .await;
    assert!(
        !shown.to_string().contains(&secret),
        "the secret is shown once: {shown}"
    );
    assert_eq!(shown["webhook"]["url"], hooks.url("/deft"));
    assert_eq!(shown["email"]["available"], true);

    let id = server.create_task("Add a greeting file", &repo).await;
    server.until(&id, "needs_attention").await;
    let asked = hooks.wait_for(1, WAIT).await;
    assert_eq!(asked.len(), 1);
    verify(&asked[0], &secret);
    let body = asked[0].json();
    assert_eq!(body["event"], "task.asked");
    assert_eq!(body["task_id"], id.as_str());
    assert_eq!(body["title"], "Add a greeting file");
    assert_eq!(body["status"], "needs_attention");
    assert_eq!(body["reason"], "Which language?");
    assert_eq!(body["url"], format!("{PUBLIC}/tasks/{id}"));
    let mails = mail.wait_for(1, WAIT).await;
    assert_eq!(mails.len(), 1, "violations: {:?}", mail.violations());
    assert_eq!(mails[0].to, ["admin@example.com"]);
    assert_eq!(
        mails[0].header("Subject").as_deref(),
        Some("[deft] Asks: Add a greeting file")
    );
    assert!(
        mails[0].text().contains(&format!("{PUBLIC}/tasks/{id}")),
        "{}",
        mails[0].data
    );

    server
        .call(
            reqwest::Method::POST,
            &format!("/tasks/{id}/answer"),
            Some(json!({"message": "English"})),
        )
        .await;
    server.until(&id, "completed").await;
    let all = hooks.wait_for(2, WAIT).await;
    assert_eq!(all.len(), 2);
    verify(&all[1], &secret);
    assert_eq!(all[1].json()["event"], "task.completed");
    assert_eq!(all[1].json()["status"], "completed");
    let mails = mail.wait_for(2, WAIT).await;
    assert_eq!(
        mails[1].header("Subject").as_deref(),
        Some("[deft] Completed: Add a greeting file")
    );
    // Both deliveries are recorded for the settings.
    let shown = until_delivered(&server, "task.completed").await;
    assert_eq!(shown["webhook"]["last_delivery"]["ok"], true, "{shown}");
    assert_eq!(shown["webhook"]["last_delivery"]["detail"], "200");
    assert_eq!(shown["email"]["last_delivery"]["ok"], true, "{shown}");
    assert!(mail.violations().is_empty(), "{:?}", mail.violations());
}

async fn until_delivered(server: &Server, event: &str) -> Value {
    let started = std::time::Instant::now();
    loop {
        let shown = server
            .call(reqwest::Method::GET, "/settings/notifications", None)
            .await;
        if shown["webhook"]["last_delivery"]["event"] == event
            && shown["email"]["last_delivery"]["event"] == event
        {
            return shown;
        }
        assert!(started.elapsed() < WAIT, "no delivery of {event}: {shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_naming_the_field_and_this_machine_is_refused_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::start(Vec::new()).await;
    // No `allow_private_targets`, no `[smtp]`: the operator's defaults.
    let server = serve(dir.path(), &model, false, None);
    let refused = |body: Value| {
        let server = &server;
        async move {
            server
                .call(reqwest::Method::PUT, "/settings/notifications", Some(body))
                .await
        }
    };
    let check = |answer: &Value, field: &str, words: &str| {
        assert_eq!(answer["error"]["code"], "invalid_input", "{answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{message}");
    };
    let answer = refused(json!({"webhook": {"url": "http://127.0.0.1:9/hook"}})).await;
    check(&answer, "webhook.url", "allow_private_targets");
    let answer = refused(json!({"webhook": {"url": "http://169.254.169.254/latest"}})).await;
    check(&answer, "webhook.url", "public addresses only");
    let answer = refused(json!({"webhook": {"url": "hooks.example.com"}})).await;
    check(&answer, "webhook.url", "such as https://");
    let answer =
        refused(json!({"webhook": {"url": "https://hooks.example.com/x", "format": "xml"}})).await;
    check(&answer, "webhook.format", "use `json`");
    let answer =
        refused(json!({"webhook": {"url": "https://hooks.example.com/x", "secret": "short"}}))
            .await;
    check(&answer, "webhook.secret", "use 16 to 256");
    let answer = refused(json!({"email": {"address": "admin@example.com", "enabled": true}})).await;
    check(&answer, "email.enabled", "[smtp]");
    let answer = refused(json!({"email": {"address": "not an address", "enabled": false}})).await;
    check(&answer, "email.address", "name@example.com");
    // A refused webhook stores nothing of the e-mail sent with it.
    let answer = refused(json!({
        "webhook": {"url": "ftp://hooks.example.com"},
        "email": {"address": "admin@example.com", "enabled": false},
    }))
    .await;
    check(&answer, "webhook.url", "uses `ftp:`");
    let shown = server
        .call(reqwest::Method::GET, "/settings/notifications", None)
        .await;
    assert_eq!(shown["webhook"], Value::Null, "{shown}");
    assert_eq!(shown["email"]["address"], Value::Null, "{shown}");
    assert_eq!(shown["email"]["available"], false, "{shown}");
    // A public address is accepted, with a secret of the person's own; `null` removes it.
    let put = refused(json!({"webhook": {"url": "https://hooks.example.com/x", "format": "slack", "secret": "a secret of my own"}})).await;
    assert_eq!(put["webhook"]["format"], "slack", "{put}");
    assert_eq!(
        put["webhook"].get("secret"),
        None,
        "a typed secret is never shown: {put}"
    );
    let put = refused(json!({"webhook": null})).await;
    assert_eq!(put["webhook"], Value::Null, "{put}");
}

/// Screenshots of the notifications section at both widths, each page checked.
async fn capture_section(browser: &Browser, server: &Server) {
    for (size, width) in [(DESKTOP, "desktop"), (PHONE, "phone")] {
        browser.resize(size).await;
        browser.goto(&format!("{}/settings", server.url)).await;
        browser
            .until(
                "document.getElementById('browser-notify-status').textContent.startsWith('On')",
                "the script's drawing",
            )
            .await;
        browser
            .check_page(&format!("settings-notifications ({width})"))
            .await;
        browser
            .js("document.getElementById('notifications').scrollIntoView(); return 1;")
            .await;
        browser
            .screenshot(&format!("settings-notifications-{width}"))
            .await;
    }
    browser.resize(DESKTOP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_settings_set_notifications_and_the_task_list_shows_them_in_the_browser() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeter_repo(dir.path());
    let hooks = WebhookSink::start().await;
    let mail = SmtpSink::start().await;
    let model = ScriptedModel::start(asks_then_completes()).await;
    let server = serve(dir.path(), &model, true, Some(&mail));
    set_password(&dir.path().join("data"), "admin", PASSWORD);
    let browser = Browser::start().await;
    sign_in_with_password(&browser, &server, "admin", PASSWORD).await;
    browser
        .goto(&format!("{}/settings#notifications", server.url))
        .await;

    // A bad URL is refused beside its field, naming it and the fix, and kept as typed; what
    // was typed is text, not markup.
    let typed = r#"javascript:alert(1)"><script>window.ran=1</script>"#;
    browser.fill("#webhook-url", typed).await;
    browser.click("#webhook button[type=submit]").await;
    browser
        .until(
            "document.getElementById('webhook-error')",
            "the webhook's refusal",
        )
        .await;
    let error = browser.text("#webhook-error").await;
    assert!(
        error.starts_with("webhook.url: uses `javascript:`; give an https://"),
        "{error}"
    );
    assert_eq!(
        browser.js("return [document.getElementById('webhook-url').value, window.ran === undefined, location.pathname + location.hash]").await,
        json!([typed, true, "/settings#webhook"])
    );
    assert_eq!(
        browser
            .js("return document.getElementById('webhook-url').getAttribute('aria-invalid')")
            .await,
        json!("true")
    );
    // A good one is saved, and the secret deft made is shown this once.
    browser
        .fill("#webhook-url", &hooks.url("/from-the-form"))
        .await;
    browser.click("#webhook button[type=submit]").await;
    browser
        .until("document.getElementById('new-secret')", "the new secret")
        .await;
    let secret = browser.text("#new-secret").await;
    assert_eq!(secret.len(), 64, "{secret}");
    assert!(
        browser
            .text("#webhook .notice[role=status]")
            .await
            .contains("Copy its secret now")
    );
    browser.goto(&format!("{}/settings", server.url)).await;
    assert!(!browser.exists("#new-secret").await, "shown once");

    // E-mail: a bad address names the field; a good one is saved and turned on.
    browser.fill("#email-address", "admin@").await;
    browser.click("#email-enabled").await;
    browser.click("#email button[type=submit]").await;
    browser
        .until(
            "document.getElementById('email-error')",
            "the e-mail's refusal",
        )
        .await;
    let error = browser.text("#email-error").await;
    assert!(
        error.starts_with("email.address: `admin@` is not an e-mail address"),
        "{error}"
    );
    browser.fill("#email-address", "admin@example.com").await;
    if browser
        .js("return document.getElementById('email-enabled').checked")
        .await
        != json!(true)
    {
        browser.click("#email-enabled").await;
    }
    browser.click("#email button[type=submit]").await;
    browser
        .until("location.search.includes('saved=email')", "saving e-mail")
        .await;

    // Browser notifications: permission granted as a person's click would, then turned on.
    browser
        .cdp(
            "Browser.grantPermissions",
            json!({"permissions": ["notifications"], "origin": server.url}),
        )
        .await;
    assert_eq!(
        browser.text("#browser-notify-status").await,
        "Off in this browser."
    );
    browser.click("#browser-notify").await;
    browser
        .until("document.getElementById('browser-notify-status').textContent.startsWith('On in this browser')", "turning notifications on")
        .await;
    assert_eq!(
        browser
            .js("return document.getElementById('browser-notify').getAttribute('aria-pressed')")
            .await,
        json!("true")
    );
    capture_section(&browser, &server).await;

    // The task list shows a notification when a task starts asking. Notifications cannot be
    // seen headless, so the page's Notification is wrapped to record what it is asked to show.
    browser.goto(&format!("{}/tasks", server.url)).await;
    browser
        .js("window.shown = []; const Real = window.Notification; const Recorded = function (title, options) { window.shown.push([title, options.body]); }; Recorded.permission = Real.permission; Recorded.requestPermission = () => Promise.resolve(Real.permission); window.Notification = Recorded; return Real.permission;")
        .await;
    let title = "Add a <img src=x onerror=alert(1)> greeting";
    let id = server.create_task(title, &repo).await;
    browser
        .until("window.shown.length > 0", "a browser notification")
        .await;
    assert_eq!(
        browser.js("return window.shown").await,
        json!([[format!("deft: {title}"), "Asks: Which language?"]])
    );
    // The same moment reached the webhook saved in the form, signed with the secret shown.
    let received = hooks.wait_for(1, WAIT).await;
    assert_eq!(received[0].path, "/from-the-form");
    verify(&received[0], &secret);
    assert_eq!(received[0].json()["task_id"], id.as_str());
    assert_eq!(mail.wait_for(1, WAIT).await[0].to, ["admin@example.com"]);
    // The settings say how the last deliveries went.
    let started = std::time::Instant::now();
    loop {
        browser.goto(&format!("{}/settings", server.url)).await;
        if browser.exists("#webhook-last").await && browser.exists("#email-last").await {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "no delivery shown in the settings"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let last = browser.text("#webhook-last").await;
    assert!(
        last.starts_with("Last delivery delivered (task.asked): 200"),
        "{last}"
    );
    let last = browser.text("#email-last").await;
    assert!(
        last.starts_with("Last e-mail delivered (task.asked): sent to admin@example.com"),
        "{last}"
    );
    for (size, width) in [(DESKTOP, "desktop"), (PHONE, "phone")] {
        browser.resize(size).await;
        browser.page().refresh().await.unwrap();
        browser
            .check_page(&format!("settings-notifications-delivered ({width})"))
            .await;
        browser
            .js("document.getElementById('webhook-last').scrollIntoView({block: 'center'}); return 1;")
            .await;
        browser
            .screenshot(&format!("settings-notifications-delivered-{width}"))
            .await;
    }
    browser.resize(DESKTOP).await;
    // Turned off in this browser, the next moment shows nothing.
    browser.click("#browser-notify").await;
    browser
        .until("document.getElementById('browser-notify-status').textContent === 'Off in this browser.'", "turning notifications off")
        .await;
    browser.close().await;
}
