//! A task's changes in a real browser: the files with their counts, each folded on its own,
//! numbered and highlighted, unified or split; the pull request's description as Markdown
//! (with an injected script inert); the command that checks the branch out (run for real);
//! and the local forge's Merge (the default branch then holds the change, read with git),
//! a merge that conflicts refused, and Close.
//!
//! Screenshots go to `target/web-screenshots/diff-*.png`, at desktop and phone widths.

mod common;

use std::path::{Path, PathBuf};

use common::browser::{Browser, DESKTOP, PHONE, set_password, sign_in_with_password};
use common::{call, sh, start};
use deft_testkit::model_server::{ScriptedModel, Step, Turn};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

/// A repository with a Python file, a note to delete and a check that passes.
fn shop_repo(dir: &Path) -> PathBuf {
    let repo = dir.join("shop");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(
        repo.join("app.py"),
        "def greet(name):\n    return \"hello \" + name\n\n\nprint(greet(\"world\"))\n",
    )
    .unwrap();
    std::fs::write(repo.join("old.txt"), "old notes\n").unwrap();
    sh(
        &repo,
        "echo '#!/bin/sh' > test.sh && chmod +x test.sh && git init -q -b main && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init",
    );
    repo.canonicalize().unwrap()
}

/// A task that changes `app.py`'s greeting to `greeting`, and with `more` also adds a
/// JavaScript file and deletes `old.txt`; its summary holds Markdown and a script.
fn change(greeting: &str, more: bool) -> Vec<Step> {
    let plan = r#"{"requirements": ["a friendlier shop"], "acceptance_criteria": ["./test.sh passes"], "steps": ["Change the shop"]}"#;
    let edit = json!({
        "command": "str_replace",
        "path": "shop/app.py",
        "old_str": "    return \"hello \" + name",
        "new_str": format!("    return {greeting}"),
    });
    let mut steps = vec![
        call("p", "submit_plan", plan),
        call("e", "str_replace_based_edit_tool", &edit.to_string()),
    ];
    if more {
        let js = json!({
            "command": "create",
            "path": "shop/web/cart.js",
            "file_text": "export function total(items) {\n  return items.reduce((sum, i) => sum + i.price, 0); // in cents\n}\n",
        });
        steps.push(call("j", "str_replace_based_edit_tool", &js.to_string()));
        steps.push(call(
            "d",
            "bash",
            r#"{"command": "rm /workspace/shop/old.txt"}"#,
        ));
    }
    steps.push(call(
        "f",
        "finish",
        r#"{"summary": "Made the shop **friendlier** <script>window.pwned = 1</script>"}"#,
    ));
    steps.push(Step::Reply(Turn::text(
        r#"{"verdict": "pass", "checked": ["the diff meets each criterion"]}"#,
    )));
    steps
}

/// The rows of a file's table: per row its cells' text.
async fn rows(browser: &Browser, file: &str) -> Vec<Vec<String>> {
    let rows = browser
        .js(&format!(
            "return [...document.querySelectorAll('#{file} tbody tr:not(.hunk)')].map(tr => [...tr.cells].map(td => td.innerText));"
        ))
        .await;
    serde_json::from_value(rows).unwrap()
}

/// Screenshots of the files themselves, below the description, at both widths.
async fn shoot_files(browser: &Browser, name: &str) {
    for (size, width) in [(DESKTOP, "desktop"), (PHONE, "phone")] {
        browser.resize(size).await;
        browser
            .js("document.getElementById('pr0-files').scrollIntoView(); return 1;")
            .await;
        browser.screenshot(&format!("{name}-{width}")).await;
    }
    browser.resize(DESKTOP).await;
}

fn git(repo: &Path, args: &str) -> String {
    sh(repo, &format!("git {args}")).trim().to_owned()
}

