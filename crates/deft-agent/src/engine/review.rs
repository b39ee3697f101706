//! The self-review: a fresh reviewer reads the whole diff with the checks and the acceptance
//! criteria's commands run on it, and must name what it checked.

use deft_core::{Plan, SelfReview, Verdict};
use deft_sandbox::ExecRequest;
use tokio_util::sync::CancellationToken;

use super::agent::{OneShot, json_between};
use super::planning::DESCRIPTION_MET;
use super::{Context, Engine, EngineError, Phase, TaskRepo, TaskSandbox};
use crate::analysis::fence;
use crate::prompts::{REVIEW_PLACEHOLDER, REVIEWER, list, tail};

impl Engine {
    /// Every repository's checks, and the commands the acceptance criteria name (`like
    /// this`, at most five), run now: how each ended and the end of its output, for the
    /// reviewer; and the fixes the ones that failed ask for (a command the sandbox does not
    /// have, exit 126 or 127, asks for none: the criterion named it, not the change).
    async fn check_report(
        &self,
        context: &Context,
        sandbox: &TaskSandbox,
        plan: &Plan,
        cancel: &CancellationToken,
    ) -> (String, Vec<String>) {
        let mut runs: Vec<(Option<String>, String)> = context
            .checks()
            .map(|(dir, check)| (Some(dir.to_owned()), check.to_owned()))
            .collect();
        let one_repo = match context.repos.as_slice() {
            [(_, _, facts)] => Some(facts.name.clone()),
            _ => None,
        };
        for command in criteria_commands(&plan.acceptance_criteria) {
            if !runs.iter().any(|(_, check)| *check == command) {
                runs.push((one_repo.clone(), command));
            }
        }
        let mut report = String::new();
        let mut failing = Vec::new();
        for (dir, command) in runs {
            let request = ExecRequest {
                cwd: dir.clone(),
                timeout: std::time::Duration::from_secs(120),
                ..ExecRequest::shell(&command)
            };
            let mut ignore = |_: &str| {};
            let run = tokio::select! {
                run = sandbox.exec(&request, &mut ignore) => run,
                _ = cancel.cancelled() => return (report, failing),
            };
            let place = dir.map_or_else(
                || "/workspace".to_owned(),
                |dir| format!("/workspace/{dir}"),
            );
            let ended = match run {
                Ok(outcome) => {
                    let code = outcome.exit_code();
                    if code != 0 && code != 126 && code != 127 {
                        failing.push(format!(
                            "`{command}` in {place} exits {code}: {}",
                            tail(&outcome.output, 300)
                        ));
                    }
                    format!("exited {code}:\n{}", tail(&outcome.output, 1500))
                }
                Err(error) => format!("could not run: {error}"),
            };
            report.push_str(&fence(&format!("`{command}` in {place}"), &ended));
            report.push('\n');
        }
        (report, failing)
    }

    /// Each repository's clone, the base its task's change grew from, and everything changed
    /// in its work tree against that base. The clones are checked, then read by git: the
    /// task's programs (its MCP servers) wait meanwhile.
    pub(super) async fn clone_diffs<'c>(
        &self,
        context: &'c Context,
        sandbox: &TaskSandbox,
    ) -> Vec<(&'c TaskRepo, String, Result<String, deft_forge::ForgeError>)> {
        let bases = self.bases(&context.task.id);
        let _paused = sandbox.pause_programs();
        let mut diffs = Vec::with_capacity(context.repos.len());
        for clone in &context.repos {
            let (repo, dir, _) = clone;
            let base = bases
                .get(repo.id.as_str())
                .cloned()
                .unwrap_or_else(|| format!("origin/{}", repo.default_branch));
            let diff = deft_forge::worktree_diff(dir, &base).await;
            diffs.push((clone, base, diff));
        }
        diffs
    }

    /// The reviewer's verdict on the whole change.
    pub(super) async fn review(
        &self,
        context: &Context,
        sandbox: &TaskSandbox,
        plan: &Plan,
        cancel: &CancellationToken,
    ) -> Result<Phase<SelfReview>, EngineError> {
        let mut diffs = String::new();
        for ((repo, _, _), _, diff) in self.clone_diffs(context, sandbox).await {
            match diff {
                Ok(diff) if !diff.trim().is_empty() => {
                    diffs.push_str(&fence(&format!("{} diff", repo.name), &tail(&diff, 60_000)))
                }
                Ok(_) => {}
                Err(error) => diffs.push_str(&format!("(no diff of {}: {error})\n", repo.name)),
            }
        }
        let (runs, failing) = self.check_report(context, sandbox, plan, cancel).await;
        let user = format!(
            "{}\n\nRequirements:\n{}\nAcceptance criteria:\n{}\n\nThe change:\n{}\n\nThe checks, and the acceptance criteria's commands, run on it now:\n{}",
            self.task_message(context),
            list(&plan.requirements),
            list(&plan.acceptance_criteria),
            if diffs.is_empty() {
                "(no changes)".to_owned()
            } else {
                diffs
            },
            if runs.is_empty() {
                "(none: the repositories have no checks, and the criteria name no command)"
                    .to_owned()
            } else {
                runs
            }
        );
        let asked = OneShot {
            client: &self.planner,
            role: "reviewer",
            system: REVIEWER,
            max_tokens: 2048,
        };
        let text = match self
            .one_shot(asked, &context.task.id, &context.spent, user, cancel)
            .await?
        {
            Phase::Done(text) => text,
            Phase::Stop(attention) => return Ok(Phase::Stop(attention)),
        };
        let mut review = read_review(&text);
        // A command that shows a criterion unmet is not outvoted by the reviewer's words.
        if review.verdict != Verdict::Fix && !failing.is_empty() {
            review.verdict = Verdict::Fix;
            review.fixes.extend(failing);
        }
        Ok(Phase::Done(review))
    }
}

