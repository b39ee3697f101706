//! A task's log grouped by the step of work it belongs to: the environment's setup (folded
//! into one group, since it is noise unless it failed), planning, each plan step, the review
//! and the pull requests. A [`Walker`] reads the events once, in order, and builds the
//! groups and their cards: a tool call's call and result become one card, model calls are
//! counted in the step's heading, and the question is one card that takes its answer.
//!
//! The task page walks the events it shows; its live stream keeps a walker going and sends
//! what each new event changed (a card, or a step's heading), so a new event lands in its
//! step and a tool result in its call's card without a reload.

use std::collections::HashMap;

use deft_core::{Event, EventKind, StepEvent, StepStatus, TaskState, Timestamp, WorkStep};

use super::log::{self, Card};

/// Which part of the work a group holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    /// What came before any step: the task's creation and first state changes. Setup joins it.
    Start,
    Setup,
    Planning,
    Execution(usize),
    Review,
    Completion,
}

impl Key {
    fn same(self, other: Key) -> bool {
        self == other || matches!((self, other), (Key::Start, Key::Setup))
    }
}

/// One step of work and its cards, as `log_group.html` draws it.
#[derive(Debug, Clone)]
pub struct Group {
    /// Its id on the page: `step-SEQ`, after the event that opened it.
    pub id: String,
    key: Key,
    pub title: String,
    pub first_seq: i64,
    pub last_seq: i64,
    first_at: Timestamp,
    last_at: Timestamp,
    pub cards: Vec<Card>,
    /// Failed, when its step said so.
    failed: bool,
    /// The step said it was done.
    finished: bool,
    pub model_calls: usize,
    pub tokens: i64,
    /// Filled in for drawing ([`Walker::view`]).
    pub status: &'static str,
    pub status_label: &'static str,
    pub open: bool,
    /// Cards a filter left out.
    pub hidden: usize,
}

impl Group {
    /// How long the step ran, first event to last.
    pub fn duration(&self) -> String {
        log::duration(self.last_at.unix_millis() - self.first_at.unix_millis())
    }

    /// Its tool calls: cards that are neither state changes nor notes.
    pub fn calls(&self) -> usize {
        self.cards.iter().filter(|c| c.called_at.is_some()).count()
    }
}

/// What a new event changed, for the live stream to send again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A step's heading (new, or its status or counts changed).
    Group(usize),
    /// A card (new, or completed by a result or an answer).
    Card(usize, usize),
}

/// A filter of the log's cards (`?show=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Edits,
    Commands,
    Network,
    Errors,
}

impl Show {
    pub const ALL: [Show; 4] = [Show::Edits, Show::Commands, Show::Network, Show::Errors];

    pub fn parse(text: &str) -> Option<Show> {
        Show::ALL.into_iter().find(|show| show.as_str() == text)
    }

    /// The tag its cards carry, and its value in `?show=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Show::Edits => "edits",
            Show::Commands => "commands",
            Show::Network => "network",
            Show::Errors => "errors",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Show::Edits => "Edits",
            Show::Commands => "Commands",
            Show::Network => "Network",
            Show::Errors => "Errors",
        }
    }
}

/// Characters of output a card keeps in the open step, and in a folded one.
pub const OPEN_OUTPUT: usize = 1500;
pub const FOLDED_OUTPUT: usize = 300;

/// Reads events in order into groups of cards.
#[derive(Debug)]
pub struct Walker {
    plan: Vec<String>,
    pub groups: Vec<Group>,
    /// Each tool call waiting for its result, by the call's id.
    calls: HashMap<String, (usize, usize)>,
    /// The `submit_plan` call the next plan fills in.
    plan_call: Option<(usize, usize)>,
    /// The last question, until it is answered.
    question: Option<(usize, usize)>,
    /// The state the log last said the task is in.
    state: Option<TaskState>,
}

impl Walker {
    /// `plan` names the execution steps until the log's own plan event does.
    pub fn new(plan: Vec<String>) -> Walker {
        Walker {
            plan,
            groups: Vec::new(),
            calls: HashMap::new(),
            plan_call: None,
            question: None,
            state: None,
        }
    }

