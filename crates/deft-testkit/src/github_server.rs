//! A GitHub stand-in on loopback, written from GitHub's REST documentation and answering with
//! objects built from the real payload examples in `fixtures/github-webhooks`: App
//! authentication (RS256 JWT checked with the App's public key, installation tokens), the
//! repository, permission, branch, pull request and comment endpoints deft calls, and git's
//! smart HTTP protocol (through `git http-backend`) that accepts only live installation
//! tokens, so that clones and pushes are checked the way GitHub checks them.

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
                axum::routing::patch(update_pull),
            )
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

    /// Answers the next `count` repository API requests with 502.
    pub fn fail_next(&self, count: usize) {
        self.lock().failing = count;
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
    if !path.starts_with("/git/") {
        let line = format!("{} {}", request.method(), request.uri());
        let mut hub = hub.lock().unwrap_or_else(|e| e.into_inner());
        hub.requests.push(line);
        if hub.failing > 0 && !path.starts_with("/app/") {
            hub.failing -= 1;
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

#[derive(serde::Deserialize)]
struct AppClaims {
    iss: Value,
}

/// The App's JWT, checked as GitHub checks it: RS256, signed by the App's key, not expired,
/// issued by the App.
fn app_authorized(hub: &Hub, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            error(
                StatusCode::UNAUTHORIZED,
                "A JSON web token could not be decoded",
            )
        })?;
    let key = DecodingKey::from_rsa_pem(&hub.public_key_pem)
        .map_err(|_| Box::new(error(StatusCode::INTERNAL_SERVER_ERROR, "bad test key")))?;
    let mut validation = Validation::new(Algorithm::RS256);
    // GitHub Apps send `iss` as a number, which the library's own issuer check cannot read;
    // it is checked below.
    validation.set_required_spec_claims(&["exp", "iat"]);
    let claims = decode::<AppClaims>(token, &key, &validation)
        .map_err(|e| {
            error(
                StatusCode::UNAUTHORIZED,
                &format!("A JSON web token could not be decoded: {e}"),
            )
        })?
        .claims;
    let issuer = match &claims.iss {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    if issuer != Some(hub.app_id) {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "'Issuer' claim ('iss') must be an Integer",
        )));
    }
    Ok(())
}

/// An installation token (or nothing): what the API and git calls must carry.
fn installation_authorized(hub: &Hub, headers: &HeaderMap) -> bool {
    let value = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let token = if let Some(token) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("token "))
    {
        token.to_owned()
    } else if let Some(basic) = value.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .unwrap_or_default();
        match decoded.split_once(':') {
            Some(("x-access-token", token)) => token.to_owned(),
            _ => return false,
        }
    } else {
        return false;
    };
    hub.tokens
        .get(&token)
        .is_some_and(|expires| *expires > now_secs())
}

async fn access_token(
    State(hub): State<Shared>,
    UrlPath(id): UrlPath<u64>,
    headers: HeaderMap,
) -> Response {
    let mut hub = hub.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(response) = app_authorized(&hub, &headers) {
        return *response;
    }
    if id != hub.installation_id {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let token = format!("ghs_{}", uuid::Uuid::new_v4().simple());
    let expires = now_secs() + 3600;
    hub.tokens.insert(token.clone(), expires);
    hub.token_requests += 1;
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "token": token,
            "expires_at": rfc3339(expires),
            "permissions": {"contents": "write", "issues": "write", "pull_requests": "write", "checks": "read", "metadata": "read"},
            "repository_selection": "selected"
        })),
    )
        .into_response()
}

async fn installations(State(hub): State<Shared>, headers: HeaderMap) -> Response {
    let hub = hub.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(response) = app_authorized(&hub, &headers) {
        return *response;
    }
    let mut body = fixture("installation", "created.payload.json")["installation"].clone();
    body["id"] = json!(hub.installation_id);
    body["app_id"] = json!(hub.app_id);
    axum::Json(json!([body])).into_response()
}

