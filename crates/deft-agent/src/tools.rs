//! The agent's tools (SPEC §5), offered to the model with these names, arguments and JSON
//! Schemas: `bash`, `str_replace_based_edit_tool` (with the semantics of Anthropic's text
//! editor tool), `search`, `submit_plan`, `ask_user` and `finish`.
//!
//! Every path is confined to `/workspace`: files are reached beneath the workspace without
//! following links out of it (`deft_sandbox::workspace`), and commands run in the sandbox.
//! Long results keep their head and tail with a marker saying how much was cut.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use deft_core::Plan;
use deft_llm::{ToolArguments, ToolCall, ToolSpec};
use deft_sandbox::{CappedOutput, Ending, ExecRequest, Sandbox, workspace};
use serde_json::{Value, json};

/// The most of a result the model gets back.
pub const RESULT_CAP: usize = 30_000;
const DEFAULT_BASH_TIMEOUT: u64 = 120;
const MAX_BASH_TIMEOUT: u64 = 1800;
const MAX_MATCHES: usize = 200;

/// What a tool does beyond its result text.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    None,
    /// `submit_plan`: the plan to record.
    Plan(Plan),
    /// `ask_user`: the question to put to the owner.
    Ask(String),
    /// `finish`: the summary of the step or the task.
    Finish(String),
}

/// A tool's result for the model, and its effect for the loop.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    pub content: String,
    pub is_error: bool,
    pub effect: Effect,
}

impl ToolOutput {
    fn ok(content: impl Into<String>) -> ToolOutput {
        ToolOutput {
            content: content.into(),
            is_error: false,
            effect: Effect::None,
        }
    }

    pub(crate) fn error(content: impl Into<String>) -> ToolOutput {
        ToolOutput {
            content: content.into(),
            is_error: true,
            effect: Effect::None,
        }
    }
}

/// The tool definitions the model is offered.
pub fn specs() -> Vec<ToolSpec> {
    let spec = |name: &str, description: &str, input_schema: Value| ToolSpec {
        name: name.into(),
        description: description.into(),
        input_schema,
    };
    let strings = json!({"type": "array", "items": {"type": "string"}, "minItems": 1});
    vec![
        spec(
            "bash",
            "Run a shell command in the sandbox, in /workspace. Returns its output (stdout and stderr, long output cut in the middle) and exit code.",
            json!({"type": "object", "properties": {
                "command": {"type": "string", "description": "The command, run with /bin/sh -c"},
                "timeout_secs": {"type": "integer", "minimum": 1, "maximum": MAX_BASH_TIMEOUT, "description": "Seconds before it and all its children are killed (default 120)"}
            }, "required": ["command"]}),
        ),
        spec(
            "str_replace_based_edit_tool",
            "View, create and edit files under /workspace. `view` shows a file with line numbers (or a directory two levels deep); `create` makes a new file; `str_replace` replaces `old_str`, which must occur exactly once, with `new_str`; `insert` adds `new_str` after line `insert_line` (0 for the top); `undo_edit` reverts the last edit of the file.",
            json!({"type": "object", "properties": {
                "command": {"type": "string", "enum": ["view", "create", "str_replace", "insert", "undo_edit"]},
                "path": {"type": "string", "description": "Relative to /workspace, or absolute inside it"},
                "file_text": {"type": "string"},
                "old_str": {"type": "string"},
                "new_str": {"type": "string"},
                "insert_line": {"type": "integer", "minimum": 0},
                "view_range": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}
            }, "required": ["command", "path"]}),
        ),
        spec(
            "search",
            "Search files under /workspace for a regular expression, respecting .gitignore. Returns `path:line:text` for each match.",
            json!({"type": "object", "properties": {
                "pattern": {"type": "string", "description": "A regular expression (Rust syntax)"},
                "path": {"type": "string", "description": "A directory or file to search in (default: the whole workspace)"},
                "glob": {"type": "string", "description": "Only files whose name matches, such as `*.rs`"}
            }, "required": ["pattern"]}),
        ),
        spec(
            "submit_plan",
            "Record the plan before changing any code: the requirements, the acceptance criteria that will show they are met, and the ordered steps.",
            json!({"type": "object", "properties": {
                "requirements": strings.clone(), "acceptance_criteria": strings.clone(), "steps": strings
            }, "required": ["requirements", "acceptance_criteria", "steps"]}),
        ),
        spec(
            "ask_user",
            "Ask the task's owner a question when you are unsure; the task waits for the answer.",
            json!({"type": "object", "properties": {"question": {"type": "string"}}, "required": ["question"]}),
        ),
        spec(
            "finish",
            "End the current step (or the task), with a summary of what was done.",
            json!({"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]}),
        ),
    ]
}

/// Runs tool calls for one sandbox and its workspace.
pub struct Tools<'a, S: Sandbox> {
    sandbox: &'a S,
    workspace: PathBuf,
    /// Each edited file's earlier contents, newest last, for `undo_edit`.
    history: HashMap<String, Vec<Vec<u8>>>,
    /// The user's MCP servers, whose tools are offered next to these.
    mcp: Option<&'a crate::mcp::McpServers>,
}

