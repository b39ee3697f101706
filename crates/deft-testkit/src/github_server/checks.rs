//! Check runs of a commit (`GET /repos/{o}/{r}/commits/{sha}/check-runs`) and GitHub Actions
//! job logs: `GET /repos/{o}/{r}/actions/jobs/{id}/logs` answers 302 with a download address
//! that needs no token and honours `Range: bytes=-N`, as the storage GitHub sends to does.

use super::*;

/// A check run to serve, as a test describes it.
#[derive(Debug, Clone)]
pub struct CheckRunSpec<'a> {
    pub name: &'a str,
    pub conclusion: &'a str,
    pub title: &'a str,
    pub summary: &'a str,
    pub text: &'a str,
    /// A GitHub Actions job's log; `None` for another App's check.
    pub log: Option<&'a str>,
}

/// What a log download was asked with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    pub job: u64,
    pub range: Option<String>,
    /// Whether the request carried an `Authorization` header (GitHub's addresses need none).
    pub authorized: bool,
}

pub(super) fn check_run_json(full: &str, sha: &str, id: u64, spec: &CheckRunSpec<'_>) -> Value {
    let mut run = rest_fixture("checks/check-runs.json")["check_runs"][0].clone();
    run["id"] = json!(id);
    run["head_sha"] = json!(sha);
    run["name"] = json!(spec.name);
    run["conclusion"] = json!(spec.conclusion);
    run["output"]["title"] = json!(spec.title);
    run["output"]["summary"] = json!(spec.summary);
    run["output"]["text"] = json!(spec.text);
    run["html_url"] = json!(format!("https://github.example/{full}/runs/{id}"));
    if spec.log.is_some() {
        run["app"]["slug"] = json!("github-actions");
        run["app"]["name"] = json!("GitHub Actions");
        run["details_url"] = json!(format!(
            "https://github.example/{full}/actions/runs/{}/job/{id}",
            id + 1000
        ));
    }
    run
}

pub(super) async fn list_check_runs(
    State(hub): State<Shared>,
    UrlPath((owner, name, sha)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let hub = hub.lock().unwrap_or_else(|e| e.into_inner());
    let (full, _) = match guarded(&hub, &headers, &owner, &name) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let runs = hub
        .check_runs
        .get(&(full, sha))
        .cloned()
        .unwrap_or_default();
    axum::Json(json!({"total_count": runs.len(), "check_runs": runs})).into_response()
}

pub(super) async fn job_logs(
    State(hub): State<Shared>,
    UrlPath((owner, name, job)): UrlPath<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    let hub = hub.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(response) = guarded(&hub, &headers, &owner, &name) {
        return *response;
    }
    if !hub.job_logs.contains_key(&job) {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let location = format!(
        "{}/job-logs/{job}?sig={}",
        base_of(&headers),
        uuid::Uuid::new_v4().simple()
    );
    Response::builder()
        .status(StatusCode::FOUND)
        .header("location", location)
        .body(Body::empty())
        .unwrap_or_default()
}

/// The download: the whole log, or its last N bytes for `Range: bytes=-N` (206).
pub(super) async fn download_log(
    State(hub): State<Shared>,
    UrlPath(job): UrlPath<u64>,
    headers: HeaderMap,
) -> Response {
    let mut hub = hub.lock().unwrap_or_else(|e| e.into_inner());
    let range = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    hub.downloads.push(Download {
        job,
        range: range.clone(),
        authorized: headers.contains_key("authorization"),
    });
    let Some(log) = hub.job_logs.get(&job).cloned() else {
        return error(StatusCode::NOT_FOUND, "BlobNotFound");
    };
    let bytes = log.into_bytes();
    let tail = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes=-"))
        .and_then(|n| n.parse::<usize>().ok());
    let response = Response::builder().header("content-type", "text/plain; charset=utf-8");
    match tail {
        Some(n) if n < bytes.len() => {
            let start = bytes.len() - n;
            response
                .status(StatusCode::PARTIAL_CONTENT)
                .header(
                    "content-range",
                    format!("bytes {start}-{}/{}", bytes.len() - 1, bytes.len()),
                )
                .body(Body::from(bytes[start..].to_vec()))
                .unwrap_or_default()
        }
        _ => response.body(Body::from(bytes)).unwrap_or_default(),
    }
}
