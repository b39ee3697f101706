//! The agent's side of a run: each plan step's executor turns with the tools, the step's
//! verification by the repositories' own checks, and what every phase shares (a model's turn,
//! a tool's run, a question to the owner). Planning is in `planning.rs`, the self-review in
//! `review.rs`.

use std::sync::atomic::Ordering;
use std::time::Instant;

use deft_core::{AttentionKind, EventKind, Plan, StepEvent, StepStatus, TaskId, WorkStep};
use deft_llm::{Completion, Message, ModelClient, ModelError, Request, ToolResult, ToolSpec};
use deft_sandbox::ExecRequest;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Context, Engine, EngineError, Phase, TaskSandbox, attention};
use crate::loops::{LoopWatch, Repetition};
use crate::prompts::{execution, list, system_prompt, tail};
use crate::task_commands::TaskCommand;
use crate::tools::{Effect, Tools, specs};

impl Engine {
    /// One attempt at a step of `plan`, in a fresh conversation that has the plan, the `notes`
    /// of the steps before and why an `earlier` attempt gave up; the step's summary and its own
    /// note once its checks pass.
    pub(super) async fn execute(
        &self,
        context: &Context,
        step: StepInput<'_>,
        earlier: Option<&str>,
        start: &mut super::attempts::StepStart,
        tools: &mut Tools<'_, TaskSandbox>,
        cancel: &CancellationToken,
    ) -> Result<Phase<StepEnd>, EngineError> {
        let StepInput {
            plan,
            index,
            notes,
            opening,
        } = step;
        // Steering sent during the previous step is part of this step's prompt.
        self.hear_owner(context).await?;
        let plan_text = plan_text(plan, index, notes);
        let system = system_prompt(
            &context.repos,
            &context.learnings,
            "execution",
            &execution(&plan_text),
        );
        let built_in: Vec<ToolSpec> = specs()
            .into_iter()
            .filter(|t| t.name != "submit_plan")
            .collect();
        let mut request = Request {
            system,
            messages: vec![Message::user(
                self.step_message(context, plan, index, earlier, tools.sandbox(), cancel)
                    .await?,
            )],
            tools: Vec::new(),
            max_tokens: 8192,
        };
        let mut failed = 0;
        let mut loops = LoopWatch::new(self.limits.repeats);
        let mut did = crate::notes::StepNotes::default();
        let mut sent_back = 0;
        let mut turns = 0;
        // The calls the planner opened the step with, as if the executor had made them.
        if !opening.is_empty() {
            request.messages.push(Message {
                role: deft_llm::Role::Assistant,
                content: opening
                    .iter()
                    .cloned()
                    .map(deft_llm::Content::ToolCall)
                    .collect(),
            });
            let mut results = Vec::new();
            for call in opening {
                if may_change(call) {
                    start.before_change(tools.sandbox(), cancel).await;
                }
                let output = self.run_tool(&context.task.id, tools, call, cancel).await?;
                did.record(call, &output);
                results.push(ToolResult {
                    call_id: call.id.clone(),
                    content: output.content,
                    is_error: output.is_error,
                });
            }
            request.messages.push(Message::tool_results(results));
        }
        let done_with = |summary: String, did: &crate::notes::StepNotes| {
            StepEnd::Done(StepDone {
                note: did.note(index + 1, &summary),
                summary,
            })
        };
        for _ in 0..self.limits.turns_per_step {
            request.tools = tools.offered(&built_in).await;
            crate::history::trim_old_results(&mut request.messages);
            let Heard { calls, text } = match self
                .turn(&self.executor, "executor", context, &mut request, cancel)
                .await?
            {
                Phase::Done(heard) => heard,
                Phase::Stop(attention) => return Ok(Phase::Stop(attention)),
            };
            if calls.is_empty() {
                // Most models end a turn by answering in words: that ends the step as
                // `finish` would, the reply its summary, and the checks decide.
                match self
                    .check_done(context, tools.sandbox(), index, &[], &mut failed, cancel)
                    .await?
                {
                    Checked::Passed => {
                        return Ok(Phase::Done(done_with(reply_summary(&text), &did)));
                    }
                    Checked::Failed(failure) => request
                        .messages
                        .push(Message::user(failed_checks(&failure))),
                    Checked::GaveUp(why) => return Ok(Phase::Done(StepEnd::GaveUp(why))),
                    Checked::Asks(question) => return self.ask(context, &question).await,
                }
                continue;
            }
            let mut results = Vec::new();
            let mut done = None;
            for call in &calls {
                if may_change(call) {
                    start.before_change(tools.sandbox(), cancel).await;
                }
                let mut output = self
                    .run_or_send_back(&context.task.id, tools, call, &mut sent_back, cancel)
                    .await?;
                did.record(call, &output);
                match &output.effect {
                    Effect::Ask(question) => return self.ask(context, question).await,
                    Effect::Finish(summary) => {
                        match self
                            .check_done(context, tools.sandbox(), index, &[], &mut failed, cancel)
                            .await?
                        {
                            Checked::Passed => done = Some(summary.clone()),
                            Checked::Failed(failure) => {
                                output.content = failed_checks(&failure);
                                output.is_error = true;
                            }
                            Checked::GaveUp(why) => return Ok(Phase::Done(StepEnd::GaveUp(why))),
                            Checked::Asks(question) => return self.ask(context, &question).await,
                        }
                    }
                    _ => {}
                }
                // The same call over and over, or the same few in turn, is a loop, not
                // progress: told once, then the step ends.
                if !matches!(output.effect, Effect::Finish(_)) {
                    let arguments = call.arguments.to_json_text();
                    match loops.record(&call.name, &arguments) {
                        Repetition::None => {}
                        Repetition::Told(told) => {
                            output.content = format!("{}\n\n{told}", output.content);
                        }
                        Repetition::Stop(reason) => {
                            return Ok(Phase::Done(StepEnd::GaveUp(attention(
                                AttentionKind::Error,
                                format!(
                                    "step {}: {reason}; give it a hint by answering",
                                    index + 1
                                ),
                            ))));
                        }
                    }
                }
                results.push(ToolResult {
                    call_id: call.id.clone(),
                    content: output.content,
                    is_error: output.is_error,
                });
            }
            if let Some(summary) = done {
                return Ok(Phase::Done(done_with(summary, &did)));
            }
            // Many turns that change no file are a loop too, however varied their calls.
            turns += 1;
            if turns >= WATCHED_FROM_TURN
                && let Some(state) = workspace_state(tools.sandbox(), cancel).await
            {
                match loops.turn_ended(&state) {
                    Repetition::None => {}
                    Repetition::Told(told) => {
                        if let Some(last) = results.last_mut() {
                            last.content = format!("{}\n\n{told}", last.content);
                        }
                    }
                    Repetition::Stop(reason) => {
                        return Ok(Phase::Done(StepEnd::GaveUp(attention(
                            AttentionKind::Error,
                            format!("step {}: {reason}; give it a hint by answering", index + 1),
                        ))));
                    }
                }
            }
            let mut turn = Message::tool_results(results);
            let said = self.hear_owner(context).await?;
            if !said.is_empty() {
                turn.content.push(deft_llm::Content::Text(format!(
                    "The owner has just said (take it into account from now on):\n{}",
                    said.join("\n")
                )));
            }
            request.messages.push(turn);
        }
        Ok(Phase::Done(StepEnd::GaveUp(attention(
            AttentionKind::Error,
            format!("step {} took too many turns", index + 1),
        ))))
    }