impl<S: Sandbox> std::fmt::Debug for Tools<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tools")
            .field("workspace", &self.workspace)
            .finish_non_exhaustive()
    }
}

fn string<'v>(arguments: &'v Value, key: &str) -> Result<&'v str, ToolOutput> {
    arguments[key]
        .as_str()
        .ok_or_else(|| ToolOutput::error(format!("`{key}` is required and must be a string")))
}

fn strings(arguments: &Value, key: &str) -> Result<Vec<String>, ToolOutput> {
    let items = arguments[key]
        .as_array()
        .filter(|items| !items.is_empty())
        .ok_or_else(|| {
            ToolOutput::error(format!("`{key}` must be a non-empty array of strings"))
        })?;
    items
        .iter()
        .map(|item| {
            item.as_str()
                .map(str::to_owned)
                .ok_or_else(|| ToolOutput::error(format!("`{key}` must hold strings only")))
        })
        .collect()
}

/// Text cut to the cap, head and tail kept.
fn capped(text: &str) -> String {
    let mut output = CappedOutput::new(RESULT_CAP);
    output.push(text.as_bytes());
    output.finish().0
}

/// `cat -n` style: each line with its number, from `first`.
fn numbered(text: &str, first: usize) -> String {
    text.lines()
        .enumerate()
        .map(|(index, line)| format!("{:6}\t{line}\n", first + index))
        .collect()
}

