//! The agent's side of a chat before its task exists: it talks the task through with the
//! person, reading the chat's repositories (their default branch, read-only) and, when the
//! operator configured a search provider, the web. A chat changes nothing and runs nothing:
//! its only tools are the editor's `view` and the `search`, over git's objects of each
//! registered repository read in the forge's jail (never a checkout a task can write), and
//! `web_search` / `web_fetch` under the owner's network level.

use std::path::PathBuf;

use deft_core::Usage;
use deft_llm::{Message, ModelClient, ModelError, Request, ToolResult, ToolSpec};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::analysis::fence;
use crate::tools::{numbered, string};

/// How the agent is told to talk in a chat.
const PROMPT: &str = "You are deft, an autonomous coding agent. The person is describing a development task they want you to do in the repositories named below; the work starts when they press \"Create the task\". Before you answer a question about the code, read it: `str_replace_based_edit_tool` with `view` shows a file or a directory of a repository (paths are REPOSITORY/PATH), and `search` finds lines by an extended regular expression. You change nothing here. Reply briefly, in Markdown: discuss approaches, say what you will do, or ask at most three short questions when something essential is unclear. Cite what you read from the web as [n].";

/// Model turns a reply may take (reading, then answering).
const TURNS: usize = 8;
/// The most of a file, or of a search's matches, one view shows.
const SHOWN_BYTES: usize = 24 * 1024;
/// The most matches one search returns.
const MATCHES: usize = 60;

/// A repository the chat may read: a registered local repository, read at its default
/// branch in the forge's jail. `location` is `None` for one deft cannot read from here (on
/// GitHub: its code reaches deft only with a task).
#[derive(Debug, Clone)]
pub struct ChatRepo {
    pub name: String,
    pub location: Option<PathBuf>,
    pub default_branch: String,
}

/// What the agent said, what it read to say it, and what that cost.
#[derive(Debug, Clone)]
pub struct ChatAnswer {
    pub text: String,
    pub usage: Usage,
    /// Each tool call, as `view greeter/app.py` or `search greeter "def main"`.
    pub consulted: Vec<String>,
}

/// Who asks, and where: the model, the person's name, the chat's repositories and the web.
pub struct ChatSetting<'a> {
    pub client: &'a ModelClient,
    pub person: &'a str,
    pub repos: &'a [ChatRepo],
    /// The conventions learned from the person's earlier feedback.
    pub learnings: &'a [String],
    pub web: Option<&'a crate::web::Web>,
    /// Told each turn's text so far as it streams in.
    pub watch: Option<&'a deft_llm::TextWatch<'a>>,
}

