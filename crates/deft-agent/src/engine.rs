//! The orchestrator: a task from its description to pull requests, in the work steps of
//! SPEC §2 — environment setup, repository analysis, planning, execution (a sub-agent per
//! step, each verified before the next), clarification, completion.
//!
//! Every step is recorded as events, and where the run stands ([`Progress`]) is written to the
//! task after each step, so a task answered after a question, or picked up again after a
//! crash, continues from there. The parts live beside this file: `start` (clones, analysis,
//! the environment and the sandbox), `agent` (the model's turns, tools and verification),
//! `completion` (commits, pushes, pull requests, through the forge seam) and `owner` (what
//! the owner says, and what it teaches).

mod addresses;
mod agent;
mod attempts;
mod code_blocks;
mod completion;
mod environment;
mod owner;
mod planning;
mod review;
mod start;
mod unchecked;
pub use start::egress_policy;

use std::path::PathBuf;
use std::sync::atomic::AtomicI64;

use deft_core::{
    Attention, AttentionKind, Phase as WorkPhase, Plan, Progress, Repository, SelfReview,
    StepEvent, StepStatus, Task, TaskId, TaskState, Transition, User, Verdict, WorkStep,
};
use deft_llm::ModelClient;
use deft_sandbox::{Sandbox, SandboxBackend};
use deft_store::{Actor, Store};
use tokio_util::sync::CancellationToken;

use crate::analysis::RepoFacts;
use crate::forge::Forges;
use crate::tools::Tools;

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    Completed,
    NeedsAttention(Attention),
    Cancelled,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] deft_store::StoreError),
    /// The run's cancellation token fired (the owner cancelled the task, or deft is stopping).
    #[error("the run was cancelled")]
    Cancelled,
}

/// Bounds that keep a run from burning tokens.
#[derive(Debug, Clone, Copy)]
pub struct RunLimits {
    /// Verifications a step may fail before its attempt gives up.
    pub verify_retries: u32,
    /// Attempts a step gets (`limits.step_attempts`): one that gives up (its checks keep
    /// failing, a loop, too many turns) has its changes undone and the step starts again, from
    /// a fresh conversation told why the last ended; the last one's end asks for help.
    pub step_attempts: u32,
    /// Model turns a step (or planning) may take.
    pub turns_per_step: u32,
    /// The same tool call in a row (failing or not) that is a loop: the agent is told once,
    /// and a loop after that stops the step to ask.
    pub repeats: u32,
    /// Times the self-review may send fixes back to execution.
    pub review_rounds: u32,
    /// Tokens (input and output) the whole task may spend (`limits.task_tokens`).
    pub task_tokens: Option<i64>,
    /// Tokens (input and output) one user may spend in a week, Monday 00:00 UTC to the next
    /// (`limits.weekly_tokens`).
    pub weekly_tokens: Option<i64>,
    /// The most a single request may hold, in estimated tokens: older tool output is elided
    /// before the window fills.
    pub context_tokens: usize,
    /// How long one MCP tool call may take before it is cut off.
    pub mcp_call_timeout: std::time::Duration,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            verify_retries: 2,
            step_attempts: 2,
            turns_per_step: 40,
            repeats: 3,
            review_rounds: 2,
            task_tokens: None,
            weekly_tokens: None,
            context_tokens: 150_000,
            mcp_call_timeout: std::time::Duration::from_secs(120),
        }
    }
}

/// Runs tasks.
#[derive(Debug)]
pub struct Engine {
    pub store: Store,
    pub planner: ModelClient,
    pub executor: ModelClient,
    /// Makes each task's sandbox; the engine never knows which backend it is.
    pub sandboxes: std::sync::Arc<dyn SandboxBackend>,
    /// Where task workspaces live on the host, one directory per task.
    pub workspaces: PathBuf,
    pub limits: RunLimits,
    /// Fired when deft is stopping: runs end at their next checkpoint (between steps), where
    /// nothing is lost, rather than mid-step. The run's own token still stops them at once.
    pub drain: CancellationToken,
    /// Where repositories come from and pull requests go: the local forge, and GitHub when it
    /// is configured.
    pub forges: Forges,
    /// The runs going in this process, whose files the workspace sweep leaves alone.
    pub active: crate::housekeeping::ActiveTasks,
    /// The image builder for repositories with a Dockerfile; `None` when none is configured
    /// (commands then use the host's tools, and the task's log says so).
    pub images: Option<crate::setup::ImageBuilder>,
    /// The image for tasks whose repositories have no Dockerfile (`[environments]
    /// default_image`); `None`: the host's tools.
    pub default_image: Option<String>,
    /// What runs tasks on an image's root when it is not `sandboxes` (`[environments] backend
    /// = "container"`).
    pub image_sandboxes: Option<std::sync::Arc<dyn SandboxBackend>>,
    /// The search provider the operator configured: with one, tasks get `web_search` and
    /// `web_fetch` (fetches under each task's network policy).
    pub web: Option<std::sync::Arc<deft_web::SearchClient>>,
    /// How the executor's model changes files (`[model] edit_format`).
    pub edit_format: EditFormat,
}

