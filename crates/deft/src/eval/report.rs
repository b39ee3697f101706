//! What `deft eval` reports: the JSON of `--json` (versioned, documented in
//! docs/EVALUATION.md), the table on standard output, and the comparison with an earlier
//! report (`--compare`), which may come from another runner of the same suite.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// The shape's version: fields may be added without changing it, never renamed or removed.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub version: u32,
    /// Who ran the suite: `deft`, or another agent driven on the same suite.
    pub runner: String,
    /// The model, as `PROVIDER/NAME`.
    pub model: String,
    /// The suite's directory, as given.
    pub suite: String,
    pub started_at_unix_ms: i64,
    pub tasks: Vec<TaskReport>,
    /// Sums over `tasks`.
    pub totals: Totals,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskReport {
    pub name: String,
    pub solved: bool,
    /// `completed`, `needs_attention`, `cancelled` (its time limit) or `failed` (the run
    /// could not be made or ended in an error).
    pub state: String,
    /// Why, for any state but `completed`: the attention's kind and first line, or the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `passed`, `failed`, `timed_out`, `error` (it could not be run) or `not_run`.
    pub check: String,
    /// The end of what the check printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_output: Option<String>,
    /// The task's run, from its start to its end (not its setup, not its check).
    pub wall_ms: u64,
    /// Model requests made.
    pub requests: u64,
    /// Prompt tokens, cached ones included.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    #[serde(default)]
    pub cached_tokens: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub tasks: u64,
    pub solved: u64,
    pub wall_ms: u64,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Totals {
    pub fn of(tasks: &[TaskReport]) -> Totals {
        let mut totals = Totals::default();
        for task in tasks {
            totals.tasks += 1;
            totals.solved += u64::from(task.solved);
            totals.wall_ms += task.wall_ms;
            totals.requests += task.requests;
            totals.prompt_tokens += task.prompt_tokens;
            totals.completion_tokens += task.completion_tokens;
        }
        totals
    }
}

impl Report {
    /// An earlier report, for `--compare`.
    pub fn read(path: &Path) -> anyhow::Result<Report> {
        let fix = "give a file that `deft eval --json` (or evals/mini-swe-agent/run.sh) wrote";
        let text = fs_err::read_to_string(path).with_context(|| format!("--compare: {fix}"))?;
        let version = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|value| value["version"].as_u64());
        if let Some(version) = version
            && version != u64::from(VERSION)
        {
            bail!(
                "--compare {}: a report of version {version}, and this deft reads version {VERSION}; run the suite again with this deft",
                path.display()
            );
        }
        serde_json::from_str(&text).with_context(|| {
            format!(
                "--compare {}: not a report of deft eval; {fix}",
                path.display()
            )
        })
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self).expect("a report serializes");
        fs_err::write(path, text + "\n").context("--json: give a file in a writable directory")
    }

    /// The table for standard output: a line per task, the totals, then why each task that
    /// was not solved ended as it did.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let width = name_width(&self.tasks);
        let _ = writeln!(
            out,
            "{:width$}  {:6}  {:15}  {:9}  {:>8}  {:>8}  {:>10}  {:>10}",
            "task", "solved", "state", "check", "time", "requests", "prompt", "completion"
        );
        for task in &self.tasks {
            let _ = writeln!(
                out,
                "{:width$}  {:6}  {:15}  {:9}  {:>8}  {:>8}  {:>10}  {:>10}",
                task.name,
                if task.solved { "yes" } else { "no" },
                task.state,
                task.check,
                seconds(task.wall_ms),
                task.requests,
                task.prompt_tokens,
                task.completion_tokens
            );
        }
        let totals = Totals::of(&self.tasks);
        let _ = writeln!(
            out,
            "{:width$}  {:6}  {:15}  {:9}  {:>8}  {:>8}  {:>10}  {:>10}",
            "total",
            format!("{}/{}", totals.solved, totals.tasks),
            "",
            "",
            seconds(totals.wall_ms),
            totals.requests,
            totals.prompt_tokens,
            totals.completion_tokens
        );
        for task in self.tasks.iter().filter(|task| !task.solved) {
            let why = match (&task.reason, &task.check_output) {
                (Some(reason), _) => reason.clone(),
                (None, Some(output)) => format!(
                    "the check {}: {}",
                    task.check,
                    output
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("")
                ),
                (None, None) => format!("the check {}", task.check),
            };
            let _ = writeln!(out, "{}: {why}", task.name);
        }
        out
    }

    /// This report against `earlier`, task by task (by name) and in total.
    pub fn compare(&self, earlier: &Report, earlier_path: &Path) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "against {} ({}, {}):",
            earlier_path.display(),
            earlier.runner,
            earlier.model
        );
        let width = name_width(&self.tasks).max(name_width(&earlier.tasks));
        let _ = writeln!(
            out,
            "{:width$}  {:14}  {:>17}  {:>12}  {:>18}  {:>16}",
            "task", "solved", "time", "requests", "prompt", "completion"
        );
        let (mut gained, mut lost) = (0, 0);
        for task in &self.tasks {
            let Some(before) = earlier.tasks.iter().find(|t| t.name == task.name) else {
                let _ = writeln!(out, "{:width$}  not in the earlier report", task.name);
                continue;
            };
            let solved = match (before.solved, task.solved) {
                (false, true) => {
                    gained += 1;
                    "gained"
                }
                (true, false) => {
                    lost += 1;
                    "lost"
                }
                (true, true) => "yes, as before",
                (false, false) => "no, as before",
            };
            let _ = writeln!(
                out,
                "{:width$}  {:14}  {:>17}  {:>12}  {:>18}  {:>16}",
                task.name,
                solved,
                change_secs(before.wall_ms, task.wall_ms),
                change(before.requests, task.requests),
                change(before.prompt_tokens, task.prompt_tokens),
                change(before.completion_tokens, task.completion_tokens)
            );
        }
        for before in &earlier.tasks {
            if !self.tasks.iter().any(|t| t.name == before.name) {
                let _ = writeln!(out, "{:width$}  only in the earlier report", before.name);
            }
        }
        // Totals over the tasks both reports hold, so that `--only` compares like with like.
        let both: Vec<&TaskReport> = self
            .tasks
            .iter()
            .filter(|t| earlier.tasks.iter().any(|b| b.name == t.name))
            .collect();
        let now = Totals::of(&both.iter().map(|t| (*t).clone()).collect::<Vec<_>>());
        let then_tasks: Vec<TaskReport> = earlier
            .tasks
            .iter()
            .filter(|b| both.iter().any(|t| t.name == b.name))
            .cloned()
            .collect();
        let then = Totals::of(&then_tasks);
        let _ = writeln!(
            out,
            "{:width$}  {:14}  {:>17}  {:>12}  {:>18}  {:>16}",
            "total",
            format!(
                "{}/{} ({})",
                now.solved,
                now.tasks,
                signed(now.solved, then.solved)
            ),
            change_secs(then.wall_ms, now.wall_ms),
            change(then.requests, now.requests),
            change(then.prompt_tokens, now.prompt_tokens),
            change(then.completion_tokens, now.completion_tokens)
        );
        let _ = writeln!(out, "solved: {gained} gained, {lost} lost");
        out
    }
}

