//! The data of a `step` event: which work step, what became of it, and what it found. Written
//! by the engine and the scheduler, read by the web app and the CLI, all through this type,
//! so that a key cannot be misspelt on one side only. The JSON is flat, as the log always
//! stored it: `{"step": "execution", "status": "verified", "index": 0, "summary": "…"}`.

use serde::{Deserialize, Serialize};

/// The work steps of SPEC §2, and what deft does around them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkStep {
    Environment,
    Analysis,
    /// The environment's image, built from a Dockerfile or reused.
    Image,
    /// A repository's dependencies, installed by its own tools.
    Install,
    /// One of the owner's MCP servers.
    Mcp,
    Learning,
    Planning,
    Execution,
    Review,
    Completion,
    Push,
    /// What the forge was told: a reply in a review thread, the issue linked, a question.
    #[serde(alias = "github")]
    Forge,
    /// The scheduler took the task back from a worker that stopped.
    Recovery,
    /// deft is stopping and hands the task back to the queue.
    Shutdown,
}

impl WorkStep {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkStep::Environment => "environment",
            WorkStep::Analysis => "analysis",
            WorkStep::Image => "image",
            WorkStep::Install => "install",
            WorkStep::Mcp => "mcp",
            WorkStep::Learning => "learning",
            WorkStep::Planning => "planning",
            WorkStep::Execution => "execution",
            WorkStep::Review => "review",
            WorkStep::Completion => "completion",
            WorkStep::Push => "push",
            WorkStep::Forge => "forge",
            WorkStep::Recovery => "recovery",
            WorkStep::Shutdown => "shutdown",
        }
    }
}

/// What became of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Started,
    Done,
    /// An execution step whose checks passed.
    Verified,
    VerificationFailed,
    Skipped,
    Failed,
    Built,
    Reused,
    Replied,
    Linked,
    Asked,
    Recorded,
    Reopened,
    Requeued,
    GivenUp,
    /// An execution step whose attempt gave up (its checks kept failing, a loop, too many
    /// turns): its changes are undone and it starts again, from a fresh conversation.
    Restarted,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Started => "started",
            StepStatus::Done => "done",
            StepStatus::Verified => "verified",
            StepStatus::VerificationFailed => "verification_failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Failed => "failed",
            StepStatus::Built => "built",
            StepStatus::Reused => "reused",
            StepStatus::Replied => "replied",
            StepStatus::Linked => "linked",
            StepStatus::Asked => "asked",
            StepStatus::Recorded => "recorded",
            StepStatus::Reopened => "reopened",
            StepStatus::Requeued => "requeued",
            StepStatus::GivenUp => "given_up",
            StepStatus::Restarted => "restarted",
        }
    }
}

/// What a repository's analysis found, as the log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoFound {
    pub repo: String,
    /// Its steering files' paths.
    #[serde(default)]
    pub steering: Vec<String>,
    /// The commands that verify a step.
    #[serde(default)]
    pub checks: Vec<String>,
}

/// A `step` event's data. Each field belongs to the steps that set it; the rest stay empty
/// and are not written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepEvent {
    pub step: WorkStep,
    pub status: StepStatus,
    /// The plan step (0-based), for execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// One line on what happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// A command's or a builder's output, its tail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Why, for what was skipped, failed, reopened or requeued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The repository a push concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The repositories the analysis read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repos: Vec<RepoFound>,
    /// How many steps a plan has, or pull requests a completion opened.
    #[serde(
        default,
        alias = "steps",
        alias = "pull_requests",
        skip_serializing_if = "Option::is_none"
    )]
    pub count: Option<usize>,
    /// The self-review's verdict and the fixes it asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fixes: Vec<String>,
    /// A learning recorded from feedback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning: Option<String>,
    /// An MCP server, and the tools it offers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// The network level the sandbox got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// A link made on the forge (a pull request's, a comment's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A review comment answered, by the forge's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<u64>,
    /// Why the scheduler acted (`lease_expired`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

impl StepEvent {
    /// A step's event with nothing more to say.
    pub fn new(step: WorkStep, status: StepStatus) -> StepEvent {
        StepEvent {
            step,
            status,
            index: None,
            summary: None,
            output: None,
            reason: None,
            repo: None,
            branch: None,
            commit: None,
            repos: Vec::new(),
            count: None,
            verdict: None,
            fixes: Vec::new(),
            learning: None,
            server: None,
            tools: Vec::new(),
            network: None,
            url: None,
            comment: None,
            cause: None,
        }
    }

    pub fn index(mut self, index: usize) -> StepEvent {
        self.index = Some(index);
        self
    }

    pub fn summary(mut self, summary: impl Into<String>) -> StepEvent {
        self.summary = Some(summary.into());
        self
    }

    pub fn output(mut self, output: impl Into<String>) -> StepEvent {
        self.output = Some(output.into());
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> StepEvent {
        self.reason = Some(reason.into());
        self
    }

    pub fn count(mut self, count: usize) -> StepEvent {
        self.count = Some(count);
        self
    }

    /// The event's JSON, as the log stores it.
    pub fn to_data(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a step event serializes")
    }

    /// A stored `step` event's data; `None` for data no version of deft wrote.
    pub fn from_data(data: &serde_json::Value) -> Option<StepEvent> {
        serde_json::from_value(data.clone()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_keep_the_flat_shape_the_log_always_had() {
        let event = StepEvent::new(WorkStep::Execution, StepStatus::Verified)
            .index(0)
            .summary("added the route");
        let data = event.to_data();
        assert_eq!(
            data,
            serde_json::json!({"step": "execution", "status": "verified", "index": 0, "summary": "added the route"})
        );
        assert_eq!(StepEvent::from_data(&data), Some(event));
        let old = serde_json::json!({"step": "recovery", "status": "requeued", "cause": "lease_expired", "reason": "stopped renewing"});
        let read = StepEvent::from_data(&old).unwrap();
        assert_eq!(read.cause.as_deref(), Some("lease_expired"));
        assert_eq!(
            StepEvent::from_data(&serde_json::json!({"step": "nap"})),
            None
        );
    }

    #[test]
    fn names_match_the_serialized_form() {
        for status in [StepStatus::VerificationFailed, StepStatus::GivenUp] {
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::json!(status.as_str())
            );
        }
        assert_eq!(
            serde_json::to_value(WorkStep::Forge).unwrap(),
            serde_json::json!(WorkStep::Forge.as_str())
        );
    }
}