    /// The task's state as the page knows it, for the last group's status.
    pub fn set_state(&mut self, state: TaskState) {
        self.state = Some(state);
    }

    pub fn card(&self, (group, card): (usize, usize)) -> &Card {
        &self.groups[group].cards[card]
    }

    pub fn card_mut(&mut self, (group, card): (usize, usize)) -> &mut Card {
        &mut self.groups[group].cards[card]
    }

    fn title(&self, key: Key, first: &Event) -> String {
        match key {
            Key::Start if first.kind == EventKind::TaskCreated => "Environment".into(),
            Key::Start => "Continued from earlier events".into(),
            Key::Setup => "Environment".into(),
            Key::Planning => "Planning".into(),
            // The step's start names it, as the plan (or the self-review's fixes) had it.
            Key::Execution(index) => match first.data["summary"]
                .as_str()
                .or(self.plan.get(index).map(String::as_str))
            {
                Some(text) => format!("Step {}: {text}", index + 1),
                None => format!("Step {}", index + 1),
            },
            Key::Review => "Review".into(),
            Key::Completion => "Pull requests".into(),
        }
    }

    fn open_group(&mut self, key: Key, event: &Event, changes: &mut Vec<Change>) -> usize {
        if let Some(last) = self.groups.len().checked_sub(1) {
            changes.push(Change::Group(last));
        }
        let mut title = self.title(key, event);
        // A step taken up again after an answer or a restart.
        if key != Key::Start && self.groups.iter().any(|g| g.key == key) {
            title.push_str(" (again)");
        }
        self.groups.push(Group {
            id: format!("step-{}", event.seq),
            key,
            title,
            first_seq: event.seq,
            last_seq: event.seq,
            first_at: event.at,
            last_at: event.at,
            cards: Vec::new(),
            failed: false,
            finished: false,
            model_calls: 0,
            tokens: 0,
            status: "",
            status_label: "",
            open: false,
            hidden: 0,
        });
        let index = self.groups.len() - 1;
        changes.push(Change::Group(index));
        index
    }

    /// The group `event` belongs to, opened if it starts one.
    fn group_for(&mut self, event: &Event, changes: &mut Vec<Change>) -> usize {
        let starts = match event.kind {
            EventKind::Step => StepEvent::from_data(&event.data).and_then(|step| {
                let key = key_of(&step)?;
                let opens = step.status == StepStatus::Started || step.step == WorkStep::Review;
                opens.then_some(key)
            }),
            _ => None,
        };
        match (starts, self.groups.last()) {
            (Some(key), Some(last)) if !last.key.same(key) => self.open_group(key, event, changes),
            (Some(key), None) => self.open_group(key, event, changes),
            (None, None) => self.open_group(Key::Start, event, changes),
            _ => self.groups.len() - 1,
        }
    }

    fn push(&mut self, group: usize, card: Card, changes: &mut Vec<Change>) -> (usize, usize) {
        self.groups[group].cards.push(card);
        let at = (group, self.groups[group].cards.len() - 1);
        changes.push(Change::Card(at.0, at.1));
        at
    }