    /// The checks run on a step the model says is done (by `finish`, or by answering in
    /// words); `failed` counts the failures so far, and too many stop the run.
    pub(super) async fn check_done(
        &self,
        context: &Context,
        sandbox: &TaskSandbox,
        index: usize,
        commands: &[TaskCommand],
        failed: &mut u32,
        cancel: &CancellationToken,
    ) -> Result<Checked, EngineError> {
        let failure = match self.verify(context, sandbox, commands, cancel).await {
            Ok(()) => {
                // Passing checks cannot tell a made-up address from the real one.
                return Ok(match self.unsourced_question(context, sandbox).await? {
                    Some(question) => Checked::Asks(question),
                    None => Checked::Passed,
                });
            }
            // Stopped, not failed: no verification_failed event, no retry.
            Err(_) if cancel.is_cancelled() => return Err(EngineError::Cancelled),
            Err(failure) => failure,
        };
        *failed += 1;
        self.step(
            &context.task.id,
            StepEvent::new(WorkStep::Execution, StepStatus::VerificationFailed)
                .index(index)
                .output(tail(&failure, 2000)),
        )
        .await?;
        if *failed > self.limits.verify_retries {
            return Ok(Checked::GaveUp(attention(
                AttentionKind::Error,
                format!(
                    "step {} keeps failing its checks after {failed} tries; the last failure:\n{}",
                    index + 1,
                    tail(&failure, 1500)
                ),
            )));
        }
        Ok(Checked::Failed(failure))
    }