/// The commands acceptance criteria name in backticks, as a model writes them
/// ("`./test.sh` passes"), at most five.
pub(super) fn criteria_commands(criteria: &[String]) -> Vec<String> {
    let mut commands: Vec<String> = Vec::new();
    for criterion in criteria {
        for (n, part) in criterion.split('`').enumerate() {
            let part = part.trim();
            let command = n % 2 == 1
                && part.len() > 2
                && part.len() <= 200
                && !part.contains('\n')
                && (part.contains(' ') || part.starts_with("./") || part.contains('/'));
            if command && !commands.iter().any(|known| known == part) {
                commands.push(part.to_owned());
            }
        }
    }
    commands.truncate(5);
    commands
}

/// The reviewer's answer: a pass must name what was checked, or it is no verdict.
fn read_review(text: &str) -> SelfReview {
    let Some(value) = json_between(text, '{', '}') else {
        return SelfReview {
            verdict: Verdict::Unclear,
            fixes: vec![format!("the reviewer gave no verdict: {}", tail(text, 300))],
            checked: Vec::new(),
        };
    };
    let strings = |key: &str| -> Vec<String> {
        value[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item.as_str().map(str::to_owned))
            .filter(|item| !item.trim().is_empty())
            .collect()
    };
    // The answer format's own placeholder, or a criterion copied back word for word, names
    // nothing that was looked at.
    let checked: Vec<String> = strings("checked")
        .into_iter()
        .filter(|item| {
            let item = item.trim().trim_end_matches('.');
            item != REVIEW_PLACEHOLDER && item != "..." && item != DESCRIPTION_MET
        })
        .collect();
    let (verdict, mut fixes) = match value["verdict"].as_str() {
        Some("fix") => (Verdict::Fix, strings("fixes")),
        Some("pass") | None => (Verdict::Pass, strings("fixes")),
        Some(_) => (Verdict::Unclear, strings("fixes")),
    };
    if verdict == Verdict::Pass && checked.is_empty() {
        fixes.push("the reviewer passed the change without naming what it checked".to_owned());
        return SelfReview {
            verdict: Verdict::Unclear,
            fixes,
            checked,
        };
    }
    SelfReview {
        verdict,
        fixes,
        checked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_must_name_what_was_checked() {
        let bare = read_review(r#"{"verdict": "pass"}"#);
        assert_eq!(bare.verdict, Verdict::Unclear);
        assert!(bare.fixes[0].contains("without naming what it checked"));
        let named = read_review(
            r#"Here: {"verdict": "pass", "checked": ["./test.sh exits 0 in the output"]}"#,
        );
        assert_eq!(named.verdict, Verdict::Pass);
        assert_eq!(named.checked, ["./test.sh exits 0 in the output"]);
        let fix = read_review(r#"{"verdict": "fix", "fixes": ["handle empty input"]}"#);
        assert_eq!(fix.verdict, Verdict::Fix);
        assert_eq!(read_review("looks good").verdict, Verdict::Unclear);
        let echoed = read_review(&format!(
            r#"{{"verdict": "pass", "checked": ["{REVIEW_PLACEHOLDER}"]}}"#
        ));
        assert_eq!(echoed.verdict, Verdict::Unclear);
        let restated = read_review(&format!(
            r#"{{"verdict": "pass", "checked": ["{DESCRIPTION_MET}"]}}"#
        ));
        assert_eq!(restated.verdict, Verdict::Unclear);
    }

    #[test]
    fn the_commands_criteria_name_are_found() {
        let criteria = [
            "`./test.sh` passes".to_owned(),
            "`python3 -m unittest -q` passes, and `slug` joins words".to_owned(),
            "`./test.sh` still passes".to_owned(),
        ];
        assert_eq!(
            criteria_commands(&criteria),
            ["./test.sh", "python3 -m unittest -q"]
        );
    }
}
