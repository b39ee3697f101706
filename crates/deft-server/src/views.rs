//! The JSON shapes of SPEC §5. Fields may be added here, never renamed.

use std::collections::HashMap;

use deft_core::{
    Attention, Chat, ChatMessage, Event, Plan, PullRequest, RepoId, Repository, Task, Timestamp,
    Usage,
};
use deft_store::Environment;
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Debug, Serialize)]
pub struct RepoRef {
    pub id: RepoId,
    /// `None` when the repository is no longer registered.
    pub name: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TaskView {
    pub id: String,
    pub state: &'static str,
    pub description: String,
    pub repos: Vec<RepoRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<String>,
    pub approve_plan: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention: Option<Attention>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    pub pull_requests: Vec<PullRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<i64>,
    pub usage: Usage,
}

/// Names of the user's repositories, to show a task's repositories by name.
pub type RepoNames = HashMap<RepoId, String>;

pub fn repo_names(repos: Vec<Repository>) -> RepoNames {
    repos.into_iter().map(|repo| (repo.id, repo.name)).collect()
}

pub fn task(task: Task, names: &RepoNames) -> TaskView {
    TaskView {
        id: task.id.to_string(),
        state: task.state().as_str(),
        repos: task
            .repos
            .iter()
            .map(|id| RepoRef {
                id: id.clone(),
                name: names.get(id).cloned(),
            })
            .collect(),
        chat_id: task.chat_id.map(|id| id.to_string()),
        approve_plan: task.approve_plan,
        created_at: task.created_at,
        updated_at: task.updated_at,
        attention: task.status.attention().cloned(),
        plan: task.plan,
        pull_requests: task.pull_requests,
        queue_position: task.queue_position,
        usage: task.usage,
        description: task.description,
    }
}

pub fn event(event: &Event) -> Value {
    json!({
        "seq": event.seq,
        "task_id": event.task_id,
        "at": event.at,
        "kind": event.kind,
        "data": event.data,
    })
}

pub fn repository(repo: &Repository) -> Value {
    json!({
        "id": repo.id,
        "name": repo.name,
        "forge": repo.forge,
        "location": repo.location,
        "default_branch": repo.default_branch,
        "environment": repo.environment,
        "created_at": repo.created_at,
    })
}

pub fn chat_message(message: &ChatMessage) -> Value {
    json!({ "author": message.author, "message": message.message, "at": message.at })
}

pub fn chat(chat: &Chat) -> Value {
    json!({
        "id": chat.id,
        "repos": chat.repos,
        "messages": chat.messages.iter().map(chat_message).collect::<Vec<_>>(),
        "task_id": chat.task_id,
        "created_at": chat.created_at,
        "updated_at": chat.updated_at,
    })
}

pub fn environment(environment: &Environment) -> Value {
    json!({
        "network": {
            "level": environment.network.level,
            "allow": environment.network.allow_strings(),
        },
        "env": environment.env.as_map(),
        "mcp": environment.mcp.to_json(),
        "approve_plan": environment.approve_plan,
        "fix_failing_checks": environment.fix_failing_checks,
        "check_fix_rounds": environment.check_fix_rounds,
    })
}