    /// A step's first message: the task, where the checks stand, the step, and why an earlier
    /// attempt at it ended.
    pub(super) async fn step_message(
        &self,
        context: &Context,
        plan: &Plan,
        index: usize,
        earlier: Option<&str>,
        sandbox: &TaskSandbox,
        cancel: &CancellationToken,
    ) -> Result<String, EngineError> {
        // After a verified step the checks pass: they are run only where that is not known.
        let checks_now = if index == 0 || earlier.is_some() {
            self.checks_now(context, sandbox, cancel).await?
        } else {
            self.checks_passing(context)
        };
        // A plan that is the task itself as one step is not said twice.
        let step = if plan.steps.len() == 1
            && context
                .task
                .description
                .trim()
                .starts_with(plan.steps[0].trim())
        {
            String::new()
        } else {
            format!(
                "\n\nDo step {} of {}: {}",
                index + 1,
                plan.steps.len(),
                plan.steps[index]
            )
        };
        Ok(format!(
            "{}{checks_now}{step}{}",
            self.task_message(context),
            earlier.map_or(String::new(), |why| format!(
                "\n\nAn earlier attempt at this step ended: {}\nIts changes were undone; try another way.",
                tail(why, 800)
            ))
        ))
    }

    /// What a step after a verified one is told of the checks: that they pass.
    pub(super) fn checks_passing(&self, context: &Context) -> String {
        let checks: Vec<&str> = context.checks().map(|(_, check)| check).collect();
        if checks.is_empty() {
            return String::new();
        }
        format!(
            "\n\nThe checks (`{}`) pass now; they must still pass when the step is done.",
            checks.join("`, `")
        )
    }

    /// Where the repositories' checks stand as a step begins, for its first message: a
    /// failing test names the code to change better than any description.
    pub(super) async fn checks_now(
        &self,
        context: &Context,
        sandbox: &TaskSandbox,
        cancel: &CancellationToken,
    ) -> Result<String, EngineError> {
        if context.checks().next().is_none() {
            return Ok(String::new());
        }
        match self.verify(context, sandbox, &[], cancel).await {
            _ if cancel.is_cancelled() => Err(EngineError::Cancelled),
            Ok(()) => Ok(self.checks_passing(context)),
            Err(failure) => Ok(format!(
                "\n\nThe checks fail now (the task may be about this):\n{}",
                tail(&failure, 1500)
            )),
        }
    }

    /// Runs every repository's checks, then the `commands` the task says must work; the
    /// combined output of the first that fails. A command the sandbox does not have (exit 126
    /// or 127) fails nothing: the description named it, not the change.
    async fn verify(
        &self,
        context: &Context,
        sandbox: &TaskSandbox,
        commands: &[TaskCommand],
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        self.verify_checks(context, sandbox, cancel).await?;
        let place = match context.repos.as_slice() {
            [(_, _, facts)] => Some(facts.name.clone()),
            _ => None,
        };
        for command in commands {
            let request = ExecRequest {
                cwd: place.clone(),
                timeout: std::time::Duration::from_secs(120),
                ..ExecRequest::shell(&command.command)
            };
            let mut ignore = |_: &str| {};
            let run = tokio::select! {
                run = sandbox.exec(&request, &mut ignore) => run,
                _ = cancel.cancelled() => return Err("the run was cancelled".into()),
            };
            let Ok(outcome) = run else { continue };
            let code = outcome.exit_code();
            if code == 126 || code == 127 {
                continue;
            }
            let output = tail(&outcome.output, 1500);
            if code != 0 {
                return Err(format!(
                    "`{}` (the task says it must work) exited {code}:\n{output}",
                    command.command
                ));
            }
            if let Some(expect) = command.expect.as_deref()
                && !outcome.output.contains(expect)
            {
                return Err(format!(
                    "`{}` must print {expect}, the task says; it printed:\n{output}",
                    command.command
                ));
            }
        }
        Ok(())
    }

    /// Runs every repository's checks; the combined output of the first that fails.
    async fn verify_checks(
        &self,
        context: &Context,
        sandbox: &TaskSandbox,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        for (repo, _, facts) in &context.repos {
            for check in &facts.checks {
                let request = ExecRequest {
                    cwd: Some(facts.name.clone()),
                    ..ExecRequest::shell(check)
                };
                let mut ignore = |_: &str| {};
                let run = tokio::select! {
                    run = sandbox.exec(&request, &mut ignore) => run,
                    _ = cancel.cancelled() => return Err("the run was cancelled".into()),
                };
                match run {
                    Ok(outcome) if outcome.exit_code() == 0 => {}
                    Ok(outcome) => {
                        return Err(format!(
                            "`{check}` in {} exited {}:\n{}",
                            repo.name,
                            outcome.exit_code(),
                            outcome.output
                        ));
                    }
                    Err(error) => {
                        return Err(format!("`{check}` in {} could not run: {error}", repo.name));
                    }
                }
            }
        }
        Ok(())
    }

