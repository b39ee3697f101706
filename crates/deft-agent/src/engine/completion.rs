//! Completion: each changed repository's work committed, checked for the owner's secrets,
//! pushed and published as a pull request through the forge seam; then what follows on the
//! forge (the issue told where its pull request is, a reply in each review thread answered).

use std::collections::HashMap;
use std::path::Path;

use deft_core::{
    Attention, AttentionKind, Plan, Progress, PullRequest, PullRequestStatus, RepoId, Repository,
    StepEvent, StepStatus, User, WorkStep,
};
use deft_forge::Identity;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::agent::{OneShot, json_between};
use super::{Context, Engine, EngineError, Phase, attention};
use crate::analysis::fence;
use crate::forge::Published;
use crate::prompts::{THREAD_REPLIES, first_line, pull_request_body, review_section};

/// The agent's own identity in commits.
fn agent() -> Identity {
    Identity {
        name: "deft".into(),
        email: "deft@deft.invalid".into(),
    }
}

/// The owner as a co-author: their GitHub account when they linked one (GitHub credits the
/// commit to it), else their deft name.
fn owner_identity(user: &User, github_login: Option<&str>) -> Identity {
    match github_login {
        Some(login) => Identity {
            name: login.to_owned(),
            email: format!("{login}@users.noreply.github.com"),
        },
        None => Identity {
            name: user.name.clone(),
            email: format!("{}@deft.invalid", user.name),
        },
    }
}

/// A reply in a review thread, as the model judged the comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ThreadVerdict {
    Addressed,
    Declined,
    Clarify,
}

impl ThreadVerdict {
    fn as_str(self) -> &'static str {
        match self {
            ThreadVerdict::Addressed => "addressed",
            ThreadVerdict::Declined => "declined",
            ThreadVerdict::Clarify => "clarify",
        }
    }
}

impl Engine {
    /// Commits, pushes and publishes every changed repository; `Some` when the task stops.
    pub(super) async fn complete(
        &self,
        context: &Context,
        plan: &Plan,
        progress: &mut Progress,
        cancel: &CancellationToken,
    ) -> Result<Option<Attention>, EngineError> {
        let id = &context.task.id;
        self.step(
            id,
            StepEvent::new(WorkStep::Completion, StepStatus::Started),
        )
        .await?;
        let title = first_line(&context.task.description, 72);
        let login = self.store.github_login(&context.owner.id).await?;
        let message = format!("{title}\n\n{}", progress.summaries.join("\n"));
        let with = [owner_identity(&context.owner, login.as_deref()), agent()];
        let mut changed = Vec::new();
        let mut commits = HashMap::new();
        let bases = self.bases(id);
        for (repo, dir, _) in &context.repos {
            let committed = match deft_forge::commit_all(dir, &message, &agent(), &with).await {
                // Nothing left to commit, but the task's commands may have committed the work
                // themselves: the branch is what moved past its base.
                Ok(None) => deft_forge::commit_of(dir, "HEAD")
                    .await
                    .ok()
                    .filter(|head| bases.get(repo.id.as_str()).is_some_and(|base| base != head)),
                Ok(committed) => committed,
                Err(error) => {
                    return Ok(Some(attention(
                        AttentionKind::Error,
                        format!("cannot commit in {}: {error}", repo.name),
                    )));
                }
            };
            let existing = context
                .task
                .pull_requests
                .iter()
                .any(|pr| pr.repo == repo.id);
            if committed.is_none() && !existing {
                continue;
            }
            if let Some(commit) = committed {
                if let Some(stop) = self.push(context, repo, dir, &commit).await? {
                    return Ok(Some(stop));
                }
                commits.insert(repo.id.clone(), commit);
            }
            changed.push(repo);
        }
        if changed.is_empty() {
            // Work that changed nothing is not done: a file written beside a repository, or a
            // step that only said it was done. The owner hears why rather than a success.
            let said = progress.summaries.last().map_or("", String::as_str);
            let names: Vec<&str> = context
                .repos
                .iter()
                .map(|(repo, _, _)| repo.name.as_str())
                .collect();
            return Ok(Some(attention(
                AttentionKind::Error,
                format!(
                    "the work changed no file in {} (its last step said: \"{}\"); answer with what is missing to try again, or cancel the task if nothing needed to change",
                    names.join(", "),
                    first_line(said, 200)
                ),
            )));
        }
        let origin = self.store.issue_of(id).await?;
        for repo in &changed {
            let issue = origin
                .as_ref()
                .filter(|(full, _)| {
                    repo.forge == deft_core::ForgeKind::Github && *full == repo.location
                })
                .map(|(_, number)| *number);
            let pull_request = PullRequest {
                repo: repo.id.clone(),
                base: repo.default_branch.clone(),
                head: context.branch.clone(),
                title: title.clone(),
                body: self.body(context, plan, progress, &changed, issue),
                status: PullRequestStatus::Open,
                url: None,
            };
            let previous = context
                .task
                .pull_requests
                .iter()
                .find(|pr| pr.repo == repo.id);
            let published = match self.forges.publish(repo, &pull_request, previous).await {
                Ok(published) => published,
                Err(failure) => {
                    return Ok(Some(attention(
                        AttentionKind::Error,
                        format!("cannot open the pull request of {}: {failure}", repo.name),
                    )));
                }
            };
            let pull_request = PullRequest {
                url: published.as_ref().map(|p| p.url.clone()),
                ..pull_request
            };
            self.store.upsert_pull_request(id, &pull_request).await?;
            if let Some(published) = published {
                self.follow_up(context, repo, &published, issue, &commits, progress, cancel)
                    .await?;
            }
        }
        self.step(
            id,
            StepEvent::new(WorkStep::Completion, StepStatus::Done).count(changed.len()),
        )
        .await?;
        Ok(None)
    }

