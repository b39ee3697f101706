//! Where a task's run stands, as the engine writes it after each work step, so that a task
//! answered after a question, or picked up again after a crash, continues from there; and what
//! the run already did that it must not do twice (a reply in a review thread, the link on the
//! issue), so that it never reads its whole log to find out.
//!
//! Stored as JSON in the task's row; the field names are those of the first, untyped form, so
//! that a task stored before this type existed reads back as it was.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The work steps of SPEC §2 a run moves through, in order; `Done` until new input opens a
/// new round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The owner's feedback is read for conventions to keep.
    Learning,
    Planning,
    /// The plan waits for the owner's approval.
    Approval,
    Execution,
    Review,
    Completion,
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Learning => "learning",
            Phase::Planning => "planning",
            Phase::Approval => "approval",
            Phase::Execution => "execution",
            Phase::Review => "review",
            Phase::Completion => "completion",
            Phase::Done => "done",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the self-review said of the whole change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfReview {
    pub verdict: Verdict,
    #[serde(default)]
    pub fixes: Vec<String>,
    /// What the reviewer says it checked, and how (a pass must say).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checked: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fix,
    /// The reviewer's answer could not be read.
    Unclear,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fix => "fix",
            Verdict::Unclear => "unclear",
        }
    }
}

/// A pull request as it stood when its owner gave feedback: every unresolved review thread
/// and conversation comment, and the failing checks of its head commit, for the round that
/// feedback opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gathered {
    /// The repository, as the forge names it.
    pub repo: String,
    /// The pull request's number on the forge.
    pub pull: u64,
    /// What the agent reads: the owner's words as they are, everyone else's fenced as data.
    pub text: String,
    /// The review comments that open the unresolved threads: each gets a reply once the
    /// round is pushed.
    #[serde(default)]
    pub threads: Vec<u64>,
}

/// A run's position and memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub phase: Phase,
    /// The next plan step to execute (0-based); every step before it is verified.
    #[serde(default)]
    pub step: usize,
    /// What each verified step did, in order: the commit message and the pull request say it.
    #[serde(default)]
    pub summaries: Vec<String>,
    /// What each verified step read, changed and ran, in a line: the next step's executor
    /// starts a fresh conversation and reads these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// 1 for the task's first run; each new input on a completed task adds one.
    #[serde(default = "first_round")]
    pub round: u32,
    /// The self-review's verdict, once given in this round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<SelfReview>,
    /// Review comments (the forge's ids) already answered in their threads.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub replied: BTreeSet<u64>,
    /// Whether the issue the task came from has been told where its pull request is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub issue_linked: bool,
    /// What the pull requests held when the owner gave this round's feedback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gathered: Vec<Gathered>,
    /// Connections the sandbox's network policy refused, by `host:port`, with how often: the
    /// pull request's body lists them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<String, u32>,
    /// The web pages and search results the agent used, numbered from 1 in this order: its
    /// `[n]` markers cite them, and the pull request's body lists them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Source>,
}

/// A web source the agent saw (a search result or a fetched page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub url: String,
    pub title: String,
    /// The page was read (`web_fetch`), not only seen among search results: a pull request
    /// lists a source the agent read or cited, never a result it merely saw.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fetched: bool,
}

fn first_round() -> u32 {
    1
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

impl Progress {
    /// A task that has not started: planning comes first.
    pub fn new() -> Progress {
        Progress {
            phase: Phase::Planning,
            step: 0,
            summaries: Vec::new(),
            notes: Vec::new(),
            round: 1,
            review: None,
            replied: BTreeSet::new(),
            issue_linked: false,
            gathered: Vec::new(),
            refused: BTreeMap::new(),
            sources: Vec::new(),
        }
    }

    /// New input on a completed task: a new round in the same branch and pull request, which
    /// starts by reading the feedback for conventions. What was said on the forge stays said.
    pub fn next_round(&self) -> Progress {
        Progress {
            phase: Phase::Learning,
            round: self.round + 1,
            replied: self.replied.clone(),
            issue_linked: self.issue_linked,
            refused: self.refused.clone(),
            ..Progress::new()
        }
    }

    /// Moves to `phase` with its own step count and summaries kept.
    pub fn enter(&mut self, phase: Phase) {
        self.phase = phase;
    }

    /// Starts execution from the plan's first step.
    pub fn start_execution(&mut self) {
        self.phase = Phase::Execution;
        self.step = 0;
        self.summaries.clear();
        self.notes.clear();
    }

    /// How many of a plan of `steps` steps are done, for the task's page.
    pub fn steps_done(&self, steps: usize) -> usize {
        match self.phase {
            Phase::Execution => self.step.min(steps),
            Phase::Review | Phase::Completion | Phase::Done => steps,
            Phase::Learning | Phase::Planning | Phase::Approval => 0,
        }
    }

    /// Counts a connection the network policy refused.
    pub fn refused(&mut self, host: &str, port: u16) {
        *self.refused.entry(format!("{host}:{port}")).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_stored_before_it_was_typed_reads_back() {
        let stored = r#"{"phase":"execution","step":2,"summaries":["a","b"],"review":{"verdict":"fix","fixes":["x"]}}"#;
        let progress: Progress = serde_json::from_str(stored).unwrap();
        assert_eq!(progress.phase, Phase::Execution);
        assert_eq!(progress.step, 2);
        assert_eq!(progress.round, 1);
        assert_eq!(progress.review.unwrap().verdict, Verdict::Fix);
        let done: Progress = serde_json::from_str(r#"{"phase":"done","round":3}"#).unwrap();
        assert_eq!(done.next_round().round, 4);
        assert_eq!(done.next_round().phase, Phase::Learning);
    }

    #[test]
    fn a_round_keeps_what_was_said_on_the_forge() {
        let mut progress = Progress::new();
        progress.replied.insert(7);
        progress.issue_linked = true;
        progress.summaries.push("did it".into());
        progress.refused("example.org", 443);
        progress.refused("example.org", 443);
        let next = progress.next_round();
        assert!(next.replied.contains(&7));
        assert!(next.issue_linked);
        assert!(next.summaries.is_empty());
        assert_eq!(next.refused["example.org:443"], 2);
        let text = serde_json::to_string(&next).unwrap();
        assert_eq!(serde_json::from_str::<Progress>(&text).unwrap(), next);
    }

    #[test]
    fn an_unknown_phase_is_refused() {
        let error = serde_json::from_str::<Progress>(r#"{"phase":"dreaming"}"#).unwrap_err();
        assert!(error.to_string().contains("dreaming"), "{error}");
    }
}