    /// Puts a question to the owner: in the task's log, and on the issue the task came from,
    /// where a reply answers it.
    pub(super) async fn ask<T>(
        &self,
        context: &Context,
        question: &str,
    ) -> Result<Phase<T>, EngineError> {
        Ok(Phase::Stop(self.put_question(context, question).await?))
    }

    /// `ask`, for a caller that stops the run itself.
    pub(super) async fn put_question(
        &self,
        context: &Context,
        question: &str,
    ) -> Result<deft_core::Attention, EngineError> {
        let id = &context.task.id;
        let event = self
            .store
            .append_event(id, EventKind::Question, json!({"question": question}))
            .await?;
        // The question as stored, the owner's secrets redacted: it may quote the workspace
        // (a diff, a guessed address), and the issue it goes to may be public.
        let question = event.data["question"].as_str().unwrap_or(question);
        self.ask_on_issue(context, question).await?;
        Ok(attention(AttentionKind::Question, question))
    }

    pub(super) async fn run_tool(
        &self,
        id: &TaskId,
        tools: &mut Tools<'_, TaskSandbox>,
        call: &deft_llm::ToolCall,
        cancel: &CancellationToken,
    ) -> Result<crate::ToolOutput, EngineError> {
        // The call is in the log already, with the model's answer that asked for it.
        // Dropping the call on cancellation kills its sandboxed command, with its children.
        let mut ignore = |_: &str| {};
        let output = tokio::select! {
            output = tools.call(call, &mut ignore) => output,
            _ = cancel.cancelled() => return Err(EngineError::Cancelled),
        };
        self.store
            .append_event(id, EventKind::ToolResult, json!({"id": call.id, "is_error": output.is_error, "content": tail(&output.content, 4000)}))
            .await?;
        Ok(output)
    }

    /// Runs `call`, unless it is a question that is not for the owner: that is sent back
    /// (a few times per phase, however it is put; then it goes to the owner), and logged as
    /// the call's result.
    pub(super) async fn run_or_send_back(
        &self,
        id: &TaskId,
        tools: &mut Tools<'_, TaskSandbox>,
        call: &deft_llm::ToolCall,
        sent_back: &mut u32,
        cancel: &CancellationToken,
    ) -> Result<crate::ToolOutput, EngineError> {
        let arguments = call.arguments.as_object();
        let why = (call.name == "ask_user" && *sent_back < crate::questions::SENT_BACK)
            .then(|| arguments["question"].as_str())
            .flatten()
            .and_then(crate::questions::not_for_the_owner);
        let Some(why) = why else {
            return self.run_tool(id, tools, call, cancel).await;
        };
        *sent_back += 1;
        let told = crate::questions::sent_back(why);
        self.store
            .append_event(
                id,
                EventKind::ToolResult,
                json!({"id": call.id, "is_error": true, "content": told}),
            )
            .await?;
        Ok(crate::ToolOutput::error(told))
    }

    /// One turn of a tool-using conversation: the model's answer joins the conversation, and
    /// its tool calls come back to be run.
    pub(super) async fn turn(
        &self,
        client: &ModelClient,
        role: &str,
        context: &Context,
        request: &mut Request,
        cancel: &CancellationToken,
    ) -> Result<Phase<Heard>, EngineError> {
        let completion = match self
            .call(
                client,
                role,
                &context.task.id,
                &context.spent,
                request,
                cancel,
            )
            .await?
        {
            Phase::Done(completion) => completion,
            Phase::Stop(attention) => return Ok(Phase::Stop(attention)),
        };
        Ok(Phase::Done(heard(request, completion)))
    }