async fn installation_repositories(State(hub): State<Shared>, headers: HeaderMap) -> Response {
    let hub = hub.lock().unwrap_or_else(|e| e.into_inner());
    if !installation_authorized(&hub, &headers) {
        return error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    let base = base_of(&headers);
    let mut names: Vec<&String> = hub
        .repos
        .iter()
        .filter(|(_, r)| r.installed)
        .map(|(n, _)| n)
        .collect();
    names.sort();
    let repositories: Vec<Value> = names
        .into_iter()
        .map(|name| repo_json(&base, name, &hub.repos[name]))
        .collect();
    axum::Json(json!({"total_count": repositories.len(), "repository_selection": "selected", "repositories": repositories}))
        .into_response()
}

fn repo_entry(hub: &Hub, owner: &str, name: &str) -> Option<(String, Repo)> {
    let full = format!("{owner}/{name}");
    hub.repos
        .get(&full)
        .filter(|repo| repo.installed)
        .map(|repo| (full, repo.clone()))
}

async fn installation(
    State(hub): State<Shared>,
    UrlPath((owner, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let hub = hub.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(response) = app_authorized(&hub, &headers) {
        return *response;
    }
    if repo_entry(&hub, &owner, &name).is_none() {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let mut body = fixture("installation", "created.payload.json")["installation"].clone();
    body["id"] = json!(hub.installation_id);
    body["app_id"] = json!(hub.app_id);
    axum::Json(body).into_response()
}

/// Checks the installation token, then finds the repository; the error GitHub would give.
fn guarded(
    hub: &Hub,
    headers: &HeaderMap,
    owner: &str,
    name: &str,
) -> Result<(String, Repo), Box<Response>> {
    if !installation_authorized(hub, headers) {
        return Err(Box::new(error(StatusCode::UNAUTHORIZED, "Bad credentials")));
    }
    repo_entry(hub, owner, name).ok_or_else(|| Box::new(error(StatusCode::NOT_FOUND, "Not Found")))
}

fn repo_json(base: &str, full: &str, repo: &Repo) -> Value {
    let (owner, name) = full.split_once('/').unwrap_or((full, full));
    let mut body = fixture("issues", "labeled.payload.json")["repository"].clone();
    body["name"] = json!(name);
    body["full_name"] = json!(full);
    body["owner"]["login"] = json!(owner);
    body["default_branch"] = json!(repo.default_branch);
    body["html_url"] = json!(format!("https://github.example/{full}"));
    body["clone_url"] = json!(format!("{base}/git/{full}.git"));
    body["url"] = json!(format!("{base}/repos/{full}"));
    body
}

fn base_of(headers: &HeaderMap) -> String {
    format!(
        "http://{}",
        headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("127.0.0.1")
    )
}

async fn repository(
    State(hub): State<Shared>,
    UrlPath((owner, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let hub = hub.lock().unwrap_or_else(|e| e.into_inner());
    match guarded(&hub, &headers, &owner, &name) {
        Ok((full, repo)) => axum::Json(repo_json(&base_of(&headers), &full, &repo)).into_response(),
        Err(response) => *response,
    }
}

async fn permission(
    State(hub): State<Shared>,
    UrlPath((owner, name, login)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let hub = hub.lock().unwrap_or_else(|e| e.into_inner());
    let (full, _) = match guarded(&hub, &headers, &owner, &name) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let Some(permission) = hub.permissions.get(&(full, login.to_lowercase())) else {
        return error(StatusCode::NOT_FOUND, &format!("{login} is not a user"));
    };
    axum::Json(json!({
        "permission": permission,
        "role_name": permission,
        "user": {"login": login, "type": "User"}
    }))
    .into_response()
}

async fn branch(
    State(hub): State<Shared>,
    UrlPath((owner, name, branch)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let hub = hub.lock().unwrap_or_else(|e| e.into_inner());
    let (_, repo) = match guarded(&hub, &headers, &owner, &name) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let exists = std::process::Command::new("git")
        .args([
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{branch}"),
        ])
        .current_dir(&repo.bare)
        .output()
        .is_ok_and(|out| out.status.success());
    if !exists {
        return error(StatusCode::NOT_FOUND, "Branch not found");
    }
    axum::Json(json!({"name": branch, "protected": repo.protected.contains(&branch)}))
        .into_response()
}

/// `GET /repos/{owner}/{name}/compare/{base}...{head}`: the files changed, each with its patch
/// (the hunks, without the file headers), as GitHub answers.
async fn compare(
    State(hub): State<Shared>,
    UrlPath((owner, name, spec)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let repo = {
        let hub = hub.lock().unwrap_or_else(|e| e.into_inner());
        match guarded(&hub, &headers, &owner, &name) {
            Ok((_, repo)) => repo,
            Err(response) => return *response,
        }
    };
    let Some((base, head)) = spec.split_once("...") else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(&repo.bare)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let range = format!("{base}...{head}");
    let Some(names) = git(&["diff", "--name-status", &range]) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let files: Vec<Value> = names
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(status, file)| {
            let diff = git(&["diff", &range, "--", file]).unwrap_or_default();
            let patch = diff
                .find("@@")
                .map_or(String::new(), |at| diff[at..].to_owned());
            let status = match status {
                "A" => "added",
                "D" => "removed",
                _ => "modified",
            };
            json!({"filename": file, "status": status, "patch": patch})
        })
        .collect();
    axum::Json(json!({"status": "ahead", "files": files})).into_response()
}

fn pull_json(base: &str, pull: &OpenedPull) -> Value {
    let mut body = fixture("pull_request", "opened.payload.json")["pull_request"].clone();
    body["number"] = json!(pull.number);
    body["title"] = json!(pull.title);
    body["body"] = json!(pull.body);
    body["state"] = json!("open");
    body["html_url"] = json!(pull.html_url);
    body["url"] = json!(format!("{base}/repos/{}/pulls/{}", pull.repo, pull.number));
    body["head"]["ref"] = json!(pull.head);
    body["base"]["ref"] = json!(pull.base);
    body
}

#[derive(serde::Deserialize)]
struct PullQuery {
    head: Option<String>,
    state: Option<String>,
}

async fn list_pulls(
    State(hub): State<Shared>,
    UrlPath((owner, name)): UrlPath<(String, String)>,
    Query(query): Query<PullQuery>,
    headers: HeaderMap,
) -> Response {
    let hub = hub.lock().unwrap_or_else(|e| e.into_inner());
    let (full, _) = match guarded(&hub, &headers, &owner, &name) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let base = base_of(&headers);
    let pulls: Vec<Value> = hub
        .pulls
        .iter()
        .filter(|p| p.repo == full)
        .filter(|_| {
            query
                .state
                .as_deref()
                .is_none_or(|s| s == "open" || s == "all")
        })
        .filter(|p| {
            query
                .head
                .as_deref()
                .is_none_or(|head| head == format!("{owner}:{}", p.head))
        })
        .map(|p| pull_json(&base, p))
        .collect();
    axum::Json(pulls).into_response()
}

async fn create_pull(
    State(hub): State<Shared>,
    UrlPath((owner, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut hub = hub.lock().unwrap_or_else(|e| e.into_inner());
    let (full, repo) = match guarded(&hub, &headers, &owner, &name) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let head = body["head"].as_str().unwrap_or_default().to_owned();
    let base = body["base"].as_str().unwrap_or_default().to_owned();
    let head_exists = std::process::Command::new("git")
        .args([
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{head}"),
        ])
        .current_dir(&repo.bare)
        .output()
        .is_ok_and(|out| out.status.success());
    if !head_exists || base.is_empty() {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "field": "head", "code": "invalid"}]})),
        )
            .into_response();
    }
    let number = 100 + hub.pulls.len() as u64 + 1;
    let pull = OpenedPull {
        html_url: format!("https://github.example/{full}/pull/{number}"),
        repo: full,
        number,
        head,
        base,
        title: body["title"].as_str().unwrap_or_default().to_owned(),
        body: body["body"].as_str().unwrap_or_default().to_owned(),
    };
    let json = pull_json(&base_of(&headers), &pull);
    hub.pulls.push(pull);
    (StatusCode::CREATED, axum::Json(json)).into_response()
}

async fn update_pull(
    State(hub): State<Shared>,
    UrlPath((owner, name, number)): UrlPath<(String, String, u64)>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut hub = hub.lock().unwrap_or_else(|e| e.into_inner());
    let (full, _) = match guarded(&hub, &headers, &owner, &name) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let base = base_of(&headers);
    let Some(pull) = hub
        .pulls
        .iter_mut()
        .find(|p| p.repo == full && p.number == number)
    else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    if let Some(title) = body["title"].as_str() {
        pull.title = title.to_owned();
    }
    if let Some(text) = body["body"].as_str() {
        pull.body = text.to_owned();
    }
    axum::Json(pull_json(&base, pull)).into_response()
}

fn comment_json(full: &str, number: u64, id: u64, login: &str, body: &str) -> Value {
    let mut comment = fixture("issue_comment", "created.payload.json")["comment"].clone();
    comment["id"] = json!(id);
    comment["user"]["login"] = json!(login);
    comment["body"] = json!(body);
    comment["html_url"] = json!(format!(
        "https://github.example/{full}/issues/{number}#issuecomment-{id}"
    ));
    comment
}

async fn list_issue_comments(
    State(hub): State<Shared>,
    UrlPath((owner, name, number)): UrlPath<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    let hub = hub.lock().unwrap_or_else(|e| e.into_inner());
    let (full, _) = match guarded(&hub, &headers, &owner, &name) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let comments = hub
        .issue_comments
        .get(&(full, number))
        .cloned()
        .unwrap_or_default();
    axum::Json(comments).into_response()
}

async fn create_comment(
    State(hub): State<Shared>,
    UrlPath((owner, name, number)): UrlPath<(String, String, u64)>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut hub = hub.lock().unwrap_or_else(|e| e.into_inner());
    let (full, _) = match guarded(&hub, &headers, &owner, &name) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let text = body["body"].as_str().unwrap_or_default().to_owned();
    let id = 50_000 + hub.comments.len() as u64;
    let json = comment_json(&full, number, id, "deft[bot]", &text);
    hub.comments.push(Posted {
        repo: full,
        number,
        body: text,
    });
    (StatusCode::CREATED, axum::Json(json)).into_response()
}

async fn list_review_comments(
    State(hub): State<Shared>,
    UrlPath((owner, name, number, review)): UrlPath<(String, String, u64, u64)>,
    headers: HeaderMap,
) -> Response {
    let hub = hub.lock().unwrap_or_else(|e| e.into_inner());
    let (full, _) = match guarded(&hub, &headers, &owner, &name) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let comments = hub
        .review_comments
        .get(&(full, number, review))
        .cloned()
        .unwrap_or_default();
    axum::Json(comments).into_response()
}

async fn list_pull_comments(
    State(hub): State<Shared>,
    UrlPath((owner, name, number)): UrlPath<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    let hub = hub.lock().unwrap_or_else(|e| e.into_inner());
    let (full, _) = match guarded(&hub, &headers, &owner, &name) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let comments: Vec<Value> = hub
        .review_comments
        .iter()
        .filter(|((repo, pull, _), _)| *repo == full && *pull == number)
        .flat_map(|(_, comments)| comments.clone())
        .collect();
    axum::Json(comments).into_response()
}

async fn reply(
    State(hub): State<Shared>,
    UrlPath((owner, name, _number, comment)): UrlPath<(String, String, u64, u64)>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut hub = hub.lock().unwrap_or_else(|e| e.into_inner());
    let (full, _) = match guarded(&hub, &headers, &owner, &name) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let text = body["body"].as_str().unwrap_or_default().to_owned();
    let mut json =
        fixture("pull_request_review_comment", "created.payload.json")["comment"].clone();
    json["id"] = json!(70_000 + hub.replies.len() as u64);
    json["in_reply_to_id"] = json!(comment);
    json["body"] = json!(text);
    json["user"]["login"] = json!("deft[bot]");
    hub.replies.push(Posted {
        repo: full,
        number: comment,
        body: text,
    });
    (StatusCode::CREATED, axum::Json(json)).into_response()
}

/// git's smart HTTP protocol through `git http-backend` (CGI), for live installation tokens
/// only, sent as HTTP Basic `x-access-token:TOKEN` the way GitHub takes them.
async fn git_http(
    State(hub): State<Shared>,
    UrlPath(path): UrlPath<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (root, allowed) = {
        let hub = hub.lock().unwrap_or_else(|e| e.into_inner());
        let full = path.split(".git/").next().unwrap_or_default().to_owned();
        let repo = hub.repos.get(&full).filter(|r| r.installed).cloned();
        let allowed = installation_authorized(&hub, &headers);
        (repo.map(|r| (full, r)), allowed)
    };
    if !allowed {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("www-authenticate", "Basic realm=\"GitHub\"")
            .body(Body::from("Invalid username or token."))
            .unwrap_or_default();
    }
    let Some((full, repo)) = root else {
        return error(StatusCode::NOT_FOUND, "Repository not found.");
    };
    // The backend sees the bare repository as /{full}.git under a root made for it.
    let served = repo
        .bare
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let name = repo
        .bare
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let rest = path.strip_prefix(&format!("{full}.git")).unwrap_or("");
    let mut child = match tokio::process::Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", &served)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", format!("/{name}{rest}"))
        .env("REQUEST_METHOD", method.as_str())
        .env("QUERY_STRING", uri.query().unwrap_or(""))
        .env(
            "CONTENT_TYPE",
            headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        )
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", "x-access-token")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("git http-backend: {e}"),
            );
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt as _;
        let _ = stdin.write_all(&body).await;
    }
    let output = match child.wait_with_output().await {
        Ok(output) => output.stdout,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("git http-backend: {e}"),
            );
        }
    };
    let split = output
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| (at, 4))
        .or_else(|| {
            output
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|at| (at, 2))
        });
    let Some((at, gap)) = split else {
        return error(
            StatusCode::BAD_GATEWAY,
            "git http-backend answered without headers",
        );
    };
    let head = String::from_utf8_lossy(&output[..at]).into_owned();
    let mut response = Response::builder();
    let mut status = StatusCode::OK;
    for line in head.lines() {
        if let Some((key, value)) = line.split_once(':') {
            let value = value.trim();
            if key.eq_ignore_ascii_case("status") {
                status = value
                    .split_whitespace()
                    .next()
                    .and_then(|code| code.parse().ok())
                    .and_then(|code| StatusCode::from_u16(code).ok())
                    .unwrap_or(StatusCode::OK);
            } else {
                response = response.header(key.trim(), value);
            }
        }
    }
    response
        .status(status)
        .body(Body::from(output[at + gap..].to_vec()))
        .unwrap_or_default()
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