    /// The pull request's body: what changed and why, the self-review, the other pull
    /// requests of the task, the network refusals, and the issue it closes.
    fn body(
        &self,
        context: &Context,
        plan: &Plan,
        progress: &Progress,
        changed: &[&Repository],
        issue: Option<u64>,
    ) -> String {
        let mut body = pull_request_body(&context.task.description, plan, &progress.summaries);
        body.push_str(&review_section(progress.review.as_ref()));
        if changed.len() > 1 {
            // One pull request per changed repository, each naming the others and the order
            // in which to merge them (the order of the task's repositories).
            let order: Vec<String> = changed
                .iter()
                .enumerate()
                .map(|(index, repo)| {
                    format!(
                        "{}. {} (`{}` into `{}`)",
                        index + 1,
                        repo.name,
                        context.branch,
                        repo.default_branch
                    )
                })
                .collect();
            body.push_str(&format!(
                "\n\n## Related pull requests\nThis task changed {} repositories; merge in this order:\n{}",
                changed.len(),
                order.join("\n")
            ));
        }
        if !progress.refused.is_empty() {
            // A reviewer sees at once why a dependency could not be fetched.
            let lines: Vec<String> = progress
                .refused
                .iter()
                .map(|(host, count)| format!("- `{host}`: {count} time(s)"))
                .collect();
            body.push_str(&format!(
                "\n\n## Network requests refused\nThe sandbox's network policy refused these during the task (allow them in the settings if the task needs them):\n{}",
                lines.join("\n")
            ));
        }
        // What the last steps cited may not be in the progress yet.
        let sources = context
            .web
            .as_ref()
            .map_or_else(|| progress.sources.clone(), crate::web::Web::sources);
        let cited = crate::web::sources_section(&sources, &body);
        body.push_str(&cited);
        if let Some(number) = issue {
            // Merging the pull request closes the issue it came from.
            body.push_str(&format!("\n\nCloses #{number}"));
        }
        body
    }

