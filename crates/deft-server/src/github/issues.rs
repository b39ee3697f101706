//! Issues: the `deft` label or a `/deft` comment by a linked writer starts their own task, once
//! per person and issue; from then on the task listens to the issue, and its owner's comments
//! there reach it (steering while it runs, the answer to its question, a new round after it
//! completed). Other people's comments are not instructions and are left alone here; the
//! engine reads the issue's discussion as fenced data when it needs it.

use deft_core::{ForgeKind, TaskState, User};
use deft_github::untrusted::{fenced, visible};
use deft_github::{Delivery, GitHub, RepoName};
use deft_store::{IssueTask, NewRepository, NewTask};
use serde_json::json;

use super::feedback::{Said, owner_feedback, to_task};
use super::{ActError, COMMAND, GithubHooks};
use crate::AppState;

pub(super) struct Issue {
    pub(super) repo: RepoName,
    pub(super) number: u64,
    pub(super) title: String,
    pub(super) body: String,
    pub(super) author: String,
}

/// A comment on an issue or a pull request.
pub(super) async fn commented(
    app: &AppState,
    hooks: &GithubHooks,
    delivery: Delivery,
) -> Result<(), ActError> {
    let Delivery::Commented {
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
    } = delivery
    else {
        return Ok(());
    };
    let command = comment
        .trim_start()
        .strip_prefix(COMMAND)
        .filter(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
        .map(str::trim);
    if is_pull_request {
        // On a task's pull request, the owner's comment (with or without the command) is
        // feedback; nobody else's is.
        if let Some(task) = app.store.task_by_pull_request_url(&html_url).await? {
            let said = Said {
                author: &sender,
                message: command.unwrap_or(&comment),
                meta: json!({"repo": repo.as_str(), "pull": number, "comment": comment_id}),
                place: (&repo, number),
            };
            return owner_feedback(app, hooks, &task, said).await;
        }
    }
    match command {
        Some(extra) => {
            let issue = Issue {
                repo,
                number,
                title,
                body: issue_body,
                author,
            };
            start(app, hooks, &issue, &sender, Some(extra)).await
        }
        None => {
            let said = Said {
                author: &sender,
                message: &comment,
                meta: json!({"repo": repo.as_str(), "issue": number, "comment": comment_id}),
                place: (&repo, number),
            };
            listen(app, hooks, said).await
        }
    }
}

/// A plain comment on an issue: the sender's own task started from it hears it.
async fn listen(app: &AppState, hooks: &GithubHooks, said: Said<'_>) -> Result<(), ActError> {
    let Some(user) = app.store.github_user(said.author).await? else {
        return Ok(());
    };
    let (repo, number) = said.place;
    let Some(task) = listening(app, &user, repo, number).await? else {
        tracing::debug!(
            login = said.author,
            "a comment on an issue without a task of its author"
        );
        return Ok(());
    };
    to_task(app, hooks, &task.task, &task.owner, said).await
}

/// The newest task `user` started from the issue that can still take their words: not
/// cancelled, and not completed with its pull requests merged.
async fn listening(
    app: &AppState,
    user: &User,
    repo: &RepoName,
    number: u64,
) -> Result<Option<IssueTask>, ActError> {
    for task in app.store.issue_tasks(repo.as_str(), number).await? {
        if task.owner != user.id || task.state == TaskState::Cancelled {
            continue;
        }
        if task.state == TaskState::Completed {
            let found = app.store.task(&user.id, &task.task).await?;
            let merged = !found.pull_requests.is_empty()
                && found
                    .pull_requests
                    .iter()
                    .all(|p| p.status == deft_core::PullRequestStatus::Merged);
            if merged {
                continue;
            }
        }
        return Ok(Some(task));
    }
    Ok(None)
}

/// The deft user behind `sender`, if they may give deft work on the issue's repository;
/// otherwise the issue is told why and `None`.
async fn may_start(
    app: &AppState,
    github: &GitHub,
    issue: &Issue,
    sender: &str,
) -> Result<Option<User>, ActError> {
    let Some(user) = app.store.github_user(sender).await? else {
        let reply = format!(
            "@{sender} deft does not know your GitHub account, so nothing was started. Connect it in deft's settings (Connect GitHub), or ask a deft administrator to link it (`deft user github NAME {sender}`); then try again."
        );
        github.comment(&issue.repo, issue.number, &reply).await?;
        return Ok(None);
    };
    let permission = github.permission(&issue.repo, sender).await?;
    if !permission.can_write() {
        let reply = format!(
            "@{sender} deft takes work on {} only from people with write permission on it, so nothing was started.",
            issue.repo
        );
        github.comment(&issue.repo, issue.number, &reply).await?;
        return Ok(None);
    }
    Ok(Some(user))
}

/// A label or a `/deft` comment: the sender's own task, if they may have one and have none
/// on this issue yet (a repeated trigger reaches that task instead of starting another).
pub(super) async fn start(
    app: &AppState,
    hooks: &GithubHooks,
    issue: &Issue,
    sender: &str,
    extra: Option<&str>,
) -> Result<(), ActError> {
    let github = &hooks.client;
    let Some(user) = may_start(app, github, issue, sender).await? else {
        return Ok(());
    };
    if let Some(task) = listening(app, &user, &issue.repo, issue.number).await? {
        let reply = format!(
            "@{sender} deft is already working on this issue for you, in task `{}`; what you write here reaches it.",
            task.task
        );
        if let Some(extra) = extra.filter(|extra| !extra.is_empty()) {
            let said = Said {
                author: sender,
                message: extra,
                meta: json!({"repo": issue.repo.as_str(), "issue": issue.number}),
                place: (&issue.repo, issue.number),
            };
            to_task(app, hooks, &task.task, &task.owner, said).await?;
        }
        github.comment(&issue.repo, issue.number, &reply).await?;
        return Ok(());
    }
    let repo = registered(app, github, &user, &issue.repo).await?;
    let description = describe(github, issue, sender, extra).await?;
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
        "@{sender} deft started task `{}` for this issue; its pull request will follow, and what you write here reaches it.",
        task.id
    );
    // The task exists now: a failure from here on must not make a retry start it twice.
    if let Err(error) = github.comment(&issue.repo, issue.number, &reply).await {
        tracing::warn!(task.id = %task.id, error = %error, "cannot say on the issue that the task started");
    }
    Ok(())
}

/// The task's description: the issue's title and the sender's words as instructions, the
/// issue's body and comments fenced as data.
async fn describe(
    github: &GitHub,
    issue: &Issue,
    sender: &str,
    extra: Option<&str>,
) -> Result<String, ActError> {
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
    Ok(description)
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
