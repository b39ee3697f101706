//! A task's events as a person reads them: commands with their output folded, edits as
//! diffs, network decisions, model usage. The task page and its live stream render the same
//! entries with the same template, so a reloaded page reads like the live one.

use askama::Template;
use deft_core::{Event, EventKind, TaskState};
use serde_json::Value;

/// One line of the log, ready for the template.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub seq: i64,
    /// `14:03:07`, UTC.
    pub time: String,
    /// A CSS class naming the kind of entry.
    pub class: &'static str,
    pub label: &'static str,
    pub summary: String,
    pub detail: Option<Detail>,
    /// For a state change, the new state: the page updates its badge and controls.
    pub state: Option<&'static str>,
    /// The entry changes what the summary shows (state, plan, pull requests).
    pub refresh: bool,
}

#[derive(Debug, Clone)]
pub enum Detail {
    /// Output or a long message, shown folded.
    Text { title: String, text: String },
    /// An edit, line by line: (`add`, `del`, `hunk` or `ctx`, the line).
    Diff {
        title: String,
        lines: Vec<(&'static str, String)>,
    },
}

/// One entry alone, as the live stream sends it.
#[derive(Template)]
#[template(path = "log_entry.html")]
pub struct OneEntry<'a> {
    pub entry: &'a LogEntry,
}

