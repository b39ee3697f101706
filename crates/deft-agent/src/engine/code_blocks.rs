//! A step done by a model that writes code in its replies (`[model] edit_format =
//! "code_blocks"`): no tools are offered; the files the task names are in its first message,
//! a file it names is shown to it, the code it writes under a path goes into that file through
//! the editor (logged as the editor's calls), and the checks run after every change. A reply
//! with no code ends the step as `finish` would, and a reply that ends in a question is a
//! question, through the same gate as `ask_user`.

use std::collections::HashSet;

use deft_core::AttentionKind;
use deft_llm::{Message, Request, ToolArguments, ToolCall};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::agent::{
    Checked, Heard, StepDone, StepEnd, StepInput, call_event, plan_text, reply_summary,
};
use super::{Context, Engine, EngineError, Phase, TaskSandbox, attention};
use crate::blocks::{Block, Merged, blocks, merge, names_in};
use crate::loops::{LoopWatch, Repetition};
use crate::prompts::{WRITE_NOW, code_blocks, shown_file, tail};
use crate::task_commands::task_commands;
use crate::tools::{Effect, Tools};

/// Replies without code, before anything changed, that are answered by asking for the code
/// rather than taken as the step's end.
const NUDGES: u32 = 2;

/// Replies in a row whose code changed nothing before the attempt gives up: the model is
/// stuck, and a fresh attempt is worth more than more of the same.
const IDLE_REPLIES: u32 = 3;

/// How much warmer each turn that did not end the step samples, from the configured
/// temperature up to 1: at 0 the same message gets the same reply, and a stuck model needs
/// another one.
const WARMING: f32 = 0.25;

/// A repository of at most this many files, `SHOWN_IN_ALL` characters together, is shown
/// whole when the task names no file.
const SMALL_FILES: usize = 8;
const SHOWN_IN_ALL: usize = 24_000;

/// The most of a file shown back to the model at once.
const SHOWN: usize = 12_000;

