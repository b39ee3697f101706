//! git's smart HTTP protocol through `git http-backend` (CGI).

use super::*;

/// git's smart HTTP protocol through `git http-backend` (CGI), for live installation tokens
/// only, sent as HTTP Basic `x-access-token:TOKEN` the way GitHub takes them.
pub(super) async fn git_http(
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
