//! The agent's tools (SPEC §5), offered to the model with these names, arguments and JSON
//! Schemas: `bash`, `str_replace_based_edit_tool` (with the semantics of Anthropic's text
//! editor tool), `search`, `submit_plan`, `ask_user` and `finish`.
//!
//! Every path is confined to `/workspace`: files are reached beneath the workspace without
//! following links out of it (`deft_sandbox::workspace`), and commands run in the sandbox.
//! Long results keep their head and tail with a marker saying how much was cut.

use std::path::{Path, PathBuf};
use std::time::Duration;

use deft_core::Plan;
use deft_llm::{ToolArguments, ToolCall, ToolSpec};
use deft_sandbox::{CappedOutput, Ending, ExecRequest, Sandbox};
use serde_json::{Value, json};

/// The most of a result the model gets back.
pub const RESULT_CAP: usize = 30_000;
const DEFAULT_BASH_TIMEOUT: u64 = 120;
const MAX_BASH_TIMEOUT: u64 = 1800;
pub(crate) const MAX_MATCHES: usize = 200;
/// How long the editor or the search may take before the model is told it gave up.
const FILE_TOOL_TIMEOUT: Duration = Duration::from_secs(30);

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
    pub(crate) fn ok(content: impl Into<String>) -> ToolOutput {
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
            "Run a shell command in the sandbox: in the repository when the task has one, else in /workspace. Returns its output (stdout and stderr, long output cut in the middle) and exit code.",
            json!({"type": "object", "properties": {
                "command": {"type": "string", "description": "The command, run with /bin/sh -c"},
                "timeout_secs": {"type": "integer", "minimum": 1, "maximum": MAX_BASH_TIMEOUT, "description": "Seconds before it and all its children are killed (default 120)"}
            }, "required": ["command"]}),
        ),
        spec(
            "str_replace_based_edit_tool",
            "View, create and edit files under /workspace. `view` shows a file with line numbers (or a directory two levels deep); `create` writes `file_text` as the whole file (a new one, or all of an existing one: often the surest edit of a short file); `str_replace` replaces `old_str`, which must occur exactly once, with `new_str`; `insert` adds `new_str` after line `insert_line` (0 for the top); `undo_edit` reverts the last edit of the file.",
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
pub struct Tools<'a, S: Sandbox + ?Sized> {
    sandbox: &'a S,
    workspace: PathBuf,
    /// The editor and the search, whose file access runs off the async threads.
    files: std::sync::Arc<std::sync::Mutex<crate::files::Files>>,
    /// The user's MCP servers, whose tools are offered next to these.
    mcp: Option<&'a crate::mcp::McpServers>,
    /// The web, when the operator configured a search provider.
    web: Option<&'a crate::web::Web>,
    /// The repositories' directories under `/workspace`.
    repos: Vec<String>,
}

impl<S: Sandbox + ?Sized> std::fmt::Debug for Tools<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tools")
            .field("workspace", &self.workspace)
            .finish_non_exhaustive()
    }
}

pub(crate) fn string<'v>(arguments: &'v Value, key: &str) -> Result<&'v str, ToolOutput> {
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
pub(crate) fn capped(text: &str) -> String {
    let mut output = CappedOutput::new(RESULT_CAP);
    output.push(text.as_bytes());
    output.finish().0
}

/// `cat -n` style: each line with its number, from `first`.
pub(crate) fn numbered(text: &str, first: usize) -> String {
    text.lines()
        .enumerate()
        .map(|(index, line)| format!("{:6}\t{line}\n", first + index))
        .collect()
}

