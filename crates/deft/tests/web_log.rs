//! A task's log in a real browser (headless Chromium over WebDriver) against a real
//! `deft serve`: grouped by plan step with finished steps folded, one card per tool call with
//! its exit status and time, a command's colours drawn and its markup shown as text, the
//! question once and drawn from Markdown, filters, Follow, and a live stream that closes when
//! the page is left.
//!
//! Screenshots (`log-*`) go to `target/web-screenshots/` at 1280 and 390 px.

mod common;

use common::browser::{Browser, DESKTOP, PHONE, greeter_repo, set_password, sign_in_with_password};
use common::{Server, call, start};
use deft_testkit::model_server::{ScriptedModel, Step, Turn};
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";
/// WCAG's contrast ratio of two computed colours, in the page.
const CONTRAST: &str = "const lum = (c) => { const [r, g, b] = c.match(/\\d+(\\.\\d+)?/g).slice(0, 3).map(Number).map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; }; const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((m, n) => n - m); return (x + 0.05) / (y + 0.05); }; const bg = (e) => { for (; e; e = e.parentElement) { const c = getComputedStyle(e).backgroundColor; if (c !== 'rgba(0, 0, 0, 0)' && c !== 'transparent') return c; } return 'rgb(255, 255, 255)'; }; const pairs = {};";
const QUESTION: &str = "Should the greeting be **bold**? <script>window.pwned = true</script>";