impl Engine {
    /// One attempt at a step, by code written in the model's replies. Each turn is one
    /// message, written afresh: the task, the repository's files, the files shown to the model
    /// as they are now, and what its last reply did. A small model copies its own earlier
    /// replies when it sees them, so it sees their effect instead.
    pub(super) async fn write_step(
        &self,
        context: &Context,
        step: StepInput<'_>,
        earlier: Option<&str>,
        start: &mut super::attempts::StepStart,
        tools: &mut Tools<'_, TaskSandbox>,
        cancel: &CancellationToken,
    ) -> Result<Phase<StepEnd>, EngineError> {
        let StepInput {
            plan, index, notes, ..
        } = step;
        self.hear_owner(context).await?;
        let plan_text = (plan.steps.len() > 1).then(|| plan_text(plan, index, notes));
        let system = code_blocks(&context.repos, &context.learnings, plan_text.as_deref());
        let opening = self
            .step_message(context, plan, index, earlier, tools.sandbox(), cancel)
            .await?;
        let commands = task_commands(owners_words(&context.task.description));
        let single = context.repos.len() == 1;
        // The files shown with every message, in the order they were first shown: those the
        // task names, then those the model names or writes.
        let mut shown: Vec<String> = context
            .repos
            .iter()
            .flat_map(|(_, _, facts)| {
                facts.named.iter().map(move |(path, _)| {
                    if single {
                        path.clone()
                    } else {
                        format!("{}/{path}", facts.name)
                    }
                })
            })
            .collect();
        if shown.is_empty() {
            shown = small_repository(context, tools).await;
        }
        let mut feedback = String::new();
        let mut failed = 0;
        let mut loops = LoopWatch::new(self.limits.repeats);
        let mut did = crate::notes::StepNotes::default();
        let mut sent_back = 0;
        let mut nudged = 0;
        // Replies in a row that changed nothing.
        let mut idle = 0;
        // Every turn before this one did not end the step.
        for misses in 0..self.limits.turns_per_step {
            let mut request = Request {
                system: system.clone(),
                messages: vec![Message::user(
                    self.brief(context, tools, &opening, &shown, &feedback)
                        .await,
                )],
                tools: Vec::new(),
                max_tokens: 4096,
            };
            let client = warmed(&self.executor, misses);
            let Heard { text, .. } = match self
                .turn(&client, "executor", context, &mut request, cancel)
                .await?
            {
                Phase::Done(heard) => heard,
                Phase::Stop(attention) => return Ok(Phase::Stop(attention)),
            };
            // The same reply again is a loop, as the same call would be.
            let looped = match loops.record("reply", text.trim()) {
                Repetition::None => String::new(),
                Repetition::Told(told) => format!("\n\n{told}"),
                Repetition::Stop(reason) => {
                    return Ok(Phase::Done(StepEnd::GaveUp(attention(
                        AttentionKind::Error,
                        format!("step {}: {reason}; give it a hint by answering", index + 1),
                    ))));
                }
            };
            let found = blocks(&text);
            let answer = if found.is_empty() {
                if let Some(question) = question_in(&text) {
                    let call = synthetic("ask_user", json!({ "question": question }));
                    self.log_call(context, &call).await?;
                    let output = self
                        .run_or_send_back(&context.task.id, tools, &call, &mut sent_back, cancel)
                        .await?;
                    if let Effect::Ask(question) = &output.effect {
                        return self.ask(context, question).await;
                    }
                    format!("You asked: {question}\n{}", output.content)
                } else if self.show(tools, &text, &mut shown).await {
                    "The files you named are shown above.".to_owned()
                } else if !did.changed_any() && nudged < NUDGES {
                    // Saying what it will do is not doing it: the code is asked for.
                    nudged += 1;
                    "Your last reply had no code block, so nothing is changed yet.".to_owned()
                } else {
                    // Words alone end the step; the checks decide.
                    match self
                        .check_done(
                            context,
                            tools.sandbox(),
                            index,
                            &commands,
                            &mut failed,
                            cancel,
                        )
                        .await?
                    {
                        Checked::Passed => return Ok(Phase::Done(done(&did, index, &text))),
                        Checked::Failed(failure) => format!(
                            "The work is not done: the checks fail.\n{}",
                            tail(&failure, 3000)
                        ),
                        Checked::GaveUp(why) => return Ok(Phase::Done(StepEnd::GaveUp(why))),
                        Checked::Asks(question) => return self.ask(context, &question).await,
                    }
                }
            } else {
                let known: HashSet<String> = shown.iter().cloned().collect();
                let written = self
                    .write_blocks(context, tools, &found, &known, start, &mut did, cancel)
                    .await?;
                for path in &written.files {
                    if !shown.contains(path) {
                        shown.push(path.clone());
                    }
                }
                if !written.files.is_empty() || written.ran {
                    idle = 0;
                }
                if written.files.is_empty() && !written.ran {
                    idle += 1;
                    if idle >= IDLE_REPLIES {
                        return Ok(Phase::Done(StepEnd::GaveUp(attention(
                            AttentionKind::Error,
                            format!(
                                "step {}: {idle} replies in a row changed nothing; the last:\n{}",
                                index + 1,
                                tail(&written.report, 800)
                            ),
                        ))));
                    }
                    let why = if written.unchanged {
                        "Nothing changed: your code is what the files already hold. Write them with the change the task asks for."
                    } else {
                        "Nothing was written: put the file's path on the line just above its code block."
                    };
                    format!("Your last reply:\n{}{why}", written.report)
                } else if written.files.is_empty() && !written.changed_by_commands {
                    // A command that wrote no block is a look around, not the change: the
                    // checks wait for one.
                    format!("Your last reply:\n{}", written.report)
                } else {
                    match self
                        .check_done(
                            context,
                            tools.sandbox(),
                            index,
                            &commands,
                            &mut failed,
                            cancel,
                        )
                        .await?
                    {
                        Checked::Passed => {
                            return Ok(Phase::Done(done(&did, index, written.report.trim())));
                        }
                        Checked::Failed(failure) => format!(
                            "Your last reply:\n{}The files above are as it left them. The work is not done: the checks fail.\n{}",
                            written.report,
                            tail(&failure, 3000)
                        ),
                        Checked::GaveUp(why) => return Ok(Phase::Done(StepEnd::GaveUp(why))),
                        Checked::Asks(question) => return self.ask(context, &question).await,
                    }
                }
            };
            feedback = format!("{answer}{looped}");
        }
        Ok(Phase::Done(StepEnd::GaveUp(attention(
            AttentionKind::Error,
            format!("step {} took too many turns", index + 1),
        ))))
    }

