//! The task list and a task's controls in a real browser: what needs the person comes first
//! and says why, the list follows its tasks live, a task stopped by an error is retried or run
//! again, and a plan is edited before it is approved.
//!
//! Screenshots go to `target/web-screenshots/tasks-*.png`, at desktop and phone widths.

mod common;

use common::browser::{
    Browser, DESKTOP, ENTER, PHONE, TAB, greeter_repo, set_password, sign_in_with_password,
};
use common::greeter::greeting_task;
use common::{call, sh, start};
use deft_testkit::model_server::{ScriptedModel, Step, Turn};
use fantoccini::Locator;
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";

fn auth_failure() -> Step {
    Step::error(401, "authentication_error", None)
}

/// The list's rows as the page shows them: `[id, state, title, reason, meta]`.
async fn rows(browser: &Browser) -> Vec<Vec<String>> {
    let rows = browser
        .js("return [...document.querySelectorAll('#task-list > li')].map(li => [li.id.replace('task-', ''), li.classList[1], li.querySelector('.title').innerText, li.querySelector('.reason')?.innerText ?? '', li.querySelector('.meta').innerText]);")
        .await;
    serde_json::from_value(rows).unwrap()
}

/// Each badge of the list keeps its pill shape: one line high, wider than high, whatever the
/// title beside it.
async fn badges_keep_their_shape(browser: &Browser, width: &str) {
    let shapes = browser
        .js("return [...document.querySelectorAll('#task-list .badge')].map(b => { const r = b.getBoundingClientRect(); const line = parseFloat(getComputedStyle(b).lineHeight) || 20; return [b.innerText, r.width, r.height, line]; });")
        .await;
    for shape in shapes.as_array().unwrap() {
        let (width_px, height, line) = (
            shape[1].as_f64().unwrap(),
            shape[2].as_f64().unwrap(),
            shape[3].as_f64().unwrap(),
        );
        assert!(
            height < line * 1.6 && width_px > height * 2.0,
            "at {width}, the badge {} is {width_px}×{height} px (a line is {line} px)",
            shape[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_task_list_puts_what_needs_me_first_says_why_searches_and_follows_live() {
    let dir = tempfile::tempdir().unwrap();
    let greeter = greeter_repo(dir.path());
    let other = dir.path().join("footers");
    std::fs::create_dir(&other).unwrap();
    sh(
        &other,
        "echo '#!/bin/sh' > test.sh && chmod +x test.sh && git init -q -b main && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init",
    );
    let mut script = greeting_task();
    script.push(call(
        "q",
        "ask_user",
        r#"{"question": "Should the greeting end with a newline?"}"#,
    ));
    script.push(auth_failure());
    let model = ScriptedModel::start(script).await;
    let data = dir.path().join("data");
    let server = start(&data, &model);
    set_password(&data, "admin", PASSWORD);

    let done = server.create_task("Add a greeting file", &greeter).await;
    server.until(&done, "completed").await;
    // A title longer than any screen, with a word longer than a phone is wide.
    let long = format!(
        "Decide whether the greeting should end with a newline {} and {}",
        "and what the rest of the file should hold ".repeat(8),
        "Pneumonoultramicroscopicsilicovolcanoconiosis".repeat(3)
    );
    let asks = server.create_task(&long, &greeter).await;
    server.until(&asks, "needs_attention").await;
    let fails = server.create_task("Fix the footer", &other).await;
    let failed = server.until(&fails, "needs_attention").await;
    assert_eq!(failed["attention"]["kind"], "error", "{failed}");

    let browser = Browser::start().await;
    sign_in_with_password(&browser, &server, "admin", PASSWORD).await;
    browser.goto(&format!("{}/tasks", server.url)).await;
    // The count of what waits: in the title and the navigation.
    assert_eq!(
        browser.js("return document.title").await,
        json!("(2) Tasks · deft")
    );
    assert_eq!(browser.text("#nav-attention b").await, "2");
    // What needs the person first, newest first, each saying why; then the rest.
    let listed = rows(&browser).await;
    let order: Vec<&str> = listed.iter().map(|row| row[0].as_str()).collect();
    assert_eq!(order, [fails.as_str(), asks.as_str(), done.as_str()]);
    assert_eq!(listed[0][1], "needs_attention");
    assert!(
        listed[0][3].starts_with("Error: the model call failed"),
        "{:?}",
        listed[0]
    );
    assert_eq!(
        listed[1][3],
        "Asks: Should the greeting end with a newline?"
    );
    assert_eq!(listed[2][3], "", "a completed task waits for no one");
    // How long each ran, what it cost, and the completed task's pull request with its lines.
    let meta = &listed[2][4];
    assert!(
        meta.contains("greeter · ran ") && meta.contains(" ago"),
        "{meta}"
    );
    assert!(meta.contains("tokens"), "{meta}");
    assert!(meta.contains("Pull request +1 −0"), "{meta}");
    assert!(listed[1][4].contains("waiting for"), "{}", listed[1][4]);
    let tokens = browser.text(&format!("#task-{done} .tokens")).await;
    assert!(
        tokens.ends_with(" tokens") && !tokens.starts_with("0 "),
        "{tokens}"
    );
    let pr = browser
        .js(&format!(
            "return document.querySelector('#task-{done} a.pr').getAttribute('href')"
        ))
        .await;
    assert_eq!(pr, json!(format!("/tasks/{done}#prs-heading")));
    for (size, width) in [(DESKTOP, "desktop"), (PHONE, "phone")] {
        browser.resize(size).await;
        badges_keep_their_shape(&browser, width).await;
    }
    browser.resize(DESKTOP).await;
    browser.capture("tasks-list").await;

    // Search by text and by repository: a plain GET form, whose address can be shared.
    browser.fill("#q", "GREETING").await;
    browser.click("#task-search button[type=submit]").await;
    browser
        .until("location.search.includes('q=GREETING')", "the search")
        .await;
    let found: Vec<String> = rows(&browser)
        .await
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(found, [asks.clone(), done.clone()]);
    assert_eq!(
        browser
            .js("return document.getElementById('q').value")
            .await,
        json!("GREETING"),
        "the search stays in its field"
    );
    browser.fill("#q", "").await;
    browser
        .page()
        .find(Locator::Id("repo"))
        .await
        .unwrap()
        .select_by_label("footers")
        .await
        .unwrap();
    browser.click("#task-search button[type=submit]").await;
    browser
        .until("location.search.includes('repo=')", "the repository filter")
        .await;
    let found: Vec<String> = rows(&browser)
        .await
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(found, vec![fails.clone()]);
    browser.fill("#q", "nothing like this").await;
    browser.click("#task-search button[type=submit]").await;
    browser
        .until("location.search.includes('nothing')", "the empty search")
        .await;
    assert_eq!(
        browser.text("#task-rows .empty").await,
        "No task matches this search."
    );
    browser.capture("tasks-search").await;

    // Live: a new task that asks, and a cancelled one, change the list, the count and the
    // title without a reload.
    browser.goto(&format!("{}/tasks", server.url)).await;
    browser.js("window.stillHere = true; return 1;").await;
    model.push(call("q2", "ask_user", r#"{"question": "Which colour?"}"#));
    let colour = server.create_task("Pick a colour", &greeter).await;
    browser
        .until(
            &format!("document.querySelector('#task-{colour} .reason')?.innerText === 'Asks: Which colour?'"),
            "the new task's question, live",
        )
        .await;
    browser
        .until(
            "document.title === '(3) Tasks · deft'",
            "the count in the title, live",
        )
        .await;
    assert_eq!(browser.text("#nav-attention b").await, "3");
    server
        .call(
            reqwest::Method::POST,
            &format!("/tasks/{fails}/cancel"),
            None,
        )
        .await;
    browser
        .until(
            &format!("document.querySelector('#task-{fails}')?.classList.contains('cancelled')"),
            "the cancellation, live",
        )
        .await;
    browser
        .until(
            "document.title === '(2) Tasks · deft'",
            "the count falling, live",
        )
        .await;
    let order: Vec<String> = rows(&browser)
        .await
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(
        order,
        [colour.clone(), asks.clone(), fails.clone(), done.clone()]
    );
    assert_eq!(
        browser.js("return window.stillHere === true").await,
        json!(true),
        "the list never reloaded"
    );

    // From here on every page answers at once: a page left behind (kept for the Back button)
    // that held its stream open took one of the browser's six connections to this server, and
    // with those gone a form or a page waited a minute.
    let moving_on = std::time::Instant::now();
    // The question answered by keyboard alone, from the list: Tab to the task, Enter, then
    // the answer and its button.
    // Focus is where a Tab would put it; the live list keeps it there if it draws again.
    browser
        .js(&format!(
            "document.querySelector('#task-{asks} a.title').focus(); return 1;"
        ))
        .await;
    let mut keyboard = browser.page().active_element().await.unwrap();
    keyboard.send_keys(ENTER).await.unwrap();
    browser
        .until(
            &format!("location.pathname === '/tasks/{asks}'"),
            "opening the task by keyboard",
        )
        .await;
    for step in greeting_task() {
        model.push(step);
    }
    keyboard = browser.page().find(Locator::Id("answer")).await.unwrap();
    keyboard
        .send_keys(&format!("Yes, with a newline{TAB}{ENTER}"))
        .await
        .unwrap();
    server.until(&asks, "completed").await;
    browser.goto(&format!("{}/tasks", server.url)).await;
    assert_eq!(
        browser.js("return document.title").await,
        json!("(1) Tasks · deft")
    );
    // Back and forth between the list and a task, then a request from the last page.
    for _ in 0..4 {
        // Clicked in the page: the live list may draw its rows again at any moment.
        browser
            .js(&format!(
                "document.querySelector('#task-{done} a.title').click(); return 1;"
            ))
            .await;
        browser
            .until("document.getElementById('log')", "a task's page")
            .await;
        browser.click(".top nav a[href='/tasks']").await;
        browser
            .until("document.getElementById('task-list')", "the list")
            .await;
    }
    browser
        .js(&format!(
            "document.querySelector('#task-{done} a.title').click(); return 1;"
        ))
        .await;
    browser
        .until("document.getElementById('log')", "a task's page")
        .await;
    let fetched = browser
        .page()
        .execute_async(
            "const done = arguments[0]; const t = performance.now(); fetch('/tasks/' + document.getElementById('log').dataset.task + '/summary').then(() => done(performance.now() - t), () => done(-1));",
            vec![],
        )
        .await
        .expect("a request from the eighth page is answered");
    let millis = fetched.as_f64().unwrap();
    assert!((0.0..5000.0).contains(&millis), "it took {millis} ms");
    assert!(
        moving_on.elapsed() < std::time::Duration::from_secs(30),
        "answering and moving between ten pages took {:?}",
        moving_on.elapsed()
    );
    assert_eq!(model.violations(), Vec::<String>::new());
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_stopped_by_an_error_is_retried_in_place_or_run_again_as_a_new_task() {
    let dir = tempfile::tempdir().unwrap();
    let greeter = greeter_repo(dir.path());
    let model = ScriptedModel::start(vec![auth_failure()]).await;
    let data = dir.path().join("data");
    let server = start(&data, &model);
    set_password(&data, "admin", PASSWORD);
    let description = "Add a greeting file\n\nIn English.";
    let failed = server.create_task(description, &greeter).await;
    server.until(&failed, "needs_attention").await;

    let browser = Browser::start().await;
    sign_in_with_password(&browser, &server, "admin", PASSWORD).await;
    browser
        .goto(&format!("{}/tasks/{failed}", server.url))
        .await;
    assert!(browser.text("#why").await.contains("the model call failed"));
    assert!(browser.exists("#retry-form").await && browser.exists("#rerun-form").await);
    browser.capture("tasks-error").await;

    // Retry: the same task goes back to work, and the page it lands on is a plain GET.
    for step in greeting_task() {
        model.push(step);
    }
    browser.click("#retry-form button").await;
    browser
        .until(
            &format!("location.pathname === '/tasks/{failed}' && document.querySelector('#state')?.dataset.state !== 'needs_attention'"),
            "the retry",
        )
        .await;
    assert_eq!(
        browser
            .js("return performance.getEntriesByType('navigation')[0].type")
            .await,
        json!("navigate"),
        "after post/redirect/get, a reload asks nothing again"
    );
    server.until(&failed, "completed").await;
    let events = server
        .call(
            reqwest::Method::GET,
            &format!("/tasks/{failed}/events"),
            None,
        )
        .await;
    let retried = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "user_message" && e["data"]["kind"] == "retry");
    assert!(retried, "the retry is in the log: {events}");
    browser
        .until(
            "document.querySelector('#state')?.dataset.state === 'completed'",
            "completion on the page",
        )
        .await;
    assert!(
        !browser.exists("#retry-form").await,
        "a completed task has no error to retry"
    );

    // Re-run: a new task from the same description and repositories; this one stays as it is.
    model.push(call("q", "ask_user", r#"{"question": "Again?"}"#));
    browser.click("#rerun-form button").await;
    browser
        .until(
            &format!(
                "location.pathname.startsWith('/tasks/') && location.pathname !== '/tasks/{failed}'"
            ),
            "the new task's page",
        )
        .await;
    let again = browser
        .js("return location.pathname.split('/')[2]")
        .await
        .as_str()
        .unwrap()
        .to_owned();
    let copy = server.until(&again, "needs_attention").await;
    let original = server
        .call(reqwest::Method::GET, &format!("/tasks/{failed}"), None)
        .await;
    assert_eq!(copy["description"], description);
    assert_eq!(copy["repos"], original["repos"]);
    assert_eq!(original["state"], "completed");
    // A retry of a task that waits on a question, not an error, is refused in place.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let csrf = browser
        .js("return document.querySelector('meta[name=csrf-token]').content")
        .await;
    let refused = client
        .post(format!("{}/tasks/{again}/retry", server.url))
        .header("cookie", browser.session_cookie().await)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}", csrf.as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("Only a task that stopped on an error")
    );
    assert_eq!(
        server.until(&again, "needs_attention").await["attention"]["kind"],
        "question"
    );
    assert_eq!(model.violations(), Vec::<String>::new());
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_edited_at_approval_is_the_plan_the_agent_carries_out() {
    let dir = tempfile::tempdir().unwrap();
    let greeter = greeter_repo(dir.path());
    let plan = r#"{"requirements": ["a greeting"], "acceptance_criteria": ["./test.sh passes"], "steps": ["Write greeting.txt"]}"#;
    let model = ScriptedModel::start(vec![call("p", "submit_plan", plan)]).await;
    let data = dir.path().join("data");
    let server = start(&data, &model);
    set_password(&data, "admin", PASSWORD);
    let id = server
        .create_task_with(
            "Add a greeting file",
            &greeter,
            json!({"approve_plan": true}),
        )
        .await;
    let waiting = server.until(&id, "needs_attention").await;
    assert_eq!(waiting["attention"]["kind"], "plan_approval", "{waiting}");

    let browser = Browser::start().await;
    sign_in_with_password(&browser, &server, "admin", PASSWORD).await;
    browser.goto(&format!("{}/tasks", server.url)).await;
    assert_eq!(
        browser.text(&format!("#task-{id} .reason")).await,
        "Plan waits for approval"
    );
    browser.goto(&format!("{}/tasks/{id}", server.url)).await;
    assert_eq!(
        browser
            .js("return document.getElementById('plan-steps').value")
            .await,
        json!("Write greeting.txt")
    );
    assert!(
        !browser.exists("#rerun-form").await && !browser.exists("#retry-form").await,
        "a plan waiting for approval wants the person here, not a new task"
    );
    browser.capture("tasks-plan-approval").await;

    // No steps at all is refused beside the field, and nothing changes.
    browser
        .js("const steps = document.getElementById('plan-steps'); steps.removeAttribute('required'); steps.value = '  \\n '; document.getElementById('approve-form').submit(); return 1;")
        .await;
    browser
        .until("document.getElementById('control-error')", "the refusal")
        .await;
    assert!(browser.text("#control-error").await.starts_with("Steps:"));
    assert_eq!(
        browser
            .js("return document.getElementById('plan-steps').getAttribute('aria-describedby')")
            .await,
        json!("control-error")
    );
    let still = server
        .call(reqwest::Method::GET, &format!("/tasks/{id}"), None)
        .await;
    assert_eq!(still["state"], "needs_attention");
    assert_eq!(still["plan"]["steps"], json!(["Write greeting.txt"]));

    // Two steps of the person's own, then approved: the agent carries out exactly those.
    model.push(call(
        "e1",
        "str_replace_based_edit_tool",
        r#"{"command": "create", "path": "greeter/greeting.txt", "file_text": "hello\n"}"#,
    ));
    model.push(call("f1", "finish", r#"{"summary": "Wrote it"}"#));
    model.push(call(
        "f2",
        "finish",
        r#"{"summary": "It ends with a newline"}"#,
    ));
    model.push(Step::Reply(Turn::text(
        r#"{"verdict": "pass", "checked": ["the diff meets each criterion"]}"#,
    )));
    let field = browser
        .page()
        .find(Locator::Id("plan-steps"))
        .await
        .unwrap();
    field.clear().await.unwrap();
    field
        .send_keys("Write greeting.txt saying hello\n\nCheck that it ends with a newline\n")
        .await
        .unwrap();
    browser.click("#approve-form button[type=submit]").await;
    let done = server.until(&id, "completed").await;
    assert_eq!(
        done["plan"]["steps"],
        json!([
            "Write greeting.txt saying hello",
            "Check that it ends with a newline"
        ])
    );
    assert_eq!(
        done["plan"]["requirements"],
        json!(["a greeting"]),
        "the rest of the plan stays"
    );
    // The executor was told each edited step, and never the planner's own.
    let asked: Vec<String> = model
        .requests()
        .iter()
        .skip(1)
        .map(|request| request.body["messages"].to_string())
        .collect();
    assert!(
        asked
            .iter()
            .any(|m| m.contains("Write greeting.txt saying hello")),
        "{asked:?}"
    );
    assert!(
        asked
            .iter()
            .any(|m| m.contains("Check that it ends with a newline")),
        "{asked:?}"
    );
    browser
        .until(
            "document.querySelector('.plan')?.innerText.includes('2 of 2 steps done')",
            "the edited plan, done, on the page",
        )
        .await;
    assert_eq!(model.violations(), Vec::<String>::new());
    browser.close().await;
}