impl<'a, S: Sandbox + ?Sized> Tools<'a, S> {
    pub fn sandbox(&self) -> &'a S {
        self.sandbox
    }

    pub fn new(sandbox: &'a S, workspace: &Path) -> Tools<'a, S> {
        Tools {
            sandbox,
            workspace: workspace.to_owned(),
            files: std::sync::Arc::new(std::sync::Mutex::new(crate::files::Files::new(workspace))),
            mcp: None,
            web: None,
            repos: Vec::new(),
        }
    }

    /// Offers `web_search` and `web_fetch` too.
    pub fn with_web(mut self, web: Option<&'a crate::web::Web>) -> Tools<'a, S> {
        self.web = web;
        self
    }

    /// The repositories' directories under `/workspace`: with one, a relative path that does
    /// not name it resolves in it, as a model used to working in a repository writes them.
    pub fn with_repositories(mut self, repos: Vec<String>) -> Tools<'a, S> {
        self.repos = repos;
        self
    }

    /// `path` as the workspace knows it: `/workspace` itself, or a path relative to the one
    /// repository, made relative to the workspace.
    fn located(&self, path: &str) -> String {
        let [repo] = self.repos.as_slice() else {
            return path.to_owned();
        };
        let trimmed = path.trim_start_matches("./");
        if path == "/workspace" || path == "/workspace/" || trimmed.is_empty() || trimmed == "." {
            return format!("/workspace/{repo}");
        }
        // `/workspace/util.py` is what a model that thinks the repository is the workspace
        // writes; nothing but the repository is there to mean anything else.
        if let Some(rest) = path.strip_prefix("/workspace/")
            && rest.split('/').next() != Some(repo.as_str())
        {
            return format!("/workspace/{repo}/{rest}");
        }
        let names_repo = trimmed.split('/').next() == Some(repo.as_str());
        if path.starts_with('/') || names_repo {
            return path.to_owned();
        }
        format!("{repo}/{trimmed}")
    }

    /// For a failed command's output with one repository: each `/workspace/PATH` it names that
    /// is not there but is in the repository, said where it is (at most three).
    fn misplaced(&self, output: &str) -> Vec<String> {
        let [repo] = self.repos.as_slice() else {
            return Vec::new();
        };
        let mut said = Vec::new();
        for (at, _) in output.match_indices("/workspace/") {
            let rest: String = output[at + "/workspace/".len()..]
                .chars()
                .take_while(|c| !c.is_whitespace() && !"'\"`:,;()[]<>".contains(*c))
                .collect();
            let rest = rest.trim_end_matches(['.', '/']);
            if rest.is_empty()
                || rest.split('/').next() == Some(repo.as_str())
                || said
                    .iter()
                    .any(|line: &String| line.contains(&format!("/workspace/{rest} ")))
            {
                continue;
            }
            let in_repo = format!("{repo}/{rest}");
            if deft_sandbox::workspace::is_dir(&self.workspace, &in_repo)
                .is_ok_and(|found| found.is_some())
            {
                said.push(format!(
                    "[/workspace/{rest} is not there: the repository is /workspace/{repo}, and commands start in it; write `{rest}`]"
                ));
            }
            if said.len() == 3 {
                break;
            }
        }
        said
    }

    /// `command` as the shell runs it: with one repository, in it. `cd NAME`, as a model
    /// told where the repository is writes, still works there (`CDPATH`, for this shell only,
    /// not its programs); a repository its commands removed leaves them in `/workspace`.
    fn in_repository(&self, command: &str) -> String {
        let [repo] = self.repos.as_slice() else {
            return command.to_owned();
        };
        let quoted = repo.replace('\'', r"'\''");
        format!(
            "CDPATH=:/workspace; cd '{quoted}' 2>/dev/null || echo '[/workspace/{quoted} is gone; running in /workspace]' >&2\n{command}"
        )
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
        if self.web.is_some() {
            offered.extend(crate::web::Web::specs());
        }
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
            "str_replace_based_edit_tool" | "search" => {
                let mut arguments = arguments;
                if let Some(path) = arguments["path"].as_str() {
                    arguments["path"] = Value::String(self.located(path));
                }
                self.file_tool(call.name.clone(), arguments).await
            }
            "web_search" | "web_fetch" if self.web.is_some() => Ok(self
                .web
                .expect("checked")
                .call(&call.name, &arguments)
                .await),
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

    /// The editor or the search, on a blocking thread with a deadline: a file the sandbox
    /// swapped for something that blocks (a FIFO, a device, a network file system) costs that
    /// thread at worst, never the runtime's, and the model hears why.
    async fn file_tool(&self, name: String, arguments: Value) -> Result<ToolOutput, ToolOutput> {
        let repos = self.repos.clone();
        self.off_thread(move |files| {
            let result = if name == "search" {
                files.search(&arguments)
            } else {
                files.edit(&arguments)
            };
            // With several repositories, a relative path that is not there may be in one.
            result.map_err(|mut error| {
                if let Some(path) = arguments["path"].as_str()
                    && error.content.ends_with("does not exist")
                    && repos.len() > 1
                {
                    let found = files.repositories_holding(path, &repos);
                    if !found.is_empty() {
                        error.content.push_str(&format!(
                            "; it is in {}",
                            found
                                .iter()
                                .map(|repo| format!("/workspace/{repo}/{path}"))
                                .collect::<Vec<_>>()
                                .join(" and ")
                        ));
                    }
                }
                error
            })
        })
        .await
    }

    /// The text of a file of the workspace (a path as the model wrote it), read as the editor
    /// reads: inside the workspace, no link followed, UTF-8 only.
    pub async fn read_text(&self, path: &str) -> Result<String, String> {
        let path = self.located(path);
        self.off_thread(move |files| files.text(&path))
            .await
            .map_err(|error| error.content)
    }

    /// `job` on the editor's files, on a blocking thread, given up after the file tools'
    /// deadline.
    async fn off_thread<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut crate::files::Files) -> Result<T, ToolOutput> + Send + 'static,
    ) -> Result<T, ToolOutput> {
        let files = self.files.clone();
        let job = tokio::task::spawn_blocking(move || {
            let mut files = files
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            job(&mut files)
        });
        match tokio::time::timeout(FILE_TOOL_TIMEOUT, job).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ToolOutput::error(
                "the file tool stopped unexpectedly; try again, or use bash".to_owned(),
            )),
            Err(_) => Err(ToolOutput::error(format!(
                "the file tool gave up after {} s: a file did not answer (a FIFO, a device or a hung file system?); use bash to look",
                FILE_TOOL_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn bash(
        &self,
        arguments: &Value,
        on_output: &mut (dyn FnMut(&str) + Send),
    ) -> Result<ToolOutput, ToolOutput> {
        let command = string(arguments, "command")?;
        if let Some(program) = interactive(command) {
            return Err(ToolOutput::error(format!(
                "`{program}` waits for a person at a terminal, and there is none here; use str_replace_based_edit_tool to view and edit files, or `cat`, `sed -n` and `grep` to read them"
            )));
        }
        let timeout = arguments["timeout_secs"]
            .as_u64()
            .unwrap_or(DEFAULT_BASH_TIMEOUT)
            .clamp(1, MAX_BASH_TIMEOUT);
        let script = self.in_repository(command);
        let request = ExecRequest {
            timeout: Duration::from_secs(timeout),
            output_cap: RESULT_CAP,
            ..ExecRequest::shell(&script)
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
        if failed {
            for line in self.misplaced(&outcome.output) {
                content.push_str(&format!("\n{line}"));
            }
        }
        Ok(ToolOutput {
            content,
            is_error: failed,
            effect: Effect::None,
        })
    }
}

/// The interactive program a command starts with (after `sudo` or an environment setting),
/// if it is one: an editor, a pager or a monitor that would wait for a terminal until killed.
fn interactive(command: &str) -> Option<&str> {
    const PROGRAMS: [&str; 12] = [
        "nano", "vim", "vi", "nvim", "emacs", "pico", "less", "more", "top", "htop", "man", "ed",
    ];
    command
        .split_whitespace()
        .find(|word| *word != "sudo" && !word.contains('='))
        .filter(|program| PROGRAMS.contains(&program.rsplit('/').next().unwrap_or(program)))
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