    /// One turn's message: the step's opening, the repositories' file lists, each shown file
    /// as it is now, what the last reply did, and what to write.
    async fn brief(
        &self,
        context: &Context,
        tools: &Tools<'_, TaskSandbox>,
        opening: &str,
        shown: &[String],
        feedback: &str,
    ) -> String {
        let mut brief = format!("{opening}\n\n");
        for (_, _, facts) in &context.repos {
            if context.repos.len() == 1 {
                brief.push_str("The repository's files:\n");
            } else {
                brief.push_str(&format!(
                    "The files of repository `{0}` (their paths begin with `{0}/`):\n",
                    facts.name
                ));
            }
            brief.push_str(facts.map.trim_end());
            brief.push_str("\n\n");
        }
        for path in shown {
            let Ok(text) = tools.read_text(path).await else {
                continue;
            };
            if text.chars().count() > SHOWN {
                brief.push_str(&format!(
                    "{}(only the end of {path} is shown: write whole functions of it, not the whole file)\n\n",
                    shown_file(path, &tail(&text, SHOWN))
                ));
            } else {
                brief.push_str(&shown_file(path, &text));
                brief.push('\n');
            }
        }
        if !feedback.is_empty() {
            brief.push_str(feedback.trim_end());
            brief.push_str("\n\n");
        }
        brief.push_str(WRITE_NOW);
        brief
    }

