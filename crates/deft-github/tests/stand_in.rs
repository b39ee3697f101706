//! The calls the engine makes when an owner gives feedback, and the App's user authorization,
//! against the GitHub stand-in of deft-testkit (real answer examples, App JWT and installation
//! tokens checked), with an App key made by `openssl` for this test.

use std::path::Path;
use std::process::Command;

use deft_github::{GitHub, GithubAuth, GithubConfig, OAuthApp, Pkce, PullState, RepoName};
use deft_testkit::github_server::{CheckRunSpec, GithubStandIn, ThreadSpec};

const REPO: &str = "octo-org/widgets";

fn sh(dir: &Path, script: &str) -> String {
    let output = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{script}: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The stand-in with the App installed on a repository that has a branch `feature`, and a
/// client of it as that App, with the App's OAuth client set.
async fn connected(dir: &Path) -> (GithubStandIn, GitHub) {
    sh(
        dir,
        "openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out app.pem && openssl rsa -in app.pem -pubout -out app.pub.pem 2>/dev/null \
         && git init -q -b main work && cd work && echo a > a && git add a && git -c user.name=t -c user.email=t@t commit -q -m a \
         && git checkout -q -b feature && echo b > b && git add b && git -c user.name=t -c user.email=t@t commit -q -m b \
         && cd .. && git clone -q --bare work widgets.git",
    );
    let github = GithubStandIn::start(7, &std::fs::read(dir.join("app.pub.pem")).unwrap(), 9).await;
    github.add_repo(REPO, &dir.join("widgets.git"), "main");
    github.set_oauth("Iv1.client", "client-secret", Some("octocat"));
    let client = GitHub::new(&GithubConfig {
        api_url: github.url.clone(),
        auth: GithubAuth::App {
            app_id: 7,
            private_key_pem: std::fs::read(dir.join("app.pem")).unwrap(),
        },
        webhook_secret: None,
        label: "deft".into(),
        oauth: Some(OAuthApp {
            client_id: "Iv1.client".into(),
            client_secret: "client-secret".into(),
            web_url: github.url.clone(),
        }),
    })
    .unwrap();
    (github, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_reads_threads_comments_the_head_and_failing_checks_with_their_logs() {
    let dir = tempfile::tempdir().unwrap();
    let (github, client) = connected(dir.path()).await;
    let repo = RepoName::parse(REPO).unwrap();
    let pull = client
        .open_pull_request(&repo, "feature", "main", "Add b", "Adds b.")
        .await
        .unwrap();

    github.set_review_threads(
        REPO,
        pull.number,
        &[
            ThreadSpec {
                resolved: false,
                path: "b",
                comments: &[
                    (9001, "reviewer", "Why b?"),
                    (9002, "octocat", "Agreed, say why."),
                ],
            },
            ThreadSpec {
                resolved: true,
                path: "a",
                comments: &[(9003, "reviewer", "Fixed already")],
            },
        ],
    );
    let threads = client.review_threads(&repo, pull.number).await.unwrap();
    let open: Vec<_> = threads.iter().filter(|t| !t.is_resolved).collect();
    assert_eq!((threads.len(), open.len()), (2, 1));
    let said: Vec<_> = open[0]
        .comments
        .iter()
        .map(|c| {
            (
                c.database_id,
                c.author.as_str(),
                c.body.as_str(),
                c.path.as_str(),
            )
        })
        .collect();
    assert_eq!(
        said,
        [
            (Some(9001), "reviewer", "Why b?", "b"),
            (Some(9002), "octocat", "Agreed, say why.", "b")
        ]
    );
    assert!(!open[0].comments[0].created_at.is_empty());

    github.set_issue_comments(
        REPO,
        pull.number,
        &[("reviewer", "Looks odd"), ("octocat", "Fix it")],
    );
    let comments = client
        .pull_request_comments(&repo, pull.number)
        .await
        .unwrap();
    assert_eq!(
        comments
            .iter()
            .map(|c| (c.author.as_str(), c.body.as_str()))
            .collect::<Vec<_>>(),
        [("reviewer", "Looks odd"), ("octocat", "Fix it")]
    );

    let head = client.pull_request_head(&repo, pull.number).await.unwrap();
    let sha = sh(&dir.path().join("widgets.git"), "git rev-parse feature");
    assert_eq!(
        (head.sha.as_str(), head.branch.as_str(), head.state),
        (sha.as_str(), "feature", PullState::Open)
    );

    // A failing Actions job with a long log, another App's failing check, a passing one.
    let mut log = String::from("\u{feff}");
    for n in 0..3000 {
        log.push_str(&format!(
            "2024-05-01T12:00:00.0000000Z line {n} of the build\n"
        ));
    }
    log.push_str(
        "2024-05-01T12:00:01.0000000Z \u{1b}[31merror[E0308]\u{1b}[0m: mismatched types\n",
    );
    log.push_str("2024-05-01T12:00:02.0000000Z ##[error]Process completed with exit code 101.\n");
    let job = github.add_check_run(
        REPO,
        &sha,
        &CheckRunSpec {
            name: "tests",
            conclusion: "failure",
            title: "1 error",
            summary: "cargo test failed",
            text: "",
            log: Some(&log),
        },
    );
    github.add_check_run(
        REPO,
        &sha,
        &CheckRunSpec {
            name: "lint",
            conclusion: "action_required",
            title: "Style",
            summary: "Two warnings",
            text: "see README",
            log: None,
        },
    );
    github.add_check_run(
        REPO,
        &sha,
        &CheckRunSpec {
            name: "docs",
            conclusion: "success",
            title: "ok",
            summary: "ok",
            text: "",
            log: None,
        },
    );
    let failing = client.failing_checks(&repo, &sha).await.unwrap();
    assert_eq!(
        failing
            .iter()
            .map(|c| (c.name.as_str(), c.conclusion.as_str()))
            .collect::<Vec<_>>(),
        [("tests", "failure"), ("lint", "action_required")]
    );
    let tests_log = failing[0].log.as_deref().unwrap();
    assert!(
        tests_log.ends_with(
            "error[E0308]: mismatched types\nerror: Process completed with exit code 101.\n"
        ),
        "{tests_log}"
    );
    assert!(
        tests_log.starts_with("[… the log's earlier lines are cut …]\n"),
        "{tests_log}"
    );
    assert!(!tests_log.contains("2024-05-01T") && !tests_log.contains('\u{1b}'));
    assert!(tests_log.len() < 13_000, "trimmed: {}", tests_log.len());
    assert_eq!(failing[1].summary.as_deref(), Some("Two warnings"));
    assert_eq!(failing[1].log, None, "not an Actions job");
    // The log came from the download address, asked for its tail, without the token.
    let downloads = github.downloads();
    assert_eq!(downloads.len(), 1);
    assert_eq!(
        (
            downloads[0].job,
            downloads[0].range.as_deref(),
            downloads[0].authorized
        ),
        (job, Some("bytes=-65536"), false)
    );

    github.close_pull(REPO, pull.number, true);
    let head = client.pull_request_head(&repo, pull.number).await.unwrap();
    assert_eq!(head.state, PullState::Merged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_from_the_authorize_page_names_its_login_once_and_only_with_its_verifier() {
    let dir = tempfile::tempdir().unwrap();
    let (github, client) = connected(dir.path()).await;
    let redirect = "http://127.0.0.1:1/settings/github/callback";
    let browser = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // What GitHub's authorize page sends back: `code` and the same `state`.
    let authorize = |pkce: &Pkce| {
        let url = client
            .oauth()
            .unwrap()
            .authorize_url(redirect, "state-1", pkce);
        let browser = browser.clone();
        async move {
            let answer = browser.get(url).send().await.unwrap();
            assert_eq!(answer.status(), 302);
            let location = answer.headers()["location"].to_str().unwrap().to_owned();
            let query = location.split_once('?').unwrap().1.to_owned();
            let pairs: std::collections::HashMap<String, String> = form_urlencoded_pairs(&query);
            assert_eq!(pairs["state"], "state-1");
            pairs["code"].clone()
        }
    };
    let pkce = Pkce::generate();
    let code = authorize(&pkce).await;
    assert_eq!(
        client
            .authorized_login(&code, redirect, &pkce.verifier)
            .await
            .unwrap(),
        "octocat"
    );
    let again = client
        .authorized_login(&code, redirect, &pkce.verifier)
        .await
        .unwrap_err();
    assert!(
        again.to_string().contains("bad_verification_code"),
        "{again}"
    );
    let code = authorize(&pkce).await;
    let wrong = client
        .authorized_login(&code, redirect, &Pkce::generate().verifier)
        .await
        .unwrap_err();
    assert!(
        wrong.to_string().contains("bad_verification_code"),
        "{wrong}"
    );
    assert_eq!(
        github.token_exchanges(),
        ["ok", "bad_verification_code", "bad_verification_code"]
    );
}

fn form_urlencoded_pairs(query: &str) -> std::collections::HashMap<String, String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}
