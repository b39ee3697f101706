//! Repositories: the installation's view of them, their metadata, a person's permission,
//! branches and the compare API.

use super::*;

pub(super) fn repo_entry(hub: &Hub, owner: &str, name: &str) -> Option<(String, Repo)> {
    let full = format!("{owner}/{name}");
    hub.repos
        .get(&full)
        .filter(|repo| repo.installed)
        .map(|repo| (full, repo.clone()))
}

pub(super) async fn installation(
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
pub(super) fn guarded(
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

pub(super) fn repo_json(base: &str, full: &str, repo: &Repo) -> Value {
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

pub(super) fn base_of(headers: &HeaderMap) -> String {
    format!(
        "http://{}",
        headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("127.0.0.1")
    )
}

pub(super) async fn repository(
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

pub(super) async fn permission(
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

pub(super) async fn branch(
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
pub(super) async fn compare(
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
