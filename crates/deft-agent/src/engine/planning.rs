//! Planning: the planner's turns until `submit_plan`, writing nothing by contract (a command's
//! changes are undone), and the plan of one step, opening with its call, that a planner gets
//! when it sets out to change a file.

use deft_core::{AttentionKind, EventKind, Plan};
use deft_llm::{Completion, Message, Request, ToolResult, ToolSpec};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::agent::{Heard, heard, own_script, workspace_state};
use super::{Context, Engine, EngineError, Phase, TaskSandbox, attention};
use crate::loops::{LoopWatch, Repetition};
use crate::prompts::{PLANNING, system_prompt};
use crate::tools::{Effect, Tools, specs};

/// The one criterion of a one-step plan with nothing runnable to check.
pub(super) const DESCRIPTION_MET: &str = "the task's description is met";

impl Engine {
    /// The planner's first request: the repositories, the conventions, the task, and the
    /// built-in tools it may use (the owner's MCP servers' are added once they run).
    pub(super) fn planning_request(
        repos: &[super::TaskRepo],
        learnings: &[String],
        task: String,
    ) -> Request {
        let task = match crate::prompts::named_files(repos) {
            Some(named) => format!("{task}\n\n{named}"),
            None => task,
        };
        Request {
            system: system_prompt(repos, learnings, "planning", PLANNING),
            messages: vec![Message::user(task)],
            tools: planning_tools(),
            max_tokens: 8192,
        }
    }

    /// Planning until `submit_plan`. `first`: the planner's first answer and the request it
    /// answered, when it was asked while the sandbox was being made.
    pub(super) async fn plan(
        &self,
        context: &Context,
        tools: &mut Tools<'_, TaskSandbox>,
        mut first: Option<(Completion, Request)>,
        cancel: &CancellationToken,
    ) -> Result<Phase<Planned>, EngineError> {
        // A model that writes code in words is no planner: the task is its one step.
        if self.edit_format == super::EditFormat::CodeBlocks {
            return Ok(Phase::Done(Planned {
                plan: one_step_plan(context),
                opening: Vec::new(),
            }));
        }
        let built_in = planning_tools();
        let mut sent_back = 0;
        let mut loops = LoopWatch::new(self.limits.repeats);
        let mut request = Self::planning_request(
            &context.repos,
            &context.learnings,
            self.task_message(context),
        );
        let mut nudges = 0;
        for _ in 0..self.limits.turns_per_step {
            let Heard { calls, .. } = if let Some((completion, asked)) = first.take() {
                request = asked;
                heard(&mut request, completion)
            } else {
                request.tools = tools.offered(&built_in).await;
                crate::history::trim_old_results(&mut request.messages);
                match self
                    .turn(&self.planner, "planner", context, &mut request, cancel)
                    .await?
                {
                    Phase::Done(heard) => heard,
                    Phase::Stop(attention) => return Ok(Phase::Stop(attention)),
                }
            };
            if calls.is_empty() {
                nudges += 1;
                if nudges > 2 {
                    return Ok(Phase::Stop(attention(
                        AttentionKind::Error,
                        "the model did not submit a plan; try a more capable model for planning ([model.planner])",
                    )));
                }
                request.messages.push(Message::user(
                    "Call `submit_plan` now, or `ask_user` if you cannot.",
                ));
                continue;
            }
            let mut results = Vec::new();
            let mut outcome = None;
            for (n, call) in calls.iter().enumerate() {
                // A planner that sets out to change a file knows what to do: the task becomes a
                // plan of one step, which opens with this call and the ones after it (planning
                // itself writes nothing). Weak models asked to plan first otherwise go round in
                // circles.
                if writes_a_file(call) {
                    let told = "Planning ends here: the task is the plan's one step, which opens with this call.";
                    self.store
                        .append_event(
                            &context.task.id,
                            EventKind::ToolResult,
                            json!({"id": call.id, "is_error": false, "content": told}),
                        )
                        .await?;
                    let opening = calls[n..]
                        .iter()
                        .filter(|call| {
                            matches!(
                                call.name.as_str(),
                                "bash" | "str_replace_based_edit_tool" | "search"
                            )
                        })
                        .cloned()
                        .collect();
                    return Ok(Phase::Done(Planned {
                        plan: one_step_plan(context),
                        opening,
                    }));
                }
                // A command may change files where the editor may not: what it changed in the
                // repositories is undone, and the model told.
                let before = match call.name.as_str() {
                    "bash" => workspace_state(tools.sandbox(), cancel).await,
                    _ => None,
                };
                let mut output = self
                    .run_or_send_back(&context.task.id, tools, call, &mut sent_back, cancel)
                    .await?;
                if let Some(before) = before
                    && workspace_state(tools.sandbox(), cancel).await.as_ref() != Some(&before)
                {
                    undo_changes(tools.sandbox(), cancel).await;
                    output.content.push_str(
                        "\n\nPlanning changes nothing: what this command changed in the repositories was undone. Make changes in the plan's steps, after `submit_plan`.",
                    );
                }
                // The planner repeating itself is a loop as an executor's would be.
                if !matches!(call.name.as_str(), "submit_plan" | "ask_user") {
                    match loops.record(&call.name, &call.arguments.to_json_text()) {
                        Repetition::None => {}
                        Repetition::Told(told) => {
                            output.content = format!(
                                "{}\n\n{told} While planning, that is `submit_plan` once you know enough.",
                                output.content
                            );
                        }
                        Repetition::Stop(reason) => {
                            return Ok(Phase::Stop(attention(
                                AttentionKind::Error,
                                format!("planning: {reason}; give it a hint by answering"),
                            )));
                        }
                    }
                }
                match &output.effect {
                    Effect::Plan(plan) => {
                        outcome = Some(Phase::Done(Planned {
                            plan: plan.clone(),
                            opening: Vec::new(),
                        }));
                    }
                    Effect::Ask(question) => outcome = Some(self.ask(context, question).await?),
                    _ => {}
                }
                results.push(ToolResult {
                    call_id: call.id.clone(),
                    content: output.content,
                    is_error: output.is_error,
                });
            }
            if let Some(outcome) = outcome {
                return Ok(outcome);
            }
            request.messages.push(Message::tool_results(results));
        }
        Ok(Phase::Stop(attention(
            AttentionKind::Error,
            "planning took too many turns without a plan",
        )))
    }
}

