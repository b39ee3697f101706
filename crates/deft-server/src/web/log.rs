//! One card of a task's log as a person reads it: a tool call with its command or path, its
//! output folded and its exit status and time; an edit as a diff; the question with its
//! answer; a network decision; a state change. `log_steps.rs` decides which events make a
//! card and which step a card belongs to; this file says what a card shows. The task page and
//! its live stream render cards with the same template, so a reloaded page reads like the
//! live one.

use deft_core::{Event, EventKind, StepEvent, StepStatus, TaskState, Timestamp, WorkStep};
use serde_json::Value;

use super::{ansi, markdown};

/// One card of the log, ready for `log_entry.html`.
#[derive(Debug, Clone)]
pub struct Card {
    /// The number of the event that opened the card; its id on the page is `event-SEQ`.
    pub seq: i64,
    /// The `<time datetime>` of that event, and its clock time as written without the script.
    pub datetime: String,
    pub clock: String,
    /// A CSS class naming the kind of card.
    pub class: &'static str,
    pub label: &'static str,
    /// The command, the path, or what happened, on one line.
    pub title: String,
    pub detail: Option<Detail>,
    /// How long a tool call took, from the call to its result.
    pub duration: Option<String>,
    /// A command's exit status (`exit 0`), or what became of another tool call.
    pub exit: Option<Exit>,
    /// The agent's question, with the owner's answer once there is one.
    pub question: Option<Question>,
    /// Which filters show the card: `edits`, `commands`, `network`, `errors`.
    pub tags: Vec<&'static str>,
    /// For a state change, the new state: the page updates its badge and controls.
    pub state: Option<&'static str>,
    /// The card changes what the summary shows (state, plan, pull requests).
    pub refresh: bool,
    /// The event whose whole output `/tasks/{id}/events/{seq}` shows, when the card shows
    /// only its end.
    pub full: Option<i64>,
    /// The tool call's id, to find the card again when its result comes.
    pub(super) call: Option<String>,
    pub(super) called_at: Option<Timestamp>,
    /// The event the detail came from (a call's result), for `full`.
    detail_seq: i64,
}

/// What a finished tool call ended with.
#[derive(Debug, Clone)]
pub struct Exit {
    pub text: String,
    pub ok: bool,
}