/// How the executor's model changes files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EditFormat {
    /// Through the editor's tool calls, with bash and the search: for models that use tools
    /// well.
    #[default]
    ToolCalls,
    /// By code written in its replies, under each file's path (no tools are offered, and no
    /// planner is asked: the task is the plan's one step): for small local models, which write
    /// code well in words but cannot escape it inside a tool call's JSON.
    CodeBlocks,
}

impl std::str::FromStr for EditFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<EditFormat, String> {
        match text {
            "tool_calls" => Ok(EditFormat::ToolCalls),
            "code_blocks" => Ok(EditFormat::CodeBlocks),
            other => Err(format!(
                "`{other}` is not an edit format; use \"tool_calls\" (the editor tool, for models that call tools well) or \"code_blocks\" (code written in replies, for small local models)"
            )),
        }
    }
}

/// What one phase of the run returned.
enum Phase<T> {
    Done(T),
    Stop(Attention),
}

fn attention(kind: AttentionKind, message: impl Into<String>) -> Attention {
    Attention {
        kind,
        message: message.into(),
    }
}

/// The planner's first answer, asked while the sandbox was made, with the request it answered.
type Early = (Phase<deft_llm::Completion>, deft_llm::Request);

/// A task's sandbox, whichever backend made it.
type TaskSandbox = dyn Sandbox + 'static;

/// A repository of the task: what it is, its clone in the workspace, what analysis found.
type TaskRepo = (Repository, PathBuf, RepoFacts);

/// What a run knows of its task, read once at its start.
struct Context {
    task: Task,
    owner: User,
    repos: Vec<TaskRepo>,
    learnings: Vec<String>,
    branch: String,
    /// Everything the owner has said to the task, including while it runs.
    answers: std::sync::Mutex<Vec<String>>,
    /// What the owner's feedback said about where it came from on the forge (the pull
    /// request, the review comments), in order.
    feedback: std::sync::Mutex<Vec<serde_json::Value>>,
    /// What the task's pull requests held when this round's feedback came.
    gathered: Vec<deft_core::Gathered>,
    /// The number of the last event read for owner messages: a message after it arrived while
    /// the task ran, and reaches the agent at its next turn.
    heard: AtomicI64,
    /// Tokens (input and output) the task has spent, kept as the run spends them.
    spent: AtomicI64,
    /// The web, when the operator configured a search provider.
    web: Option<crate::web::Web>,
}

impl Context {
    /// Each repository's checks, with the directory under `/workspace` they run in.
    fn checks(&self) -> impl Iterator<Item = (&str, &str)> {
        self.repos.iter().flat_map(|(_, _, facts)| {
            facts
                .checks
                .iter()
                .map(|check| (facts.name.as_str(), check.as_str()))
        })
    }
}

impl Engine {
    /// Before a queued task starts: when its owner has spent the week's tokens, the task goes
    /// to `needs_attention` saying when the limit resets, and this returns that reason.
    pub async fn hold_for_weekly_limit(
        &self,
        id: &TaskId,
    ) -> Result<Option<Attention>, EngineError> {
        let Some(limit) = self.limits.weekly_tokens else {
            return Ok(None);
        };
        let task = self.store.task_by_id(id).await?;
        let now = deft_core::Timestamp::now();
        let usage = self
            .store
            .usage_since(&task.owner, now.week_start())
            .await?;
        let spent = usage.input_tokens + usage.output_tokens;
        if spent < limit {
            return Ok(None);
        }
        let reason = attention(
            AttentionKind::WeeklyLimit,
            format!(
                "this week's token limit is reached ({spent} of {limit} tokens); it resets on {} (Monday 00:00 UTC), then answer to start the task",
                now.next_week_start()
            ),
        );
        self.store
            .transition(
                Actor::Deft,
                id,
                Transition::NeedAttention(reason.clone()),
                None,
            )
            .await?;
        Ok(Some(reason))
    }

