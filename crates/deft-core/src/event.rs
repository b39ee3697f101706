//! The task's event log: what happened, in order, numbered without gaps from 1.
//!
//! The UI, the API and `deft task logs` all read this one log, so a kind is named for what a
//! person reads, and its `data` is JSON whose shape belongs to that kind.

use crate::{TaskId, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The task was created: description, repositories, who created it.
    TaskCreated,
    /// The state changed: `{from, to, attention?}`.
    StateChanged,
    /// The owner said something to the task: an answer, feedback or a steering message.
    UserMessage,
    /// A work step of SPEC §2 began or ended: `{step, status, ...}`.
    Step,
    /// The plan: requirements, acceptance criteria, steps.
    Plan,
    /// A call to the model, summarised: model, tokens, duration.
    ModelCall,
    /// A tool the agent called, with its arguments.
    ToolCall,
    /// What that tool returned.
    ToolResult,
    /// The agent asks the owner something.
    Question,
    /// A pull request was opened or updated.
    PullRequest,
    /// The egress proxy decided a connection.
    Network,
    /// Something went wrong; `data.message` says what to do.
    Error,
}

impl EventKind {
    pub const ALL: [EventKind; 12] = [
        EventKind::TaskCreated,
        EventKind::StateChanged,
        EventKind::UserMessage,
        EventKind::Step,
        EventKind::Plan,
        EventKind::ModelCall,
        EventKind::ToolCall,
        EventKind::ToolResult,
        EventKind::Question,
        EventKind::PullRequest,
        EventKind::Network,
        EventKind::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::TaskCreated => "task_created",
            EventKind::StateChanged => "state_changed",
            EventKind::UserMessage => "user_message",
            EventKind::Step => "step",
            EventKind::Plan => "plan",
            EventKind::ModelCall => "model_call",
            EventKind::ToolCall => "tool_call",
            EventKind::ToolResult => "tool_result",
            EventKind::Question => "question",
            EventKind::PullRequest => "pull_request",
            EventKind::Network => "network",
            EventKind::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Option<EventKind> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// One entry of a task's log. `seq` starts at 1 and has no gaps within a task.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Event {
    pub seq: i64,
    pub task_id: TaskId,
    pub at: Timestamp,
    pub kind: EventKind,
    pub data: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, serde_json::Value::String(kind.as_str().to_owned()));
        }
    }
}