/// The tools of planning: every built-in one but `finish`.
fn planning_tools() -> Vec<ToolSpec> {
    specs().into_iter().filter(|t| t.name != "finish").collect()
}

/// Whether `call` is the editor changing a file.
fn writes_a_file(call: &deft_llm::ToolCall) -> bool {
    call.name == "str_replace_based_edit_tool"
        && call.arguments.as_object()["command"]
            .as_str()
            .is_some_and(|command| command != "view")
}

/// The plan of a task that needs no more than doing it: one step, the task itself, checked by
/// the repositories' checks.
fn one_step_plan(context: &Context) -> Plan {
    let description = context.task.description.trim();
    let first = description.lines().next().unwrap_or(description);
    let checks: Vec<String> = context
        .checks()
        .map(|(dir, check)| format!("`{check}` passes in {dir}"))
        .collect();
    // The commands the owner says must work are criteria that can be run.
    let mut criteria = checks;
    criteria.extend(
        crate::task_commands::task_commands(super::code_blocks::owners_words(description))
            .iter()
            .map(crate::task_commands::TaskCommand::criterion),
    );
    Plan {
        requirements: vec![first.chars().take(300).collect()],
        acceptance_criteria: if criteria.is_empty() {
            vec![DESCRIPTION_MET.to_owned()]
        } else {
            criteria
        },
        steps: vec![description.chars().take(2000).collect()],
    }
}

/// Undoes what changed in every repository of the workspace since its last commit (tracked
/// files put back, new files not ignored removed), in the sandbox.
async fn undo_changes(sandbox: &TaskSandbox, cancel: &CancellationToken) {
    own_script(
        sandbox,
        "for d in /workspace/*/; do git -C \"$d\" checkout -q -- . 2>/dev/null; git -C \"$d\" clean -qfd 2>/dev/null; done; true",
        std::time::Duration::from_secs(60),
        cancel,
    )
    .await;
}

/// What planning made: the plan, and the calls its one step opens with when the planner set
/// out to change a file (see [`Engine::plan`]).
pub(super) struct Planned {
    pub plan: Plan,
    pub opening: Vec<deft_llm::ToolCall>,
}
