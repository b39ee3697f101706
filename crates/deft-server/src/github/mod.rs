//! `POST /webhooks/github`: deliveries checked (signature, then once per `X-GitHub-Delivery`),
//! answered at once, and acted on in the background: a label or a `/deft` comment starts the
//! sender's own task; reviews, comments and failed checks on a task's pull request are its
//! owner's feedback; an uninstall or a revoked authorization stops what waits.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use deft_core::{
    Attention, AttentionKind, EventKind, ForgeKind, PullRequestStatus, TaskId, TaskState,
    Transition, User,
};
use deft_github::untrusted::{fenced, visible};
use deft_github::{Delivery, GitHub, RepoName, webhook};
use deft_store::{Actor, GithubScope, NewRepository, NewTask, StoreError};
use serde_json::{Value, json};

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
                let issue = Issue {
                    repo,
                    number,
                    title,
                    body,
                    author,
                };
                start(app, hooks, &issue, &sender, None).await?;
            }
            Ok(())
        }
        Delivery::Commented {
            repo,
            number,
            html_url,
            is_pull_request,
            title,
            issue_body,
            author,
            comment_id,
            comment,
            sender,
        } => {
            let command = comment
                .trim_start()
                .strip_prefix(COMMAND)
                .filter(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
                .map(str::trim);
            let task = if is_pull_request {
                app.store.task_by_pull_request_url(&html_url).await?
            } else {
                None
            };
            match (task, command) {
                // On a task's pull request, the owner's comment (with or without the command)
                // is feedback; nobody else's is.
                (Some(task), _) => {
                    let text = command.unwrap_or(&comment).to_owned();
                    let meta =
                        json!({"repo": repo.as_str(), "pull": number, "comment": comment_id});
                    owner_feedback(app, &task, &sender, &text, meta).await
                }
                (None, Some(extra)) => {
                    let issue = Issue {
                        repo,
                        number,
                        title,
                        body: issue_body,
                        author,
                    };
                    start(app, hooks, &issue, &sender, Some(extra)).await
                }
                (None, None) => Ok(()),
            }
        }
        Delivery::Reviewed {
            repo,
            number,
            html_url,
            head_branch,
            review_id,
            state,
            body,
            sender,
        } => {
            let task = match app.store.task_by_pull_request_url(&html_url).await? {
                Some(task) => Some(task),
                None => {
                    app.store
                        .task_by_branch(repo.as_str(), &head_branch)
                        .await?
                }
            };
            let Some(task) = task else { return Ok(()) };
            let comments = hooks
                .client
                .review_comments(&repo, number, review_id)
                .await?;
            if comments.is_empty() && body.trim().is_empty() {
                // An approval with nothing to act on.
                return Ok(());
            }
            let message =
                review_message(hooks, &repo, number, &sender, &state, &body, &comments).await?;
            let meta = json!({
                "repo": repo.as_str(),
                "pull": number,
                "review": review_id,
                "review_comments": comments.iter().map(|c| c.id).collect::<Vec<_>>(),
            });
            owner_feedback(app, &task, &sender, &message, meta).await
        }
        Delivery::CheckFailed {
            repo,
            head_branch,
            head_sha: _,
            name,
            conclusion,
            details_url,
        } => {
            let Some(task) = app
                .store
                .task_by_branch(repo.as_str(), &head_branch)
                .await?
            else {
                return Ok(());
            };
            let task = app.store.task_by_id(&task).await?;
            let message = format!(
                "The check `{name}` ended in `{conclusion}` on this pull request's head commit ({details_url}). Find out why from the repository's CI configuration and the code, fix it, and push again."
            );
            let meta = json!({"repo": repo.as_str(), "check": name});
            feedback(app, &task.id, &task.owner, "CI", &message, meta).await
        }
        Delivery::AccessRemoved { repos, all, .. } => {
            for repo in &repos {
                hooks.client.forget(repo);
            }
            let names: Vec<String> = repos.iter().map(ToString::to_string).collect();
            // An uninstall from all repositories may not list them: then it is all of them.
            let scope = if all && names.is_empty() {
                GithubScope::All
            } else {
                GithubScope::Repos(&names)
            };
            let tasks = app.store.open_github_tasks(scope).await?;
            let why = format!(
                "the GitHub App no longer has access to {}; reinstall it on the repository, then answer this task",
                if names.is_empty() {
                    "its repositories".to_owned()
                } else {
                    names.join(", ")
                }
            );
            stop_waiting(app, &tasks, &why).await
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
            // Its task's workspace is given back by the next sweep once nothing is open.
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
            let Some(user) = app.store.unlink_github(&login).await? else {
                return Ok(());
            };
            let tasks = app
                .store
                .open_github_tasks(GithubScope::User(&user))
                .await?;
            let why = format!(
                "@{login} revoked deft's access to their GitHub account; an administrator links it again with `deft user github`, then answer this task"
            );
            stop_waiting(app, &tasks, &why).await
        }
        Delivery::Ignored { why } => {
            tracing::debug!(delivery = %why, "a GitHub delivery deft does not act on");
            Ok(())
        }
    }
}

