//! A GitHub stand-in on loopback, written from GitHub's REST documentation and answering with
//! objects built from the real examples in `fixtures/github-webhooks` and
//! `fixtures/github-rest`: App authentication (RS256 JWT checked with the App's public key,
//! installation tokens), the repository, permission, branch, pull request, comment and check
//! run endpoints deft calls, job logs behind a redirect, GraphQL's review threads, the App's
//! user authorization (OAuth web flow with PKCE) and `GET /user`, and git's smart HTTP
//! protocol (through `git http-backend`) that accepts only live installation tokens, so that
//! clones and pushes are checked the way GitHub checks them.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine as _;
use octocrab::jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde_json::{Value, json};

mod auth;
mod checks;
mod git;
mod graphql;
mod oauth;
mod pulls;
mod repos;

use auth::*;
use checks::*;
use git::*;
use graphql::*;
use pulls::*;
use repos::*;

pub use checks::{CheckRunSpec, Download};
pub use graphql::ThreadSpec;

/// A real payload example: `fixture("issues", "labeled.payload.json")`.
pub fn fixture(event: &str, file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/github-webhooks")
        .join(event)
        .join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("the fixture {}: {error}", path.display()));
    serde_json::from_str(&text).expect("fixtures are JSON")
}

/// A REST or GraphQL answer example: `rest_fixture("checks/check-runs.json")`.
pub fn rest_fixture(path: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/github-rest")
        .join(path);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("the fixture {}: {error}", path.display()));
    serde_json::from_str(&text).expect("fixtures are JSON")
}

/// A repository the stand-in serves.
#[derive(Debug, Clone)]
struct Repo {
    bare: PathBuf,
    default_branch: String,
    protected: HashSet<String>,
    installed: bool,
}

/// Something deft posted, as the tests read it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub repo: String,
    /// The issue or pull request number; for a reply, the review comment it answers.
    pub number: u64,
    pub body: String,
}

#[derive(Debug, Clone)]
pub struct OpenedPull {
    pub repo: String,
    pub number: u64,
    pub head: String,
    pub base: String,
    pub title: String,
    pub body: String,
    pub html_url: String,
    /// `open` or `closed`, as GitHub says it.
    pub state: String,
    pub merged: bool,
}

#[derive(Default)]
struct Hub {
    app_id: u64,
    public_key_pem: Vec<u8>,
    installation_id: u64,
    /// Installation tokens handed out, with when each expires (Unix seconds).
    tokens: HashMap<String, u64>,
    token_requests: usize,
    repos: HashMap<String, Repo>,
    permissions: HashMap<(String, String), String>,
    pulls: Vec<OpenedPull>,
    comments: Vec<Posted>,
    replies: Vec<Posted>,
    issue_comments: HashMap<(String, u64), Vec<Value>>,
    review_comments: HashMap<(String, u64, u64), Vec<Value>>,
    /// `METHOD path` of every API request, in order.
    requests: Vec<String>,
    /// API requests still to answer with 502, as GitHub does in a bad moment.
    failing: usize,
    /// Requests starting with a `METHOD path` still to answer with 502, with how many.
    failing_on: Vec<(String, usize)>,
    /// GraphQL review thread nodes per pull request.
    threads: HashMap<(String, u64), Vec<Value>>,
    /// Check runs per commit.
    check_runs: HashMap<(String, String), Vec<Value>>,
    /// GitHub Actions job logs, by job id.
    job_logs: HashMap<u64, String>,
    downloads: Vec<Download>,
    oauth: oauth::OAuthState,
}

type Shared = Arc<Mutex<Hub>>;