    /// Puts each block into its file through the editor; what was written, and a line per
    /// block for the model.
    #[allow(clippy::too_many_arguments)]
    async fn write_blocks(
        &self,
        context: &Context,
        tools: &mut Tools<'_, TaskSandbox>,
        found: &[Block],
        shown: &HashSet<String>,
        start: &mut super::attempts::StepStart,
        did: &mut crate::notes::StepNotes,
        cancel: &CancellationToken,
    ) -> Result<Written, EngineError> {
        let mut written = Written::default();
        // A block with no name above it may be for any file the reply names that no block
        // before it went to: models list the files, then write one block each.
        let mut named: Vec<String> = Vec::new();
        for block in found {
            for name in block.names.iter().rev() {
                if !named.contains(name) {
                    named.push(name.clone());
                }
            }
        }
        // Then the files it was shown (those the task names, those it asked for): a model
        // that writes a file it was shown often writes no path at all.
        let mut seen: Vec<&String> = shown.iter().collect();
        seen.sort();
        for name in seen {
            if !named.contains(name) {
                named.push(name.clone());
            }
        }
        let single = context.repos.len() == 1;
        for (_, _, facts) in &context.repos {
            for (path, _) in &facts.named {
                let name = if single {
                    path.clone()
                } else {
                    format!("{}/{path}", facts.name)
                };
                if !named.contains(&name) {
                    named.push(name);
                }
            }
        }
        for block in found {
            let under_no_path = block.names.is_empty();
            let unnamed;
            let block = if under_no_path {
                unnamed = Block {
                    names: named
                        .iter()
                        .filter(|name| !written.files.contains(name))
                        .cloned()
                        .collect(),
                    lang: block.lang.clone(),
                    heading: None,
                    named_by: block.named_by.clone(),
                    body: block.body.clone(),
                };
                &unnamed
            } else {
                block
            };
            // Under no path, a block goes only where its lines place it: a guess at a rewrite
            // could land on any file the reply happened to name.
            let target = self.target(context, tools, block, !under_no_path).await;
            // A shell block under no path that fits no file by its lines is a command to run.
            // An empty file holds no line to place anything by: it takes no shell block.
            let placed = matches!(
                &target,
                Ok((_, Some(original), Merged::Whole(_) | Merged::Definitions { .. }))
                    if !original.trim().is_empty()
            );
            if block.is_shell() && under_no_path && !placed {
                self.run_block(
                    context,
                    tools,
                    &block.body,
                    start,
                    did,
                    &mut written,
                    cancel,
                )
                .await?;
                continue;
            }
            let (path, original, merged) = match target {
                Ok(target) => target,
                Err(why) => {
                    written
                        .report
                        .push_str(&format!("A block was not written: {why}.\n"));
                    continue;
                }
            };
            if original.as_deref() == Some(merged.text()) {
                written
                    .report
                    .push_str(&format!("{path} already reads as the block says.\n"));
                written.unchanged = true;
                continue;
            }
            let call = synthetic(
                "str_replace_based_edit_tool",
                json!({"command": "create", "path": path, "file_text": merged.text()}),
            );
            start.before_change(tools.sandbox(), cancel).await;
            self.log_call(context, &call).await?;
            let output = self
                .run_tool(&context.task.id, tools, &call, cancel)
                .await?;
            did.record(&call, &output);
            if output.is_error {
                written
                    .report
                    .push_str(&format!("{path} was not written: {}\n", output.content));
                continue;
            }
            written.report.push_str(&match (&original, &merged) {
                (None, _) => format!("Created {path}.\n"),
                (Some(_), Merged::Whole(_) | Merged::Rewrite(_)) => {
                    format!("Wrote the whole of {path}.\n")
                }
                (Some(_), Merged::Definitions { replaced, .. }) => format!(
                    "Changed {path}: {}.\n",
                    replaced
                        .iter()
                        .map(|line| format!("`{line}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
            written.files.push(path);
        }
        Ok(written)
    }

    /// Runs a shell block as the bash tool would, and reports how it ended.
    #[allow(clippy::too_many_arguments)]
    async fn run_block(
        &self,
        context: &Context,
        tools: &mut Tools<'_, TaskSandbox>,
        command: &str,
        start: &mut super::attempts::StepStart,
        did: &mut crate::notes::StepNotes,
        written: &mut Written,
        cancel: &CancellationToken,
    ) -> Result<(), EngineError> {
        let call = synthetic("bash", json!({ "command": command }));
        start.before_change(tools.sandbox(), cancel).await;
        let before = super::agent::workspace_state(tools.sandbox(), cancel).await;
        self.log_call(context, &call).await?;
        let output = self
            .run_tool(&context.task.id, tools, &call, cancel)
            .await?;
        did.record(&call, &output);
        written.ran = true;
        let after = super::agent::workspace_state(tools.sandbox(), cancel).await;
        written.changed_by_commands |= before.is_none() || before != after;
        written.report.push_str(&format!(
            "Ran `{}`:\n{}\n",
            crate::prompts::first_line(command, 200),
            tail(&output.content, 2000)
        ));
        Ok(())
    }

    /// The file a block is for, its text (`None`: a new file) and the block put into it. Of
    /// the files named above the block, the nearest whose lines place it wins (a test file
    /// named beside the code is not rewritten with the code); then the nearest it could
    /// rewrite; then a new file, named on the line just above it or by the task.
    async fn target(
        &self,
        context: &Context,
        tools: &Tools<'_, TaskSandbox>,
        block: &Block,
        may_rewrite: bool,
    ) -> Result<(String, Option<String>, Merged), String> {
        let mut rewrite = None;
        let mut refused = None;
        for name in &block.names {
            let Ok(text) = tools.read_text(name).await else {
                continue;
            };
            // A first line that named the file was taken out of the block: it was the file's
            // own when the file begins with it.
            let body = match &block.named_by {
                Some(line) if text.lines().next().map(str::trim) == Some(line.trim()) => {
                    format!("{line}\n{}", block.body)
                }
                _ => block.body.clone(),
            };
            match merge(&text, &body) {
                Ok(Merged::Rewrite(new)) => {
                    if rewrite.is_none() && may_rewrite {
                        rewrite = Some((name.clone(), Some(text), Merged::Rewrite(new)));
                    }
                }
                Ok(merged) => return Ok((name.clone(), Some(text), merged)),
                Err(why) => {
                    if refused.is_none() {
                        refused = Some(format!("for {name}, {why}"));
                    }
                }
            }
        }
        if let Some(rewrite) = rewrite {
            return Ok(rewrite);
        }
        if let Some(why) = refused {
            return Err(why);
        }
        // A new file: the one named on the line above the block, or one the owner's words
        // name (not a chat's transcript, where the agent may have repeated a web page).
        let owners_words = owners_words(&context.task.description);
        match block
            .heading
            .iter()
            .chain(
                block
                    .names
                    .iter()
                    .filter(|name| owners_words.contains(name.as_str())),
            )
            .next()
        {
            Some(name) => Ok((
                name.clone(),
                None,
                Merged::Whole(format!("{}\n", block.body.trim_end_matches('\n'))),
            )),
            None => Err(match block.names.first() {
                Some(name) => format!(
                    "no file it could be for is named above it (`{name}` is not in the repository, nor in the task)"
                ),
                None => "no file it could be for is named above it".to_owned(),
            }),
        }
    }

    /// Adds the files a reply names that the model has not seen yet to those shown; whether
    /// it named any.
    async fn show(
        &self,
        tools: &Tools<'_, TaskSandbox>,
        text: &str,
        shown: &mut Vec<String>,
    ) -> bool {
        let mut added = false;
        for name in names_in(text) {
            if !shown.contains(&name) && tools.read_text(&name).await.is_ok() {
                shown.push(name);
                added = true;
            }
        }
        added
    }

    async fn log_call(&self, context: &Context, call: &ToolCall) -> Result<(), EngineError> {
        self.store
            .append_event(
                &context.task.id,
                deft_core::EventKind::ToolCall,
                call_event(call),
            )
            .await?;
        Ok(())
    }
}

/// What `write_blocks` did.
#[derive(Default)]
struct Written {
    files: Vec<String>,
    /// Whether a shell block ran as a command.
    ran: bool,
    /// Whether a command changed the repositories (or that could not be told).
    changed_by_commands: bool,
    /// Whether a block was what its file already held.
    unchanged: bool,
    report: String,
}

/// Every file of a repository small enough to read at once (one repository, at most
/// `SMALL_FILES` files of `SHOWN_IN_ALL` characters together), for a task that names none: a
/// model shown no code writes the code it imagines.
async fn small_repository(context: &Context, tools: &Tools<'_, TaskSandbox>) -> Vec<String> {
    let [(_, _, facts)] = context.repos.as_slice() else {
        return Vec::new();
    };
    let paths: Vec<&str> = facts.map.lines().map(str::trim).collect();
    if paths.len() > SMALL_FILES
        || paths
            .iter()
            .any(|path| path.is_empty() || path.contains(' '))
    {
        return Vec::new();
    }
    let mut total = 0;
    let mut files = Vec::new();
    for path in paths {
        let Ok(text) = tools.read_text(path).await else {
            continue;
        };
        total += text.chars().count();
        if total > SHOWN_IN_ALL {
            return Vec::new();
        }
        files.push(path.to_owned());
    }
    files
}

/// The executor's client, sampling warmer after `misses` turns that did not end the step;
/// as configured when no temperature is (the provider's default is left alone).
fn warmed(executor: &deft_llm::ModelClient, misses: u32) -> deft_llm::ModelClient {
    let mut client = executor.clone();
    if let Some(base) = client.policy.temperature {
        client.policy.temperature = Some((base + WARMING * misses as f32).min(1.0).max(base));
    }
    client
}

fn synthetic(name: &str, arguments: serde_json::Value) -> ToolCall {
    ToolCall {
        id: format!("reply-{}", uuid_like()),
        name: name.to_owned(),
        arguments: ToolArguments::Valid(arguments),
    }
}

/// A call id unique within the task's log.
fn uuid_like() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn done(did: &crate::notes::StepNotes, index: usize, text: &str) -> StepEnd {
    let summary = reply_summary(text);
    StepEnd::Done(StepDone {
        note: did.note(index + 1, &summary),
        summary,
    })
}

/// The owner's words of a task's description: not the chat that led to it, where the agent
/// may have repeated a file or a web page.
pub(super) fn owners_words(description: &str) -> &str {
    description
        .split("\n\n---\nThe chat that led to this task")
        .next()
        .unwrap_or_default()
}

/// The question a reply without code ends with, if it ends with one.
fn question_in(text: &str) -> Option<String> {
    let last = text
        .trim()
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())?
        .trim();
    last.ends_with('?').then(|| last.to_owned())
}