fn name_width(tasks: &[TaskReport]) -> usize {
    tasks.iter().map(|t| t.name.len()).max().unwrap_or(0).max(5)
}

fn seconds(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

fn signed(now: u64, then: u64) -> String {
    if now >= then {
        format!("+{}", now - then)
    } else {
        format!("-{}", then - now)
    }
}

/// `NOW (+DELTA)`.
fn change(then: u64, now: u64) -> String {
    format!("{now} ({})", signed(now, then))
}

fn change_secs(then: u64, now: u64) -> String {
    let delta = if now >= then {
        format!("+{}", seconds(now - then))
    } else {
        format!("-{}", seconds(then - now))
    };
    format!("{} ({delta})", seconds(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(name: &str, solved: bool, wall_ms: u64, requests: u64) -> TaskReport {
        TaskReport {
            name: name.into(),
            solved,
            state: "completed".into(),
            reason: None,
            check: if solved { "passed" } else { "failed" }.into(),
            check_output: (!solved).then(|| "expected 3\ngot 2\n".into()),
            wall_ms,
            requests,
            prompt_tokens: requests * 100,
            completion_tokens: requests * 10,
            cached_tokens: 0,
        }
    }

    fn report(tasks: Vec<TaskReport>) -> Report {
        Report {
            version: VERSION,
            runner: "deft".into(),
            model: "openai-compatible/m".into(),
            suite: "evals/suite".into(),
            started_at_unix_ms: 0,
            totals: Totals::of(&tasks),
            tasks,
        }
    }

    #[test]
    fn the_table_has_a_line_per_task_the_totals_and_why_not() {
        let table = report(vec![
            task("add", true, 1500, 3),
            task("rename", false, 2000, 4),
        ])
        .table();
        assert_eq!(
            table,
            "task    solved  state            check          time  requests      prompt  completion\n\
             add     yes     completed        passed         1.5s         3         300          30\n\
             rename  no      completed        failed         2.0s         4         400          40\n\
             total   1/2                                     3.5s         7         700          70\n\
             rename: the check failed: got 2\n"
        );
    }

    #[test]
    fn a_comparison_shows_gains_losses_and_changes() {
        let earlier = report(vec![task("add", false, 3000, 5), task("gone", true, 1, 1)]);
        let now = report(vec![
            task("add", true, 1500, 3),
            task("new", false, 2000, 4),
        ]);
        let text = now.compare(&earlier, Path::new("old.json"));
        assert_eq!(
            text,
            "against old.json (deft, openai-compatible/m):\n\
             task   solved                       time      requests              prompt        completion\n\
             add    gained               1.5s (-1.5s)        3 (-2)          300 (-200)          30 (-20)\n\
             new    not in the earlier report\n\
             gone   only in the earlier report\n\
             total  1/1 (+1)             1.5s (-1.5s)        3 (-2)          300 (-200)          30 (-20)\n\
             solved: 1 gained, 0 lost\n"
        );
    }

    #[test]
    fn a_report_reads_back_and_another_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let written = report(vec![task("add", true, 1, 1)]);
        written.write(&path).unwrap();
        assert_eq!(Report::read(&path).unwrap().tasks[0].name, "add");
        std::fs::write(&path, r#"{"version": 2}"#).unwrap();
        let error = format!("{:#}", Report::read(&path).unwrap_err());
        assert!(
            error.contains("a report of version 2, and this deft reads version 1"),
            "{error}"
        );
        std::fs::write(&path, "[]").unwrap();
        let error = format!("{:#}", Report::read(&path).unwrap_err());
        assert!(error.contains("not a report of deft eval"), "{error}");
        let error = format!(
            "{:#}",
            Report::read(&dir.path().join("none.json")).unwrap_err()
        );
        assert!(
            error.contains("none.json") && error.contains("--compare"),
            "{error}"
        );
    }
}
