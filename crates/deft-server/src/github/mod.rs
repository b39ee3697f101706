//! `POST /webhooks/github`: deliveries checked (signature, then once per `X-GitHub-Delivery`),
//! answered at once, and acted on in the background: a label or a `/deft` comment starts the
//! sender's own task, and its owner's later comments on the issue reach it (`issues.rs`);
//! reviews and comments on a task's pull request are its owner's feedback, failing checks
//! only when the owner opted in (`feedback.rs`); an uninstall, a revoked authorization or a
//! disconnected account stops the affected tasks at once (`access.rs`).

mod access;
mod feedback;
mod issues;

pub(crate) use access::disconnect_user;

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use deft_core::PullRequestStatus;
use deft_github::{Delivery, GitHub, webhook};
use deft_store::StoreError;
use serde_json::json;

use crate::{ApiError, AppState};

/// GitHub as the server uses it: the client, the webhook's secret, the trigger label.
#[derive(Clone, Debug)]
pub struct GithubHooks {
    pub client: Arc<GitHub>,
    pub webhook_secret: Option<String>,
    pub label: String,
    /// Deliveries acted on at once: a burst waits its turn rather than flooding GitHub.
    pub working: Arc<tokio::sync::Semaphore>,
}

impl GithubHooks {
    pub fn new(client: Arc<GitHub>, webhook_secret: Option<String>, label: String) -> GithubHooks {
        GithubHooks {
            client,
            webhook_secret,
            label,
            working: Arc::new(tokio::sync::Semaphore::new(DELIVERIES_AT_ONCE)),
        }
    }
}

/// How many deliveries are acted on at once.
const DELIVERIES_AT_ONCE: usize = 4;

/// The comment prefix that hands an issue (or feedback) to deft.
const COMMAND: &str = "/deft";

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

pub async fn receive(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(hooks) = app.github.clone() else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_configured",
            "GitHub is not configured on this deft; set `[github]` and restart",
        )
        .into_response();
    };
    let Some(secret) = &hooks.webhook_secret else {
        return ApiError::unauthorized(
            "deft has no github.webhook_secret, so it cannot check deliveries; set it here and on the webhook",
        )
        .into_response();
    };
    if let Err(error) = webhook::verify(
        secret.as_bytes(),
        &body,
        header(&headers, "x-hub-signature-256"),
    ) {
        return ApiError::unauthorized(error.to_string()).into_response();
    }
    let (Some(event), Some(delivery)) = (
        header(&headers, "x-github-event"),
        header(&headers, "x-github-delivery"),
    ) else {
        return ApiError::field(
            "X-GitHub-Event",
            "a delivery needs its `X-GitHub-Event` and `X-GitHub-Delivery` headers",
        )
        .into_response();
    };
    let parsed = match webhook::parse(event, &body) {
        Ok(parsed) => parsed,
        Err(error) => return ApiError::field("body", error.to_string()).into_response(),
    };
    match app.store.record_delivery(delivery, event, &body).await {
        Ok(true) => {}
        Ok(false) => {
            return (StatusCode::OK, Json(json!({"status": "duplicate"}))).into_response();
        }
        Err(error) => return ApiError::from(error).into_response(),
    }
    // GitHub waits ten seconds at most; the work happens after the answer.
    let delivery = delivery.to_owned();
    tokio::spawn(async move { act_and_mark(&app, &hooks, &delivery, parsed).await });
    (StatusCode::ACCEPTED, Json(json!({"status": "accepted"}))).into_response()
}

/// Waits between attempts at a delivery whose work met a passing failure (GitHub unreachable,
/// or answering 5xx or 429).
const RETRY_DELAYS: [std::time::Duration; 2] = [
    std::time::Duration::from_secs(2),
    std::time::Duration::from_secs(15),
];

impl ActError {
    /// Whether trying again later may succeed.
    fn is_passing(&self) -> bool {
        match self {
            ActError::Github(deft_github::GithubError::Transport { .. }) => true,
            ActError::Github(deft_github::GithubError::Api { status, .. }) => {
                *status >= 500 || *status == 429
            }
            _ => false,
        }
    }
}

