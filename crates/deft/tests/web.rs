//! The web app in a real browser: headless Chromium driven over WebDriver against a real
//! `deft serve` on loopback, with the scripted model server standing in for the provider.
//!
//! Screenshots of the task list, a task page and the settings, at desktop and phone widths,
//! are written to `target/web-screenshots/` as artifacts.

mod common;

use std::time::Duration;

use common::browser::{
    Browser, DESKTOP, ENTER, PHONE, TAB, greeter_repo, set_password, sign_in_with_password,
};
use common::{Server, call, start, user_with_token};
use deft_testkit::model_server::{ScriptedModel, Step, Turn};
use fantoccini::Locator;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_chats_creates_a_task_answers_it_and_watches_it_finish_live() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeter_repo(dir.path());
    let plan = r#"{"requirements": ["a greeting"], "acceptance_criteria": ["./test.sh passes"], "steps": ["Write greeting.txt"]}"#;
    let model = ScriptedModel::start(vec![
        // The chat, before the task exists.
        Step::Reply(Turn::text(
            "I will add greeting.txt with a greeting. Which language should it be in?",
        )),
        // Before it answers, the agent reads the chat's repository.
        call(
            "v1",
            "str_replace_based_edit_tool",
            r#"{"command": "view", "path": "greeter/test.sh"}"#,
        ),
        Step::Reply(Turn::text(
            "Understood: English. Create the task when ready.",
        )),
        // The task.
        call(
            "q1",
            "ask_user",
            r#"{"question": "Should the greeting end with a newline?"}"#,
        ),
        call("p1", "submit_plan", plan),
        call(
            "e1",
            "str_replace_based_edit_tool",
            r#"{"command": "create", "path": "greeter/greeting.txt", "file_text": "hello\n"}"#,
        ),
        call(
            "e2",
            "finish",
            r#"{"summary": "Wrote an English greeting"}"#,
        ),
        Step::Reply(Turn::text(
            r#"{"verdict": "pass", "checked": ["the diff meets each criterion"]}"#,
        )),
    ])
    .await;
    let data = dir.path().join("data");
    let server = start(&data, &model);
    let browser = Browser::start().await;

    // Signed out, a page sends you to sign in, and back after.
    browser.goto(&format!("{}/settings", server.url)).await;
    browser
        .until("location.pathname === '/login'", "the trip to sign-in")
        .await;
    // The first start's one-time link signs the admin in, once, to choose a password.
    let link = server.login_link();
    browser.goto(&link).await;
    browser.click("form button[type=submit]").await;
    browser
        .until("location.pathname === '/settings'", "the link's sign-in")
        .await;
    let password = "correct horse battery staple";
    browser.fill("#new-password", password).await;
    browser.fill("#confirm-password", password).await;
    browser.click("#password button[type=submit]").await;
    browser
        .until("document.getElementById('notice')", "saving the password")
        .await;
    browser.goto(&link).await;
    browser.click("form button[type=submit]").await;
    browser
        .until(
            "document.title.startsWith('Unauthorized')",
            "refusing a used link",
        )
        .await;
    assert!(browser.text("main").await.contains("already used"));

    // Sign out, then in with the password, by keyboard.
    browser.goto(&format!("{}/tasks", server.url)).await;
    browser.click(".signout button").await;
    browser
        .until("location.pathname === '/login'", "signing out")
        .await;
    browser.goto(&format!("{}/tasks", server.url)).await;
    browser
        .until("location.pathname === '/login'", "the session to be gone")
        .await;
    sign_in_with_password(&browser, &server, "admin", password).await;

    // A repository, then a chat in which the agent asks and the person answers.
    browser.goto(&format!("{}/settings", server.url)).await;
    browser.fill("#repo-path", repo.to_str().unwrap()).await;
    browser.click("#repos button[type=submit]").await;
    browser
        .until(
            "document.querySelector('#repos .rows')?.innerText.includes('greeter')",
            "adding the repository",
        )
        .await;
    browser.goto(&format!("{}/chats/new", server.url)).await;
    browser.check_page("new chat").await;
    browser.fill("#message", "Add a greeting file").await;
    browser.click("#new-chat button[type=submit]").await;
    browser
        .until(
            "document.querySelectorAll('#messages li').length === 2",
            "the agent's reply",
        )
        .await;
    assert!(
        browser
            .text("#messages li.agent")
            .await
            .contains("Which language")
    );
    browser.fill("#message", "English").await;
    // While the agent answers, the form says so and cannot be sent twice. WebDriver waits for
    // the next page before each command, so the page records what it showed meanwhile.
    model.set_delay(Duration::from_millis(1500));
    browser
        .js("const form = document.getElementById('composer'); const button = form.querySelector('button'); form.addEventListener('submit', () => setTimeout(() => { sessionStorage.setItem('busy', [button.getAttribute('aria-busy'), button.textContent, button.disabled].join('|')); }, 20)); return 1;")
        .await;
    // The reply is drawn as it streams in, before the page shows it stored: the page notes
    // the first text it showed in the streaming reply.
    browser
        .js("new MutationObserver(() => { const live = document.getElementById('streaming-reply'); if (live && live.innerText && !sessionStorage.getItem('streamed')) sessionStorage.setItem('streamed', live.innerText); }).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true}); return 1;")
        .await;
    browser.click("#composer button[type=submit]").await;
    // Streamed in, then stored: the page comes back with it, drawn as every message is.
    browser
        .until(
            "document.querySelectorAll('#messages li').length === 4 && !document.getElementById('streaming-reply')",
            "the second reply",
        )
        .await;
    model.set_delay(Duration::ZERO);
    assert_eq!(
        browser.js("return sessionStorage.getItem('busy')").await,
        json!("true|The agent is answering…|true")
    );
    // The answer came after the agent read the repository's test, at its default branch.
    let read = model.requests()[2].body["messages"].to_string();
    assert!(read.contains("test -s greeting.txt"), "{read}");
    let streamed = browser
        .js("return sessionStorage.getItem('streamed')")
        .await;
    let streamed = streamed.as_str().unwrap_or_default();
    assert!(
        !streamed.is_empty()
            && "Understood: English. Create the task when ready.".starts_with(streamed),
        "the reply was not drawn as it streamed: {streamed:?}"
    );
    assert!(
        browser
            .js("return document.getElementById('streaming-reply') === null")
            .await
            == json!(true),
        "the stored reply replaced the streamed one"
    );
    // The agent's replies cost tokens, and they count towards the week's usage.
    let chat_page = browser.js("return location.pathname").await;
    browser.goto(&format!("{}/settings", server.url)).await;
    let usage = browser.text("#usage-text").await;
    assert!(usage.ends_with(" tokens") && usage != "0 tokens", "{usage}");
    browser
        .goto(&format!("{}{}", server.url, chat_page.as_str().unwrap()))
        .await;
    browser.click("#create-task button[type=submit]").await;
    browser
        .until(
            "location.pathname.startsWith('/tasks/')",
            "creating the task",
        )
        .await;
    let id = browser
        .js("return location.pathname.split('/')[2]")
        .await
        .as_str()
        .unwrap()
        .to_owned();
    let task = server
        .call(reqwest::Method::GET, &format!("/tasks/{id}"), None)
        .await;
    let description = task["description"].as_str().unwrap();
    assert!(
        description.starts_with("Add a greeting file\n\nEnglish\n\n---\nThe chat that led to this task, for context (what the agent said there is its own words")
            && description.contains("\nadmin: Add a greeting file\ndeft: I will add")
            && description.contains("deft: Understood"),
        "the task holds the request, then the whole conversation: {description}"
    );
    // A chat creates one task: its page now links to the task and offers no second one.
    let chat = task["chat_id"].as_str().unwrap().to_owned();
    browser.goto(&format!("{}/chats/{chat}", server.url)).await;
    assert!(browser.exists("#task-link").await);
    assert!(!browser.exists("#create-task").await);
    browser.goto(&format!("{}/tasks/{id}", server.url)).await;

    // The question arrives live; the answer form is there, feedback is not.
    browser
        .until(
            "document.querySelector('#state')?.dataset.state === 'needs_attention'",
            "the question",
        )
        .await;
    assert!(
        browser
            .text("#why")
            .await
            .contains("Should the greeting end with a newline?")
    );
    assert!(browser.exists("#answer-form").await && browser.exists("#cancel-form").await);
    assert!(!browser.exists("#feedback-form").await);
    browser.capture("task-question").await;

    // An empty answer is refused beside the field; then answered, by keyboard.
    browser.click("#answer-form button[type=submit]").await;
    // `required` stops an empty form in the browser; a form sent anyway gets the server's
    // message beside the field.
    browser
        .js("document.getElementById('answer').removeAttribute('required'); document.getElementById('answer-form').submit(); return 1;")
        .await;
    browser
        .until(
            "document.getElementById('control-error')",
            "the refusal of an empty answer",
        )
        .await;
    assert!(
        browser
            .text("#control-error")
            .await
            .contains("write your answer")
    );
    let answer = browser.page().find(Locator::Id("answer")).await.unwrap();
    answer
        .send_keys(&format!("Yes, with a newline{TAB}{ENTER}"))
        .await
        .unwrap();
    browser
        .until(
            "document.querySelector('#state')?.dataset.state !== 'needs_attention'",
            "the answer",
        )
        .await;

    // From here on the page is not reloaded: a marker set now would be lost by a reload.
    browser.js("window.stillHere = true; return 1;").await;
    browser
        .until(
            "document.querySelector('#state')?.dataset.state === 'completed'",
            "completion, live",
        )
        .await;
    browser
        .until("[...document.querySelectorAll('#log .entry.state')].some(e => e.innerText.includes('in progress → completed'))", "the completion in the live log")
        .await;
    assert_eq!(
        browser.js("return window.stillHere === true").await,
        json!(true),
        "the page never reloaded"
    );
    // Folded steps too: their text is in the page, out of sight.
    let log = browser
        .js("return document.getElementById('log').textContent")
        .await;
    let log = log.as_str().unwrap();
    for expected in [
        "needs attention → queued",
        "queued → in progress",
        "Your answer",
        "Yes, with a newline",
        "Edit",
        "create greeter/greeting.txt",
        "+hello",
        "model call",
    ] {
        assert!(
            log.contains(expected),
            "the live log lacks `{expected}`:\n{log}"
        );
    }
    // The plan with its progress, and the pull request's diff.
    assert!(browser.text(".plan").await.contains("1 of 1 steps done"));
    // (the diff itself is `web_diff.rs`'s: here, its files with their counts and links).
    let files = browser.text(".prs .file-list").await;
    assert_eq!(
        files, "greeting.txt added +1 −0",
        "the pull request's files"
    );
    assert!(
        browser.exists(".prs a[href$='/diff#pr0-f0']").await,
        "each file links to its diff"
    );
    // Completed: feedback is offered (and cancelling still is); an answer is not.
    assert!(browser.exists("#feedback-form").await && browser.exists("#cancel-form").await);
    assert!(!browser.exists("#answer-form").await);
    browser.capture("task-completed").await;

    // The list shows the task with its badge, and filters by state.
    browser.goto(&format!("{}/tasks", server.url)).await;
    assert_eq!(browser.text("#task-list .badge").await, "Completed");
    browser.capture("task-list").await;
    browser
        .goto(&format!("{}/tasks?state=queued", server.url))
        .await;
    assert!(!browser.exists("#task-list").await, "no queued task");
    browser.goto(&format!("{}/settings", server.url)).await;
    browser.capture("settings").await;
    assert_eq!(model.violations(), Vec::<String>::new());
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_unseen_bad_input_is_refused_in_place_and_others_tasks_and_forged_forms_are_not_served()
 {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeter_repo(dir.path());
    let model = ScriptedModel::start(vec![]).await;
    let data = dir.path().join("data");
    let server = start(&data, &model);
    let password = "correct horse battery staple";
    for name in ["admin", "bob"] {
        if name == "bob" {
            user_with_token(&data, "bob");
        }
        set_password(&data, name, password);
    }
    let browser = Browser::start().await;

    // Guessing is limited: after five wrong passwords even the right one waits.
    for _ in 0..5 {
        sign_in_attempt(&browser, &server, "bob", "not the password!").await;
        assert!(
            browser
                .text("#login-error")
                .await
                .contains("Wrong user name or password")
        );
    }
    sign_in_attempt(&browser, &server, "bob", password).await;
    assert!(
        browser
            .text("#login-error")
            .await
            .contains("Too many failed sign-ins")
    );
    sign_in_with_password(&browser, &server, "admin", password).await;

    // A secret: the name is listed, the value is never shown again.
    browser.goto(&format!("{}/settings", server.url)).await;
    browser.fill("#secret-name", "NPM_TOKEN").await;
    browser.fill("#secret-value", "s3cret-npm-value").await;
    browser.click("#secrets button[type=submit]").await;
    browser
        .until(
            "document.getElementById('secret-list')?.innerText.includes('NPM_TOKEN')",
            "the secret to be listed",
        )
        .await;
    let source = browser.page().source().await.unwrap();
    assert!(
        !source.contains("s3cret-npm-value"),
        "the secret's value is on the page"
    );
    assert_eq!(
        browser
            .js("return document.getElementById('secret-value').value")
            .await,
        json!("")
    );

    // A bad allow-list entry: refused as you type, beside the field, and refused on saving.
    browser
        .page()
        .find(Locator::Id("level"))
        .await
        .unwrap()
        .select_by_value("custom")
        .await
        .unwrap();
    browser
        .fill("#allow", "api.example.com\nhttps://bad.example.com/path")
        .await;
    browser
        .until(
            "!document.getElementById('allow-error').hidden",
            "the message as you type",
        )
        .await;
    let message = browser.text("#allow-error").await;
    assert!(
        message.contains("line 2") && message.contains("has a scheme"),
        "{message}"
    );
    assert_eq!(
        browser
            .js("return document.getElementById('allow').getAttribute('aria-describedby')")
            .await,
        json!("allow-error"),
        "the message belongs to the field"
    );
    browser.click("#network-form button[type=submit]").await;
    browser
        .until("document.getElementById('allow-error')?.innerText.includes('has a scheme') && document.getElementById('allow').getAttribute('aria-invalid') === 'true'", "the refusal on saving")
        .await;
    assert!(
        browser
            .js("return document.getElementById('allow').value")
            .await
            .as_str()
            .unwrap()
            .contains("https://bad.example.com/path"),
        "what was typed is kept"
    );
    let environment = server
        .call(reqwest::Method::GET, "/settings/environment", None)
        .await;
    assert_eq!(
        environment["network"]["level"], "connections",
        "nothing stored: {environment}"
    );
    // A good one is saved.
    browser
        .fill("#allow", "api.example.com\n.internal.example")
        .await;
    browser.click("#network-form button[type=submit]").await;
    browser
        .until(
            "document.getElementById('notice')?.innerText.includes('network')",
            "saving the network",
        )
        .await;
    let environment = server
        .call(reqwest::Method::GET, "/settings/environment", None)
        .await;
    assert_eq!(
        environment["network"]["allow"],
        json!(["api.example.com", ".internal.example"])
    );

    // An API token: shown once, works, and stops working when revoked.
    browser.fill("#token-label", "laptop").await;
    browser.click("#tokens form.grid button[type=submit]").await;
    browser
        .until("document.getElementById('new-token')", "the new token")
        .await;
    let token = browser.text("#new-token").await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let me = |token: String| {
        let client = client.clone();
        let url = format!("{}/api/v1/me", server.url);
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(me(token.clone()).await, 200);
    browser.goto(&format!("{}/settings", server.url)).await;
    assert!(
        !browser.page().source().await.unwrap().contains(&token),
        "a token is shown once"
    );
    browser
        .click("#tokens form.inline button[aria-label='Revoke laptop']")
        .await;
    // The script asks before revoking (web_look.rs checks the question itself).
    browser.page().accept_alert().await.unwrap();
    browser
        .until(
            "document.getElementById('notice')?.innerText.includes('tokens')",
            "the revocation",
        )
        .await;
    assert_eq!(me(token).await, 401);

    // A form posted without its CSRF token is refused and changes nothing.
    browser
        .js("const form = document.querySelector('#secrets form.grid'); form.querySelector('[name=csrf]').remove(); form.querySelector('#secret-name').value = 'FORGED'; form.querySelector('#secret-value').value = 'x'; form.submit(); return 1;")
        .await;
    browser
        .until(
            "document.title.startsWith('Forbidden')",
            "the refusal of a form without its token",
        )
        .await;
    assert!(browser.text("main").await.contains("CSRF"));
    let secrets = server.call(reqwest::Method::GET, "/secrets", None).await;
    assert_eq!(secrets["secrets"].as_array().unwrap().len(), 1, "{secrets}");
    // The same, sent by another page with the browser's cookie: refused, nothing stored.
    let forged = client
        .post(format!("{}/settings/secrets", server.url))
        .header("cookie", browser.session_cookie().await)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=FORGED&value=x")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    // Another user's task is a 404, in the browser and on the wire. Bob's task asks a
    // question at once, which leaves the worker free.
    model.push(call("q", "ask_user", r#"{"question": "Which part?"}"#));
    let bob_token = common::token_for(&data, "bob");
    let bob_task = server
        .call_as(
            &bob_token,
            reqwest::Method::POST,
            "/tasks",
            Some(json!({"description": "Bob's work", "repos": [repo]})),
        )
        .await;
    let bob_task = bob_task["id"].as_str().unwrap();
    server
        .until_as(&bob_token, bob_task, "needs_attention")
        .await;
    browser
        .goto(&format!("{}/tasks/{bob_task}", server.url))
        .await;
    assert!(browser.text("h1").await.starts_with("404"));
    assert!(
        !browser
            .page()
            .source()
            .await
            .unwrap()
            .contains("Bob's work")
    );
    let status = client
        .get(format!("{}/tasks/{bob_task}", server.url))
        .header("cookie", browser.session_cookie().await)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);

    // Cancelling a running task: the model answers slowly, so the task is in progress.
    model.set_delay(Duration::from_secs(30));
    model.push(Step::Reply(Turn::text("never read")));
    let mine = server
        .call(
            reqwest::Method::POST,
            "/tasks",
            Some(json!({"description": "Something slow", "repos": [repo]})),
        )
        .await;
    let mine = mine["id"].as_str().unwrap().to_owned();
    server.until(&mine, "in_progress").await;
    browser.goto(&format!("{}/tasks/{mine}", server.url)).await;
    assert!(
        !browser.exists("#answer-form").await,
        "nothing to answer while it runs"
    );
    // Cancelling asks first: a dialog with the script (web_look.rs checks the page that asks
    // without it). Dismissed, nothing happens; accepted, the task is cancelled.
    browser.click("#cancel-form button").await;
    browser.page().dismiss_alert().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server
            .call(reqwest::Method::GET, &format!("/tasks/{mine}"), None)
            .await["state"],
        "in_progress",
        "dismissing the dialog cancelled the task"
    );
    browser.click("#cancel-form button").await;
    browser.page().accept_alert().await.unwrap();
    browser
        .until(
            "document.querySelector('#state')?.dataset.state === 'cancelled'",
            "the cancellation",
        )
        .await;
    assert!(
        !browser.exists("#cancel-form").await,
        "a cancelled task offers no controls"
    );
    assert_eq!(server.until(&mine, "cancelled").await["state"], "cancelled");
    browser.close().await;
}

/// The agent's chat reply is Markdown drawn as HTML that cannot act: its list, code block and
/// table are drawn, the script and the image it wrote are shown as text and never run or load,
/// and the person's own Markdown stays the plain text they typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_chat_reply_is_drawn_from_markdown_and_its_script_never_runs() {
    let dir = tempfile::tempdir().unwrap();
    let repo = greeter_repo(dir.path());
    let reply = "## The plan\n\n- read `test.sh`\n- write **greeting.txt**\n\n```sh\n./test.sh && echo 'a long line that scrolls inside its block rather than widening the page at a phone width'\n```\n\n<script>document.title = 'pwned'; window.pwned = true;</script>\n\nInline <script>window.pwned = true</script> too, <img src=x onerror=\"window.pwned = true\">, and [a link](javascript:window.pwned=true).\n\n| step | done |\n| --- | --- |\n| read | yes |\n";
    let model = ScriptedModel::start(vec![Step::Reply(Turn::text(reply))]).await;
    let data = dir.path().join("data");
    let server = start(&data, &model);
    let password = "correct horse battery staple";
    set_password(&data, "admin", password);
    let chat = server
        .call(
            reqwest::Method::POST,
            "/chats",
            Some(json!({"repos": [repo]})),
        )
        .await;
    let chat = chat["id"].as_str().unwrap().to_owned();
    let answered = server
        .call(
            reqwest::Method::POST,
            &format!("/chats/{chat}/messages"),
            Some(json!({"message": "Add a **greeting** <b>file</b>"})),
        )
        .await;
    assert_eq!(answered["reply"]["message"], reply, "{answered}");

    let browser = Browser::start().await;
    sign_in_with_password(&browser, &server, "admin", password).await;
    browser.goto(&format!("{}/chats/{chat}", server.url)).await;
    // Drawn: a heading below the page's own, the list, the code block, the table.
    assert_eq!(
        browser.text("#messages li.agent .reply h4").await,
        "The plan"
    );
    assert_eq!(
        browser
            .js("return [...document.querySelectorAll('#messages li.agent .reply ul li')].map(li => li.innerText)")
            .await,
        json!(["read test.sh", "write greeting.txt"])
    );
    assert!(browser.exists("#messages li.agent .reply ul li code").await);
    assert!(browser.exists("#messages li.agent .reply li strong").await);
    let code = browser.text("#messages li.agent .reply pre code").await;
    assert!(code.starts_with("./test.sh && echo"), "{code}");
    assert_eq!(
        browser.text("#messages li.agent .reply table td").await,
        "read"
    );
    // Inert: what the reply wrote as HTML is on the page as text, with no element of its own;
    // nothing ran (the CSP would stop an inline script too, but none was even drawn).
    let shown = browser.text("#messages li.agent .reply").await;
    for text in ["<script>document.title = 'pwned'", "<img src=x onerror="] {
        assert!(shown.contains(text), "`{text}` is not shown: {shown}");
    }
    assert_eq!(
        browser
            .js("return document.querySelectorAll('#messages script, #messages img, #messages iframe, #messages [onerror], #messages [style], #messages a[href^=\"javascript\" i]').length")
            .await,
        json!(0)
    );
    assert!(
        !browser.exists("#messages li.agent .reply a").await,
        "the javascript: link is drawn as its text"
    );
    assert_eq!(
        browser
            .js("return [document.title.includes('pwned'), window.pwned === undefined]")
            .await,
        json!([false, true])
    );
    // The person's own message is the text they typed, not Markdown or HTML.
    assert_eq!(
        browser.text("#messages li.mine p.pre").await,
        "Add a **greeting** <b>file</b>"
    );
    assert!(
        !browser
            .exists("#messages li.mine strong, #messages li.mine b")
            .await
    );
    for (size, width) in [(DESKTOP, 1280), (PHONE, 390)] {
        browser.resize(size).await;
        browser.page().refresh().await.unwrap();
        browser
            .check_page(&format!("chat with markdown ({width})"))
            .await;
        browser.screenshot(&format!("chat-markdown-{width}")).await;
    }
    assert_eq!(model.violations(), Vec::<String>::new());
    browser.close().await;
}

async fn sign_in_attempt(browser: &Browser, server: &Server, name: &str, password: &str) {
    browser.goto(&format!("{}/login", server.url)).await;
    browser.fill("#name", name).await;
    browser.fill("#password", password).await;
    browser.click("form button[type=submit]").await;
    browser
        .until(
            "document.getElementById('login-error')",
            "the sign-in answer",
        )
        .await;
}
