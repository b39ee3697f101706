//! Pull requests, their comments, review comments and replies.

use super::*;

pub(super) fn pull_json(base: &str, pull: &OpenedPull) -> Value {
    let mut body = fixture("pull_request", "opened.payload.json")["pull_request"].clone();
    body["number"] = json!(pull.number);
    body["title"] = json!(pull.title);
    body["body"] = json!(pull.body);
    body["state"] = json!(pull.state);
    body["merged"] = json!(pull.merged);
    body["html_url"] = json!(pull.html_url);
    body["url"] = json!(format!("{base}/repos/{}/pulls/{}", pull.repo, pull.number));
    body["head"]["ref"] = json!(pull.head);
    body["base"]["ref"] = json!(pull.base);
    body
}

#[derive(serde::Deserialize)]
pub(super) struct PullQuery {
    head: Option<String>,
    state: Option<String>,
}

pub(super) async fn list_pulls(
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
        // GitHub lists open pull requests unless asked for `closed` or `all`.
        .filter(|p| match query.state.as_deref().unwrap_or("open") {
            "all" => true,
            wanted => p.state == wanted,
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

pub(super) async fn create_pull(
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
        state: "open".into(),
        merged: false,
    };
    let json = pull_json(&base_of(&headers), &pull);
    hub.pulls.push(pull);
    (StatusCode::CREATED, axum::Json(json)).into_response()
}

/// `GET /repos/{owner}/{name}/pulls/{number}`, its head's commit read from the repository.
pub(super) async fn get_pull(
    State(hub): State<Shared>,
    UrlPath((owner, name, number)): UrlPath<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    let hub = hub.lock().unwrap_or_else(|e| e.into_inner());
    let (full, repo) = match guarded(&hub, &headers, &owner, &name) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let Some(pull) = hub
        .pulls
        .iter()
        .find(|p| p.repo == full && p.number == number)
    else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let sha = std::process::Command::new("git")
        .args(["rev-parse", &format!("refs/heads/{}", pull.head)])
        .current_dir(&repo.bare)
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default();
    let mut body = pull_json(&base_of(&headers), pull);
    body["head"]["sha"] = json!(sha);
    axum::Json(body).into_response()
}

pub(super) async fn update_pull(
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
    match body["state"].as_str() {
        Some("open") if pull.merged => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "custom", "message": "state cannot be changed. The pull request has been merged."}]})),
            )
                .into_response();
        }
        Some(state @ ("open" | "closed")) => pull.state = state.to_owned(),
        _ => {}
    }
    axum::Json(pull_json(&base, pull)).into_response()
}

pub(super) fn comment_json(full: &str, number: u64, id: u64, login: &str, body: &str) -> Value {
    let mut comment = fixture("issue_comment", "created.payload.json")["comment"].clone();
    comment["id"] = json!(id);
    comment["user"]["login"] = json!(login);
    comment["body"] = json!(body);
    comment["html_url"] = json!(format!(
        "https://github.example/{full}/issues/{number}#issuecomment-{id}"
    ));
    comment
}

#[derive(serde::Deserialize)]
pub(super) struct PageQuery {
    page: Option<u64>,
}

pub(super) async fn list_issue_comments(
    State(hub): State<Shared>,
    UrlPath((owner, name, number)): UrlPath<(String, String, u64)>,
    Query(page): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    if page.page.is_some_and(|page| page > 1) {
        return axum::Json(json!([])).into_response();
    }
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

pub(super) async fn create_comment(
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

pub(super) async fn list_review_comments(
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

pub(super) async fn list_pull_comments(
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

pub(super) async fn reply(
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
