//! The stored nouns of SPEC §1 as they are read back: users, repositories, chats, tasks, pull
//! requests, learnings, usage and secrets (by name only).

use crate::{
    Attention, ChatId, LearningId, RepoId, TaskId, TaskState, TaskStatus, Timestamp, UserId,
};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub is_admin: bool,
    pub created_at: Timestamp,
}

/// Where a repository lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForgeKind {
    /// A git repository on the server's disk; deft keeps its pull requests.
    Local,
    /// A repository on GitHub.
    Github,
}

impl ForgeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ForgeKind::Local => "local",
            ForgeKind::Github => "github",
        }
    }

    pub fn parse(text: &str) -> Option<ForgeKind> {
        match text {
            "local" => Some(ForgeKind::Local),
            "github" => Some(ForgeKind::Github),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Repository {
    pub id: RepoId,
    /// The short name: the directory name for a local repository, `owner/name` on GitHub.
    pub name: String,
    pub forge: ForgeKind,
    /// Where to clone from: an absolute path for the local forge.
    pub location: String,
    pub default_branch: String,
    /// What its tasks run on.
    pub environment: crate::RepoEnvironment,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChatMessage {
    pub author: String,
    pub message: String,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Chat {
    pub id: ChatId,
    pub repos: Vec<RepoId>,
    pub messages: Vec<ChatMessage>,
    pub task_id: Option<TaskId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// What the agent means to do, before it changes any code.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    pub requirements: Vec<String>,
    pub acceptance_criteria: Vec<String>,
    pub steps: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullRequestStatus {
    Open,
    Merged,
    Closed,
}

impl PullRequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PullRequestStatus::Open => "open",
            PullRequestStatus::Merged => "merged",
            PullRequestStatus::Closed => "closed",
        }
    }

    pub fn parse(text: &str) -> Option<PullRequestStatus> {
        match text {
            "open" => Some(PullRequestStatus::Open),
            "merged" => Some(PullRequestStatus::Merged),
            "closed" => Some(PullRequestStatus::Closed),
            _ => None,
        }
    }
}

/// One per repository per task.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PullRequest {
    pub repo: RepoId,
    pub base: String,
    pub head: String,
    pub title: String,
    pub body: String,
    pub status: PullRequestStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Tokens spent, as the providers count them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: TaskId,
    pub owner: UserId,
    pub status: TaskStatus,
    pub description: String,
    pub repos: Vec<RepoId>,
    pub chat_id: Option<ChatId>,
    pub approve_plan: bool,
    pub plan: Option<Plan>,
    pub pull_requests: Vec<PullRequest>,
    pub usage: Usage,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Where the task stands in its owner's queue (1 = next), only while `queued`.
    pub queue_position: Option<i64>,
}

impl Task {
    pub fn state(&self) -> TaskState {
        self.status.state()
    }

    pub fn attention(&self) -> Option<&Attention> {
        self.status.attention()
    }
}

/// A convention learned from the owner's review feedback.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Learning {
    pub id: LearningId,
    pub text: String,
    /// Where it was learned (a pull request, a comment), for the owner to judge it by.
    pub source: String,
    pub created_at: Timestamp,
}

/// A secret as anyone may see it: its name, never its value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecretInfo {
    pub name: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}
