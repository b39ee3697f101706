//! What one step of a plan did, in a few lines: the next step starts a fresh conversation with
//! the plan, and these notes, so that what was read and run is not lost to it.

use std::collections::BTreeSet;

use deft_llm::{ToolArguments, ToolCall};

use crate::ToolOutput;

/// The longest note of one step.
const NOTE_CHARS: usize = 700;
/// The most commands a note names.
const COMMANDS: usize = 6;

/// What a step did, as its calls come back.
#[derive(Debug, Default)]
pub struct StepNotes {
    viewed: BTreeSet<String>,
    changed: BTreeSet<String>,
    /// Each command run, cut to one line, with how it ended.
    ran: Vec<String>,
}

impl StepNotes {
    /// Notes a call and how it ended.
    pub fn record(&mut self, call: &ToolCall, output: &ToolOutput) {
        let ToolArguments::Valid(arguments) = &call.arguments else {
            return;
        };
        let text = |key: &str| arguments[key].as_str().unwrap_or("").trim().to_owned();
        match call.name.as_str() {
            "str_replace_based_edit_tool" if !output.is_error => {
                let path = text("path");
                if text("command") == "view" {
                    self.viewed.insert(path);
                } else {
                    self.changed.insert(path);
                }
            }
            "bash" => {
                let command = text("command");
                let first = command.lines().next().unwrap_or("");
                let mut shown: String = first.chars().take(80).collect();
                if shown.len() < command.len() {
                    shown.push('…');
                }
                let ending = output
                    .content
                    .rsplit_once("[exit code: ")
                    .and_then(|(_, code)| code.split(']').next())
                    .map_or_else(
                        || "did not finish".to_owned(),
                        |code| format!("exit {code}"),
                    );
                self.ran.push(format!("`{shown}` ({ending})"));
            }
            _ => {}
        }
    }

    /// The note for the next steps: the step, what it said it did, and what it touched.
    /// Whether the step has changed a file so far.
    pub fn changed_any(&self) -> bool {
        !self.changed.is_empty()
    }

    pub fn note(&self, step: usize, summary: &str) -> String {
        let mut note = format!("Step {step}: {}", summary.lines().next().unwrap_or(""));
        let list = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(", ");
        if !self.changed.is_empty() {
            note.push_str(&format!("; changed {}", list(&self.changed)));
        }
        let viewed: BTreeSet<String> = self.viewed.difference(&self.changed).cloned().collect();
        if !viewed.is_empty() {
            note.push_str(&format!("; read {}", list(&viewed)));
        }
        if !self.ran.is_empty() {
            let skipped = self.ran.len().saturating_sub(COMMANDS);
            let last: Vec<&str> = self.ran[skipped..].iter().map(String::as_str).collect();
            note.push_str(&format!("; ran {}", last.join(", ")));
            if skipped > 0 {
                note.push_str(&format!(" (and {skipped} before)"));
            }
        }
        if note.chars().count() > NOTE_CHARS {
            note = note.chars().take(NOTE_CHARS).collect::<String>() + "…";
        }
        note
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, arguments: &str) -> ToolCall {
        ToolCall {
            id: "c".into(),
            name: name.into(),
            arguments: ToolArguments::parse(arguments),
        }
    }

    #[test]
    fn a_note_names_what_was_read_changed_and_run() {
        let mut notes = StepNotes::default();
        let ok = ToolOutput::ok("fine");
        notes.record(
            &call(
                "str_replace_based_edit_tool",
                r#"{"command": "view", "path": "util.py"}"#,
            ),
            &ok,
        );
        notes.record(
            &call(
                "str_replace_based_edit_tool",
                r#"{"command": "view", "path": "test_util.py"}"#,
            ),
            &ok,
        );
        notes.record(
            &call(
                "str_replace_based_edit_tool",
                r#"{"command": "str_replace", "path": "util.py", "old_str": "a", "new_str": "b"}"#,
            ),
            &ok,
        );
        notes.record(
            &call(
                "bash",
                r#"{"command": "python3 -m unittest -q\necho done"}"#,
            ),
            &ToolOutput::ok("FAILED (failures=1)\n[exit code: 1]"),
        );
        assert_eq!(
            notes.note(1, "Fixed the slice in util.py\nmore words"),
            "Step 1: Fixed the slice in util.py; changed util.py; read test_util.py; ran `python3 -m unittest -q…` (exit 1)"
        );
    }

    #[test]
    fn a_long_note_is_cut() {
        let mut notes = StepNotes::default();
        for n in 0..50 {
            notes.record(
                &call(
                    "bash",
                    &format!(
                        r#"{{"command": "echo {}"}}"#,
                        "x".repeat(70) + &n.to_string()
                    ),
                ),
                &ToolOutput::ok("[exit code: 0]"),
            );
        }
        let note = notes.note(2, "Tried");
        assert!(note.contains("(and 44 before)"), "{note}");
        assert!(note.chars().count() <= NOTE_CHARS + 1, "{note}");
    }
}
