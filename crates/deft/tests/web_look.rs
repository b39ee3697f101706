//! How the web app looks and behaves around its content, in a real browser (headless Chromium
//! over WebDriver) against a real `deft serve`: the favicon, dark mode, local and relative
//! times, compressed responses beside live streams, and forms that redirect after posting,
//! keep what was typed, say "Saved" beside the form, ask before deleting, and refuse sizes
//! that would break tasks later.
//!
//! Screenshots (`look-*`) go to `target/web-screenshots/` at 1280 and 390 px.

mod common;

use std::path::Path;
use std::time::Duration;

use common::browser::{Browser, DESKTOP, PHONE, greeter_repo, set_password, sign_in_with_password};
use common::{Server, call, start};
use deft_testkit::model_server::ScriptedModel;
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";

/// A signed-in browser on a fresh `deft serve`.
async fn signed_in(dir: &Path, model: &ScriptedModel) -> (Server, Browser) {
    let data = dir.join("data");
    let server = start(&data, model);
    set_password(&data, "admin", PASSWORD);
    let browser = Browser::start().await;
    sign_in_with_password(&browser, &server, "admin", PASSWORD).await;
    (server, browser)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Screenshots at both widths without reloading (a reload would post a form again).
async fn shots(browser: &Browser, name: &str) {
    for (size, width) in [(DESKTOP, "desktop"), (PHONE, "phone")] {
        browser.resize(size).await;
        browser.screenshot(&format!("{name}-{width}")).await;
    }
    browser.resize(DESKTOP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_names_deft_s_own_svg_icon_which_loads() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::start(vec![]).await;
    let (server, browser) = signed_in(dir.path(), &model).await;
    for path in ["/tasks", "/settings", "/chats/new", "/no-such-page"] {
        browser.goto(&format!("{}{path}", server.url)).await;
        let icon = browser
            .js("const link = document.querySelector('link[rel=icon]'); return link ? link.href : null;")
            .await;
        assert_eq!(
            icon,
            json!(format!("{}/favicon.svg", server.url)),
            "{path} names no icon of its own"
        );
        // The icon is an image the page can draw, from its own origin (the CSP allows no other).
        browser
            .js("window.iconLoaded = null; const image = new Image(); image.onload = () => { window.iconLoaded = image.naturalWidth > 0; }; image.onerror = () => { window.iconLoaded = false; }; image.src = document.querySelector('link[rel=icon]').href; return 1;")
            .await;
        browser
            .until("window.iconLoaded !== null", "the icon to load")
            .await;
        assert_eq!(browser.js("return window.iconLoaded").await, json!(true));
    }
    browser.goto(&format!("{}/tasks", server.url)).await;
    browser.capture("look-favicon-tasks").await;
    // Signed out too, and at the address browsers ask for when a page names none.
    browser.page().delete_all_cookies().await.unwrap();
    browser.goto(&format!("{}/login", server.url)).await;
    assert!(browser.exists("link[rel=icon][href='/favicon.svg']").await);
    for path in ["/favicon.svg", "/favicon.ico"] {
        let response = client()
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "image/svg+xml",
            "{path}"
        );
        assert!(response.text().await.unwrap().starts_with("<svg"));
    }
    browser.close().await;
}

/// WCAG's contrast ratio of two computed colours, in the page.
const CONTRAST: &str = "const lum = (c) => { const [r, g, b] = c.match(/\\d+(\\.\\d+)?/g).slice(0, 3).map(Number).map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; }; const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((m, n) => n - m); return (x + 0.05) / (y + 0.05); }; const bg = (e) => { for (; e; e = e.parentElement) { const c = getComputedStyle(e).backgroundColor; if (c !== 'rgba(0, 0, 0, 0)' && c !== 'transparent') return c; } return 'rgb(255, 255, 255)'; }; const pairs = {};";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dark_mode_follows_the_system_with_readable_contrast() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::start(vec![]).await;
    let (server, browser) = signed_in(dir.path(), &model).await;
    // Something of each kind on the page: a notice, an error, a button, muted text.
    browser.goto(&format!("{}/settings", server.url)).await;
    browser.fill("#env-name", "GREETING").await;
    browser.fill("#env-value", "hello").await;
    browser.click("#env form.grid button[type=submit]").await;
    browser
        .until("document.getElementById('notice')", "saving the variable")
        .await;
    let light = browser
        .js("return getComputedStyle(document.body).backgroundColor")
        .await;
    browser
        .cdp(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
        )
        .await;
    let dark = browser
        .js("return getComputedStyle(document.body).backgroundColor")
        .await;
    assert_ne!(light, dark, "the page ignores a dark system setting");
    let dark_enough = browser
        .js(&format!(
            "{CONTRAST} return lum(getComputedStyle(document.body).backgroundColor) < 0.05;"
        ))
        .await;
    assert_eq!(dark_enough, json!(true), "the dark background is {dark}");
    for (name, css) in [
        ("text", "main h1"),
        ("muted", "#secrets .hint"),
        ("link", ".top nav a"),
        ("notice", "#notice"),
        ("button", "#repos button[type=submit]"),
        ("code", "#env .rows code"),
    ] {
        let ratio = browser
            .js(&format!("{CONTRAST} const e = document.querySelector({css:?}); return ratio(getComputedStyle(e).color, bg(e));"))
            .await
            .as_f64()
            .unwrap();
        assert!(
            ratio >= 4.5,
            "{name} ({css}) has contrast {ratio:.2} in dark mode"
        );
    }
    // An error, drawn after a refused form.
    browser.fill("#repo-path", "/nowhere/at/all").await;
    browser.click("#repos button[type=submit]").await;
    browser
        .until("document.getElementById('repo-error')", "the refusal")
        .await;
    let ratio = browser
        .js(&format!("{CONTRAST} const e = document.getElementById('repo-error'); return ratio(getComputedStyle(e).color, bg(e));"))
        .await
        .as_f64()
        .unwrap();
    assert!(
        ratio >= 4.5,
        "an error has contrast {ratio:.2} in dark mode"
    );
    shots(&browser, "look-dark-settings").await;
    browser.goto(&format!("{}/tasks", server.url)).await;
    browser.capture("look-dark-tasks").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_read_in_the_reader_s_zone_and_relative_with_the_exact_time_in_the_title() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::start(vec![]).await;
    let (server, browser) = signed_in(dir.path(), &model).await;
    let made = server
        .call(
            reqwest::Method::PUT,
            "/secrets/NPM_TOKEN",
            Some(json!({"value": "s3cret"})),
        )
        .await;
    assert_eq!(made["name"], "NPM_TOKEN", "{made}");
    // A zone half an hour off any whole-hour zone, so a local time cannot pass for UTC.
    browser
        .cdp(
            "Emulation.setTimezoneOverride",
            json!({"timezoneId": "Asia/Kolkata"}),
        )
        .await;
    browser.goto(&format!("{}/settings", server.url)).await;
    let time = browser
        .js("const t = document.querySelector('#secrets time[datetime]'); return t && {datetime: t.getAttribute('datetime'), text: t.textContent, title: t.title};")
        .await;
    assert!(time.is_object(), "the secret's time is no <time>: {time}");
    assert_eq!(time["text"], "just now", "{time}");
    let datetime = time["datetime"].as_str().unwrap();
    assert!(datetime.ends_with('Z'), "{datetime} is not UTC");
    let title = time["title"].as_str().unwrap();
    // The exact time, in India's zone (UTC+5:30): the minutes move by 30.
    let utc_minute: u32 = datetime[14..16].parse().unwrap();
    let local_minute = (utc_minute + 30) % 60;
    assert!(
        title.contains(&format!(":{local_minute:02}")) && title.contains("UTC"),
        "the title is not the exact local time: {title} (UTC {datetime})"
    );
    browser.capture("look-times-settings").await;
    // Without the script, the UTC text is there in the page.
    let page = client()
        .get(format!("{}/settings", server.url))
        .header("cookie", browser.session_cookie().await)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let fallback = format!(
        "<time datetime=\"{datetime}\">{} {} UTC</time>",
        &datetime[..10],
        &datetime[11..16]
    );
    assert!(page.contains(&fallback), "no {fallback} in the page");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_styles_scripts_and_json_are_gzipped_and_live_streams_still_stream() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeter_repo(dir.path());
    let model = ScriptedModel::start(vec![call(
        "q1",
        "ask_user",
        r#"{"question": "Which language?"}"#,
    )])
    .await;
    let (server, browser) = signed_in(dir.path(), &model).await;
    let task = server
        .call(
            reqwest::Method::POST,
            "/tasks",
            Some(json!({"description": "Add a greeting", "repos": [repo]})),
        )
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    server.until(&id, "needs_attention").await;

    // The browser's own loads came compressed: fewer bytes on the wire than in the page.
    browser.goto(&format!("{}/settings", server.url)).await;
    let sizes = browser
        .js("return [performance.getEntriesByType('navigation')[0], ...performance.getEntriesByType('resource')].map(e => [e.name, e.encodedBodySize, e.decodedBodySize]);")
        .await;
    for entry in sizes.as_array().unwrap() {
        let (name, encoded, decoded) = (
            &entry[0],
            entry[1].as_f64().unwrap(),
            entry[2].as_f64().unwrap(),
        );
        if name.as_str().unwrap().ends_with(".svg") {
            continue;
        }
        assert!(
            encoded > 0.0 && encoded < decoded / 2.0,
            "{name} came {encoded} bytes for {decoded}"
        );
    }
    browser.capture("look-compressed-settings").await;

    let cookie = browser.session_cookie().await;
    let client = client();
    for (path, kind) in [
        ("/tasks", "text/html"),
        ("/settings", "text/html"),
        ("/assets/app.css", "text/css"),
        ("/assets/app.js", "text/javascript"),
        ("/api/v1/tasks", "application/json"),
    ] {
        let response = client
            .get(format!("{}{path}", server.url))
            .header("cookie", &cookie)
            .bearer_auth(&server.token)
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{path}"
        );
        assert_eq!(
            response
                .headers()
                .get("content-encoding")
                .map(|v| v.to_str().unwrap()),
            Some("gzip"),
            "{path} is not compressed"
        );
        let body = response.bytes().await.unwrap();
        assert!(body.starts_with(&[0x1f, 0x8b]), "{path} is no gzip stream");
    }

    // The task's event stream is not compressed, and its events arrive while it stays open.
    let mut stream = client
        .get(format!("{}/api/v1/tasks/{id}/events/stream", server.url))
        .bearer_auth(&server.token)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(stream.headers().get("content-encoding").is_none());
    let first = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
        .await
        .expect("the stream's first events never came")
        .unwrap()
        .expect("the stream ended");
    assert!(
        String::from_utf8_lossy(&first).contains("data:"),
        "{}",
        String::from_utf8_lossy(&first)
    );
    // An answer from the API lands in the open stream, live.
    let answered = server
        .call(
            reqwest::Method::POST,
            &format!("/tasks/{id}/answer"),
            Some(json!({"message": "English, please"})),
        )
        .await;
    assert!(answered.get("error").is_none(), "{answered}");
    let mut seen = String::new();
    while !seen.contains("English, please") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
            .await
            .unwrap_or_else(|_| panic!("the answer never streamed; saw {seen}"))
            .unwrap()
            .expect("the stream ended");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    // The web page's live log, too.
    let mut log = client
        .get(format!("{}/tasks/{id}/log?after=0", server.url))
        .header("cookie", &cookie)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(log.status(), 200);
    assert!(log.headers().get("content-encoding").is_none());
    let first = tokio::time::timeout(Duration::from_secs(10), log.chunk())
        .await
        .expect("the live log never streamed")
        .unwrap()
        .expect("the live log ended");
    assert!(String::from_utf8_lossy(&first).contains("event:"));
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_redirect_keep_what_was_typed_say_saved_beside_them_and_refuse_what_would_break_tasks()
 {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::start(vec![]).await;
    let (server, browser) = signed_in(dir.path(), &model).await;
    let settings = format!("{}/settings", server.url);

    // A wrong path: refused beside its field, still in it, and the address is a page's.
    browser.goto(&settings).await;
    browser.fill("#repo-path", "/nowhere/such-repo").await;
    browser.click("#repos form button[type=submit]").await;
    browser
        .until("document.getElementById('repo-error')", "the refusal")
        .await;
    assert_eq!(
        browser.js("return location.pathname").await,
        json!("/settings"),
        "the refusal left a form's address in the address bar"
    );
    assert_eq!(
        browser
            .js("return document.getElementById('repo-path').value")
            .await,
        json!("/nowhere/such-repo")
    );
    shots(&browser, "look-form-error").await;
    // A reload shows the page (the message was said once), never JSON.
    browser.page().refresh().await.unwrap();
    assert!(
        browser
            .js("return document.title")
            .await
            .as_str()
            .unwrap()
            .starts_with("Settings")
    );
    // A form's address typed in (or reloaded from an old tab) leads to its page.
    for (path, landing) in [
        ("/settings/repos", "/settings"),
        ("/settings/env", "/settings"),
        ("/logout", "/tasks"),
    ] {
        browser.goto(&format!("{}{path}", server.url)).await;
        assert_eq!(
            browser.js("return location.pathname").await,
            json!(landing),
            "{path}"
        );
        assert!(browser.exists("main h1").await, "{path} is not a page");
    }

    // A 1 MB path: refused, and neither the field nor the message echoes it.
    browser.goto(&settings).await;
    browser
        .js("document.getElementById('repo-path').value = '/' + 'a'.repeat(1000000); document.querySelector('#repos form').submit(); return 1;")
        .await;
    browser
        .until(
            "document.getElementById('repo-error')",
            "the refusal of a long path",
        )
        .await;
    let message = browser.text("#repo-error").await;
    assert!(
        message.contains("4096") && message.len() < 1000,
        "{message}"
    );
    browser.check_page("long path refused").await;

    // An env var that no sandbox would take: refused at saving, naming the field and the fix;
    // nothing is stored.
    browser
        .js("document.getElementById('env-name').value = 'BIG'; document.getElementById('env-value').value = 'x'.repeat(1000000); document.querySelector('#env form.grid').submit(); return 1;")
        .await;
    browser
        .until(
            "document.getElementById('env-error')",
            "the refusal of a 1 MB value",
        )
        .await;
    let message = browser.text("#env-error").await;
    assert!(
        message.contains("env.BIG") && message.contains("196608") && message.contains("Shorten"),
        "{message}"
    );
    assert_eq!(
        browser
            .js("return document.getElementById('env-name').value")
            .await,
        json!("BIG")
    );
    let environment = server
        .call(reqwest::Method::GET, "/settings/environment", None)
        .await;
    assert_eq!(environment["env"], json!({}), "{environment}");
    browser.check_page("env var refused").await;

    // Saved: said beside the form, in view, at both widths.
    for (size, width) in [(PHONE, "phone"), (DESKTOP, "desktop")] {
        browser.resize(size).await;
        browser.goto(&settings).await;
        browser.fill("#env-name", "GREETING").await;
        browser.fill("#env-value", "hello").await;
        browser.click("#env form.grid button[type=submit]").await;
        browser
            .until("document.getElementById('notice')", "saving")
            .await;
        assert_eq!(
            browser
                .js("return document.getElementById('notice').closest('section').id")
                .await,
            json!("env")
        );
        let visible = browser
            .js("const r = document.getElementById('notice').getBoundingClientRect(); return r.top >= 0 && r.bottom <= innerHeight;")
            .await;
        assert_eq!(visible, json!(true), "\"Saved\" is out of view at {width}");
        browser
            .screenshot(&format!("look-form-saved-{width}"))
            .await;
    }

    // Delete asks first: with the script a dialog (No keeps it, Yes deletes) ...
    browser.click("#env form.inline button").await;
    browser.page().dismiss_alert().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(browser.text("#env .rows").await.contains("GREETING"));
    browser.click("#env form.inline button").await;
    browser.page().accept_alert().await.unwrap();
    browser
        .until(
            "document.getElementById('notice')?.innerText.includes('Removed')",
            "the deletion",
        )
        .await;
    assert!(!browser.exists("#env .rows").await);

    // ... and without it, a page that asks. A new token is shown once, after a redirect.
    browser.fill("#token-label", "laptop").await;
    browser.click("#tokens form.grid button[type=submit]").await;
    browser
        .until("document.getElementById('new-token')", "the new token")
        .await;
    assert_eq!(
        browser.js("return location.pathname").await,
        json!("/settings")
    );
    let token = browser.text("#new-token").await;
    let me_url = format!("{}/api/v1/me", server.url);
    let me = |token: String| {
        let url = me_url.clone();
        async move {
            client()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(me(token.clone()).await, 200);
    browser.goto(&settings).await;
    browser
        .js("document.querySelector('#tokens form.inline').submit(); return 1;")
        .await;
    browser
        .until("document.getElementById('confirm-form')", "the question")
        .await;
    assert!(browser.text("main h1").await.contains("Revoke"));
    shots(&browser, "look-confirm-revoke").await;
    browser.click("#confirm-form a").await;
    browser
        .until("location.pathname === '/settings'", "keeping the token")
        .await;
    assert_eq!(me(token.clone()).await, 200, "asking revoked the token");
    browser
        .js("document.querySelector('#tokens form.inline').submit(); return 1;")
        .await;
    browser
        .until("document.getElementById('confirm-form')", "the question")
        .await;
    browser.click("#confirm-form button").await;
    browser
        .until(
            "document.getElementById('notice')?.innerText.includes('tokens')",
            "the revocation",
        )
        .await;
    assert_eq!(me(token).await, 401);
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_task_asks_first_without_the_script() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeter_repo(dir.path());
    let model = ScriptedModel::start(vec![call(
        "q1",
        "ask_user",
        r#"{"question": "Which language?"}"#,
    )])
    .await;
    let (server, browser) = signed_in(dir.path(), &model).await;
    let task = server
        .call(
            reqwest::Method::POST,
            "/tasks",
            Some(json!({"description": "Add a greeting", "repos": [repo]})),
        )
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    server.until(&id, "needs_attention").await;
    browser.goto(&format!("{}/tasks/{id}", server.url)).await;
    browser
        .js("document.getElementById('cancel-form').submit(); return 1;")
        .await;
    browser
        .until("document.getElementById('confirm-form')", "the question")
        .await;
    assert!(browser.text("main h1").await.contains("Cancel this task"));
    assert_eq!(
        server
            .call(reqwest::Method::GET, &format!("/tasks/{id}"), None)
            .await["state"],
        "needs_attention",
        "asking cancelled the task"
    );
    shots(&browser, "look-confirm-cancel").await;
    browser.click("#confirm-form button").await;
    assert_eq!(server.until(&id, "cancelled").await["state"], "cancelled");
    browser.close().await;
}
