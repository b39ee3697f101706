//! deft's domain: the nouns of SPEC §1 and the task lifecycle of SPEC §2 as plain types.
//!
//! Everything here is pure: no I/O, no clocks read behind the caller's back, no async. The store
//! persists these types, the server renders them, and the agent and scheduler drive the task
//! state machine through [`TaskStatus::apply`], the only way a task changes state.

mod environment;
mod event;
mod ids;
mod model;
mod progress;
mod redact;
mod repo_environment;
mod step;
mod task;
mod time;
mod validate;

pub use environment::{
    AllowRule, EnvVars, McpConfig, McpServer, NetworkLevel, NetworkPolicy, validate_env_name,
};
pub use event::{Event, EventKind};
pub use ids::{ChatId, LearningId, RepoId, TaskId, TokenId, UserId};
pub use model::{
    Chat, ChatMessage, ForgeKind, Learning, Plan, PullRequest, PullRequestStatus, Repository,
    SecretInfo, Task, Usage, User,
};
pub use progress::{Gathered, Phase, Progress, SelfReview, Source, Verdict};
pub use redact::{Redactor, StreamRedactor};
pub use repo_environment::RepoEnvironment;
pub use step::{RepoFound, StepEvent, StepStatus, WorkStep};
pub use task::{Attention, AttentionKind, TaskState, TaskStatus, Transition, TransitionError};
pub use time::Timestamp;
pub use validate::ValidationError;
