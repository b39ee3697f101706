//! What the owner says to a task (answers, feedback, steering), heard at the run's start and
//! between turns, and the conventions their feedback teaches.

use std::sync::atomic::{AtomicI64, Ordering};

use deft_core::{
    Attention, EventKind, Progress, StepEvent, StepStatus, Task, TaskId, User, WorkStep,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::agent::{OneShot, json_between};
use super::{Context, Engine, EngineError, Phase};
use crate::analysis::fence;
use crate::prompts::LEARNER;

/// What the owner said after some event of the log.
#[derive(Debug, Default)]
pub(super) struct Said {
    /// Each message as the agent reads it: `answer: …`, `feedback: …`, `steer: …`.
    pub messages: Vec<String>,
    /// The forge's side of each feedback message (its pull request, its review comments).
    pub feedback: Vec<Value>,
    /// The last feedback's words, for the conventions it may state.
    pub last_feedback: Option<String>,
}

impl Engine {
    /// The owner's messages after event `after`, with the number of the last one read.
    pub(super) async fn owner_messages(
        &self,
        id: &TaskId,
        after: i64,
    ) -> Result<(Said, i64), EngineError> {
        let (events, last) = self.store.owner_messages_after(id, after).await?;
        let mut said = Said::default();
        for event in events.iter().filter(|e| e.kind == EventKind::UserMessage) {
            let Some(message) = event.data["message"].as_str() else {
                continue;
            };
            let kind = event.data["kind"].as_str().unwrap_or("message");
            said.messages.push(format!("{kind}: {message}"));
            if kind == "feedback" {
                said.last_feedback = Some(message.to_owned());
                if event.data["github"].is_object() {
                    let mut forge = event.data["github"].clone();
                    forge["message"] = Value::String(message.to_owned());
                    said.feedback.push(forge);
                }
            }
        }
        Ok((said, last))
    }

    /// What the owner said since the agent last looked (also kept for later steps' prompts):
    /// steering sent while a task runs reaches the agent at its next turn.
    pub(super) async fn hear_owner(&self, context: &Context) -> Result<Vec<String>, EngineError> {
        let after = context.heard.load(Ordering::Relaxed);
        let (said, last) = self.owner_messages(&context.task.id, after).await?;
        context.heard.store(last, Ordering::Relaxed);
        context
            .answers
            .lock()
            .expect("the answers lock is never held across a panic")
            .extend(said.messages.iter().cloned());
        context
            .feedback
            .lock()
            .expect("the feedback lock is never held across a panic")
            .extend(said.feedback);
        Ok(said.messages)
    }

    /// At the start of a round: each of the task's pull requests on a forge as it stands now
    /// (its unresolved threads, its comments, its failing checks), kept in the progress for
    /// the round. A forge that cannot be read is said in the log and left out.
    pub(super) async fn gather_feedback(
        &self,
        task: &Task,
        owner: &User,
        progress: &mut Progress,
    ) -> Result<(), EngineError> {
        progress.gathered.clear();
        let login = self.store.github_login(&owner.id).await?;
        for pull_request in &task.pull_requests {
            let Some(number) = pull_request
                .url
                .as_deref()
                .and_then(crate::forge::pull_number)
            else {
                continue;
            };
            let repo = self
                .store
                .repository(&owner.id, pull_request.repo.as_str())
                .await?;
            let Ok(forge) = self.forges.github(&repo) else {
                continue;
            };
            match self
                .forges
                .retried("reading the pull request", || {
                    forge.gather(number, login.as_deref())
                })
                .await
            {
                Ok(gathered) => progress.gathered.push(gathered),
                Err(failure) => {
                    let event = StepEvent::new(WorkStep::Forge, StepStatus::Failed).reason(
                        format!("the pull request of {} could not be read ({failure}); the round goes on with the owner's words alone", repo.name),
                    );
                    self.step(&task.id, event).await?;
                }
            }
        }
        self.store.set_progress(&task.id, progress).await?;
        Ok(())
    }

    /// A question of a task that came from an issue, put on that issue (once: each question
    /// is asked once), so that the owner can answer where they asked for the work.
    pub(super) async fn ask_on_issue(
        &self,
        context: &Context,
        question: &str,
    ) -> Result<(), EngineError> {
        let id = &context.task.id;
        let Some((full, number)) = self.store.issue_of(id).await? else {
            return Ok(());
        };
        let Some(forge) = context
            .repos
            .iter()
            .find(|(repo, _, _)| repo.location == full)
            .and_then(|(repo, _, _)| self.forges.github(repo).ok())
        else {
            return Ok(());
        };
        let text = format!(
            "deft needs an answer to go on with this issue's task:\n\n> {}\n\nReply in a comment here (or on the task's page in deft) and the task continues with your answer.",
            question.trim().replace('\n', "\n> ")
        );
        let status = match self
            .forges
            .retried("the question on the issue", || forge.comment(number, &text))
            .await
        {
            Ok(()) => StepEvent::new(WorkStep::Forge, StepStatus::Asked)
                .summary(format!("the question is on issue #{number}")),
            Err(failure) => StepEvent::new(WorkStep::Forge, StepStatus::Failed).reason(format!(
                "the question could not be put on issue #{number} ({failure}); answer it on the task's page"
            )),
        };
        self.step(id, status).await
    }

    /// The conventions learned from the owner's feedback, in every task's prompt of theirs.
    pub(super) async fn learnings(&self, owner: &User) -> Result<Vec<String>, EngineError> {
        Ok(self
            .store
            .list_learnings(&owner.id)
            .await?
            .into_iter()
            .map(|l| l.text)
            .collect())
    }

    /// The task as the agent reads it: the description, then all the owner said since.
    pub(super) fn task_message(&self, context: &Context) -> String {
        let answers = context
            .answers
            .lock()
            .expect("the answers lock is never held across a panic");
        task_text(
            &context.owner.name,
            &context.task.description,
            &answers,
            &context.gathered,
        )
    }

    /// Records the conventions the owner's latest feedback states, as learnings.
    pub(super) async fn learn(
        &self,
        task: &Task,
        owner: &User,
        said: &Said,
        cancel: &CancellationToken,
    ) -> Result<Option<Attention>, EngineError> {
        let Some(feedback) = &said.last_feedback else {
            return Ok(None);
        };
        let spent = AtomicI64::new(task.usage.input_tokens + task.usage.output_tokens);
        let asked = OneShot {
            client: &self.planner,
            role: "learner",
            system: LEARNER,
            max_tokens: 1024,
        };
        let text = match self
            .one_shot(
                asked,
                &task.id,
                &spent,
                fence("owner feedback", feedback),
                cancel,
            )
            .await?
        {
            Phase::Done(text) => text,
            Phase::Stop(attention) => return Ok(Some(attention)),
        };
        let learned: Vec<String> = json_between(&text, '[', ']')
            .and_then(|json| serde_json::from_value(json).ok())
            .unwrap_or_default();
        let existing = self.learnings(owner).await?;
        for convention in learned
            .iter()
            .map(|c| c.trim())
            .filter(|c| !c.is_empty() && c.len() <= 500)
        {
            if existing.iter().any(|e| e == convention) {
                continue;
            }
            let learning = self
                .store
                .add_learning(
                    &owner.id,
                    convention,
                    &format!("feedback on task {}", task.id),
                )
                .await?;
            let mut event = StepEvent::new(WorkStep::Learning, StepStatus::Recorded);
            event.learning = Some(learning.text);
            self.step(&task.id, event).await?;
        }
        Ok(None)
    }
}

/// The task as the agent reads it: its description from its owner, all the owner said since,
/// and what the pull requests held when this round's feedback came.
pub(super) fn task_text(
    owner: &str,
    description: &str,
    answers: &[String],
    gathered: &[deft_core::Gathered],
) -> String {
    let mut text = format!("The task, from its owner {owner}:\n{description}");
    if !answers.is_empty() {
        text.push_str("\n\nThe owner has since said:\n");
        text.push_str(&answers.join("\n"));
    }
    for gathered in gathered {
        text.push_str("\n\n");
        text.push_str(&gathered.text);
    }
    text
}
