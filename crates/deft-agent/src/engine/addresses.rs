//! Before a step whose checks pass ends: addresses the change writes that no one gave (see
//! `crate::unsourced`) become a question to the owner, asked once per address.

use deft_forge::Objects;

use super::{Context, Engine, EngineError, TaskSandbox};
use crate::unsourced::{Address, added_addresses, mentions, question};

impl Engine {
    /// The question to ask when the change so far writes a URL whose host is in neither the
    /// task, the owner's messages, the learnings, nor the repository at its base, and which
    /// was not asked about already.
    pub(super) async fn unsourced_question(
        &self,
        context: &Context,
        sandbox: &TaskSandbox,
    ) -> Result<Option<String>, EngineError> {
        let said = {
            let answers = context
                .answers
                .lock()
                .expect("the answers lock is never held across a panic");
            format!(
                "{}\n{}\n{}",
                context.task.description,
                answers.join("\n"),
                context.learnings.join("\n")
            )
            .to_ascii_lowercase()
        };
        let mut unsourced: Vec<Address> = Vec::new();
        for ((_, dir, _), base, diff) in self.clone_diffs(context, sandbox).await {
            // A clone git cannot diff has no addresses to ask about; verification has
            // already said what is wrong with it.
            let Ok(diff) = diff else {
                continue;
            };
            let private = self.private_repo(&context.task.id, dir);
            for address in added_addresses(&diff) {
                if mentions(&said, &address.host) {
                    continue;
                }
                // The repository's own text, from git's objects, never from the clone.
                let pattern = regex_escape(&address.host);
                let known = Objects::Private(&private)
                    .grep(&base, &pattern, None, 1)
                    .await
                    .map(|lines| !lines.is_empty())
                    // Unreadable is not evidence of a guess: no question.
                    .unwrap_or(true);
                if !known {
                    unsourced.push(address);
                }
            }
        }
        if unsourced.is_empty() {
            return Ok(None);
        }
        let asked = self.store.questions_asked(&context.task.id).await?;
        let new: Vec<&Address> = unsourced
            .iter()
            .filter(|address| !asked.iter().any(|q| q.contains(&address.url)))
            .collect();
        Ok((!new.is_empty()).then(|| question(&new)))
    }
}

/// `text` as a POSIX extended regular expression that matches it literally.
fn regex_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if ".[]()*+?{}|^$\\".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_host_is_matched_literally() {
        assert_eq!(super::regex_escape("a.b-c"), "a\\.b-c");
    }
}