    /// Takes the commit from the clone into the task's private repository, checks that
    /// nothing of the owner's secrets is in what a push would send, and pushes it.
    async fn push(
        &self,
        context: &Context,
        repo: &Repository,
        dir: &Path,
        commit: &str,
    ) -> Result<Option<Attention>, EngineError> {
        let id = &context.task.id;
        let branch = &context.branch;
        let pushing = |status| {
            let mut event = StepEvent::new(WorkStep::Push, status);
            event.repo = Some(repo.name.clone());
            event.branch = Some(branch.clone());
            event.commit = Some(commit.to_owned());
            event
        };
        // Recorded before and after: a run resumed in between sees what was done.
        self.step(id, pushing(StepStatus::Started)).await?;
        let base = self
            .bases(id)
            .get(repo.id.as_str())
            .cloned()
            .unwrap_or_else(|| format!("origin/{}", repo.default_branch));
        let private = self.private_repo(id, dir);
        if let Err(error) = deft_forge::private::deliver(dir, &private, &base, branch).await {
            return Ok(Some(attention(
                AttentionKind::Error,
                format!(
                    "cannot take {branch} from the clone of {}: {error}",
                    repo.name
                ),
            )));
        }
        // Its whole history since the base is searched before the push.
        match self
            .secret_in_push(id, &context.owner.id, &private, &base, branch)
            .await
        {
            Ok(None) => {}
            Ok(Some(found)) => {
                return Ok(Some(attention(
                    AttentionKind::Error,
                    found.message(&repo.name, branch),
                )));
            }
            Err(error) => {
                return Ok(Some(attention(
                    AttentionKind::Error,
                    format!(
                        "cannot check what a push of {branch} would send ({error}); nothing was pushed"
                    ),
                )));
            }
        }
        if let Err(failure) = self.forges.push(repo, &private, dir, branch).await {
            return Ok(Some(attention(
                AttentionKind::Error,
                format!("cannot push {branch}: {failure}"),
            )));
        }
        self.step(id, pushing(StepStatus::Done)).await?;
        Ok(None)
    }