#[derive(Debug, Clone)]
pub struct Question {
    /// The question, Markdown drawn as sanitized HTML.
    pub html: String,
    pub answer: Option<String>,
    /// The task waits on this question now: the summary above the log shows it, with the
    /// answer box, so the card only points there.
    pub waiting: bool,
    /// The agent was told to find the answer itself, and the owner was never asked.
    pub sent_back: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Detail {
    /// A command's output or a long message, shown folded, its colours drawn.
    Output { title: String, text: String },
    /// An edit, line by line: (`add`, `del`, `hunk`, `file` or `ctx`, the line).
    Diff {
        title: String,
        lines: Vec<(&'static str, String)>,
    },
    /// A plan's steps.
    List { title: String, items: Vec<String> },
}

impl Detail {
    /// The output as HTML: escaped, with its ANSI colours as spans.
    pub fn html(&self) -> String {
        match self {
            Detail::Output { text, .. } => ansi::to_html(text),
            _ => String::new(),
        }
    }

    /// How many bytes it adds to a page, about.
    fn weight(&self) -> usize {
        match self {
            Detail::Output { text, .. } => text.len() + text.len() / 4,
            Detail::Diff { lines, .. } => lines.iter().map(|(_, l)| l.len() + 30).sum(),
            Detail::List { items, .. } => items.iter().map(|i| i.len() + 10).sum(),
        }
    }
}

impl Card {
    /// The card's filters, space-separated, for `data-tags`.
    pub fn tag_list(&self) -> String {
        self.tags.join(" ")
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.contains(&tag)
    }

    fn tag(&mut self, tag: &'static str) {
        if !self.has_tag(tag) {
            self.tags.push(tag);
        }
    }

    /// How many bytes the card adds to a page, about.
    pub fn weight(&self) -> usize {
        400 + self.title.len()
            + self.detail.as_ref().map_or(0, Detail::weight)
            + self.question.as_ref().map_or(0, |q| {
                q.html.len() + q.answer.as_ref().map_or(0, String::len)
            })
    }

    /// Keeps a page light however long an output or an edit: the card keeps the last `chars`
    /// characters of its output (where errors are) or its first lines of a diff, and links to
    /// the whole of it.
    pub fn trim(&mut self, chars: usize) {
        let lines = chars / 8;
        let cut = match &mut self.detail {
            Some(Detail::Output { text, .. }) if text.chars().count() > chars => {
                let skip = text.chars().count() - chars;
                let mut tail: String = text.chars().skip(skip).collect();
                // Start at a line, so that no escape sequence is cut in two.
                if let Some(line) = tail.find('\n').filter(|at| *at < chars / 3) {
                    tail.drain(..=line);
                }
                *text = tail;
                true
            }
            Some(Detail::Diff { lines: diff, .. }) if diff.len() > lines.max(20) => {
                diff.truncate(lines.max(20));
                true
            }
            _ => false,
        };
        if cut {
            self.full = Some(self.detail_seq);
        }
    }

    /// A tool call still waiting for its result.
    pub fn pending(&self) -> bool {
        self.called_at.is_some() && self.exit.is_none() && self.question.is_none()
    }
}

fn text(data: &Value, key: &str) -> String {
    match &data[key] {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn first_line(text: &str, max: usize) -> String {
    let line = ansi::to_plain(text.lines().find(|l| !l.trim().is_empty()).unwrap_or(""));
    let line = line.trim();
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max).collect::<String>())
    } else {
        line.to_owned()
    }
}

/// Lines of a unified diff, classed for colour.
pub fn diff_lines(diff: &str) -> Vec<(&'static str, String)> {
    diff.lines()
        .map(|line| {
            let class = if line.starts_with("+++") || line.starts_with("---") {
                "file"
            } else if line.starts_with('+') {
                "add"
            } else if line.starts_with('-') {
                "del"
            } else if line.starts_with("@@") {
                "hunk"
            } else {
                "ctx"
            };
            (class, line.to_owned())
        })
        .collect()
}

/// `12:03:07 UTC`: a card's time as written without the script, which shows it in the
/// reader's zone.
fn clock(at: Timestamp) -> String {
    let text = at.to_rfc3339();
    text.get(11..19)
        .map_or_else(|| text.clone(), |time| format!("{time} UTC"))
}

/// How long a tool call took, read at a glance.
pub fn duration(millis: i64) -> String {
    match millis.max(0) {
        ms @ 0..1_000 => format!("{ms} ms"),
        ms @ 1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        ms => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
    }
}

fn blank(event: &Event) -> Card {
    Card {
        seq: event.seq,
        datetime: event.at.to_rfc3339(),
        clock: clock(event.at),
        class: "info",
        label: "",
        title: String::new(),
        detail: None,
        duration: None,
        exit: None,
        question: None,
        tags: Vec::new(),
        state: None,
        refresh: false,
        full: None,
        call: None,
        called_at: None,
        detail_seq: event.seq,
    }
}

fn fold_long(card: &mut Card, title: &str, text: &str) {
    if text.lines().nth(1).is_some() || text.chars().count() > 200 {
        card.detail = Some(Detail::Output {
            title: title.into(),
            text: text.to_owned(),
        });
    }
}

/// The card of a tool call: what was asked, waiting for its result ([`with_result`]).
pub fn tool_call(event: &Event) -> Card {
    let mut card = blank(event);
    let data = &event.data;
    let name = text(data, "name");
    let arguments = &data["arguments"];
    card.class = "tool";
    card.call = data["id"].as_str().map(str::to_owned);
    card.called_at = Some(event.at);
    match name.as_str() {
        "bash" => {
            card.class = "command";
            card.label = "Command";
            card.tag("commands");
            let command = text(arguments, "command");
            card.title = format!("$ {}", first_line(&command, 160));
            if command.trim().lines().nth(1).is_some() {
                card.detail = Some(Detail::Output {
                    title: "Whole command".into(),
                    text: command,
                });
            }
        }
        "str_replace_based_edit_tool" => {
            let command = text(arguments, "command");
            let path = text(arguments, "path");
            card.class = "file";
            card.label = "File";
            card.title = format!("{} {path}", command.replace('_', " "));
            if command != "view" {
                card.class = "edit";
                card.label = "Edit";
                card.tag("edits");
            }
            // A new file is all additions; other edits show their diff in the result.
            if command == "create" {
                card.detail = Some(Detail::Diff {
                    title: "New file".into(),
                    lines: text(arguments, "file_text")
                        .lines()
                        .map(|line| ("add", format!("+{line}")))
                        .collect(),
                });
            }
        }
        "search" => {
            card.label = "Search";
            card.title = format!(
                "{}{}",
                first_line(&text(arguments, "pattern"), 120),
                match text(arguments, "path") {
                    path if path.is_empty() => String::new(),
                    path => format!(" in {path}"),
                }
            );
        }
        "web_search" | "web_fetch" => {
            card.class = "web";
            card.label = if name == "web_search" {
                "Web search"
            } else {
                "Web page"
            };
            card.tag("network");
            let what = if name == "web_search" { "query" } else { "url" };
            card.title = first_line(&text(arguments, what), 160);
        }
        "submit_plan" => {
            card.class = "plan";
            card.label = "Plan";
            card.title = "submitted a plan".into();
        }
        "finish" => {
            card.class = "finish";
            card.label = "Finished";
            let summary = text(arguments, "summary");
            card.title = first_line(&summary, 200);
            fold_long(&mut card, "Whole summary", &summary);
        }
        "ask_user" => {
            card.class = "question";
            card.label = "Question";
            card.question = Some(Question {
                html: markdown::render(&text(arguments, "question"), &[]),
                answer: None,
                waiting: false,
                sent_back: None,
            });
        }
        _ => {
            card.label = "Tool";
            card.title = format!("{name} {}", first_line(&arguments.to_string(), 140));
        }
    }
    card
}

/// `[exit code: N]` or `[killed …]`, the line the bash tool ends its output with.
fn exit_line(content: &str) -> Option<(String, bool)> {
    let last = content
        .trim_end()
        .lines()
        .rev()
        .find(|line| line.starts_with("[exit code: ") || line.starts_with("[killed"))?;
    if let Some(code) = last
        .strip_prefix("[exit code: ")
        .and_then(|rest| rest.strip_suffix(']'))
    {
        return Some((format!("exit {code}"), code == "0"));
    }
    Some((last.trim_matches(['[', ']']).to_owned(), false))
}

/// A tool's result, into the card of the call it answers.
pub fn with_result(card: &mut Card, event: &Event) {
    let content = text(&event.data, "content");
    let failed = event.data["is_error"] == true;
    if failed {
        card.tag("errors");
    }
    if let Some(question) = &mut card.question {
        // A question the agent was told to answer itself never reached the owner.
        if failed {
            question.sent_back = Some(first_line(&content, 300));
        }
        return;
    }
    if let Some(at) = card.called_at {
        card.duration = Some(duration(event.at.unix_millis() - at.unix_millis()));
    }
    card.exit = Some(match exit_line(&content) {
        Some((text, ok)) => Exit { text, ok },
        None if failed => Exit {
            text: "failed".into(),
            ok: false,
        },
        None => Exit {
            text: "done".into(),
            ok: true,
        },
    });
    if let Some((head, diff)) = content
        .strip_prefix("edited ")
        .and_then(|rest| rest.split_once('\n'))
    {
        card.class = "edit";
        card.label = "Edit";
        card.tag("edits");
        card.title = format!("edited {}", head.trim_end_matches(':'));
        card.detail_seq = event.seq;
        card.detail = Some(Detail::Diff {
            title: "Diff".into(),
            lines: diff_lines(diff),
        });
        return;
    }
    // The create's diff stands; its result only says it was written.
    if matches!(card.detail, Some(Detail::Diff { .. })) && !failed {
        return;
    }
    // A plan's or a finished step's result only says it was taken.
    let said = matches!(card.class, "plan" | "finish") && !failed;
    if !content.trim().is_empty() && !said {
        let lines = content.lines().count();
        card.detail_seq = event.seq;
        card.detail = Some(Detail::Output {
            title: format!("Output ({lines} line{})", if lines == 1 { "" } else { "s" }),
            text: content,
        });
    }
}

/// A tool result whose call is not on the page (an earlier page has it).
pub fn lone_result(event: &Event) -> Card {
    let mut card = blank(event);
    card.class = "tool";
    card.label = "Result";
    card.title = first_line(&text(&event.data, "content"), 160);
    with_result(&mut card, event);
    card
}

/// The plan's steps, into the card of the `submit_plan` call, or a card of their own.
pub fn plan(card: Option<Card>, event: &Event) -> Card {
    let mut card = card.unwrap_or_else(|| {
        let mut card = blank(event);
        card.class = "plan";
        card.label = "Plan";
        card
    });
    let steps: Vec<String> = event.data["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|s| s.as_str().map_or_else(|| s.to_string(), str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    card.title = format!(
        "{} step{} planned",
        steps.len(),
        if steps.len() == 1 { "" } else { "s" }
    );
    card.refresh = true;
    card.detail = Some(Detail::List {
        title: "Steps".into(),
        items: steps,
    });
    card
}

/// A question put to the owner that no `ask_user` card on the page holds.
pub fn question(event: &Event) -> Card {
    let mut card = blank(event);
    card.class = "question";
    card.label = "Question";
    card.question = Some(Question {
        html: markdown::render(&text(&event.data, "question"), &[]),
        answer: None,
        waiting: false,
        sent_back: None,
    });
    card
}

/// The card of any other event; `None` for one the log keeps out of sight (a step's start,
/// which the step's own heading says).
pub fn other(event: &Event) -> Option<Card> {
    let data = &event.data;
    let mut card = blank(event);
    match event.kind {
        EventKind::TaskCreated => {
            card.label = "Created";
            card.title = first_line(&text(data, "description"), 160);
        }
        EventKind::StateChanged => {
            let to = text(data, "to");
            card.class = "state";
            card.label = "State";
            card.state = TaskState::parse(&to).map(TaskState::as_str);
            card.refresh = true;
            card.title = format!(
                "{} → {}",
                text(data, "from").replace('_', " "),
                to.replace('_', " ")
            );
            // A question or a plan is shown once, where it was made; an error is its own card.
            if data["attention"]["kind"] == "error"
                || data["attention"]["kind"] == "token_budget"
                || data["attention"]["kind"] == "weekly_limit"
            {
                card.tag("errors");
            }
        }
        EventKind::UserMessage => {
            card.class = "you";
            card.label = match data["kind"].as_str() {
                Some("answer") => "Answer",
                Some("feedback") => "Feedback",
                Some("approval") => "Approval",
                Some("retry") => "Retry",
                Some("steering") => "Message",
                _ => "You",
            };
            card.title = match data["kind"].as_str() {
                Some("approval") => "approved the plan".into(),
                Some("retry") => "tried again after the error".into(),
                _ => first_line(&text(data, "message"), 200),
            };
            fold_long(&mut card, "Whole message", &text(data, "message"));
        }
        EventKind::Step => {
            let step = StepEvent::from_data(data);
            let Some(step) = step else {
                card.class = "step";
                card.label = "Step";
                card.title = first_line(&data.to_string(), 200);
                return Some(card);
            };
            // A step's start or end with nothing more to say: its heading says it.
            let failed = matches!(
                step.status,
                StepStatus::Failed | StepStatus::VerificationFailed | StepStatus::GivenUp
            );
            let says = [
                &step.summary,
                &step.output,
                &step.reason,
                &step.learning,
                &step.verdict,
            ]
            .iter()
            .any(|more| more.is_some());
            // A step's start is its group's heading, which shows its summary (the plan step).
            let heading = step.status == StepStatus::Started
                && step.output.is_none()
                && matches!(
                    step.step,
                    WorkStep::Environment
                        | WorkStep::Analysis
                        | WorkStep::Planning
                        | WorkStep::Execution
                        | WorkStep::Review
                        | WorkStep::Completion
                );
            if heading || (!failed && !says) {
                return None;
            }
            step_card(&mut card, step);
        }
        EventKind::PullRequest => {
            card.class = "pr";
            card.label = "Pull request";
            card.refresh = true;
            card.title = format!(
                "{} ← {}: {}",
                text(data, "base"),
                text(data, "head"),
                text(data, "title")
            );
        }
        EventKind::Network => {
            let allowed = data["allowed"] == true;
            card.class = if allowed { "net" } else { "net-denied" };
            card.label = if allowed { "Allowed" } else { "Denied" };
            card.tag("network");
            if !allowed {
                card.tag("errors");
            }
            card.title = format!(
                "{}:{} ({})",
                text(data, "host"),
                text(data, "port"),
                text(data, "rule")
            );
        }
        EventKind::Error => {
            card.class = "fail";
            card.label = "Error";
            card.tag("errors");
            card.title = first_line(&text(data, "message"), 200);
            fold_long(&mut card, "Whole message", &text(data, "message"));
        }
        // These have cards of their own kind, made by `log_steps.rs`.
        EventKind::ModelCall
        | EventKind::ToolCall
        | EventKind::ToolResult
        | EventKind::Plan
        | EventKind::Question => {
            return None;
        }
    }
    Some(card)
}

fn step_card(card: &mut Card, step: StepEvent) {
    card.class = "step";
    card.label = "Step";
    let status = step.status.as_str().replace('_', " ");
    card.title = match step.index {
        Some(index) => format!("{} {} {status}", step.step.as_str(), index + 1),
        None => format!("{} {status}", step.step.as_str()),
    };
    if matches!(
        step.status,
        StepStatus::Failed | StepStatus::VerificationFailed | StepStatus::GivenUp
    ) {
        card.class = "fail";
        card.tag("errors");
    }
    for more in [&step.verdict, &step.summary, &step.reason, &step.learning]
        .into_iter()
        .flatten()
    {
        card.title.push_str(": ");
        card.title.push_str(&first_line(more, 200));
    }
    if !step.fixes.is_empty() {
        card.detail = Some(Detail::List {
            title: "Fixes asked for".into(),
            items: step.fixes.clone(),
        });
    }
    if let Some(output) = step.output.filter(|output| !output.is_empty()) {
        card.detail = Some(Detail::Output {
            title: "Output".into(),
            text: output,
        });
    }
}

/// A model call, in a word, for a step's heading.
pub fn tokens(event: &Event) -> i64 {
    event.data["input_tokens"].as_i64().unwrap_or(0)
        + event.data["output_tokens"].as_i64().unwrap_or(0)
}