/// Two planned steps: the first runs a command that prints colours and markup, one with a
/// long output, and writes a file; the second runs a command and asks.
fn two_steps() -> Vec<Step> {
    let plan = r#"{"requirements": ["a greeting"], "acceptance_criteria": ["./test.sh passes"], "steps": ["Write greeting.txt", "Check the greeting"]}"#;
    vec![
        call("p", "submit_plan", plan),
        call(
            "c1",
            "bash",
            r#"{"command": "printf '\\033[31mred\\033[0m \\033[1mbold\\033[0m \\033]0;title\\007<script>window.pwned = true</script>\\n\\033[30mk\\033[32mg\\033[33my\\033[34mb\\033[35mm\\033[36mc\\033[37mw\\033[0m\\n'"}"#,
        ),
        call("c2", "bash", r#"{"command": "seq 1 800"}"#),
        call(
            "e1",
            "str_replace_based_edit_tool",
            r#"{"command": "create", "path": "greeter/greeting.txt", "file_text": "hello\n"}"#,
        ),
        call("f1", "finish", r#"{"summary": "Wrote the greeting"}"#),
        call("c3", "bash", r#"{"command": "cat greeting.txt"}"#),
        call(
            "q",
            "ask_user",
            &json!({ "question": QUESTION }).to_string(),
        ),
    ]
}

/// The log's steps as the page shows them: `[title, status, open, labels of its cards]`.
async fn steps(browser: &Browser) -> Vec<(String, String, bool, Vec<String>)> {
    let found = browser
        .js("return [...document.querySelectorAll('#log details.group')].map(g => [g.querySelector('.group-title').textContent, g.dataset.status, g.open, [...g.querySelectorAll('.entry')].filter(e => getComputedStyle(e).display !== 'none').map(e => e.querySelector('.label').textContent)]);")
        .await;
    serde_json::from_value(found).unwrap()
}

/// Screenshots of the log itself at both widths (`capture` shows the top of the page).
async fn log_shots(browser: &Browser, name: &str) {
    for (size, width) in [(DESKTOP, "desktop"), (PHONE, "phone")] {
        browser.resize(size).await;
        browser
            .js("document.getElementById('log-heading').scrollIntoView(); return 1;")
            .await;
        browser.check_page(&format!("{name} ({width})")).await;
        browser.screenshot(&format!("{name}-{width}")).await;
    }
    browser.resize(DESKTOP).await;
}

async fn count(browser: &Browser, script: &str) -> u64 {
    browser.js(script).await.as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_groups_by_step_draws_colours_shows_the_question_once_and_follows_live() {
    let dir = tempfile::tempdir().unwrap();
    let greeter = greeter_repo(dir.path());
    let model = ScriptedModel::start(two_steps()).await;
    let data = dir.path().join("data");
    let server: Server = start(&data, &model);
    set_password(&data, "admin", PASSWORD);
    let task = server
        .call(
            reqwest::Method::POST,
            "/tasks",
            Some(json!({"description": "Add a greeting file", "repos": [greeter]})),
        )
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    server.until(&id, "needs_attention").await;

    let browser = Browser::start().await;
    sign_in_with_password(&browser, &server, "admin", PASSWORD).await;
    // A zone half an hour off UTC, so a card's local time cannot pass for the UTC one.
    browser
        .cdp(
            "Emulation.setTimezoneOverride",
            json!({"timezoneId": "Asia/Kolkata"}),
        )
        .await;
    let page = format!("{}/tasks/{id}", server.url);
    browser.goto(&page).await;

    // Every colour a command may print, and the log's own, read at 4.5:1 in light and dark.
    for scheme in ["dark", "light"] {
        browser
            .cdp(
                "Emulation.setEmulatedMedia",
                json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
            )
            .await;
        let ratios = browser
            .js(&format!("{CONTRAST} for (const css of ['.ansi-black', '.ansi-red', '.ansi-green', '.ansi-yellow', '.ansi-blue', '.ansi-magenta', '.ansi-cyan', '.ansi-white', '.exit.ok', '.badge.step-done', '.badge.step-waiting', '.card-head .facts', '.entry.question .label', '.group-title']) {{ const e = document.querySelector('#log ' + css); pairs[css] = e ? ratio(getComputedStyle(e).color, bg(e)) : 0; }} return pairs;"))
            .await;
        for (css, ratio) in ratios.as_object().unwrap() {
            let ratio = ratio.as_f64().unwrap();
            assert!(
                ratio >= 4.5,
                "{css} has contrast {ratio:.2} in {scheme} mode"
            );
        }
        if scheme == "dark" {
            browser
                .js("document.querySelectorAll('#log details.group').forEach(g => { if (g.querySelector('.command')) g.open = true; }); document.querySelector('#log .entry.command details').open = true; return 1;")
                .await;
            log_shots(&browser, "log-dark").await;
            browser.page().refresh().await.unwrap();
        }
    }

    // Grouped by step: the setup in one folded group, planning, then each plan step; the
    // finished ones folded, the one waiting open.
    let shown = steps(&browser).await;
    let titles: Vec<&str> = shown.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        titles,
        [
            "Environment",
            "Planning",
            "Step 1: Write greeting.txt",
            "Step 2: Check the greeting"
        ],
        "{shown:?}"
    );
    let open: Vec<bool> = shown.iter().map(|s| s.2).collect();
    assert_eq!(open, [false, false, false, true]);
    assert_eq!(shown[2].1, "done");
    assert_eq!(shown[3].1, "waiting");
    // One card per tool call, each command with its exit status and time.
    assert_eq!(shown[1].3, ["Plan"]);
    assert_eq!(shown[2].3, ["Command", "Command", "Edit", "Finished"]);
    assert_eq!(shown[3].3, ["Command", "Question", "State"]);
    let exits = browser
        .js("return [...document.querySelectorAll('#log .entry.command .exit')].map(e => e.textContent)")
        .await;
    assert_eq!(exits, json!(["exit 0", "exit 0", "exit 0"]));

    // The command's colours are spans; its markup and its window title are neither run nor
    // shown as codes.
    let output = browser
        .js("const pre = document.querySelector('#log .entry.command pre.output'); return {red: pre.querySelector('.ansi-red')?.textContent, bold: pre.querySelector('.ansi-bold')?.textContent, text: pre.textContent};")
        .await;
    assert_eq!(output["red"], "red", "{output}");
    assert_eq!(output["bold"], "bold", "{output}");
    let text = output["text"].as_str().unwrap();
    assert!(
        text.starts_with("red bold <script>window.pwned = true</script>"),
        "{text:?}"
    );
    let html = browser
        .js("return document.documentElement.outerHTML")
        .await;
    let html = html.as_str().unwrap();
    assert!(
        !html.contains('\u{1b}') && !html.contains('\u{7}'),
        "an escape code reached the page"
    );
    assert!(
        !text.contains("[31m") && !text.contains("title"),
        "the output shows its codes: {text:?}"
    );
    assert_eq!(
        count(
            &browser,
            "return document.querySelectorAll('#log script, #why script').length"
        )
        .await,
        0
    );
    assert_eq!(
        browser.js("return window.pwned === undefined").await,
        json!(true)
    );

    // The question once on the whole page (folded steps included), drawn from Markdown beside
    // the answer box; its card in the log points there.
    let times = count(
        &browser,
        "return document.body.textContent.split('Should the greeting be').length - 1",
    )
    .await;
    assert_eq!(times, 1, "the question is shown {times} times");
    assert_eq!(browser.text("#why .reply strong").await, "bold");
    assert!(
        browser
            .text("#log .entry.question")
            .await
            .contains("Waiting for your answer")
    );

    // Times are local: a card's clock, and when the task was created.
    let time = browser
        .js("const t = document.querySelector('#log time[data-clock]'); return {datetime: t.getAttribute('datetime'), text: t.textContent};")
        .await;
    let datetime = time["datetime"].as_str().unwrap();
    assert!(datetime.ends_with('Z'), "{time}");
    let local_minute = (datetime[14..16].parse::<u32>().unwrap() + 30) % 60;
    let text = time["text"].as_str().unwrap();
    assert!(
        text.contains(&format!(":{local_minute:02}:")) && !text.contains("UTC"),
        "the card's time is not local: {time}"
    );
    assert!(
        browser.exists(".meta time[datetime]").await,
        "created is a <time>"
    );

    // A long output shows its end, and links to the whole.
    let link = browser
        .js("return document.querySelector('#log .entry .full a')?.getAttribute('href')")
        .await;
    let link = link
        .as_str()
        .expect("a link to the whole output")
        .to_owned();
    browser.capture("log-waiting").await;
    browser
        .js("document.querySelectorAll('#log details.group').forEach(g => { if (g.querySelector('.command')) g.open = true; }); return 1;")
        .await;
    log_shots(&browser, "log-steps-waiting").await;

    // Filters: a plain GET, fewer cards, only their kind.
    browser.click(".log-head a[href*='show=edits']").await;
    browser
        .until("location.search.includes('show=edits')", "the edits filter")
        .await;
    let edits = steps(&browser).await;
    let labels: Vec<String> = edits.iter().flat_map(|s| s.3.clone()).collect();
    assert_eq!(labels, ["Edit"], "{edits:?}");
    assert_eq!(
        browser.text(".log-head a[aria-current=page]").await,
        "Edits"
    );
    browser.goto(&format!("{page}?show=commands")).await;
    let labels: Vec<String> = steps(&browser)
        .await
        .into_iter()
        .flat_map(|s| s.3)
        .collect();
    assert_eq!(labels, ["Command", "Command", "Command"]);
    log_shots(&browser, "log-filter-commands").await;
    let bad = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{page}?show=everything"))
        .header("cookie", browser.session_cookie().await)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(
        bad.text()
            .await
            .unwrap()
            .contains("show=edits, commands, network or errors")
    );

    // The whole output, on a page of its own.
    browser.goto(&format!("{}{link}", server.url)).await;
    let whole = browser.text("#output").await;
    assert!(
        whole.starts_with("1\n2\n3\n"),
        "{}",
        &whole[..40.min(whole.len())]
    );
    assert!(whole.contains("800\n[exit code: 0]"));
    browser.capture("log-output").await;

    // Live: Follow on, then the answer; what happens next lands in its step without a reload,
    // the answer joins its question, and the newest card stays in view.
    browser.goto(&page).await;
    browser.js("window.stillHere = true; return 1;").await;
    assert_eq!(
        browser
            .js("return document.getElementById('log').dataset.stream")
            .await,
        json!("open")
    );
    let question_card = browser
        .js("return document.querySelector('#log .entry.question').id")
        .await;
    let waiting_step = browser
        .js("return document.querySelector('#log details.group:last-of-type').id")
        .await;
    browser.click("#follow").await;
    assert_eq!(
        browser
            .js("return document.getElementById('follow').getAttribute('aria-pressed')")
            .await,
        json!("true")
    );
    model.push(call("f2", "finish", r#"{"summary": "Checked it"}"#));
    model.push(Step::Reply(Turn::text(
        r#"{"verdict": "pass", "checked": ["the diff meets each criterion"]}"#,
    )));
    let answered = server
        .call(
            reqwest::Method::POST,
            &format!("/tasks/{id}/answer"),
            Some(json!({"message": "Yes, bold"})),
        )
        .await;
    assert!(answered.get("error").is_none(), "{answered}");
    browser
        .until(
            "[...document.querySelectorAll('#log .group-title')].some(t => t.textContent === 'Pull requests') && document.querySelector('#state')?.dataset.state === 'completed'",
            "the pull request step and completion, live",
        )
        .await;
    assert_eq!(
        browser.js("return window.stillHere === true").await,
        json!(true)
    );
    let question_card = question_card.as_str().unwrap();
    // Its step is folded now: the card's text is there, out of sight.
    let card = browser
        .js(&format!(
            "return document.getElementById('{question_card}').textContent.replace(/\\s+/g, ' ')"
        ))
        .await;
    let card = card.as_str().unwrap();
    assert!(
        card.contains("Should the greeting be bold?") && card.contains("Your answer Yes, bold"),
        "{card}"
    );
    assert_eq!(
        browser.js(&format!("return document.getElementById('{question_card}').querySelector('.reply strong')?.textContent")).await,
        json!("bold")
    );
    assert_eq!(
        browser
            .js(&format!(
                "return document.getElementById({waiting_step}).open"
            ))
            .await,
        json!(false),
        "the step that waited is folded once the task moves on"
    );
    let finished = browser
        .js("const card = [...document.querySelectorAll('#log .entry.finish')].find(e => e.textContent.includes('Checked it')); return card?.closest('details.group').querySelector('.group-title').textContent;")
        .await;
    assert_eq!(finished, json!("Step 2: Check the greeting (again)"));
    let newest = browser
        .js("const cards = document.querySelectorAll('#log .entry'); const last = cards[cards.length - 1]; const r = last.getBoundingClientRect(); return {seen: r.bottom <= innerHeight + 1 && r.bottom > 0, top: r.top, bottom: r.bottom, height: innerHeight, y: scrollY, card: last.textContent.slice(0, 80)};")
        .await;
    assert_eq!(
        newest["seen"],
        json!(true),
        "Follow keeps the newest card in view: {newest}"
    );
    assert_eq!(
        count(
            &browser,
            "return document.body.textContent.split('Should the greeting be').length - 1"
        )
        .await,
        1
    );
    // The person scrolling up turns Follow off: the wheel, or a key.
    browser
        .js("window.dispatchEvent(new WheelEvent('wheel', {deltaY: -400})); window.scrollBy(0, -400); return 1;")
        .await;
    browser
        .until(
            "document.getElementById('follow').getAttribute('aria-pressed') === 'false'",
            "Follow turning off",
        )
        .await;
    browser.capture("log-completed").await;
    log_shots(&browser, "log-steps-completed").await;

    // Leaving the page closes its stream; coming back opens it again.
    browser
        .js("window.dispatchEvent(new PageTransitionEvent('pagehide', {persisted: true})); return 1;")
        .await;
    assert_eq!(
        browser
            .js("return document.getElementById('log').dataset.stream")
            .await,
        json!("closed")
    );
    browser
        .js("window.dispatchEvent(new PageTransitionEvent('pageshow', {persisted: true})); return 1;")
        .await;
    assert_eq!(
        browser
            .js("return document.getElementById('log').dataset.stream")
            .await,
        json!("open")
    );
    browser.resize(DESKTOP).await;

    // Another user's event is not there for this one.
    model.push(call("q2", "ask_user", r#"{"question": "Which part?"}"#));
    let bob = common::user_with_token(&data, "bob");
    let theirs = server
        .call_as(
            &bob,
            reqwest::Method::POST,
            "/tasks",
            Some(json!({"description": "Bob's secret work", "repos": [greeter]})),
        )
        .await;
    let theirs = theirs["id"].as_str().unwrap().to_owned();
    server.until_as(&bob, &theirs, "needs_attention").await;
    let refused = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/tasks/{theirs}/events/1", server.url))
        .header("cookie", browser.session_cookie().await)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
    assert!(!refused.text().await.unwrap().contains("Bob's secret work"));
    assert_eq!(model.violations(), Vec::<String>::new());
    browser.close().await;
}