/// The agent's reply to `conversation` (the person's and the agent's turns so far).
pub async fn reply(
    setting: ChatSetting<'_>,
    conversation: Vec<Message>,
    stop: &CancellationToken,
) -> Result<ChatAnswer, ModelError> {
    let ChatSetting {
        client,
        person,
        repos,
        learnings,
        web,
        watch,
    } = setting;
    let names: Vec<&str> = repos.iter().map(|repo| repo.name.as_str()).collect();
    let mut system = format!(
        "{PROMPT}\n\nThe person: {person}. Repositories: {}.",
        names.join(", ")
    );
    if !learnings.is_empty() {
        system.push_str(&format!(
            "\n\nConventions learned from the person's earlier feedback (the task will follow them):\n{}",
            crate::prompts::list(learnings)
        ));
    }
    let mut tools = specs();
    if web.is_some() {
        tools.extend(crate::web::Web::specs());
    }
    let mut request = Request::new(system, conversation);
    request.tools = tools;
    request.max_tokens = 2048;
    let mut usage = Usage::default();
    let mut consulted = Vec::new();
    let mut commits: Vec<Option<String>> = vec![None; repos.len()];
    for turn in 0..TURNS {
        // The last turn answers with what it has.
        if turn + 1 == TURNS {
            request.tools.clear();
        }
        let completion = client.complete_watched(&request, stop, watch).await?;
        let response = completion.response;
        usage.input_tokens += response.usage.input_tokens;
        usage.output_tokens += response.usage.output_tokens;
        usage.cached_tokens += response.usage.cached_tokens;
        let calls: Vec<deft_llm::ToolCall> = response.tool_calls().cloned().collect();
        let text = response.text();
        request.messages.push(response.to_message());
        if calls.is_empty() {
            // What the web gave it is listed, as a pull request lists it.
            let sources = web.map_or(String::new(), |web| {
                crate::web::sources_section(&web.sources(), &text)
            });
            return Ok(ChatAnswer {
                text: format!("{text}{sources}"),
                usage,
                consulted,
            });
        }
        let mut results = Vec::new();
        for call in calls {
            let arguments = call.arguments.as_object();
            let (content, is_error) = match call.name.as_str() {
                "str_replace_based_edit_tool" | "search" => {
                    match read(repos, &mut commits, &call.name, &arguments).await {
                        Ok((what, content)) => {
                            consulted.push(what);
                            (content, false)
                        }
                        Err(error) => (error, true),
                    }
                }
                "web_search" | "web_fetch" if web.is_some() => {
                    let output = web.expect("checked").call(&call.name, &arguments).await;
                    consulted.push(format!(
                        "{} {}",
                        call.name,
                        arguments["query"]
                            .as_str()
                            .or(arguments["url"].as_str())
                            .unwrap_or("")
                    ));
                    (output.content, output.is_error)
                }
                other => (
                    format!(
                        "there is no tool named `{other}` in a chat; read with str_replace_based_edit_tool (view) or search"
                    ),
                    true,
                ),
            };
            results.push(ToolResult {
                call_id: call.id.clone(),
                content,
                is_error,
            });
        }
        request.messages.push(Message::tool_results(results));
    }
    unreachable!("the last turn has no tools, so it answers")
}

/// The chat's tools: the editor's `view` alone, and the search.
fn specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "str_replace_based_edit_tool".into(),
            description: "View a file of a repository with line numbers, or a directory's files. In a chat only `view` is allowed: nothing is changed before the task exists.".into(),
            input_schema: json!({"type": "object", "properties": {
                "command": {"type": "string", "enum": ["view"]},
                "path": {"type": "string", "description": "REPOSITORY/PATH, or REPOSITORY for its top"},
                "view_range": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}
            }, "required": ["command", "path"]}),
        },
        ToolSpec {
            name: "search".into(),
            description: "Search a repository's files for an extended regular expression. Returns `REPOSITORY/path:line:text` for each match.".into(),
            input_schema: json!({"type": "object", "properties": {
                "pattern": {"type": "string", "description": "An extended regular expression"},
                "path": {"type": "string", "description": "REPOSITORY, or REPOSITORY/DIRECTORY (default: every repository)"},
                "glob": {"type": "string", "description": "Only files whose name matches, such as `*.rs`"}
            }, "required": ["pattern"]}),
        },
    ]
}