/// Queued tasks that can no longer reach GitHub wait for their owner, saying why.
async fn stop_waiting(app: &AppState, tasks: &[TaskId], why: &str) -> Result<(), ActError> {
    for id in tasks {
        let task = app.store.task_by_id(id).await?;
        if task.state() != TaskState::Queued {
            continue;
        }
        let attention = Attention {
            kind: AttentionKind::Error,
            message: why.to_owned(),
        };
        match app
            .store
            .transition(Actor::Deft, id, Transition::NeedAttention(attention), None)
            .await
        {
            Ok(_) | Err(StoreError::Transition(_)) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

struct Issue {
    repo: RepoName,
    number: u64,
    title: String,
    body: String,
    author: String,
}

/// A label or a `/deft` comment: the sender's own task, if they may have one.
async fn start(
    app: &AppState,
    hooks: &GithubHooks,
    issue: &Issue,
    sender: &str,
    extra: Option<&str>,
) -> Result<(), ActError> {
    let github = &hooks.client;
    let Some(user) = app.store.github_user(sender).await? else {
        let reply = format!(
            "@{sender} deft does not know your GitHub account, so nothing was started. A deft administrator can link it (`deft user github NAME {sender}`); then try again."
        );
        github.comment(&issue.repo, issue.number, &reply).await?;
        return Ok(());
    };
    let permission = github.permission(&issue.repo, sender).await?;
    if !permission.can_write() {
        let reply = format!(
            "@{sender} deft takes work on {} only from people with write permission on it, so nothing was started.",
            issue.repo
        );
        github.comment(&issue.repo, issue.number, &reply).await?;
        return Ok(());
    }
    let repo = registered(app, github, &user, &issue.repo).await?;
    let mut description = format!(
        "{}\n\nResolve GitHub issue {}#{}, handed to deft by @{sender}.",
        visible(&issue.title).trim(),
        issue.repo,
        issue.number
    );
    if let Some(extra) = extra.filter(|extra| !extra.is_empty()) {
        description.push_str(&format!("\n\n@{sender} adds: {}", visible(extra)));
    }
    description.push_str("\n\nThe issue:\n");
    description.push_str(&fenced(&issue.author, &issue.body));
    for comment in github.issue_comments(&issue.repo, issue.number).await? {
        let body = comment.body.unwrap_or_default();
        if body.trim_start().starts_with(COMMAND) || comment.user.login.ends_with("[bot]") {
            continue;
        }
        description.push_str("\n\nA comment on the issue:\n");
        description.push_str(&fenced(&comment.user.login, &body));
    }
    let approve_plan = app.store.environment(&user.id).await?.approve_plan;
    let task = app
        .store
        .create_task(
            &user.id,
            NewTask {
                description,
                repos: vec![repo],
                chat_id: None,
                approve_plan,
            },
        )
        .await?;
    app.store
        .link_issue(&task.id, issue.repo.as_str(), issue.number)
        .await?;
    let task = crate::routes::tasks::created(app, task).await?;
    let reply = format!(
        "@{sender} deft started task `{}` for this issue; its pull request will follow.",
        task.id
    );
    // The task exists now: a failure from here on must not make a retry start it twice.
    if let Err(error) = github.comment(&issue.repo, issue.number, &reply).await {
        tracing::warn!(task.id = %task.id, error = %error, "cannot say on the issue that the task started");
    }
    Ok(())
}

/// The user's registration of a GitHub repository, made now if need be.
async fn registered(
    app: &AppState,
    github: &GitHub,
    user: &User,
    repo: &RepoName,
) -> Result<deft_core::RepoId, ActError> {
    if let Some(found) = app
        .store
        .repository_at(&user.id, ForgeKind::Github, repo.as_str())
        .await?
    {
        return Ok(found.id);
    }
    let info = github.repository(repo).await?;
    let new = NewRepository {
        name: repo.name().to_owned(),
        forge: ForgeKind::Github,
        location: repo.as_str().to_owned(),
        default_branch: info.default_branch,
    };
    Ok(app.store.add_repository(&user.id, new).await?.id)
}

/// A review as the agent reads it: the reviewer's words, then each comment with its thread;
/// what others wrote in a thread is fenced as data.
async fn review_message(
    hooks: &GithubHooks,
    repo: &RepoName,
    number: u64,
    sender: &str,
    state: &str,
    body: &str,
    comments: &[deft_github::ReviewComment],
) -> Result<String, ActError> {
    let mut message = format!("Review of the pull request ({}):", state.replace('_', " "));
    if !body.trim().is_empty() {
        message.push_str(&format!("\n\n{}", visible(body).trim()));
    }
    let threads = if comments.iter().any(|c| c.in_reply_to_id.is_some()) {
        hooks.client.pull_comments(repo, number).await?
    } else {
        Vec::new()
    };
    for comment in comments {
        let place = match comment.line {
            Some(line) => format!("{}:{line}", comment.path),
            None => comment.path.clone(),
        };
        message.push_str(&format!("\n\nOn `{place}` (comment {}):", comment.id));
        if let Some(root) = comment.in_reply_to_id {
            for earlier in threads
                .iter()
                .filter(|c| c.id == root || c.in_reply_to_id == Some(root))
            {
                if earlier.id == comment.id {
                    continue;
                }
                if earlier.user.login.eq_ignore_ascii_case(sender) {
                    message.push_str(&format!(
                        "\n(earlier in the thread, @{sender}) {}",
                        visible(&earlier.body).trim()
                    ));
                } else {
                    message.push('\n');
                    message.push_str(&fenced(&earlier.user.login, &earlier.body));
                }
            }
        }
        message.push_str(&format!("\n{}", visible(&comment.body).trim()));
    }
    Ok(message)
}

/// Feedback written on GitHub by `login`: acted on only when `login` is the task's owner.
async fn owner_feedback(
    app: &AppState,
    task: &TaskId,
    login: &str,
    message: &str,
    meta: Value,
) -> Result<(), ActError> {
    let task = app.store.task_by_id(task).await?;
    let owner_login = app.store.github_login(&task.owner).await?;
    if !owner_login.is_some_and(|owner| owner.eq_ignore_ascii_case(login)) {
        tracing::debug!(task.id = %task.id, login, "feedback by someone other than the task's owner is not acted on");
        return Ok(());
    }
    feedback(app, &task.id, &task.owner, login, message, meta).await
}

/// Gives the task its owner's feedback: a completed task goes back to the queue, a waiting or
/// running one takes it in at its next step (SPEC §2).
async fn feedback(
    app: &AppState,
    id: &TaskId,
    owner: &deft_core::UserId,
    author: &str,
    message: &str,
    meta: Value,
) -> Result<(), ActError> {
    let task = app.store.task(owner, id).await?;
    let transition = match task.state() {
        TaskState::Completed => Transition::Feedback,
        TaskState::Cancelled => return Ok(()),
        _ => Transition::Steer,
    };
    let note = json!({"kind": "feedback", "author": author, "message": message, "github": meta});
    app.store
        .transition(
            Actor::Owner(owner),
            id,
            transition,
            Some((EventKind::UserMessage, note)),
        )
        .await?;
    Ok(())
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