/// Merge, confirmed in the dialog, refused: what the page says why.
async fn merge_refused(browser: &Browser) -> String {
    browser.click("#merge-form-0 button").await;
    browser.page().accept_alert().await.unwrap();
    browser
        .until("document.getElementById('pr-error')", "the refusal")
        .await;
    browser.text("#pr-error").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_changes_are_listed_numbered_highlighted_and_merged_or_closed() {
    let dir = tempfile::tempdir().unwrap();
    let shop = shop_repo(dir.path());
    let mut script = change("f\"hello, {name}!\"", true);
    script.extend(change("\"hi \" + name", false));
    let model = ScriptedModel::start(script).await;
    let data = dir.path().join("data");
    let server = start(&data, &model);
    set_password(&data, "admin", PASSWORD);

    let tidy = server.create_task("Tidy the shop", &shop).await;
    let done = server.until(&tidy, "completed").await;
    let branch = done["pull_requests"][0]["head"]
        .as_str()
        .unwrap()
        .to_owned();
    // The second task starts from the same main and changes the same line.
    let clash = server.create_task("Say hi in the shop", &shop).await;
    server.until(&clash, "completed").await;

    let browser = Browser::start().await;
    sign_in_with_password(&browser, &server, "admin", PASSWORD).await;

    // The task's page lists the files with their counts and links to each.
    browser.goto(&format!("{}/tasks/{tidy}", server.url)).await;
    let listed = browser
        .js("return [...document.querySelectorAll('.pr .file-list li')].map(li => li.innerText);")
        .await;
    assert_eq!(
        listed,
        json!([
            "app.py modified +1 −1",
            "old.txt deleted +0 −1",
            "web/cart.js added +3 −0"
        ])
    );
    assert!(
        browser
            .text(".pr .meta")
            .await
            .contains("3 file(s) · +4 −2"),
        "{}",
        browser.text(".pr .meta").await
    );
    browser.click("#diff-link-0").await;
    browser
        .until(
            &format!("location.pathname === '/tasks/{tidy}/diff'"),
            "the diff page",
        )
        .await;

    // The file list at the top, each linking to its file.
    let files = browser
        .js("return [...document.querySelectorAll('#pr0-files li')].map(li => [li.innerText, li.querySelector('a').getAttribute('href')]);")
        .await;
    assert_eq!(
        files,
        json!([
            ["app.py modified +1 −1", "#pr0-f0"],
            ["old.txt deleted +0 −1", "#pr0-f1"],
            ["web/cart.js added +3 −0", "#pr0-f2"]
        ])
    );
    // Unified: old and new line numbers, the change's sign, the code.
    assert_eq!(
        rows(&browser, "pr0-f0").await,
        [
            ["1", "1", "", "def greet(name):"],
            ["2", "", "-", "    return \"hello \" + name"],
            ["", "2", "+", "    return f\"hello, {name}!\""],
            ["3", "3", "", ""],
            ["4", "4", "", ""],
            ["5", "5", "", "print(greet(\"world\"))"],
        ]
    );
    assert_eq!(
        rows(&browser, "pr0-f1").await,
        [["1", "", "-", "old notes"]]
    );
    // Highlighted on the server, with classes.
    for (file, class) in [
        ("pr0-f0", "sx-python"),
        ("pr0-f0", "sx-string"),
        ("pr0-f2", "sx-js"),
        ("pr0-f2", "sx-comment"),
    ] {
        assert!(
            browser.exists(&format!("#{file} td.c .{class}")).await,
            "no .{class} in {file}"
        );
    }
    assert_eq!(
        browser
            .js("return document.querySelectorAll('[style]').length")
            .await,
        json!(0),
        "no inline style"
    );
    // The description: Markdown drawn, the script shown as text and never run.
    assert_eq!(
        browser.text("#pr0-body strong").await,
        "friendlier",
        "Markdown is drawn"
    );
    assert!(
        browser
            .text("#pr0-body")
            .await
            .contains("<script>window.pwned = 1</script>"),
        "the script shows as text"
    );
    assert_eq!(
        browser
            .js("return typeof window.pwned + document.querySelectorAll('#pr0-body script').length")
            .await,
        json!("undefined0")
    );
    // The checkout command, which works as written in a clone.
    let command = browser.text("#checkout-0").await;
    assert_eq!(
        command,
        format!(
            "git fetch {} {branch}:{branch} && git checkout {branch}",
            shop.display()
        )
    );
    sh(
        dir.path(),
        &format!("git clone -q {} reader", shop.display()),
    );
    let reader = dir.path().join("reader");
    sh(&reader, &command);
    assert_eq!(git(&reader, "branch --show-current"), branch);
    assert!(reader.join("web/cart.js").exists() && !reader.join("old.txt").exists());
    browser.click("button[data-copy='checkout-0']").await;
    let said = browser.text("button[data-copy='checkout-0']").await;
    assert!(
        said == "Copied" || said.starts_with("Selected"),
        "the copy button says {said}"
    );
    // Folding: a file's summary folds it, and an anchor unfolds it again.
    browser.click("#pr0-f2 > summary").await;
    assert_eq!(
        browser
            .js("return document.getElementById('pr0-f2').open")
            .await,
        json!(false)
    );
    browser.click("a[href='#pr0-f2']").await;
    browser
        .until(
            "document.getElementById('pr0-f2').open",
            "the file unfolding at its anchor",
        )
        .await;
    browser.capture("diff-unified").await;
    shoot_files(&browser, "diff-unified-files").await;

    // Split: the old side and the new side in their own columns.
    browser.click("#view-split").await;
    browser
        .until("document.querySelector('table.split')", "the split layout")
        .await;
    assert_eq!(
        rows(&browser, "pr0-f0").await[..3],
        [
            ["1", "def greet(name):", "1", "def greet(name):"],
            [
                "2",
                "    return \"hello \" + name",
                "2",
                "    return f\"hello, {name}!\""
            ],
            ["3", "", "3", ""],
        ]
    );
    assert_eq!(
        browser
            .js("return document.querySelector('#view-split').getAttribute('aria-current')")
            .await,
        json!("page")
    );
    // At phone width the split table scrolls inside its file, never the page (checked by
    // `capture`).
    browser.capture("diff-split").await;
    shoot_files(&browser, "diff-split-files").await;
    browser.resize(PHONE).await;
    let scrolls = browser
        .js("const b = document.querySelector('#pr0-f0 .file-body'); return b.scrollWidth > b.clientWidth;")
        .await;
    assert_eq!(scrolls, json!(true), "the split table scrolls in its file");
    browser.resize(DESKTOP).await;

    // The branch moves after the page was read (the task pushed again): Merge refuses, for
    // what would be merged is not what was shown; the page read again merges.
    browser
        .goto(&format!("{}/tasks/{tidy}/diff", server.url))
        .await;
    let main_before = git(&shop, "rev-parse main");
    git(
        &shop,
        &format!(
            "-c user.name=t -c user.email=t@t commit-tree -p {branch} -m later {branch}^{{tree}} \
             | xargs git update-ref refs/heads/{branch}"
        ),
    );
    let refusal = merge_refused(&browser).await;
    assert!(
        refusal.contains("moved since the diff you looked at"),
        "{refusal}"
    );
    assert_eq!(git(&shop, "rev-parse main"), main_before, "nothing merged");

    // Merge: the confirmation, then main holds the change, in the work tree too.
    browser
        .goto(&format!("{}/tasks/{tidy}/diff", server.url))
        .await;
    browser.click("#merge-form-0 button").await;
    browser.page().accept_alert().await.unwrap();
    browser
        .until(
            "document.getElementById('pr0-status')?.innerText === 'merged'",
            "the merge",
        )
        .await;
    assert!(browser.text("#diff-notice").await.starts_with("Merged"));
    assert!(!browser.exists("#merge-form-0").await, "merged: no button");
    assert_eq!(
        git(&shop, "rev-parse main"),
        git(&shop, &format!("rev-parse {branch}"))
    );
    assert!(git(&shop, "show main:app.py").contains("f\"hello, {name}!\""));
    assert!(git(&shop, "ls-tree --name-only -r main").contains("web/cart.js"));
    assert!(!shop.join("old.txt").exists(), "the work tree follows main");
    assert_eq!(git(&shop, "status --porcelain"), "");
    let api: Value = server
        .call(reqwest::Method::GET, &format!("/tasks/{tidy}"), None)
        .await;
    assert_eq!(api["pull_requests"][0]["status"], "merged");

    // The other task changed the same line: its merge is refused, saying why; then closed.
    browser
        .goto(&format!("{}/tasks/{clash}/diff", server.url))
        .await;
    let main_before = git(&shop, "rev-parse main");
    let refusal = merge_refused(&browser).await;
    assert!(
        refusal.contains("does not merge cleanly") && refusal.contains("app.py"),
        "{refusal}"
    );
    assert_eq!(git(&shop, "rev-parse main"), main_before, "nothing merged");
    // A refusal is the answer to a form: looked at where it stands, never reloaded.
    for (size, width) in [(DESKTOP, "desktop"), (PHONE, "phone")] {
        browser.resize(size).await;
        browser.check_page(&format!("diff-refused ({width})")).await;
        browser.screenshot(&format!("diff-refused-{width}")).await;
    }
    browser.resize(DESKTOP).await;
    browser
        .goto(&format!("{}/tasks/{clash}/diff", server.url))
        .await;
    browser.click("#close-form-0 button").await;
    browser.page().accept_alert().await.unwrap();
    browser
        .until(
            "document.getElementById('pr0-status')?.innerText === 'closed'",
            "the close",
        )
        .await;
    assert_eq!(git(&shop, "rev-parse main"), main_before);
    let api: Value = server
        .call(reqwest::Method::GET, &format!("/tasks/{clash}"), None)
        .await;
    assert_eq!(api["pull_requests"][0]["status"], "closed");
    browser.capture("diff-closed").await;
    browser.close().await;
}