    /// One model call with its usage recorded (and counted in `spent`, the task's tokens so
    /// far); a model problem the owner can fix stops the run.
    pub(super) async fn call(
        &self,
        client: &ModelClient,
        role: &str,
        id: &TaskId,
        spent: &std::sync::atomic::AtomicI64,
        request: &mut Request,
        cancel: &CancellationToken,
    ) -> Result<Phase<Completion>, EngineError> {
        let started = Instant::now();
        crate::context::fit(request, self.limits.context_tokens);
        // The model never receives a request over its window: when eliding old output is not
        // enough, the task stops and says so.
        let size = crate::context::estimate(request);
        if size > self.limits.context_tokens {
            return Ok(Phase::Stop(attention(
                AttentionKind::Error,
                format!(
                    "the next request would hold about {size} tokens, more than the {} the model's window allows, even with old tool output elided; split the task or use a model with a larger window",
                    self.limits.context_tokens
                ),
            )));
        }
        if let Some(budget) = self.limits.task_tokens {
            let spent = spent.load(Ordering::Relaxed);
            let needed = crate::context::estimate(request) as i64 + 256;
            if spent + needed > budget {
                return Ok(Phase::Stop(attention(
                    AttentionKind::TokenBudget,
                    format!(
                        "the task's token budget is spent: {spent} of {budget} tokens used, and the next call could need {needed}; raise limits.task_tokens and answer to continue"
                    ),
                )));
            }
            // The answer may use what is left, and no more.
            request.max_tokens = request
                .max_tokens
                .min((budget - spent - needed + 256) as u32);
        }
        match deft_llm::complete_with_usable_tool_calls(client, request, cancel).await {
            Ok(completion) => {
                let usage = completion.response.usage;
                spent.fetch_add(usage.input_tokens + usage.output_tokens, Ordering::Relaxed);
                let data = json!({
                    "role": role, "model": client.config().label(), "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens, "cached_tokens": usage.cached_tokens,
                    "attempts": completion.attempts, "duration_ms": started.elapsed().as_millis() as u64,
                    "duration_us": started.elapsed().as_micros() as u64,
                });
                // The calls the answer asks for are logged with it when tools were offered (they
                // are run, each result logged as it comes).
                let calls: Vec<serde_json::Value> = if request.tools.is_empty() {
                    Vec::new()
                } else {
                    completion.response.tool_calls().map(call_event).collect()
                };
                self.store
                    .record_model_call(id, &client.config().label(), usage, Some(data), &calls)
                    .await?;
                Ok(Phase::Done(completion))
            }
            Err(ModelError::Cancelled) => Err(EngineError::Cancelled),
            Err(error) => {
                self.store
                    .append_event(id, EventKind::Error, json!({"message": error.to_string()}))
                    .await?;
                Ok(Phase::Stop(attention(
                    AttentionKind::Error,
                    format!("the model call failed: {error}"),
                )))
            }
        }
    }
}

