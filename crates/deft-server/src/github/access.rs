//! Lost access stops work at once: when the App is uninstalled from a repository, or a person
//! revokes their authorization or disconnects their account, their queued tasks wait for them
//! in `needs_attention` saying why, and their running ones are cancelled now (the scheduler's
//! cancel watcher stops a cancelled run within a moment), not at their next call to GitHub.

use deft_core::{Attention, AttentionKind, EventKind, TaskId, TaskState, Transition, UserId};
use deft_github::RepoName;
use deft_store::{Actor, GithubScope, StoreError};
use serde_json::json;

use super::{ActError, GithubHooks};
use crate::AppState;

/// The App lost `repos` (all of its repositories when `all` and none are named).
pub(super) async fn access_removed(
    app: &AppState,
    hooks: &GithubHooks,
    repos: &[RepoName],
    all: bool,
) -> Result<(), ActError> {
    for repo in repos {
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
    stop(app, &tasks, &why).await?;
    Ok(())
}

/// The person with GitHub login `login` revoked the App: unlinked, and their tasks stopped.
pub(super) async fn disconnect_login(
    app: &AppState,
    login: &str,
    why: &str,
) -> Result<(), ActError> {
    let Some(user) = app.store.unlink_github(login).await? else {
        return Ok(());
    };
    stop_github_tasks(app, &user, why).await?;
    Ok(())
}

/// `user` disconnected their GitHub account from the settings: unlinked, and their queued
/// and running GitHub tasks stopped. Returns the login that was linked.
pub(crate) async fn disconnect_user(
    app: &AppState,
    user: &UserId,
) -> Result<Option<String>, StoreError> {
    let Some(login) = app.store.github_login(user).await? else {
        return Ok(None);
    };
    app.store.unlink_github(&login).await?;
    let why = format!(
        "you disconnected your GitHub account (@{login}); connect it again in the settings, then answer this task"
    );
    stop_github_tasks(app, user, &why).await?;
    Ok(Some(login))
}

async fn stop_github_tasks(app: &AppState, user: &UserId, why: &str) -> Result<(), StoreError> {
    let tasks = app.store.open_github_tasks(GithubScope::User(user)).await?;
    stop(app, &tasks, why).await
}

/// Queued tasks wait for their owner, saying why; running ones are cancelled at once, with
/// the reason in their log. Tasks already waiting stay as they are.
async fn stop(app: &AppState, tasks: &[TaskId], why: &str) -> Result<(), StoreError> {
    for id in tasks {
        let task = app.store.task_by_id(id).await?;
        let (transition, note) = match task.state() {
            TaskState::Queued => (
                Transition::NeedAttention(Attention {
                    kind: AttentionKind::Error,
                    message: why.to_owned(),
                }),
                None,
            ),
            TaskState::InProgress => (
                Transition::Cancel,
                Some((
                    EventKind::Error,
                    json!({"message": format!("Stopped: {why}.")}),
                )),
            ),
            _ => continue,
        };
        match app
            .store
            .transition(Actor::Deft, id, transition, note)
            .await
        {
            Ok(_) => tracing::info!(task.id = %id, "stopped a task that lost its GitHub access"),
            // It moved meanwhile (finished, or was cancelled by its owner).
            Err(StoreError::Transition(_)) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