    /// After a pull request is published on a forge: the issue it came from told where it
    /// is (once), and each review comment the owner's feedback came with answered in its
    /// thread (once). A failure here is logged, never a reason to stop: the work is pushed.
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site, each argument named there"
    )]
    async fn follow_up(
        &self,
        context: &Context,
        repo: &Repository,
        published: &Published,
        issue: Option<u64>,
        commits: &HashMap<RepoId, String>,
        progress: &mut Progress,
        cancel: &CancellationToken,
    ) -> Result<(), EngineError> {
        let Ok(forge) = self.forges.github(repo) else {
            return Ok(());
        };
        let id = &context.task.id;
        if let Some(issue) = issue.filter(|_| !progress.issue_linked) {
            let note = format!("The pull request for this issue: {}", published.url);
            match forge.comment(issue, &note).await {
                Ok(()) => {
                    progress.issue_linked = true;
                    self.store.set_progress(id, progress).await?;
                    let mut event = StepEvent::new(WorkStep::Forge, StepStatus::Linked);
                    event.url = Some(published.url.clone());
                    self.step(id, event).await?;
                }
                Err(failure) => {
                    tracing::warn!(task.id = %id, %failure, "cannot link the issue to its pull request");
                }
            }
        }
        let Some(commit) = commits.get(&repo.id) else {
            return Ok(());
        };
        let feedback: Vec<Value> = context
            .feedback
            .lock()
            .expect("the feedback lock is never held across a panic")
            .iter()
            .filter(|f| f["repo"] == forge.name.as_str() && f["pull"] == published.number)
            .cloned()
            .collect();
        let gathered: Vec<&deft_core::Gathered> = context
            .gathered
            .iter()
            .filter(|g| g.repo == forge.name.as_str() && g.pull == published.number)
            .collect();
        if feedback.is_empty() && gathered.is_empty() {
            return Ok(());
        }
        let short = &commit[..commit.len().min(12)];
        let what = if progress.summaries.is_empty() {
            String::new()
        } else {
            format!("\n\n{}", crate::prompts::list(&progress.summaries))
        };
        let mut pending: Vec<u64> = feedback
            .iter()
            .flat_map(|f| f["review_comments"].as_array().cloned().unwrap_or_default())
            .filter_map(|c| c.as_u64())
            .chain(gathered.iter().flat_map(|g| g.threads.iter().copied()))
            .filter(|c| !progress.replied.contains(c))
            .collect();
        pending.sort_unstable();
        pending.dedup();
        let verdicts = if pending.is_empty() {
            HashMap::new()
        } else {
            let dir = context
                .repos
                .iter()
                .find(|(r, _, _)| r.id == repo.id)
                .map(|(_, dir, _)| dir.as_path());
            let asked: Vec<&str> = feedback
                .iter()
                .filter_map(|f| f["message"].as_str())
                .chain(gathered.iter().map(|g| g.text.as_str()))
                .collect();
            self.thread_verdicts(context, dir, commit, &asked, &pending, progress, cancel)
                .await?
        };
        for comment in pending {
            let verdict = verdicts.get(&comment);
            let reply = match verdict {
                Some((ThreadVerdict::Declined, note)) => format!("Not changed: {note}"),
                Some((ThreadVerdict::Clarify, note)) => {
                    format!("Before changing this I need to know: {note}")
                }
                Some((_, note)) if !note.is_empty() => format!("Addressed in {short}: {note}"),
                _ => format!("Addressed in {short}.{what}"),
            };
            if let Err(failure) = self
                .forges
                .retried("a reply in a review thread", || {
                    forge.reply_in_thread(published.number, comment, &reply)
                })
                .await
            {
                tracing::warn!(task.id = %id, %failure, "cannot reply in a review thread");
                continue;
            }
            progress.replied.insert(comment);
            self.store.set_progress(id, progress).await?;
            let mut event = StepEvent::new(WorkStep::Forge, StepStatus::Replied);
            event.comment = Some(comment);
            event.commit = Some(commit.clone());
            event.verdict = Some(
                verdict
                    .map_or(ThreadVerdict::Addressed, |(verdict, _)| *verdict)
                    .as_str()
                    .to_owned(),
            );
            self.step(id, event).await?;
        }
        let note = format!(
            "Pushed {short} to `{}` for the feedback above; the branch moved forward, no history was rewritten.{what}",
            context.branch
        );
        if let Err(failure) = forge.comment(published.number, &note).await {
            tracing::warn!(task.id = %id, %failure, "cannot comment on the pull request");
        }
        Ok(())
    }

    /// The model's judgement of each pending review comment, from the feedback, what was done
    /// and the new commit's diff.
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site, each argument named there"
    )]
    async fn thread_verdicts(
        &self,
        context: &Context,
        dir: Option<&Path>,
        commit: &str,
        asked: &[&str],
        comments: &[u64],
        progress: &Progress,
        cancel: &CancellationToken,
    ) -> Result<HashMap<u64, (ThreadVerdict, String)>, EngineError> {
        let mut diff = match dir {
            Some(dir) => deft_forge::clone_diff(dir, &format!("{commit}~1"), commit)
                .await
                .unwrap_or_default(),
            None => String::new(),
        };
        if diff.len() > 20_000 {
            let mut cut = 20_000;
            while !diff.is_char_boundary(cut) {
                cut -= 1;
            }
            diff.truncate(cut);
        }
        let message = format!(
            "Comment ids: {comments:?}\n\n{}\n\nWhat you did:\n{}\n\n{}",
            fence("review feedback", &asked.join("\n\n")),
            progress.summaries.join("\n"),
            fence("diff of the new commit", &diff)
        );
        let asked = OneShot {
            client: &self.executor,
            role: "review replies",
            system: THREAD_REPLIES,
            max_tokens: 2048,
        };
        let text = match self
            .one_shot(asked, &context.task.id, &context.spent, message, cancel)
            .await?
        {
            Phase::Done(text) => text,
            Phase::Stop(_) => return Ok(HashMap::new()),
        };
        let verdicts: Vec<Value> = json_between(&text, '[', ']')
            .and_then(|json| serde_json::from_value(json).ok())
            .unwrap_or_default();
        Ok(verdicts
            .iter()
            .filter_map(|v| {
                let verdict = match v["status"].as_str()? {
                    "addressed" => ThreadVerdict::Addressed,
                    "declined" => ThreadVerdict::Declined,
                    "clarify" => ThreadVerdict::Clarify,
                    _ => return None,
                };
                let note = v["note"].as_str().unwrap_or("").trim().to_owned();
                Some((v["comment"].as_u64()?, (verdict, note)))
            })
            .filter(|(id, _)| comments.contains(id))
            .collect())
    }
}
