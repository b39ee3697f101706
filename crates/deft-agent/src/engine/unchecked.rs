//! A change nothing ran is not reported done on the model's word. When the repositories have
//! no check deft knows how to run, the plan's criteria name no command and the task names
//! none, and the self-review did not pass naming what it looked at, the owner sees the change
//! and is asked before a pull request says the task is done: once per task, so that an answer
//! (to open it, or what to change) carries the run on through a fresh review.

use deft_core::{Plan, SelfReview, Verdict};

use super::review::criteria_commands;
use super::{Context, Engine, EngineError, TaskSandbox};
use crate::task_commands::task_commands;

/// How the question begins: a question already asked in the task is not asked again.
const UNCHECKED: &str = "Nothing could check this change";

/// At most this much of the diff goes into the question; the task's page has all of it.
const SHOWN_DIFF: usize = 4000;

impl Engine {
    /// The question to ask before completing a change that nothing checked, if it is one.
    pub(super) async fn unchecked_question(
        &self,
        context: &Context,
        sandbox: &TaskSandbox,
        plan: &Plan,
        review: &SelfReview,
    ) -> Result<Option<String>, EngineError> {
        let ran = context.checks().next().is_some()
            || !criteria_commands(&plan.acceptance_criteria).is_empty()
            || !task_commands(super::code_blocks::owners_words(&context.task.description))
                .is_empty();
        let reviewed = review.verdict == Verdict::Pass && !review.checked.is_empty();
        if ran || reviewed {
            return Ok(None);
        }
        let asked = self.store.questions_asked(&context.task.id).await?;
        if asked.iter().any(|question| question.starts_with(UNCHECKED)) {
            return Ok(None);
        }
        let mut shown = String::new();
        for ((repo, _, _), _, diff) in self.clone_diffs(context, sandbox).await {
            if let Ok(diff) = diff
                && !diff.trim().is_empty()
            {
                shown.push_str(&format!("In {}:\n{}\n", repo.name, diff_block(&diff)));
            }
        }
        Ok(Some(format!(
            "{UNCHECKED}: the repository has no tests or checks deft knows how to run, and the task names no command that shows it works, so nothing but the model's word says it is right.\n\n{shown}\nReply \"open it\" to open the pull request as it is, or say what to change."
        )))
    }
}

/// A diff as a Markdown block, cut at `SHOWN_DIFF` bytes, fenced by more backticks than any
/// run of them in it (a diff can hold a fence of its own).
fn diff_block(diff: &str) -> String {
    let mut cut = diff.len().min(SHOWN_DIFF);
    while !diff.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut text = diff[..cut].trim_end().to_owned();
    if cut < diff.len() {
        text.push_str("\n… (the rest is on the task's page)");
    }
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    format!("{fence}diff\n{text}\n{fence}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_diff_is_fenced_past_its_own_fences_and_cut() {
        let block = super::diff_block("+```\n+x\n");
        assert!(block.starts_with("````diff\n+```\n+x\n````"), "{block}");
        let long = format!("+{}é\n", "a".repeat(super::SHOWN_DIFF - 2));
        let block = super::diff_block(&long);
        assert!(
            block.contains("(the rest is on the task's page)"),
            "{block}"
        );
    }
}