impl<'a, S: Sandbox> Tools<'a, S> {
    pub fn sandbox(&self) -> &'a S {
        self.sandbox
    }

    pub fn new(sandbox: &'a S, workspace: &Path) -> Tools<'a, S> {
        Tools {
            sandbox,
            workspace: workspace.to_owned(),
            history: HashMap::new(),
            mcp: None,
        }
    }

    /// Offers the tools of these MCP servers too.
    pub fn with_mcp(mut self, mcp: &'a crate::mcp::McpServers) -> Tools<'a, S> {
        self.mcp = Some(mcp).filter(|mcp| !mcp.is_empty());
        self
    }

    /// The tools to offer the model for its next turn: `built_in`, then the MCP servers'
    /// tools as they are now (a server may have changed its list since the last turn).
    pub async fn offered(&self, built_in: &[ToolSpec]) -> Vec<ToolSpec> {
        let mut offered = built_in.to_vec();
        if let Some(mcp) = self.mcp {
            offered.extend(mcp.specs().await);
        }
        offered
    }

    /// Runs one call. Failures are results for the model, never errors of the loop.
    pub async fn call(
        &mut self,
        call: &ToolCall,
        on_output: &mut (dyn FnMut(&str) + Send),
    ) -> ToolOutput {
        let arguments = match &call.arguments {
            ToolArguments::Valid(arguments) => arguments.clone(),
            ToolArguments::Malformed { error, .. } => {
                return ToolOutput::error(format!(
                    "the arguments are not valid JSON ({error}); call the tool again"
                ));
            }
        };
        let result = match call.name.as_str() {
            "bash" => self.bash(&arguments, on_output).await,
            "str_replace_based_edit_tool" => self.edit(&arguments),
            "search" => self.search(&arguments),
            "submit_plan" => submit_plan(&arguments),
            "ask_user" => string(&arguments, "question").map(|question| ToolOutput {
                content: "The question is with the owner; the task waits for the answer.".into(),
                is_error: false,
                effect: Effect::Ask(question.to_owned()),
            }),
            "finish" => string(&arguments, "summary").map(|summary| ToolOutput {
                content: "Done.".into(),
                is_error: false,
                effect: Effect::Finish(summary.to_owned()),
            }),
            mcp if mcp.starts_with(crate::mcp::PREFIX) && self.mcp.is_some() => {
                Ok(self.mcp.expect("checked").call(mcp, arguments).await)
            }
            other => Err(ToolOutput::error(format!(
                "there is no tool named `{other}`; use bash, str_replace_based_edit_tool, search, submit_plan, ask_user or finish"
            ))),
        };
        result.unwrap_or_else(|error| error)
    }

    async fn bash(
        &self,
        arguments: &Value,
        on_output: &mut (dyn FnMut(&str) + Send),
    ) -> Result<ToolOutput, ToolOutput> {
        let command = string(arguments, "command")?;
        let timeout = arguments["timeout_secs"]
            .as_u64()
            .unwrap_or(DEFAULT_BASH_TIMEOUT)
            .clamp(1, MAX_BASH_TIMEOUT);
        let request = ExecRequest {
            timeout: Duration::from_secs(timeout),
            output_cap: RESULT_CAP,
            ..ExecRequest::shell(command)
        };
        let outcome = self
            .sandbox
            .exec(&request, on_output)
            .await
            .map_err(|error| ToolOutput::error(format!("the command could not run: {error}")))?;
        let mut content = outcome.output.clone();
        if !content.is_empty() && !content.ends_with('\n') {
            content.push('\n');
        }
        match outcome.ending {
            Ending::TimedOut => content.push_str(&format!(
                "[killed after {timeout} s, with all its children]"
            )),
            Ending::OutOfMemory => content.push_str("[killed: out of memory]"),
            _ => content.push_str(&format!("[exit code: {}]", outcome.exit_code())),
        }
        for hit in &outcome.limits_hit {
            content.push_str(&format!("\n[{hit}]"));
        }
        let failed = outcome.exit_code() != 0;
        Ok(ToolOutput {
            content,
            is_error: failed,
            effect: Effect::None,
        })
    }

    fn edit(&mut self, arguments: &Value) -> Result<ToolOutput, ToolOutput> {
        let command = string(arguments, "command")?;
        let path = string(arguments, "path")?;
        // The workspace itself may be viewed, as a directory; nothing else above its files.
        if command == "view" && matches!(path.trim_end_matches('/'), "/workspace" | "." | "") {
            return self.view(arguments, ".", "/workspace");
        }
        let relative =
            workspace::relative(path).map_err(|error| ToolOutput::error(error.to_string()))?;
        let shown = format!("/workspace/{relative}");
        let fail =
            |error: deft_sandbox::SandboxError| ToolOutput::error(format!("{shown}: {error}"));
        match command {
            "view" => self.view(arguments, &relative, &shown),
            "create" => {
                let text = string(arguments, "file_text")?;
                if workspace::is_dir(&self.workspace, &relative)
                    .map_err(fail)?
                    .is_some()
                {
                    return Err(ToolOutput::error(format!(
                        "{shown} already exists; `create` makes new files only, use `str_replace` or `insert` to change it"
                    )));
                }
                workspace::create_parents(&self.workspace, &relative).map_err(fail)?;
                workspace::write(&self.workspace, &relative, text.as_bytes()).map_err(fail)?;
                self.history.entry(relative).or_default().push(Vec::new());
                Ok(ToolOutput::ok(format!("created {shown}")))
            }
            "str_replace" => {
                let old = string(arguments, "old_str")?;
                let new = arguments["new_str"].as_str().unwrap_or("");
                let before = self.read_text(&relative, &shown)?;
                let found: Vec<usize> = before.match_indices(old).map(|(at, _)| at).collect();
                let at = match found.as_slice() {
                    [at] => *at,
                    [] => {
                        return Err(ToolOutput::error(format!(
                            "no replacement was made: `old_str` does not occur verbatim in {shown}; view the file and copy the text exactly"
                        )));
                    }
                    many => {
                        let lines: Vec<String> = many
                            .iter()
                            .map(|at| (before[..*at].lines().count().max(1)).to_string())
                            .collect();
                        return Err(ToolOutput::error(format!(
                            "no replacement was made: `old_str` occurs {} times in {shown} (lines {}); include more context so it occurs once",
                            many.len(),
                            lines.join(", ")
                        )));
                    }
                };
                let after = format!("{}{new}{}", &before[..at], &before[at + old.len()..]);
                self.save(&relative, before.into_bytes(), &after)
                    .map_err(fail)?;
                let line = after[..at].lines().count().max(1);
                Ok(ToolOutput::ok(format!(
                    "edited {shown}:\n{}",
                    snippet(&after, line, new.lines().count())
                )))
            }
            "insert" => {
                let new = string(arguments, "new_str")?;
                let line = arguments["insert_line"].as_u64().ok_or_else(|| {
                    ToolOutput::error(
                        "`insert_line` is required: the line after which to insert (0 for the top)",
                    )
                })? as usize;
                let before = self.read_text(&relative, &shown)?;
                let lines: Vec<&str> = before.lines().collect();
                if line > lines.len() {
                    return Err(ToolOutput::error(format!(
                        "`insert_line` {line} is past the end of {shown}, which has {} lines",
                        lines.len()
                    )));
                }
                let mut after: Vec<String> = lines[..line].iter().map(|l| l.to_string()).collect();
                after.extend(new.lines().map(str::to_owned));
                after.extend(lines[line..].iter().map(|l| l.to_string()));
                let mut text = after.join("\n");
                if before.ends_with('\n') || before.is_empty() {
                    text.push('\n');
                }
                self.save(&relative, before.into_bytes(), &text)
                    .map_err(fail)?;
                Ok(ToolOutput::ok(format!(
                    "edited {shown}:\n{}",
                    snippet(&text, line + 1, new.lines().count())
                )))
            }
            "undo_edit" => {
                let previous = self
                    .history
                    .get_mut(&relative)
                    .and_then(Vec::pop)
                    .ok_or_else(|| {
                        ToolOutput::error(format!("there is no edit of {shown} to undo"))
                    })?;
                workspace::write(&self.workspace, &relative, &previous).map_err(fail)?;
                Ok(ToolOutput::ok(format!("reverted the last edit of {shown}")))
            }
            other => Err(ToolOutput::error(format!(
                "unknown command `{other}`; use view, create, str_replace, insert or undo_edit"
            ))),
        }
    }

    fn read_text(&self, relative: &str, shown: &str) -> Result<String, ToolOutput> {
        let bytes = workspace::read(&self.workspace, relative)
            .map_err(|error| ToolOutput::error(format!("{shown}: {error}")))?;
        String::from_utf8(bytes)
            .map_err(|_| ToolOutput::error(format!("{shown} is not UTF-8 text; edit it with bash")))
    }

    fn save(
        &mut self,
        relative: &str,
        before: Vec<u8>,
        after: &str,
    ) -> Result<(), deft_sandbox::SandboxError> {
        workspace::write(&self.workspace, relative, after.as_bytes())?;
        self.history
            .entry(relative.to_owned())
            .or_default()
            .push(before);
        Ok(())
    }

    fn view(
        &self,
        arguments: &Value,
        relative: &str,
        shown: &str,
    ) -> Result<ToolOutput, ToolOutput> {
        let fail =
            |error: deft_sandbox::SandboxError| ToolOutput::error(format!("{shown}: {error}"));
        match workspace::is_dir(&self.workspace, relative).map_err(fail)? {
            None => Err(ToolOutput::error(format!("{shown} does not exist"))),
            Some(true) => {
                let mut listing = format!("{shown}/, two levels deep (hidden entries left out):\n");
                for (name, is_dir) in workspace::list(&self.workspace, relative).map_err(fail)? {
                    if name.starts_with('.') {
                        continue;
                    }
                    listing.push_str(&format!("{name}{}\n", if is_dir { "/" } else { "" }));
                    if is_dir {
                        let inner = format!("{relative}/{name}");
                        for (child, child_dir) in
                            workspace::list(&self.workspace, &inner).unwrap_or_default()
                        {
                            if !child.starts_with('.') {
                                listing.push_str(&format!(
                                    "  {name}/{child}{}\n",
                                    if child_dir { "/" } else { "" }
                                ));
                            }
                        }
                    }
                }
                Ok(ToolOutput::ok(capped(&listing)))
            }
            Some(false) => {
                let text = self.read_text(relative, shown)?;
                let lines: Vec<&str> = text.lines().collect();
                let (first, last) = match arguments["view_range"].as_array() {
                    Some(range) if range.len() == 2 => {
                        let first = range[0].as_i64().unwrap_or(1).max(1) as usize;
                        let last = match range[1].as_i64() {
                            Some(-1) | None => lines.len(),
                            Some(last) => last.max(0) as usize,
                        };
                        if first > lines.len().max(1) || last < first {
                            return Err(ToolOutput::error(format!(
                                "`view_range` [{first}, {last}] is outside {shown}, which has {} lines",
                                lines.len()
                            )));
                        }
                        (first, last.min(lines.len()))
                    }
                    _ => (1, lines.len()),
                };
                let part = lines
                    .get(first.saturating_sub(1)..last)
                    .unwrap_or_default()
                    .join("\n");
                Ok(ToolOutput::ok(capped(&numbered(&part, first))))
            }
        }
    }

    fn search(&self, arguments: &Value) -> Result<ToolOutput, ToolOutput> {
        use grep_searcher::sinks::UTF8;
        let pattern = string(arguments, "pattern")?;
        let matcher = grep_regex::RegexMatcher::new_line_matcher(pattern).map_err(|error| {
            ToolOutput::error(format!(
                "`pattern` is not a valid regular expression: {error}"
            ))
        })?;
        let start = match arguments["path"].as_str() {
            Some(path) => {
                let relative = workspace::relative(path)
                    .map_err(|error| ToolOutput::error(error.to_string()))?;
                if workspace::is_dir(&self.workspace, &relative)
                    .map_err(|e| ToolOutput::error(e.to_string()))?
                    .is_none()
                {
                    return Err(ToolOutput::error(format!("{path} does not exist")));
                }
                self.workspace.join(relative)
            }
            None => self.workspace.clone(),
        };
        let mut walker = ignore::WalkBuilder::new(&start);
        // .gitignore counts even outside a git repository; .git itself is never searched.
        walker
            .hidden(false)
            .require_git(false)
            .follow_links(false)
            .filter_entry(|entry| entry.file_name() != ".git");
        if let Some(glob) = arguments["glob"].as_str() {
            let mut overrides = ignore::overrides::OverrideBuilder::new(&start);
            overrides
                .add(glob)
                .map_err(|error| ToolOutput::error(format!("`glob` is not valid: {error}")))?;
            walker.overrides(
                overrides
                    .build()
                    .map_err(|error| ToolOutput::error(format!("`glob` is not valid: {error}")))?,
            );
        }
        let mut found = Vec::new();
        let mut searcher = grep_searcher::SearcherBuilder::new()
            .binary_detection(grep_searcher::BinaryDetection::quit(0))
            .line_number(true)
            .build();
        for entry in walker.build().flatten() {
            if found.len() >= MAX_MATCHES {
                break;
            }
            // Regular files only: a link could lead out of the workspace.
            if !entry.file_type().is_some_and(|kind| kind.is_file()) {
                continue;
            }
            let shown = entry
                .path()
                .strip_prefix(&self.workspace)
                .unwrap_or(entry.path())
                .display()
                .to_string();
            let _ = searcher.search_path(
                &matcher,
                entry.path(),
                UTF8(|line, text| {
                    found.push(format!("{shown}:{line}:{}", text.trim_end()));
                    Ok(found.len() < MAX_MATCHES)
                }),
            );
        }
        if found.is_empty() {
            return Ok(ToolOutput::ok(format!("no match for `{pattern}`")));
        }
        let mut content = found.join("\n");
        if found.len() >= MAX_MATCHES {
            content.push_str(&format!(
                "\n[stopped at {MAX_MATCHES} matches; narrow the pattern, `path` or `glob`]"
            ));
        }
        Ok(ToolOutput::ok(capped(&content)))
    }
}

fn submit_plan(arguments: &Value) -> Result<ToolOutput, ToolOutput> {
    let plan = Plan {
        requirements: strings(arguments, "requirements")?,
        acceptance_criteria: strings(arguments, "acceptance_criteria")?,
        steps: strings(arguments, "steps")?,
    };
    Ok(ToolOutput {
        content: format!("The plan is recorded: {} steps.", plan.steps.len()),
        is_error: false,
        effect: Effect::Plan(plan),
    })
}

/// A few numbered lines around an edit, to show the model what the file now says.
fn snippet(text: &str, line: usize, changed: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let first = line.saturating_sub(4).max(1);
    let last = (line + changed + 3).min(lines.len());
    if first > last {
        return String::new();
    }
    numbered(&lines[first - 1..last].join("\n"), first)
}