pub struct GithubStandIn {
    /// The API's base URL (`github.api_url`).
    pub url: String,
    hub: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GithubStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GithubStandIn {
    /// Serves the App `app_id` whose public key is `public_key_pem`, installed as
    /// installation `installation_id`.
    pub async fn start(app_id: u64, public_key_pem: &[u8], installation_id: u64) -> GithubStandIn {
        let hub = Arc::new(Mutex::new(Hub {
            app_id,
            public_key_pem: public_key_pem.to_vec(),
            installation_id,
            ..Hub::default()
        }));
        let app = Router::new()
            .route("/app/installations/{id}/access_tokens", post(access_token))
            .route("/repos/{owner}/{name}/installation", get(installation))
            .route("/app/installations", get(installations))
            .route("/installation/repositories", get(installation_repositories))
            .route("/repos/{owner}/{name}", get(repository))
            .route(
                "/repos/{owner}/{name}/collaborators/{login}/permission",
                get(permission),
            )
            .route("/repos/{owner}/{name}/branches/{*branch}", get(branch))
            .route("/repos/{owner}/{name}/compare/{*spec}", get(compare))
            .route(
                "/repos/{owner}/{name}/pulls",
                get(list_pulls).post(create_pull),
            )
            .route(
                "/repos/{owner}/{name}/pulls/{number}",
                get(get_pull).patch(update_pull),
            )
            .route(
                "/repos/{owner}/{name}/commits/{sha}/check-runs",
                get(list_check_runs),
            )
            .route(
                "/repos/{owner}/{name}/actions/jobs/{job}/logs",
                get(job_logs),
            )
            .route("/job-logs/{job}", get(download_log))
            .route("/graphql", post(graphql))
            .route("/login/oauth/authorize", get(oauth::authorize))
            .route("/login/oauth/access_token", post(oauth::access_token))
            .route("/user", get(oauth::user))
            .route(
                "/repos/{owner}/{name}/issues/{number}/comments",
                get(list_issue_comments).post(create_comment),
            )
            .route(
                "/repos/{owner}/{name}/pulls/{number}/reviews/{review}/comments",
                get(list_review_comments),
            )
            .route(
                "/repos/{owner}/{name}/pulls/{number}/comments",
                get(list_pull_comments),
            )
            .route(
                "/repos/{owner}/{name}/pulls/{number}/comments/{comment}/replies",
                post(reply),
            )
            .route("/git/{*path}", any(git_http))
            .fallback(not_found)
            .layer(axum::middleware::from_fn_with_state(
                hub.clone(),
                log_request,
            ))
            .with_state(hub.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("a bound address"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        GithubStandIn { url, hub, task }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves `full_name` from the bare repository `bare`, the App installed on it.
    pub fn add_repo(&self, full_name: &str, bare: &Path, default_branch: &str) {
        self.lock().repos.insert(
            full_name.to_owned(),
            Repo {
                bare: bare.to_path_buf(),
                default_branch: default_branch.to_owned(),
                protected: HashSet::from([default_branch.to_owned()]),
                installed: true,
            },
        );
    }

    /// Takes the App off `full_name`, as uninstalling it does.
    pub fn uninstall(&self, full_name: &str) {
        if let Some(repo) = self.lock().repos.get_mut(full_name) {
            repo.installed = false;
        }
    }

    /// `login`'s permission on `full_name` (`admin`, `write`, `read`, ...).
    pub fn set_permission(&self, full_name: &str, login: &str, permission: &str) {
        self.lock().permissions.insert(
            (full_name.to_owned(), login.to_lowercase()),
            permission.to_owned(),
        );
    }

    /// Comments an issue already has, as `GET .../issues/N/comments` returns them.
    pub fn set_issue_comments(&self, full_name: &str, number: u64, comments: &[(&str, &str)]) {
        let comments = comments
            .iter()
            .enumerate()
            .map(|(n, (login, body))| comment_json(full_name, number, 9000 + n as u64, login, body))
            .collect();
        self.lock()
            .issue_comments
            .insert((full_name.to_owned(), number), comments);
    }

    /// The comments of a review, as `GET .../pulls/N/reviews/R/comments` returns them.
    pub fn set_review_comments(
        &self,
        full_name: &str,
        pull: u64,
        review: u64,
        comments: &[(u64, &str, &str, &str)],
    ) {
        let template =
            fixture("pull_request_review_comment", "created.payload.json")["comment"].clone();
        let comments = comments
            .iter()
            .map(|(id, login, path, body)| {
                let mut comment = template.clone();
                comment["id"] = json!(id);
                comment["pull_request_review_id"] = json!(review);
                comment["user"]["login"] = json!(login);
                comment["path"] = json!(path);
                comment["body"] = json!(body);
                comment
            })
            .collect();
        self.lock()
            .review_comments
            .insert((full_name.to_owned(), pull, review), comments);
    }

    /// The review threads of pull request `pull`, as GraphQL's `reviewThreads` gives them.
    pub fn set_review_threads(&self, full_name: &str, pull: u64, threads: &[ThreadSpec<'_>]) {
        let nodes = threads
            .iter()
            .enumerate()
            .map(|(index, spec)| thread_json(index, spec))
            .collect();
        self.lock()
            .threads
            .insert((full_name.to_owned(), pull), nodes);
    }

    /// Adds a completed check run on commit `sha`; its id (and, with a log, its Actions job's).
    pub fn add_check_run(&self, full_name: &str, sha: &str, spec: &CheckRunSpec<'_>) -> u64 {
        let mut hub = self.lock();
        let id = 8_000_000 + hub.check_runs.values().map(Vec::len).sum::<usize>() as u64;
        let run = check_run_json(full_name, sha, id, spec);
        if let Some(log) = spec.log {
            hub.job_logs.insert(id, log.to_owned());
        }
        hub.check_runs
            .entry((full_name.to_owned(), sha.to_owned()))
            .or_default()
            .push(run);
        id
    }

    /// The log downloads asked for, in order.
    pub fn downloads(&self) -> Vec<Download> {
        self.lock().downloads.clone()
    }

    /// Closes pull request `number`, merged or not, as GitHub's buttons do.
    pub fn close_pull(&self, full_name: &str, number: u64, merged: bool) {
        if let Some(pull) = self
            .lock()
            .pulls
            .iter_mut()
            .find(|p| p.repo == full_name && p.number == number)
        {
            pull.state = "closed".into();
            pull.merged = merged;
        }
    }

    /// The App's OAuth client; `approver` is who approves authorizations from now on
    /// (`None`: they are denied).
    pub fn set_oauth(&self, client_id: &str, client_secret: &str, approver: Option<&str>) {
        let mut hub = self.lock();
        hub.oauth.client_id = client_id.to_owned();
        hub.oauth.client_secret = client_secret.to_owned();
        hub.oauth.approver = approver.map(str::to_owned);
    }

    /// What the token endpoint answered, in order: `ok`, or the error it gave.
    pub fn token_exchanges(&self) -> Vec<String> {
        self.lock().oauth.exchanges.clone()
    }

    /// Answers the next `count` repository API requests with 502.
    pub fn fail_next(&self, count: usize) {
        self.lock().failing = count;
    }

    /// Answers the next `count` requests whose `METHOD path` starts with `route` with 502.
    pub fn fail_next_on(&self, route: &str, count: usize) {
        self.lock().failing_on.push((route.to_owned(), count));
    }

    pub fn pulls(&self) -> Vec<OpenedPull> {
        self.lock().pulls.clone()
    }

    pub fn comments(&self) -> Vec<Posted> {
        self.lock().comments.clone()
    }

    pub fn replies(&self) -> Vec<Posted> {
        self.lock().replies.clone()
    }

    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// How many installation tokens were minted: a cache keeps this low.
    pub fn token_requests(&self) -> usize {
        self.lock().token_requests
    }
}

async fn log_request(
    State(hub): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path().to_owned();
    if !path.starts_with("/git/") && !path.starts_with("/login/") && path != "/user" {
        let line = format!("{} {}", request.method(), request.uri());
        let mut hub = hub.lock().unwrap_or_else(|e| e.into_inner());
        hub.requests.push(line);
        if hub.failing > 0 && !path.starts_with("/app/") {
            hub.failing -= 1;
            return error(StatusCode::BAD_GATEWAY, "Server Error");
        }
        let line = format!("{} {}", request.method(), request.uri().path());
        if let Some((_, left)) = hub
            .failing_on
            .iter_mut()
            .find(|(route, left)| *left > 0 && line.starts_with(route.as_str()))
        {
            *left -= 1;
            return error(StatusCode::BAD_GATEWAY, "Server Error");
        }
    }
    next.run(request).await
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(
            json!({"message": message, "documentation_url": "https://docs.github.com/rest"}),
        ),
    )
        .into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Not Found")
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// `2026-11-29T14:03:07Z` for a Unix time (days to civil date, after Howard Hinnant).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn unix_times_are_written_as_github_writes_them() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_764_424_987), "2025-11-29T14:03:07Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