fn text(data: &Value, key: &str) -> String {
    match &data[key] {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("").trim();
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

pub fn entry(event: &Event) -> LogEntry {
    let data = &event.data;
    let time = event
        .at
        .to_rfc3339()
        .get(11..19)
        .unwrap_or_default()
        .to_owned();
    let mut entry = LogEntry {
        seq: event.seq,
        time,
        class: "info",
        label: "",
        summary: String::new(),
        detail: None,
        state: None,
        refresh: false,
    };
    match event.kind {
        EventKind::TaskCreated => {
            entry.label = "Created";
            entry.summary = first_line(&text(data, "description"), 160);
        }
        EventKind::StateChanged => {
            let to = text(data, "to");
            entry.class = "state";
            entry.label = "State";
            entry.state = TaskState::parse(&to).map(TaskState::as_str);
            entry.refresh = true;
            entry.summary = format!(
                "{} → {}",
                text(data, "from").replace('_', " "),
                to.replace('_', " ")
            );
            if let Some(message) = data["attention"]["message"].as_str() {
                entry.summary.push_str(": ");
                entry.summary.push_str(&first_line(message, 200));
            }
        }
        EventKind::UserMessage => {
            entry.class = "you";
            entry.label = match data["kind"].as_str() {
                Some("answer") => "Answer",
                Some("feedback") => "Feedback",
                Some("approval") => "Approval",
                Some("steering") => "Message",
                _ => "You",
            };
            entry.summary = if data["kind"] == "approval" {
                "approved the plan".into()
            } else {
                first_line(&text(data, "message"), 200)
            };
            fold_long(&mut entry, "Whole message", &text(data, "message"));
        }
        EventKind::Step => {
            entry.class = "step";
            entry.label = "Step";
            let Some(step) = deft_core::StepEvent::from_data(data) else {
                entry.summary = first_line(&data.to_string(), 200);
                return entry;
            };
            let status = step.status.as_str().replace('_', " ");
            entry.summary = match step.index {
                Some(index) => format!("{} {} {status}", step.step.as_str(), index + 1),
                None => format!("{} {status}", step.step.as_str()),
            };
            for more in [&step.summary, &step.reason, &step.learning]
                .into_iter()
                .flatten()
            {
                entry.summary.push_str(": ");
                entry.summary.push_str(&first_line(more, 200));
            }
            if let Some(output) = step.output.filter(|output| !output.is_empty()) {
                entry.detail = Some(Detail::Text {
                    title: "Output".into(),
                    text: output,
                });
            }
        }
        EventKind::Plan => {
            entry.class = "plan";
            entry.label = "Plan";
            entry.refresh = true;
            let steps = data["steps"].as_array().map_or(0, Vec::len);
            entry.summary = format!("{steps} step(s) planned");
        }
        EventKind::ModelCall => {
            entry.class = "model";
            entry.label = "Model";
            entry.summary = format!(
                "{} {}: {} tokens in, {} out{}, {} ms",
                text(data, "role"),
                text(data, "model"),
                data["input_tokens"].as_i64().unwrap_or(0),
                data["output_tokens"].as_i64().unwrap_or(0),
                match data["cached_tokens"].as_i64() {
                    Some(cached) if cached > 0 => format!(" ({cached} cached)"),
                    _ => String::new(),
                },
                data["duration_ms"].as_u64().unwrap_or(0),
            );
        }
        EventKind::ToolCall => tool_call(&mut entry, data),
        EventKind::ToolResult => {
            let content = text(data, "content");
            let failed = data["is_error"] == true;
            entry.class = if failed { "fail" } else { "result" };
            entry.label = if failed { "Failed" } else { "Result" };
            entry.summary = first_line(&content, 160);
            if let Some((head, diff)) = content
                .strip_prefix("edited ")
                .and_then(|rest| rest.split_once('\n'))
            {
                entry.label = "Edit";
                entry.class = "edit";
                entry.summary = format!("edited {}", head.trim_end_matches(':'));
                entry.detail = Some(Detail::Diff {
                    title: "Diff".into(),
                    lines: diff_lines(diff),
                });
            } else if content.lines().nth(1).is_some() || content.chars().count() > 160 {
                entry.detail = Some(Detail::Text {
                    title: format!("Output ({} lines)", content.lines().count()),
                    text: content,
                });
            }
        }
        EventKind::Question => {
            entry.class = "question";
            entry.label = "Question";
            entry.summary = first_line(&text(data, "question"), 200);
            fold_long(&mut entry, "Whole question", &text(data, "question"));
        }
        EventKind::PullRequest => {
            entry.class = "pr";
            entry.label = "Pull request";
            entry.refresh = true;
            entry.summary = format!(
                "{} ← {}: {}",
                text(data, "base"),
                text(data, "head"),
                text(data, "title")
            );
        }
        EventKind::Network => {
            let allowed = data["allowed"] == true;
            entry.class = if allowed { "net" } else { "net-denied" };
            entry.label = if allowed { "Allowed" } else { "Denied" };
            entry.summary = format!(
                "{}:{} ({})",
                text(data, "host"),
                text(data, "port"),
                text(data, "rule")
            );
        }
        EventKind::Error => {
            entry.class = "fail";
            entry.label = "Error";
            entry.summary = first_line(&text(data, "message"), 200);
            fold_long(&mut entry, "Whole message", &text(data, "message"));
        }
    }
    entry.detail = entry.detail.map(trimmed);
    entry
}

/// Characters of folded output a page carries per entry; the end is kept, where errors are.
const DETAIL_CHARS: usize = 1500;
/// Lines of an edit's diff a page carries per entry.
const DETAIL_LINES: usize = 200;

/// Keeps a page light however long a command's output or an edit: the whole of it stays in
/// the event log (`GET /tasks/{id}/events`, `deft task logs`).
fn trimmed(detail: Detail) -> Detail {
    match detail {
        Detail::Text { title, text } if text.chars().count() > DETAIL_CHARS => {
            let skip = text.chars().count() - DETAIL_CHARS;
            let tail: String = text.chars().skip(skip).collect();
            Detail::Text {
                title,
                text: format!(
                    "… {skip} characters before this are in the full log (`deft task logs`)\n{tail}"
                ),
            }
        }
        Detail::Diff { title, mut lines } if lines.len() > DETAIL_LINES => {
            let more = lines.len() - DETAIL_LINES;
            lines.truncate(DETAIL_LINES);
            lines.push((
                "hunk",
                format!("… {more} more lines in the full log (`deft task logs`)"),
            ));
            Detail::Diff { title, lines }
        }
        detail => detail,
    }
}

fn fold_long(entry: &mut LogEntry, title: &str, text: &str) {
    if text.lines().nth(1).is_some() || text.chars().count() > 200 {
        entry.detail = Some(Detail::Text {
            title: title.into(),
            text: text.to_owned(),
        });
    }
}

fn tool_call(entry: &mut LogEntry, data: &Value) {
    let name = text(data, "name");
    let arguments = &data["arguments"];
    entry.class = "tool";
    match name.as_str() {
        "bash" => {
            entry.label = "Command";
            let command = text(arguments, "command");
            entry.summary = format!("$ {}", first_line(&command, 160));
            if command.lines().nth(1).is_some() {
                entry.detail = Some(Detail::Text {
                    title: "Whole command".into(),
                    text: command,
                });
            }
        }
        "str_replace_based_edit_tool" => {
            let command = text(arguments, "command");
            entry.label = "File";
            entry.summary = format!("{} {}", command.replace('_', " "), text(arguments, "path"));
            // A new file is all additions; other edits show their diff in the result.
            if command == "create" {
                entry.class = "edit";
                entry.label = "Edit";
                entry.detail = Some(Detail::Diff {
                    title: "New file".into(),
                    lines: text(arguments, "file_text")
                        .lines()
                        .map(|line| ("add", format!("+{line}")))
                        .collect(),
                });
            }
        }
        "submit_plan" => {
            entry.label = "Plan";
            entry.summary = "submitted a plan".into();
        }
        "ask_user" => {
            entry.label = "Asks";
            entry.summary = first_line(&text(arguments, "question"), 200);
        }
        _ => {
            entry.label = "Tool";
            let arguments = arguments.to_string();
            entry.summary = format!("{name} {}", first_line(&arguments, 140));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deft_core::{TaskId, Timestamp};
    use serde_json::json;

    fn event(kind: EventKind, data: Value) -> Event {
        Event {
            seq: 7,
            task_id: TaskId::from_stored("t".into()),
            at: Timestamp::from_unix_millis(1_764_424_987_000),
            kind,
            data,
        }
    }

    #[test]
    fn a_command_shows_its_first_line_and_folds_its_output() {
        let call = entry(&event(
            EventKind::ToolCall,
            json!({"name": "bash", "arguments": {"command": "cargo test\necho done"}}),
        ));
        assert_eq!(
            (call.label, call.summary.as_str()),
            ("Command", "$ cargo test")
        );
        assert!(
            matches!(call.detail, Some(Detail::Text { ref text, .. }) if text.ends_with("echo done"))
        );
        let result = entry(&event(
            EventKind::ToolResult,
            json!({"is_error": true, "content": "error[E0308]: mismatched types\n --> src/lib.rs:3"}),
        ));
        assert_eq!(result.label, "Failed");
        assert!(
            matches!(result.detail, Some(Detail::Text { ref title, .. }) if title == "Output (2 lines)")
        );
    }

    #[test]
    fn an_edit_is_a_diff_and_a_state_change_names_the_new_state() {
        let edit = entry(&event(
            EventKind::ToolResult,
            json!({"is_error": false, "content": "edited src/lib.rs:\n--- a\n+++ b\n@@ -1 +1 @@\n-old\n+new"}),
        ));
        assert_eq!(
            (edit.label, edit.summary.as_str()),
            ("Edit", "edited src/lib.rs")
        );
        let Some(Detail::Diff { lines, .. }) = edit.detail else {
            panic!("an edit shows a diff");
        };
        let classes: Vec<&str> = lines.iter().map(|(class, _)| *class).collect();
        assert_eq!(classes, ["file", "file", "hunk", "del", "add"]);

        let changed = entry(&event(
            EventKind::StateChanged,
            json!({"from": "in_progress", "to": "needs_attention", "attention": {"kind": "question", "message": "Which port?"}}),
        ));
        assert_eq!(changed.state, Some("needs_attention"));
        assert_eq!(
            changed.summary,
            "in progress → needs attention: Which port?"
        );
        assert_eq!(changed.time, "14:03:07");
    }

    #[test]
    fn long_output_keeps_its_end_and_says_what_was_left_out() {
        let output = format!("{}error: the last line", "x".repeat(5000));
        let result = entry(&event(
            EventKind::ToolResult,
            json!({"is_error": true, "content": output}),
        ));
        let Some(Detail::Text { text, .. }) = result.detail else {
            panic!("long output is folded");
        };
        assert!(text.starts_with("… 3520 characters before this"), "{text}");
        assert!(text.ends_with("error: the last line"));
        let file_text = "line\n".repeat(500);
        let created = entry(&event(
            EventKind::ToolCall,
            json!({"name": "str_replace_based_edit_tool", "arguments": {"command": "create", "path": "a.txt", "file_text": file_text}}),
        ));
        let Some(Detail::Diff { lines, .. }) = created.detail else {
            panic!("a new file is a diff");
        };
        assert_eq!(lines.len(), DETAIL_LINES + 1);
        assert_eq!(
            lines.last().unwrap().1,
            "… 300 more lines in the full log (`deft task logs`)"
        );
    }

    #[test]
    fn network_decisions_and_model_usage_read_as_sentences() {
        let denied = entry(&event(
            EventKind::Network,
            json!({"host": "example.org", "port": 443, "allowed": false, "rule": "not on the allow-list"}),
        ));
        assert_eq!((denied.label, denied.class), ("Denied", "net-denied"));
        assert_eq!(denied.summary, "example.org:443 (not on the allow-list)");
        let call = entry(&event(
            EventKind::ModelCall,
            json!({"role": "planning", "model": "anthropic/claude", "input_tokens": 1200, "output_tokens": 80, "cached_tokens": 1000, "duration_ms": 950}),
        ));
        assert_eq!(
            call.summary,
            "planning anthropic/claude: 1200 tokens in, 80 out (1000 cached), 950 ms"
        );
    }
}
