//! What a task's owner says on GitHub reaches the task: a review or a comment on its pull
//! request, a comment on its issue. A completed task takes it as feedback (a new round, also
//! after its pull request was closed; the engine opens it again when it pushes), a task that
//! asked a question takes it as the answer, a queued or running one as steering; a task
//! whose pull request was merged is final, and GitHub is told so. Failing checks alone start
//! a round only for owners who opted in, once per head commit, a few rounds per pull request.

use deft_core::{AttentionKind, EventKind, TaskId, TaskState, Transition, UserId};
use deft_github::untrusted::{fenced, visible};
use deft_github::{Delivery, PullState, RepoName};
use deft_store::{Actor, StoreError};
use serde_json::{Value, json};

use super::{ActError, GithubHooks};
use crate::AppState;

/// Something said on GitHub for a task.
pub(super) struct Said<'a> {
    /// The GitHub login, or `CI` for a failing check.
    pub(super) author: &'a str,
    pub(super) message: &'a str,
    /// Where it was said, for the engine: repository, pull request or issue, comment ids.
    pub(super) meta: Value,
    /// The issue or pull request to answer on when the task cannot take it.
    pub(super) place: (&'a RepoName, u64),
}

/// A submitted review on a task's pull request.
pub(super) async fn reviewed(
    app: &AppState,
    hooks: &GithubHooks,
    delivery: Delivery,
) -> Result<(), ActError> {
    let Delivery::Reviewed {
        repo,
        number,
        html_url,
        head_branch,
        review_id,
        state,
        body,
        sender,
    } = delivery
    else {
        return Ok(());
    };
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
    let message = review_message(hooks, &repo, number, &sender, &state, &body, &comments).await?;
    let said = Said {
        author: &sender,
        message: &message,
        meta: json!({
            "repo": repo.as_str(),
            "pull": number,
            "review": review_id,
            "review_comments": comments.iter().map(|c| c.id).collect::<Vec<_>>(),
        }),
        place: (&repo, number),
    };
    owner_feedback(app, hooks, &task, said).await
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

/// Feedback written on GitHub: acted on only when its author is the task's owner.
pub(super) async fn owner_feedback(
    app: &AppState,
    hooks: &GithubHooks,
    task: &TaskId,
    said: Said<'_>,
) -> Result<(), ActError> {
    let task = app.store.task_by_id(task).await?;
    let owner_login = app.store.github_login(&task.owner).await?;
    if !owner_login.is_some_and(|owner| owner.eq_ignore_ascii_case(said.author)) {
        tracing::debug!(task.id = %task.id, login = said.author, "feedback by someone other than the task's owner is not acted on");
        return Ok(());
    }
    to_task(app, hooks, &task.id, &task.owner, said).await
}

/// Gives the task what its owner said: a completed task goes back to the queue for a new
/// round, a task waiting on its question takes it as the answer, any other takes it in at its
/// next step (SPEC §2). A final task (its pull request merged) refuses, and GitHub is told.
pub(super) async fn to_task(
    app: &AppState,
    hooks: &GithubHooks,
    id: &TaskId,
    owner: &UserId,
    said: Said<'_>,
) -> Result<(), ActError> {
    let task = app.store.task(owner, id).await?;
    let (transition, kind) = match task.state() {
        TaskState::Completed => (Transition::Feedback, "feedback"),
        TaskState::Cancelled => return Ok(()),
        TaskState::NeedsAttention
            if task.status.attention().map(|a| a.kind) == Some(AttentionKind::Question) =>
        {
            (Transition::Answer, "answer")
        }
        _ => (Transition::Steer, "steering"),
    };
    let note =
        json!({"kind": kind, "author": said.author, "message": said.message, "github": said.meta});
    match app
        .store
        .transition(
            Actor::Owner(owner),
            id,
            transition,
            Some((EventKind::UserMessage, note)),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict { message }) => {
            let (repo, number) = said.place;
            let reply = format!("@{} {message}", said.author);
            hooks.client.comment(repo, number, &reply).await?;
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

/// A check failed on a task's branch: a new round only when the owner opted in, the task is
/// completed, the check ran on the pull request's current head commit, no round was started
/// for that commit yet, and the pull request has not had its rounds.
pub(super) async fn check_failed(
    app: &AppState,
    hooks: &GithubHooks,
    delivery: Delivery,
) -> Result<(), ActError> {
    let Delivery::CheckFailed {
        repo,
        head_branch,
        head_sha,
        name,
        conclusion,
        details_url,
    } = delivery
    else {
        return Ok(());
    };
    let Some(id) = app
        .store
        .task_by_branch(repo.as_str(), &head_branch)
        .await?
    else {
        return Ok(());
    };
    let task = app.store.task_by_id(&id).await?;
    let settings = app.store.environment(&task.owner).await?;
    if !settings.fix_failing_checks || task.state() != TaskState::Completed {
        tracing::debug!(task.id = %id, check = %name, "a failing check alone starts no round");
        return Ok(());
    }
    let Some(url) = task
        .pull_requests
        .iter()
        .filter(|p| p.head == head_branch)
        .find_map(|p| p.url.clone())
    else {
        return Ok(());
    };
    let Some(number) = url.rsplit('/').next().and_then(|n| n.parse::<u64>().ok()) else {
        return Ok(());
    };
    let head = hooks.client.pull_request_head(&repo, number).await?;
    if head.state != PullState::Open || head.sha != head_sha {
        tracing::debug!(task.id = %id, check = %name, "a failing check on an older commit is left");
        return Ok(());
    }
    if !app
        .store
        .take_check_fix_round(&url, &head_sha, settings.check_fix_rounds)
        .await?
    {
        tracing::info!(task.id = %id, check = %name, "no more rounds for failing checks on this pull request");
        return Ok(());
    }
    let message = format!(
        "The check `{name}` ended in `{conclusion}` on this pull request's head commit {head_sha} ({details_url}). Read why from the failing checks' output and logs, fix it, and push again."
    );
    let said = Said {
        author: "CI",
        message: &message,
        meta: json!({"repo": repo.as_str(), "pull": number, "check": name, "head_sha": head_sha, "automatic": true}),
        place: (&repo, number),
    };
    to_task(app, hooks, &id, &task.owner, said).await
}
