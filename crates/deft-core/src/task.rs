//! The task lifecycle of SPEC §2 as a type.
//!
//! [`TaskStatus`] carries the state and, only in `needs_attention`, the reason; a status without
//! its reason, or a reason without that state, cannot be built. Every change of state goes through
//! [`TaskStatus::apply`], which either returns the next status or says why the transition is not
//! allowed from here. The store keeps only what this type produces (see
//! [`TaskStatus::from_parts`]).

use std::fmt;

/// The five states, with the exact strings of the API and the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Queued,
    InProgress,
    NeedsAttention,
    Completed,
    Cancelled,
}

impl TaskState {
    pub const ALL: [TaskState; 5] = [
        TaskState::Queued,
        TaskState::InProgress,
        TaskState::NeedsAttention,
        TaskState::Completed,
        TaskState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::InProgress => "in_progress",
            TaskState::NeedsAttention => "needs_attention",
            TaskState::Completed => "completed",
            TaskState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<TaskState> {
        TaskState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a task waits for its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionKind {
    /// The agent asked a question (`ask_user`).
    Question,
    /// The plan waits for approval (`approve_plan`).
    PlanApproval,
    /// Something the user can fix went wrong: no model configured, auth failed, no sandbox.
    Error,
    /// The weekly token limit is reached; the message says when it resets.
    WeeklyLimit,
    /// The task's token budget is spent; the message says how much.
    TokenBudget,
}

impl AttentionKind {
    pub const ALL: [AttentionKind; 5] = [
        AttentionKind::Question,
        AttentionKind::PlanApproval,
        AttentionKind::Error,
        AttentionKind::WeeklyLimit,
        AttentionKind::TokenBudget,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttentionKind::Question => "question",
            AttentionKind::PlanApproval => "plan_approval",
            AttentionKind::Error => "error",
            AttentionKind::WeeklyLimit => "weekly_limit",
            AttentionKind::TokenBudget => "token_budget",
        }
    }

    pub fn parse(text: &str) -> Option<AttentionKind> {
        AttentionKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// The reason a task is in `needs_attention`, as shown to its owner.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attention {
    pub kind: AttentionKind,
    pub message: String,
}

/// A task's state together with what that state carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskStatus {
    Queued,
    InProgress,
    NeedsAttention(Attention),
    Completed,
    Cancelled,
}

/// Everything that can happen to a task. Each arm names the edge of the SPEC §2 diagram it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// A worker took the task: a slot was free.
    Start,
    /// The pull requests are open.
    Complete,
    /// A question, an approval to wait for, or an error the user can act on. Allowed from
    /// `in_progress`, and from `queued` for what is decided before starting (the weekly limit).
    NeedAttention(Attention),
    /// The owner answered the question or acted on the error.
    Answer,
    /// The owner approved the plan (perhaps edited).
    Approve,
    /// New input on a completed task: a review comment, a failed check, feedback in the UI.
    Feedback,
    /// A chat message to the task. Wakes a task that waits or is done; a queued or running
    /// task takes it in at its next step and stays where it is.
    Steer,
    /// The worker running the task is gone (its lease expired): run it again.
    Requeue,
    /// The owner stopped the task. Final.
    Cancel,
}

impl Transition {
    /// The verb a person would use, for error messages.
    pub fn verb(&self) -> &'static str {
        match self {
            Transition::Start => "start",
            Transition::Complete => "complete",
            Transition::NeedAttention(_) => "ask for attention on",
            Transition::Answer => "answer",
            Transition::Approve => "approve the plan of",
            Transition::Feedback => "give feedback on",
            Transition::Steer => "steer",
            Transition::Requeue => "requeue",
            Transition::Cancel => "cancel",
        }
    }
}

/// A transition that is not allowed from the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {verb} a task that is {from}{hint}")]
pub struct TransitionError {
    pub from: TaskState,
    pub verb: &'static str,
    pub hint: &'static str,
}

impl TaskStatus {
    pub fn state(&self) -> TaskState {
        match self {
            TaskStatus::Queued => TaskState::Queued,
            TaskStatus::InProgress => TaskState::InProgress,
            TaskStatus::NeedsAttention(_) => TaskState::NeedsAttention,
            TaskStatus::Completed => TaskState::Completed,
            TaskStatus::Cancelled => TaskState::Cancelled,
        }
    }