/// Acts on a delivery, trying again after a passing failure, and marks it done. One that
/// still meets a passing failure stays pending and is tried again at the next start; one that
/// fails for good is marked done (trying again would fail the same way; the log says why).
async fn act_and_mark(app: &AppState, hooks: &GithubHooks, id: &str, delivery: Delivery) {
    // A closed semaphore cannot happen (it is never closed); acting without it is harmless.
    let _turn = hooks.working.acquire().await.ok();
    let mut delays = RETRY_DELAYS.iter();
    loop {
        match act(app, hooks, delivery.clone()).await {
            Ok(()) => break,
            Err(error) if error.is_passing() => match delays.next() {
                Some(delay) => {
                    tracing::warn!(delivery = %id, error = %error, "a GitHub delivery will be tried again");
                    tokio::time::sleep(*delay).await;
                }
                None => {
                    tracing::error!(delivery = %id, error = %error, "a GitHub delivery is left for the next start");
                    return;
                }
            },
            Err(error) => {
                tracing::error!(delivery = %id, error = %error, "a GitHub delivery could not be acted on");
                break;
            }
        }
    }
    if let Err(error) = app.store.delivery_done(id).await {
        tracing::error!(delivery = %id, error = %error, "cannot mark a GitHub delivery done");
    }
}

/// At start: acts on the deliveries that were answered but not acted on before deft stopped.
pub async fn resume(app: &AppState) -> Result<usize, StoreError> {
    let Some(hooks) = app.github.clone() else {
        return Ok(0);
    };
    let pending = app.store.pending_deliveries().await?;
    let count = pending.len();
    for (id, event, payload) in pending {
        match webhook::parse(&event, payload.as_bytes()) {
            Ok(delivery) => act_and_mark(app, &hooks, &id, delivery).await,
            Err(error) => {
                tracing::error!(delivery = %id, error = %error, "a stored GitHub delivery cannot be read");
                app.store.delivery_done(&id).await?;
            }
        }
    }
    let month_ago = deft_core::Timestamp::now().plus_millis(-30 * 86_400_000);
    app.store.prune_deliveries(month_ago).await?;
    Ok(count)
}

#[derive(Debug, thiserror::Error)]
enum ActError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Github(#[from] deft_github::GithubError),
    #[error("{0}")]
    Api(String),
}

impl From<ApiError> for ActError {
    fn from(error: ApiError) -> ActError {
        ActError::Api(error.message)
    }
}

/// Acts on one delivery: each kind of event has its module.
async fn act(app: &AppState, hooks: &GithubHooks, delivery: Delivery) -> Result<(), ActError> {
    match delivery {
        Delivery::Labeled {
            repo,
            number,
            title,
            body,
            author,
            label,
            sender,
        } => {
            if label.eq_ignore_ascii_case(&hooks.label) {
                let issue = issues::Issue {
                    repo,
                    number,
                    title,
                    body,
                    author,
                };
                issues::start(app, hooks, &issue, &sender, None).await?;
            }
            Ok(())
        }
        Delivery::Commented { .. } => issues::commented(app, hooks, delivery).await,
        Delivery::Reviewed { .. } => feedback::reviewed(app, hooks, delivery).await,
        Delivery::CheckFailed { .. } => feedback::check_failed(app, hooks, delivery).await,
        Delivery::AccessRemoved { repos, all, .. } => {
            access::access_removed(app, hooks, &repos, all).await
        }
        Delivery::PullRequestClosed {
            repo,
            html_url,
            merged,
        } => {
            let status = if merged {
                PullRequestStatus::Merged
            } else {
                PullRequestStatus::Closed
            };
            // Its task's workspace is given back by the next sweep once nothing is open; a
            // merged one makes its task final (the store refuses feedback on it).
            if app
                .store
                .set_pull_request_status_at(&html_url, status)
                .await?
            {
                tracing::info!(repo = %repo.as_str(), pull = %html_url, status = status.as_str(), "a task's pull request closed");
            }
            Ok(())
        }
        Delivery::AuthorizationRevoked { login } => {
            let why = format!(
                "@{login} revoked deft's access to their GitHub account; connect it again in the settings, then answer this task"
            );
            access::disconnect_login(app, &login, &why).await
        }
        Delivery::Ignored { why } => {
            tracing::debug!(delivery = %why, "a GitHub delivery deft does not act on");
            Ok(())
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_passing_failures_are_tried_again() {
        let transport = ActError::Github(deft_github::GithubError::Transport {
            call: "GET /repos/o/r".into(),
            message: "connection refused".into(),
        });
        let api = |status| {
            ActError::Github(deft_github::GithubError::Api {
                call: "POST /repos/o/r/pulls".into(),
                status,
                message: "x".into(),
            })
        };
        assert!(transport.is_passing());
        assert!(api(502).is_passing() && api(429).is_passing());
        assert!(!api(404).is_passing() && !api(422).is_passing());
        assert!(!ActError::Api("no such task".into()).is_passing());
    }
}