    /// Runs the task until it completes or needs its owner. The task must be `queued` (or
    /// `in_progress`, when picked up again).
    pub async fn run(
        &self,
        id: &TaskId,
        cancel: &CancellationToken,
    ) -> Result<RunOutcome, EngineError> {
        let _files = self.active.enter(id).await;
        let task = self.store.task_by_id(id).await?;
        match task.state() {
            TaskState::Queued => {
                self.store
                    .transition(Actor::Deft, id, Transition::Start, None)
                    .await?;
            }
            TaskState::InProgress => {}
            TaskState::Cancelled => return Ok(RunOutcome::Cancelled),
            other => {
                let message = format!("the task is {other}; answer or give feedback first");
                return Ok(RunOutcome::NeedsAttention(attention(
                    AttentionKind::Error,
                    message,
                )));
            }
        }
        let outcome = match self.run_started(task, cancel).await {
            Ok(outcome) => outcome,
            Err(EngineError::Cancelled) => return Ok(RunOutcome::Cancelled),
            Err(error) => RunOutcome::NeedsAttention(attention(
                AttentionKind::Error,
                format!("the run failed: {error}; answer to try again"),
            )),
        };
        if let RunOutcome::NeedsAttention(attention) = &outcome {
            // The owner may have cancelled meanwhile: then the transition is refused, and the
            // task stays as they left it.
            match self
                .store
                .transition(
                    Actor::Deft,
                    id,
                    Transition::NeedAttention(attention.clone()),
                    None,
                )
                .await
            {
                Ok(_) | Err(deft_store::StoreError::Transition(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(outcome)
    }

    async fn run_started(
        &self,
        task: Task,
        cancel: &CancellationToken,
    ) -> Result<RunOutcome, EngineError> {
        let id = task.id.clone();
        let began = std::time::Instant::now();
        let owner = self.store.user_by_id(&task.owner).await?;
        let mut progress = self.store.progress(&id).await?.unwrap_or_default();
        // New input on a completed task: a new round in the same branch and pull request.
        if progress.phase == WorkPhase::Done {
            progress = progress.next_round();
            self.store.set_progress(&id, &progress).await?;
        }
        let (said, heard) = self.owner_messages(&id, 0).await?;
        if progress.phase == WorkPhase::Learning {
            // What the pull requests hold now is this round's to address.
            self.gather_feedback(&task, &owner, &mut progress).await?;
            // The owner's feedback may state a convention worth keeping for every later task.
            if let Some(stop) = self.learn(&task, &owner, &said, cancel).await? {
                return Ok(RunOutcome::NeedsAttention(stop));
            }
            progress.enter(WorkPhase::Planning);
            self.store.set_progress(&id, &progress).await?;
        }
        let cloned = match self.read_repositories(&task, &owner).await? {
            Ok(cloned) => cloned,
            Err(stop) => return Ok(RunOutcome::NeedsAttention(stop)),
        };
        tracing::debug!(task.id = %id.as_str(), ms = began.elapsed().as_millis(), "repositories read");
        let learnings = self.learnings(&owner).await?;
        let environment = self.store.environment(&owner.id).await?;
        let mut cloned = cloned;
        let chosen = match self.choose_environment(&task, &cloned.repos).await? {
            Ok(chosen) => chosen,
            Err(stop) => {
                // No clone goes on being written behind a run that ended.
                let _ = cloned.checkouts.wait().await;
                return Ok(RunOutcome::NeedsAttention(stop));
            }
        };
        tracing::debug!(task.id = %id.as_str(), ms = began.elapsed().as_millis(), "environment chosen");
        let spent = AtomicI64::new(task.usage.input_tokens + task.usage.output_tokens);
        // The planner starts reading while the sandbox is made: nothing in its first request
        // needs the sandbox, unless the owner's MCP servers are to offer their tools in it;
        // and no tokens are spent before an image that may not build is made.
        let early = (progress.phase == WorkPhase::Planning
            && self.edit_format == EditFormat::ToolCalls
            && environment.mcp.servers.is_empty()
            && !self.builds_image(&chosen))
        .then(|| {
            let text = owner::task_text(
                &owner.name,
                &task.description,
                &said.messages,
                &progress.gathered,
            );
            Self::planning_request(&cloned.repos, &learnings, text)
        });
        let (prepared, first) = self
            .prepare_while_planning(
                &task,
                &owner,
                (cloned, chosen, environment),
                early,
                &spent,
                cancel,
            )
            .await?;
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(stop) => return Ok(RunOutcome::NeedsAttention(stop)),
        };
        let first = match first {
            None => None,
            Some((Phase::Done(completion), request)) => Some((completion, request)),
            Some((Phase::Stop(stop), _)) => return Ok(RunOutcome::NeedsAttention(stop)),
        };
        let start::Prepared {
            repos,
            branch,
            sandbox,
            ..
        } = prepared;
        let context = Context {
            task,
            owner,
            repos,
            learnings,
            branch,
            answers: said.messages.into(),
            feedback: said.feedback.into(),
            gathered: progress.gathered.clone(),
            heard: heard.into(),
            spent,
            web: self.web.clone().map(|search| {
                let policy = start::egress_policy(&prepared.environment.network);
                crate::web::Web::new(
                    search,
                    deft_web::FetchPolicy::new(policy),
                    &progress.sources,
                )
            }),
        };

        // The user's MCP servers run in this sandbox; one that fails is left out, and said so.
        let (mut mcp, started) = crate::mcp::McpServers::start(
            &*sandbox,
            &prepared.environment.mcp,
            prepared.environment.env.as_map(),
            &prepared.secrets,
        )
        .await;
        mcp.call_timeout = self.limits.mcp_call_timeout;
        for report in &started {
            if let Err(error) = self
                .store
                .append_event(&id, deft_core::EventKind::Step, crate::mcp::event(report))
                .await
            {
                tracing::warn!(task.id = %id, error = %error, "cannot record an MCP server's start");
            }
        }
        let outcome = self
            .work(
                &context,
                &*sandbox,
                &mcp,
                &mut progress,
                &prepared.network_log,
                first,
                cancel,
            )
            .await;
        mcp.shutdown().await;
        prepared.network_log.stop();
        // Only once nothing of the task runs: the caches' directory is the task's to change.
        drop(sandbox);
        drop(prepared.image);
        prepared.caches.give_back();
        outcome
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one call site, each argument named there"
    )]
    async fn work(
        &self,
        context: &Context,
        sandbox: &TaskSandbox,
        mcp: &crate::mcp::McpServers,
        progress: &mut Progress,
        network: &start::NetworkLog,
        first: Option<(deft_llm::Completion, deft_llm::Request)>,
        cancel: &CancellationToken,
    ) -> Result<RunOutcome, EngineError> {
        let id = &context.task.id;
        let names = context
            .repos
            .iter()
            .filter_map(|(_, dir, _)| dir.file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .collect();
        let mut tools = Tools::new(sandbox, &self.workspaces.join(id.as_str()))
            .with_mcp(mcp)
            .with_web(context.web.as_ref())
            .with_repositories(names);

        let mut plan = context.task.plan.clone();
        // The calls a plan of one step opens with, when the planner made them.
        let mut opening = Vec::new();
        if progress.phase == WorkPhase::Planning {
            if first.is_none() {
                self.step(id, StepEvent::new(WorkStep::Planning, StepStatus::Started))
                    .await?;
            }
            let planning::Planned {
                plan: made,
                opening: calls,
            } = match self.plan(context, &mut tools, first, cancel).await? {
                Phase::Done(planned) => planned,
                Phase::Stop(attention) => return Ok(RunOutcome::NeedsAttention(attention)),
            };
            opening = calls;
            self.store.set_plan(id, &made).await?;
            let steps = made.steps.len();
            plan = Some(made);
            self.step(
                id,
                StepEvent::new(WorkStep::Planning, StepStatus::Done).count(steps),
            )
            .await?;
            progress.start_execution();
            if context.task.approve_plan {
                // What the owner approves is the plan; the planner's calls are made again by
                // the executor if they are still wanted.
                progress.enter(WorkPhase::Approval);
                self.store.set_progress(id, progress).await?;
                return Ok(RunOutcome::NeedsAttention(attention(
                    AttentionKind::PlanApproval,
                    "The plan waits for your approval; approve it (edited or not) to continue.",
                )));
            }
            self.store.set_progress(id, progress).await?;
        }
        if progress.phase == WorkPhase::Approval {
            // Approved: the plan as the owner left it, edited or not.
            plan = self.store.task_by_id(id).await?.plan;
            progress.start_execution();
            self.store.set_progress(id, progress).await?;
        }
        let plan = plan.unwrap_or(Plan {
            requirements: vec![],
            acceptance_criteria: vec![],
            steps: vec![context.task.description.clone()],
        });

        // Execution, step by step, each verified before the next.
        if progress.phase == WorkPhase::Execution {
            let started = |index: usize| {
                StepEvent::new(WorkStep::Execution, StepStatus::Started)
                    .index(index)
                    .summary(plan.steps[index].clone())
            };
            // Whether the step's start is logged already: with the previous step's end, in
            // its transaction.
            let mut announced = false;
            for index in progress.step..plan.steps.len() {
                if self.drain.is_cancelled() {
                    return Err(EngineError::Cancelled);
                }
                if !announced {
                    self.step(id, started(index)).await?;
                }
                let step = agent::StepInput {
                    plan: &plan,
                    index,
                    notes: &progress.notes,
                    opening: if index == 0 { &opening } else { &[] },
                };
                let done = match self.attempt_step(context, step, &mut tools, cancel).await? {
                    Phase::Done(done) => done,
                    Phase::Stop(attention) => return Ok(RunOutcome::NeedsAttention(attention)),
                };
                let summary = done.summary;
                progress.step = index + 1;
                progress.summaries.push(summary.clone());
                progress.notes.push(done.note);
                network.count_into(progress);
                if let Some(web) = &context.web {
                    progress.sources = web.sources();
                }
                let mut steps = vec![
                    StepEvent::new(WorkStep::Execution, StepStatus::Verified)
                        .index(index)
                        .summary(summary),
                ];
                announced = index + 1 < plan.steps.len() && !self.drain.is_cancelled();
                if announced {
                    steps.push(started(index + 1));
                }
                self.store.set_progress_with(id, progress, &steps).await?;
            }
            progress.enter(WorkPhase::Review);
            self.store.set_progress(id, progress).await?;
        }

        if progress.phase == WorkPhase::Review {
            if self.drain.is_cancelled() {
                return Err(EngineError::Cancelled);
            }
            let review = match self
                .review_and_fix(context, sandbox, &plan, &mut tools, progress, cancel)
                .await?
            {
                Phase::Done(review) => review,
                Phase::Stop(attention) => return Ok(RunOutcome::NeedsAttention(attention)),
            };
            // Still in review: the answer is read by a fresh review, which may ask for fixes.
            if let Some(question) = self
                .unchecked_question(context, sandbox, &plan, &review)
                .await?
            {
                let asked = self.put_question(context, &question).await?;
                return Ok(RunOutcome::NeedsAttention(asked));
            }
            progress.review = Some(review);
            progress.enter(WorkPhase::Completion);
            network.count_into(progress);
            self.store.set_progress(id, progress).await?;
        }

        // Completion: commit, push, pull requests.
        // From here deft's git commits, pushes and diffs the clones: the task's MCP servers,
        // which share the workspace, wait until the run ends.
        let paused = sandbox.pause_programs();
        network.count_into(progress);
        let completed = self.complete(context, &plan, progress, cancel).await?;
        drop(paused);
        if let Some(stop) = completed {
            return Ok(RunOutcome::NeedsAttention(stop));
        }
        progress.enter(WorkPhase::Done);
        progress.step = plan.steps.len();
        self.store.set_progress(id, progress).await?;
        self.store
            .transition(Actor::Deft, id, Transition::Complete, None)
            .await?;
        // A message that came after the agent last listened (during the review or the
        // completion) would otherwise go unanswered: it opens a new round at once, as it
        // would have had it come a moment later.
        if !self.hear_owner(context).await?.is_empty() {
            let note = StepEvent::new(WorkStep::Completion, StepStatus::Reopened)
                .reason("the owner wrote while the task was finishing");
            self.store
                .transition(
                    Actor::Deft,
                    id,
                    Transition::Steer,
                    Some((deft_core::EventKind::Step, note.to_data())),
                )
                .await?;
        }
        Ok(RunOutcome::Completed)
    }

    /// The sandbox made (`prepare`) while the planner, when `early` holds its first request,
    /// answers it: the model's first request does not wait for the clones and the sandbox.
    /// The planner's answer is taken only when the sandbox is ready; a start that fails drops
    /// the request.
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site, each argument named there"
    )]
    async fn prepare_while_planning(
        &self,
        task: &Task,
        owner: &User,
        (cloned, chosen, environment): (
            start::Cloned,
            environment::Chosen,
            deft_store::Environment,
        ),
        early: Option<deft_llm::Request>,
        spent: &AtomicI64,
        cancel: &CancellationToken,
    ) -> Result<(Result<start::Prepared, Attention>, Option<Early>), EngineError> {
        let prepare = self.prepare(task, owner, cloned, chosen, environment, cancel);
        let Some(mut request) = early else {
            return Ok((prepare.await?, None));
        };
        let planning = async {
            self.step(
                &task.id,
                StepEvent::new(WorkStep::Planning, StepStatus::Started),
            )
            .await?;
            tracing::debug!(task.id = %task.id.as_str(), "planner asked while the sandbox is made");
            let answer = self
                .call(
                    &self.planner,
                    "planner",
                    &task.id,
                    spent,
                    &mut request,
                    cancel,
                )
                .await?;
            Ok::<_, EngineError>((answer, request))
        };
        tokio::pin!(prepare, planning);
        let mut answered = None;
        let prepared = loop {
            tokio::select! {
                prepared = &mut prepare => break prepared?,
                answer = &mut planning, if answered.is_none() => answered = Some(answer),
            }
        };
        if prepared.is_err() {
            return Ok((prepared, None));
        }
        let answer = match answered {
            Some(answer) => answer?,
            None => planning.await?,
        };
        Ok((prepared, Some(answer)))
    }

    /// Self-review: a fresh reviewer reads the whole diff against the plan; fixes it asks for
    /// go back to execution, a bounded number of times. The last verdict.
    async fn review_and_fix(
        &self,
        context: &Context,
        sandbox: &TaskSandbox,
        plan: &Plan,
        tools: &mut Tools<'_, TaskSandbox>,
        progress: &mut Progress,
        cancel: &CancellationToken,
    ) -> Result<Phase<SelfReview>, EngineError> {
        let id = &context.task.id;
        let mut rounds = 0;
        loop {
            let review = match self.review(context, sandbox, plan, cancel).await? {
                Phase::Done(review) => review,
                Phase::Stop(attention) => return Ok(Phase::Stop(attention)),
            };
            let mut event = StepEvent::new(WorkStep::Review, StepStatus::Done);
            event.verdict = Some(review.verdict.as_str().to_owned());
            event.fixes = review.fixes.clone();
            self.step(id, event).await?;
            if review.verdict != Verdict::Fix
                || review.fixes.is_empty()
                || rounds >= self.limits.review_rounds
            {
                return Ok(Phase::Done(review));
            }
            rounds += 1;
            let mut fixing = plan.clone();
            fixing.steps.push(format!(
                "Address the self-review: {}",
                review.fixes.join("; ")
            ));
            let index = fixing.steps.len() - 1;
            self.step(
                id,
                StepEvent::new(WorkStep::Execution, StepStatus::Started)
                    .index(index)
                    .summary(fixing.steps[index].clone()),
            )
            .await?;
            let notes = progress.notes.clone();
            let step = agent::StepInput {
                plan: &fixing,
                index,
                notes: &notes,
                opening: &[],
            };
            match self.attempt_fix(context, step, tools, cancel).await? {
                Phase::Done(Some(done)) => {
                    progress.summaries.push(done.summary);
                    progress.notes.push(done.note);
                }
                // The fix broke what passed and was undone: the verified change stands, and
                // the reviewer's fixes are left open in the pull request.
                Phase::Done(None) => return Ok(Phase::Done(review)),
                Phase::Stop(attention) => return Ok(Phase::Stop(attention)),
            }
        }
    }

    /// Records a work step in the task's log.
    async fn step(&self, id: &TaskId, event: StepEvent) -> Result<(), EngineError> {
        self.store
            .append_event(id, deft_core::EventKind::Step, event.to_data())
            .await?;
        Ok(())
    }
}