    /// Reads one event; what it changed.
    pub fn feed(&mut self, event: &Event) -> Vec<Change> {
        let mut changes = Vec::new();
        let group = self.group_for(event, &mut changes);
        let g = &mut self.groups[group];
        g.last_seq = event.seq;
        g.last_at = event.at;
        match event.kind {
            EventKind::ModelCall => {
                g.model_calls += 1;
                g.tokens += log::tokens(event);
                push_once(&mut changes, Change::Group(group));
            }
            EventKind::ToolCall => {
                let card = log::tool_call(event);
                let (call, name) = (card.call.clone(), event.data["name"].as_str());
                let is_question = card.question.is_some();
                let is_plan = name == Some("submit_plan");
                let at = self.push(group, card, &mut changes);
                if let Some(call) = call {
                    self.calls.insert(call, at);
                }
                if is_question {
                    self.question = Some(at);
                }
                if is_plan {
                    self.plan_call = Some(at);
                }
            }
            EventKind::ToolResult => {
                let call = event.data["id"]
                    .as_str()
                    .and_then(|id| self.calls.remove(id));
                match call {
                    Some(at) => {
                        log::with_result(self.card_mut(at), event);
                        changes.push(Change::Card(at.0, at.1));
                        if self
                            .card(at)
                            .question
                            .as_ref()
                            .is_some_and(|q| q.sent_back.is_some())
                            && self.question == Some(at)
                        {
                            self.question = None;
                        }
                    }
                    None => {
                        self.push(group, log::lone_result(event), &mut changes);
                    }
                }
            }
            EventKind::Plan => {
                self.plan = event.data["steps"]
                    .as_array()
                    .map(|steps| {
                        steps
                            .iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                match self.plan_call.take() {
                    Some(at) => {
                        let card = self.card(at).clone();
                        *self.card_mut(at) = log::plan(Some(card), event);
                        changes.push(Change::Card(at.0, at.1));
                    }
                    None => {
                        self.push(group, log::plan(None, event), &mut changes);
                    }
                }
            }
            EventKind::Question => self.asked(group, event, &mut changes),
            EventKind::UserMessage if event.data["kind"] == "answer" && self.question.is_some() => {
                let at = self.question.take().expect("checked");
                let question = self
                    .card_mut(at)
                    .question
                    .as_mut()
                    .expect("a question card");
                question.answer = event.data["message"].as_str().map(str::to_owned);
                question.waiting = false;
                changes.push(Change::Card(at.0, at.1));
            }
            EventKind::StateChanged => {
                let to = event.data["to"].as_str().and_then(TaskState::parse);
                self.state = to;
                let waits = to == Some(TaskState::NeedsAttention)
                    && event.data["attention"]["kind"] == "question";
                if let Some(at) = self.question {
                    let question = self
                        .card_mut(at)
                        .question
                        .as_mut()
                        .expect("a question card");
                    if question.waiting != waits {
                        question.waiting = waits;
                        changes.push(Change::Card(at.0, at.1));
                    }
                }
                if let Some(card) = log::other(event) {
                    self.push(group, card, &mut changes);
                }
                let last = self.groups.len() - 1;
                push_once(&mut changes, Change::Group(last));
            }
            EventKind::Step => {
                let mut said = false;
                if let Some(step) = StepEvent::from_data(&event.data) {
                    let g = &mut self.groups[group];
                    if key_of(&step).is_some_and(|key| g.key.same(key))
                        && step.status != StepStatus::Started
                    {
                        g.failed = matches!(step.status, StepStatus::Failed | StepStatus::GivenUp);
                        g.finished = !matches!(
                            step.status,
                            StepStatus::VerificationFailed | StepStatus::Restarted
                        );
                        push_once(&mut changes, Change::Group(group));
                    }
                    said = repeats_finish(g, &step);
                }
                if let Some(card) = log::other(event).filter(|_| !said) {
                    self.push(group, card, &mut changes);
                }
            }
            _ => {
                if let Some(card) = log::other(event) {
                    self.push(group, card, &mut changes);
                }
            }
        }
        changes
    }

    /// The question put to the owner: into the `ask_user` card that asked it, or a card of its
    /// own.
    fn asked(&mut self, group: usize, event: &Event, changes: &mut Vec<Change>) {
        let pending = self.question.filter(|at| {
            self.card(*at)
                .question
                .as_ref()
                .is_some_and(|q| q.answer.is_none() && q.sent_back.is_none())
        });
        match pending {
            Some(at) => {
                let asked = event.data["question"].as_str().unwrap_or_default();
                let card = self.card_mut(at);
                if let Some(question) = &mut card.question {
                    question.html = super::markdown::render(asked, &[]);
                }
                changes.push(Change::Card(at.0, at.1));
            }
            None => {
                let at = self.push(group, log::question(event), changes);
                self.question = Some(at);
            }
        }
    }

    /// A group's status as its heading says it: the last one's is the task's.
    pub fn status(&self, index: usize) -> (&'static str, &'static str) {
        let group = &self.groups[index];
        if group.failed {
            return ("failed", "Failed");
        }
        if index + 1 < self.groups.len() {
            return ("done", "Done");
        }
        match self.state {
            Some(TaskState::NeedsAttention) => ("waiting", "Waits for you"),
            Some(TaskState::Queued) => ("queued", "Queued"),
            Some(TaskState::Completed) => ("done", "Done"),
            Some(TaskState::Cancelled) => ("cancelled", "Cancelled"),
            _ if group.finished => ("done", "Done"),
            _ => ("running", "Running"),
        }
    }

    /// Fills in a group's status and whether it is open (the last one is; finished steps are
    /// folded).
    pub fn settle(&mut self, index: usize) {
        let (status, label) = self.status(index);
        let last = index + 1 == self.groups.len();
        let group = &mut self.groups[index];
        group.status = status;
        group.status_label = label;
        group.open = last;
    }

    /// The groups for a page: `show` keeps only its cards (and opens every step that has
    /// some), outputs are cut to what a page carries, and the oldest steps are left for the
    /// earlier page until the page weighs under `budget` bytes. Returns the groups and the
    /// number of the first event shown.
    pub fn view(mut self, show: Option<Show>, budget: usize) -> (Vec<Group>, Option<i64>) {
        for index in 0..self.groups.len() {
            self.settle(index);
        }
        let mut groups = self.groups;
        if let Some(show) = show {
            let last = groups.len().saturating_sub(1);
            for group in &mut groups {
                let before = group.cards.len();
                group.cards.retain(|card| card.has_tag(show.as_str()));
                group.hidden = before - group.cards.len();
                group.open = true;
            }
            let mut index = 0;
            groups.retain(|group| {
                index += 1;
                !group.cards.is_empty() || index - 1 == last
            });
        }
        for group in &mut groups {
            let keep = if group.open {
                OPEN_OUTPUT
            } else {
                FOLDED_OUTPUT
            };
            for card in &mut group.cards {
                card.trim(keep);
            }
        }
        let weight = |groups: &[Group]| -> usize {
            groups
                .iter()
                .map(|g| 300 + g.cards.iter().map(Card::weight).sum::<usize>())
                .sum()
        };
        while groups.len() > 1 && weight(&groups) > budget {
            groups.remove(0);
        }
        let mut cut = false;
        if let Some(only) = groups.first_mut() {
            let mut total = weight(std::slice::from_ref(only));
            while only.cards.len() > 1 && total > budget {
                total -= only.cards.remove(0).weight();
                cut = true;
            }
        }
        let first = groups.first().map(|g| match g.cards.first() {
            Some(card) if cut => card.seq,
            _ => g.first_seq,
        });
        (groups, first)
    }
}

/// A step verified with the summary its `finish` card shows already: the heading's status says
/// the rest.
fn repeats_finish(group: &Group, step: &StepEvent) -> bool {
    let Some(summary) = step.summary.as_deref() else {
        return false;
    };
    matches!(step.status, StepStatus::Verified | StepStatus::Done)
        && step.output.is_none()
        && step.reason.is_none()
        && group.cards.iter().any(|card| {
            card.class == "finish" && card.title == summary.lines().next().unwrap_or("").trim()
        })
}

fn push_once(changes: &mut Vec<Change>, change: Change) {
    if !changes.contains(&change) {
        changes.push(change);
    }
}

fn key_of(step: &StepEvent) -> Option<Key> {
    match step.step {
        WorkStep::Environment
        | WorkStep::Analysis
        | WorkStep::Image
        | WorkStep::Install
        | WorkStep::Mcp => Some(Key::Setup),
        WorkStep::Planning => Some(Key::Planning),
        WorkStep::Execution => step.index.map(Key::Execution),
        WorkStep::Review => Some(Key::Review),
        WorkStep::Completion => Some(Key::Completion),
        _ => None,
    }
}

#[cfg(test)]
#[path = "log_steps_tests.rs"]
mod tests;