    pub fn attention(&self) -> Option<&Attention> {
        match self {
            TaskStatus::NeedsAttention(attention) => Some(attention),
            _ => None,
        }
    }

    /// Rebuilds a status from its stored columns, refusing any combination `apply` cannot produce.
    pub fn from_parts(
        state: &str,
        attention_kind: Option<&str>,
        attention_message: Option<&str>,
    ) -> Option<TaskStatus> {
        let state = TaskState::parse(state)?;
        match (state, attention_kind, attention_message) {
            (TaskState::NeedsAttention, Some(kind), Some(message)) => {
                Some(TaskStatus::NeedsAttention(Attention {
                    kind: AttentionKind::parse(kind)?,
                    message: message.to_owned(),
                }))
            }
            (TaskState::NeedsAttention, _, _) => None,
            (_, None, None) => Some(match state {
                TaskState::Queued => TaskStatus::Queued,
                TaskState::InProgress => TaskStatus::InProgress,
                TaskState::Completed => TaskStatus::Completed,
                TaskState::Cancelled => TaskStatus::Cancelled,
                TaskState::NeedsAttention => unreachable!("handled above"),
            }),
            _ => None,
        }
    }

    /// The status after `transition`, or why it is not allowed now.
    pub fn apply(&self, transition: Transition) -> Result<TaskStatus, TransitionError> {
        use TaskStatus as S;
        use Transition as T;
        let refuse = |hint: &'static str| TransitionError {
            from: self.state(),
            verb: transition.verb(),
            hint,
        };
        match (self, &transition) {
            (S::Cancelled, _) => Err(refuse("; a cancelled task is final, create a new task")),
            (_, T::Cancel) => Ok(S::Cancelled),

            (S::Queued, T::Start) => Ok(S::InProgress),
            (S::InProgress, T::Complete) => Ok(S::Completed),
            (S::Queued | S::InProgress, T::NeedAttention(attention)) => {
                Ok(S::NeedsAttention(attention.clone()))
            }
            (S::InProgress, T::Requeue) => Ok(S::Queued),

            (S::NeedsAttention(_), T::Answer) => Ok(S::Queued),
            (
                S::NeedsAttention(Attention {
                    kind: AttentionKind::PlanApproval,
                    ..
                }),
                T::Approve,
            ) => Ok(S::Queued),
            (S::NeedsAttention(_), T::Approve) => Err(refuse(
                "; only a plan waiting for approval can be approved, answer instead",
            )),
            (S::Completed, T::Feedback) => Ok(S::Queued),
            (S::NeedsAttention(_) | S::Completed, T::Steer) => Ok(S::Queued),
            (S::Queued | S::InProgress, T::Steer) => Ok(self.clone()),

            (S::Queued | S::InProgress, T::Answer | T::Approve) => {
                Err(refuse("; only a task that needs attention takes an answer"))
            }
            (S::Queued | S::InProgress | S::NeedsAttention(_), T::Feedback) => Err(refuse(
                "; feedback is for completed tasks, answer or steer it instead",
            )),
            _ => Err(refuse("")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn question() -> Attention {
        Attention {
            kind: AttentionKind::Question,
            message: "which database?".into(),
        }
    }

    fn plan_approval() -> Attention {
        Attention {
            kind: AttentionKind::PlanApproval,
            message: "approve the plan".into(),
        }
    }

    /// The edges of the SPEC §2 diagram, written independently of `apply`, as (from, to).
    fn spec_allows(from: TaskState, to: TaskState) -> bool {
        use TaskState as S;
        matches!(
            (from, to),
            (S::Queued, S::InProgress)
                | (S::InProgress, S::Completed)
                | (S::InProgress, S::NeedsAttention)
                | (S::Queued, S::NeedsAttention)
                | (S::NeedsAttention, S::Queued)
                | (S::Completed, S::Queued)
                | (S::InProgress, S::Queued)
                | (S::Queued, S::Queued)
                | (S::InProgress, S::InProgress)
        ) || (from != S::Cancelled && to == S::Cancelled)
    }

    fn check(from: TaskStatus, transition: Transition, expect: Result<TaskState, &str>) {
        let got = from.apply(transition);
        match (got, expect) {
            (Ok(status), Ok(state)) => assert_eq!(status.state(), state),
            (Err(error), Err(message)) => assert_eq!(error.to_string(), message),
            (got, expect) => panic!("got {got:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn every_spec_edge_is_allowed() {
        use TaskState as To;
        use TaskStatus as S;
        use Transition as T;
        let edges = [
            (S::Queued, T::Start, To::InProgress),
            (S::InProgress, T::Complete, To::Completed),
            (
                S::InProgress,
                T::NeedAttention(question()),
                To::NeedsAttention,
            ),
            (S::NeedsAttention(question()), T::Answer, To::Queued),
            (S::NeedsAttention(plan_approval()), T::Approve, To::Queued),
            (S::Completed, T::Feedback, To::Queued),
            (S::Completed, T::Steer, To::Queued),
            (S::InProgress, T::Steer, To::InProgress),
            (S::InProgress, T::Requeue, To::Queued),
            (S::Queued, T::Cancel, To::Cancelled),
            (S::InProgress, T::Cancel, To::Cancelled),
            (S::Completed, T::Cancel, To::Cancelled),
            (S::NeedsAttention(question()), T::Cancel, To::Cancelled),
        ];
        for (from, transition, to) in edges {
            check(from, transition, Ok(to));
        }
    }

    /// Every state against every transition: the whole table, written out, so that an
    /// added or missing rule anywhere shows up here.
    #[test]
    fn the_whole_transition_table() {
        use TaskState::*;
        let states = [
            TaskStatus::Queued,
            TaskStatus::InProgress,
            TaskStatus::NeedsAttention(question()),
            TaskStatus::NeedsAttention(plan_approval()),
            TaskStatus::Completed,
            TaskStatus::Cancelled,
        ];
        let transitions = [
            Transition::Start,
            Transition::Complete,
            Transition::NeedAttention(question()),
            Transition::Answer,
            Transition::Approve,
            Transition::Feedback,
            Transition::Steer,
            Transition::Requeue,
            Transition::Cancel,
        ];
        // Rows follow `states`, columns follow `transitions`. A cell is the state reached
        // (queued, in progress, needs attention, completed, cancelled); `no`, a refusal.
        let (qu, ip, na, co, ca) = (
            Some(Queued),
            Some(InProgress),
            Some(NeedsAttention),
            Some(Completed),
            Some(Cancelled),
        );
        let no = None;
        let expected: [[Option<TaskState>; 9]; 6] = [
            // start, complete, attention, answer, approve, feedback, steer, requeue, cancel
            [ip, no, na, no, no, no, qu, no, ca], // queued
            [no, co, na, no, no, no, ip, qu, ca], // in progress
            [no, no, no, qu, no, no, qu, no, ca], // needs attention: a question
            [no, no, no, qu, qu, no, qu, no, ca], // needs attention: a plan to approve
            [no, no, no, no, no, qu, qu, no, ca], // completed
            [no, no, no, no, no, no, no, no, no], // cancelled
        ];
        for (row, from) in states.iter().enumerate() {
            for (column, transition) in transitions.iter().enumerate() {
                let got = from
                    .apply(transition.clone())
                    .ok()
                    .map(|status| status.state());
                assert_eq!(got, expected[row][column], "{from:?} --{transition:?}-->");
            }
        }
    }

    #[test]
    fn refusals_say_why_and_what_to_do() {
        check(
            TaskStatus::Cancelled,
            Transition::Cancel,
            Err(
                "cannot cancel a task that is cancelled; a cancelled task is final, create a new task",
            ),
        );
        check(
            TaskStatus::Queued,
            Transition::Answer,
            Err(
                "cannot answer a task that is queued; only a task that needs attention takes an answer",
            ),
        );
        check(
            TaskStatus::InProgress,
            Transition::Feedback,
            Err(
                "cannot give feedback on a task that is in_progress; feedback is for completed tasks, answer or steer it instead",
            ),
        );
        check(
            TaskStatus::NeedsAttention(question()),
            Transition::Approve,
            Err(
                "cannot approve the plan of a task that is needs_attention; only a plan waiting for approval can be approved, answer instead",
            ),
        );
        check(
            TaskStatus::Completed,
            Transition::Start,
            Err("cannot start a task that is completed"),
        );
        check(
            TaskStatus::Queued,
            Transition::Complete,
            Err("cannot complete a task that is queued"),
        );
    }

    #[test]
    fn stored_parts_round_trip_and_inconsistent_parts_are_refused() {
        let waiting = TaskStatus::NeedsAttention(question());
        assert_eq!(
            TaskStatus::from_parts("needs_attention", Some("question"), Some("which database?")),
            Some(waiting)
        );
        assert_eq!(TaskStatus::from_parts("needs_attention", None, None), None);
        assert_eq!(
            TaskStatus::from_parts("queued", Some("question"), Some("x")),
            None
        );
        assert_eq!(TaskStatus::from_parts("paused", None, None), None);
        assert_eq!(
            TaskStatus::from_parts("needs_attention", Some("nope"), Some("x")),
            None
        );
    }

    fn any_attention() -> impl Strategy<Value = Attention> {
        (
            prop::sample::select(AttentionKind::ALL.to_vec()),
            "[a-z ]{0,12}",
        )
            .prop_map(|(kind, message)| Attention { kind, message })
    }

    fn any_transition() -> impl Strategy<Value = Transition> {
        prop_oneof![
            Just(Transition::Start),
            Just(Transition::Complete),
            any_attention().prop_map(Transition::NeedAttention),
            Just(Transition::Answer),
            Just(Transition::Approve),
            Just(Transition::Feedback),
            Just(Transition::Steer),
            Just(Transition::Requeue),
            Just(Transition::Cancel),
        ]
    }

    fn to_parts(status: &TaskStatus) -> (&'static str, Option<&'static str>, Option<String>) {
        (
            status.state().as_str(),
            status.attention().map(|a| a.kind.as_str()),
            status.attention().map(|a| a.message.clone()),
        )
    }

    proptest! {
        /// Random operations from a new task never reach a status outside the SPEC: every
        /// accepted step is an edge of the diagram, every refused step changes nothing, a
        /// reason exists exactly in `needs_attention`, `cancelled` is final, and every status
        /// reached survives the trip through storage.
        #[test]
        fn no_sequence_reaches_an_undefined_state(
            transitions in prop::collection::vec(any_transition(), 0..64)
        ) {
            let mut status = TaskStatus::Queued;
            for transition in transitions {
                let before = status.clone();
                match before.apply(transition.clone()) {
                    Ok(after) => {
                        prop_assert!(spec_allows(before.state(), after.state()),
                            "{:?} --{:?}--> {:?} is not an edge of SPEC §2", before, transition, after);
                        if let Transition::NeedAttention(attention) = &transition {
                            prop_assert_eq!(after.attention(), Some(attention));
                        }
                        status = after;
                    }
                    Err(error) => {
                        prop_assert_eq!(error.from, before.state());
                        prop_assert!(!error.to_string().is_empty());
                    }
                }
                prop_assert_eq!(status.attention().is_some(), status.state() == TaskState::NeedsAttention);
                let (state, kind, message) = to_parts(&status);
                prop_assert_eq!(TaskStatus::from_parts(state, kind, message.as_deref()), Some(status.clone()));
                if before.state() == TaskState::Cancelled {
                    prop_assert_eq!(status.state(), TaskState::Cancelled);
                }
            }
        }

        /// Cancel is allowed from every state but `cancelled`, whatever happened before.
        #[test]
        fn cancel_ends_any_live_task(transitions in prop::collection::vec(any_transition(), 0..32)) {
            let mut status = TaskStatus::Queued;
            for transition in transitions {
                if let Ok(next) = status.apply(transition) {
                    status = next;
                }
            }
            let cancelled = status.apply(Transition::Cancel);
            prop_assert_eq!(cancelled.is_ok(), status.state() != TaskState::Cancelled);
        }
    }
}