/// The plan as a step's prompt shows it: its own step marked, and the notes of the steps
/// before.
pub(super) fn plan_text(plan: &Plan, index: usize, notes: &[String]) -> String {
    let text = format!(
        "Requirements:\n{}\nAcceptance criteria:\n{}\nSteps:\n{}",
        list(&plan.requirements),
        list(&plan.acceptance_criteria),
        plan.steps
            .iter()
            .enumerate()
            .map(|(i, s)| format!(
                "{}. {s}{}",
                i + 1,
                if i == index { "   <- this step" } else { "" }
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
    if notes.is_empty() {
        text
    } else {
        format!(
            "{text}\n\nWhat the steps before did (their files are as they left them):\n{}",
            list(notes)
        )
    }
}

/// A step's summary from the model's closing words: their first paragraph, short.
pub(super) fn reply_summary(text: &str) -> String {
    let first = text.trim().split("\n\n").next().unwrap_or("").trim();
    if first.is_empty() {
        "done".to_owned()
    } else {
        first.chars().take(500).collect()
    }
}

/// A `tool_call` event's data.
pub(super) fn call_event(call: &deft_llm::ToolCall) -> serde_json::Value {
    json!({"id": call.id, "name": call.name, "arguments": call.arguments.as_object()})
}

/// From which turn of a step the workspace is fingerprinted after each: short steps, most of
/// them, pay nothing for it.
const WATCHED_FROM_TURN: usize = 5;

/// A fingerprint of every repository's changes in the workspace (git's status and diff,
/// taken in the sandbox), or `None` when it cannot be taken.
pub(super) async fn workspace_state(
    sandbox: &TaskSandbox,
    cancel: &CancellationToken,
) -> Option<String> {
    own_script(
        sandbox,
        "for d in /workspace/*/; do git -C \"$d\" status --porcelain=v1 -uall 2>/dev/null; git -C \"$d\" diff 2>/dev/null; done | cksum",
        std::time::Duration::from_secs(20),
        cancel,
    )
    .await
}

/// Runs a script of deft's own in the task's sandbox: its output (at most 64 KiB) when it
/// exited 0, `None` when it failed, timed out or the run was cancelled.
pub(super) async fn own_script(
    sandbox: &TaskSandbox,
    script: &str,
    timeout: std::time::Duration,
    cancel: &CancellationToken,
) -> Option<String> {
    let request = ExecRequest {
        timeout,
        output_cap: 64 * 1024,
        ..ExecRequest::shell(script)
    };
    let mut ignore = |_: &str| {};
    let run = tokio::select! {
        run = sandbox.exec(&request, &mut ignore) => run,
        _ = cancel.cancelled() => return None,
    };
    run.ok()
        .filter(|outcome| outcome.exit_code() == 0)
        .map(|outcome| outcome.output)
}

/// Whether `call` may change the workspace: a command, an edit, a tool of an MCP server.
pub(super) fn may_change(call: &deft_llm::ToolCall) -> bool {
    match call.name.as_str() {
        "bash" => true,
        "str_replace_based_edit_tool" => match &call.arguments {
            deft_llm::ToolArguments::Valid(arguments) => arguments["command"] != "view",
            deft_llm::ToolArguments::Malformed { .. } => false,
        },
        name => name.starts_with(crate::mcp::PREFIX),
    }
}

/// What one step of a plan is run with.
pub(super) struct StepInput<'a> {
    pub plan: &'a Plan,
    pub index: usize,
    /// The notes of the steps before it.
    pub notes: &'a [String],
    /// Calls made for it already, to run first (the planner's, for a plan of one step).
    pub opening: &'a [deft_llm::ToolCall],
}

/// How one attempt at a step ended.
pub(super) enum StepEnd {
    Done(StepDone),
    /// The attempt gave up (its checks kept failing, a loop, too many turns), saying why;
    /// another attempt, from the step's start, may do better.
    GaveUp(deft_core::Attention),
}

/// A step whose checks passed: what it says it did, and the note the next steps read.
pub(super) struct StepDone {
    pub summary: String,
    pub note: String,
}

/// What a model's answer holds: its tool calls, to run, and its words.
pub(super) struct Heard {
    pub calls: Vec<deft_llm::ToolCall>,
    pub text: String,
}

/// The model's answer joins the conversation.
pub(super) fn heard(request: &mut Request, completion: Completion) -> Heard {
    let calls = completion.response.tool_calls().cloned().collect();
    let text = completion.response.text();
    request.messages.push(completion.response.to_message());
    Heard { calls, text }
}

fn failed_checks(failure: &str) -> String {
    format!(
        "The checks failed, so the step is not done. Fix this, then call `finish` again:\n{failure}"
    )
}

/// How a step's claim to be done stood up to its checks.
pub(super) enum Checked {
    Passed,
    /// The checks failed: their output.
    Failed(String),
    /// Failed too often: the attempt gives up.
    GaveUp(deft_core::Attention),
    /// The checks pass, but the change needs something only the owner knows: this question.
    Asks(String),
}

/// A question to a model without tools.
pub(super) struct OneShot<'a> {
    pub client: &'a ModelClient,
    /// Who asks, for the log: `reviewer`, `learner`.
    pub role: &'a str,
    pub system: &'a str,
    pub max_tokens: u32,
}

impl Engine {
    /// Asks `asked` once, about `user`; the answer's text.
    pub(super) async fn one_shot(
        &self,
        asked: OneShot<'_>,
        id: &TaskId,
        spent: &std::sync::atomic::AtomicI64,
        user: String,
        cancel: &CancellationToken,
    ) -> Result<Phase<String>, EngineError> {
        let mut request = Request {
            system: vec![asked.system.to_owned()],
            messages: vec![Message::user(user)],
            tools: Vec::new(),
            max_tokens: asked.max_tokens,
        };
        Ok(
            match self
                .call(asked.client, asked.role, id, spent, &mut request, cancel)
                .await?
            {
                Phase::Done(completion) => Phase::Done(completion.response.text()),
                Phase::Stop(attention) => Phase::Stop(attention),
            },
        )
    }
}

/// The JSON value in a model's answer, from the first `open` to the last `close`: models wrap
/// what they are asked for in prose and code fences.
pub(super) fn json_between(text: &str, open: char, close: char) -> Option<Value> {
    let start = text.find(open)?;
    let end = text.rfind(close)?;
    serde_json::from_str(text.get(start..=end)?).ok()
}