/// Runs a `view` or a `search`: what was consulted, and what the model reads.
async fn read(
    repos: &[ChatRepo],
    commits: &mut [Option<String>],
    tool: &str,
    arguments: &Value,
) -> Result<(String, String), String> {
    let path = arguments["path"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("/workspace/")
        .trim_matches('/');
    if tool == "str_replace_based_edit_tool" {
        let command = string(arguments, "command").map_err(|error| error.content)?;
        if command != "view" {
            return Err(format!(
                "`{command}` changes a file; a chat changes nothing (create the task for that), use `view`"
            ));
        }
    }
    let targets: Vec<(usize, &str)> = if path.is_empty() && tool == "search" {
        (0..repos.len()).map(|index| (index, "")).collect()
    } else {
        vec![split(repos, path)?]
    };
    let mut shown = String::new();
    for (index, inner) in &targets {
        let repo = &repos[*index];
        let Some(location) = &repo.location else {
            return Err(format!(
                "{} is not a local repository: its code is read once the task starts; ask the person, or create the task",
                repo.name
            ));
        };
        let objects = deft_forge::Objects::registered(location);
        let commit = match &commits[*index] {
            Some(commit) => commit.clone(),
            None => {
                let found = objects
                    .resolve_branches(&[repo.default_branch.as_str()])
                    .await
                    .map_err(|error| format!("{} cannot be read: {error}", repo.name))?;
                let commit = found.into_iter().flatten().next().ok_or_else(|| {
                    format!(
                        "{} has no branch `{}` to read",
                        repo.name, repo.default_branch
                    )
                })?;
                commits[*index] = Some(commit.clone());
                commit
            }
        };
        if tool == "search" {
            let pattern = string(arguments, "pattern").map_err(|error| error.content)?;
            let scope = arguments["glob"]
                .as_str()
                .map(|glob| {
                    if inner.is_empty() {
                        glob.to_owned()
                    } else {
                        format!("{inner}/{glob}")
                    }
                })
                .or_else(|| (!inner.is_empty()).then(|| (*inner).to_owned()));
            let lines = objects
                .grep(&commit, pattern, scope.as_deref(), MATCHES)
                .await
                .map_err(|error| format!("the search failed: {error}"))?;
            for line in lines {
                shown.push_str(&format!("{}/{line}\n", repo.name));
            }
        } else {
            shown.push_str(&view(&objects, &commit, repo, inner, arguments).await?);
        }
    }
    let what = match tool {
        "search" => format!(
            "search {} \"{}\"",
            if path.is_empty() { "*" } else { path },
            arguments["pattern"].as_str().unwrap_or("")
        ),
        _ => format!("view {path}"),
    };
    if tool == "search" && shown.is_empty() {
        shown = "No line matches.".to_owned();
    }
    let capped: String = shown.chars().take(SHOWN_BYTES).collect();
    Ok((what, fence(path, &capped)))
}

/// A file with line numbers, or a directory's entries (two levels deep).
async fn view(
    objects: &deft_forge::Objects<'_>,
    commit: &str,
    repo: &ChatRepo,
    inner: &str,
    arguments: &Value,
) -> Result<String, String> {
    let listing = objects
        .list_tree(commit)
        .await
        .map_err(|error| format!("{} cannot be read: {error}", repo.name))?;
    let is_file = listing.iter().any(|(_, path)| path == inner);
    if !is_file {
        let prefix = if inner.is_empty() {
            String::new()
        } else {
            format!("{inner}/")
        };
        let entries: Vec<&str> = listing
            .iter()
            .map(|(_, path)| path.as_str())
            .filter(|path| path.starts_with(&prefix))
            .filter(|path| path[prefix.len()..].matches('/').count() < 2)
            .collect();
        if entries.is_empty() {
            return Err(format!(
                "{}/{inner} is not in the repository; view {} to see its files",
                repo.name, repo.name
            ));
        }
        return Ok(entries.join("\n"));
    }
    let bytes = objects
        .read_file(commit, inner)
        .await
        .map_err(|error| format!("{}/{inner} cannot be read: {error}", repo.name))?;
    if bytes.contains(&0) {
        return Err(format!("{}/{inner} is not text", repo.name));
    }
    let text = String::from_utf8_lossy(&bytes);
    let (first, lines): (usize, Vec<&str>) = match arguments["view_range"].as_array() {
        Some(range) if range.len() == 2 => {
            let from = range[0].as_u64().unwrap_or(1).max(1) as usize;
            let to = range[1].as_i64().unwrap_or(-1);
            let all: Vec<&str> = text.lines().collect();
            let to = if to < 0 {
                all.len()
            } else {
                (to as usize).min(all.len())
            };
            (from, all.get(from - 1..to).unwrap_or(&[]).to_vec())
        }
        _ => (1, text.lines().collect()),
    };
    Ok(numbered(&lines.join("\n"), first))
}

/// The repository a path starts with (names may hold a `/`, as `owner/name`), and the rest.
fn split<'p>(repos: &[ChatRepo], path: &'p str) -> Result<(usize, &'p str), String> {
    repos
        .iter()
        .enumerate()
        .filter_map(|(index, repo)| {
            let rest = path.strip_prefix(repo.name.as_str())?;
            match rest.strip_prefix('/') {
                Some(inner) => Some((index, inner)),
                None if rest.is_empty() => Some((index, "")),
                None => None,
            }
        })
        .max_by_key(|(index, _)| repos[*index].name.len())
        .ok_or_else(|| {
            format!(
                "`{path}` is in no repository of this chat; paths start with one of: {}",
                repos
                    .iter()
                    .map(|repo| repo.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}
