//! The user's MCP servers (SPEC §5 "MCP"): each one started inside the task's sandbox (same
//! isolation and network policy as any command), spoken to over its standard streams with
//! the official Rust SDK (`rmcp`), its tools offered to the model as `mcp__SERVER__TOOL`.
//!
//! A server that cannot start does not stop the task: the task goes on without it and an
//! event says which server and why. A tool call that hangs is cut at its timeout. Results are
//! redacted like every other output before the model or the log sees them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deft_core::McpConfig;
use deft_llm::ToolSpec;
use deft_sandbox::ExecRequest;
use deft_sandbox::Sandbox;
use rmcp::model::{CallToolRequestParams, Tool};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::{ClientHandler, RoleClient};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt as _;
use tokio::sync::Mutex;

use crate::tools::{Effect, ToolOutput};

/// The prefix of every MCP tool's name as the model sees it.
pub const PREFIX: &str = "mcp__";
/// How long a server has to start and list its tools.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The most of one result the model gets.
const RESULT_CAP: usize = 20_000;

/// Notices a server's `tools/list_changed`, so that its tools are listed again before the
/// model's next turn.
#[derive(Clone, Default)]
struct Listener {
    changed: Arc<AtomicBool>,
}

impl ClientHandler for Listener {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.changed.store(true, Ordering::SeqCst);
    }
}

struct Server {
    name: String,
    service: RunningService<RoleClient, Listener>,
    changed: Arc<AtomicBool>,
    tools: Mutex<Vec<Tool>>,
    /// The sandboxed process: dropping it kills the server and all it started.
    _process: tokio::process::Child,
}

/// What happened to one configured server at start, for the task's events.
#[derive(Debug, Clone, PartialEq)]
pub enum Started {
    Running { server: String, tools: Vec<String> },
    Failed { server: String, reason: String },
}

/// The task's running MCP servers.
#[derive(Default)]
pub struct McpServers {
    servers: Vec<Server>,
    /// The sandbox's: masks the user's secrets in results.
    redactor: deft_core::Redactor,
    /// A call that takes longer is cut off.
    pub call_timeout: Duration,
}

impl std::fmt::Debug for McpServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.servers.iter().map(|s| &s.name))
            .finish()
    }
}

/// `text` with each `${KEY}` replaced by the user's env var KEY, else their secret KEY.
pub fn resolve(
    text: &str,
    env: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, String>,
    field: &str,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("{field}: `${{` is not closed; write `${{KEY}}`"))?;
        let key = &after[..end];
        let value = env.get(key).or_else(|| secrets.get(key)).ok_or_else(|| {
            format!("{field}: `${{{key}}}` names no env var or secret; add one called {key} in the settings")
        })?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A tool's name as offered: `mcp__SERVER__TOOL`, in the characters and length providers take.
fn offered_name(server: &str, tool: &str) -> String {
    let clean = |text: &str| {
        text.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    let mut name = format!("{PREFIX}{}__{}", clean(server), clean(tool));
    name.truncate(64);
    name
}

impl McpServers {
    /// Starts every configured server in `sandbox`; those that fail are reported, not fatal.
    pub async fn start(
        sandbox: &dyn Sandbox,
        config: &McpConfig,
        env: &BTreeMap<String, String>,
        secrets: &BTreeMap<String, String>,
    ) -> (McpServers, Vec<Started>) {
        let mut servers = McpServers {
            servers: Vec::new(),
            redactor: sandbox.redactor().clone(),
            call_timeout: Duration::from_secs(120),
        };
        let mut report = Vec::new();
        for (name, server) in &config.servers {
            match start_one(sandbox, name, server, env, secrets).await {
                Ok(started) => {
                    let tools = started
                        .tools
                        .lock()
                        .await
                        .iter()
                        .map(|t| t.name.to_string())
                        .collect();
                    report.push(Started::Running {
                        server: name.clone(),
                        tools,
                    });
                    servers.servers.push(started);
                }
                Err(reason) => report.push(Started::Failed {
                    server: name.clone(),
                    reason: sandbox.redactor().redact(&reason),
                }),
            }
        }
        (servers, report)
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The tools to offer the model now, listed again for a server that said its list changed.
    pub async fn specs(&self) -> Vec<ToolSpec> {
        let mut specs = Vec::new();
        for server in &self.servers {
            if server.changed.swap(false, Ordering::SeqCst) {
                match server.service.list_all_tools().await {
                    Ok(tools) => *server.tools.lock().await = tools,
                    Err(error) => {
                        tracing::warn!(server = %server.name, error = %error, "listing MCP tools again failed")
                    }
                }
            }
            for tool in server.tools.lock().await.iter() {
                specs.push(ToolSpec {
                    name: offered_name(&server.name, &tool.name),
                    description: format!(
                        "[MCP server `{}`] {}",
                        server.name,
                        tool.description.as_deref().unwrap_or("")
                    ),
                    input_schema: Value::Object((*tool.input_schema).clone()),
                });
            }
        }
        specs
    }

    /// Calls the tool the model named `name`; its result, redacted and capped.
    pub async fn call(&self, name: &str, arguments: Value) -> ToolOutput {
        let mut target = None;
        for server in &self.servers {
            let tools = server.tools.lock().await;
            if let Some(tool) = tools
                .iter()
                .find(|t| offered_name(&server.name, &t.name) == name)
            {
                target = Some((server, tool.name.clone()));
                break;
            }
        }
        let Some((server, tool)) = target else {
            return ToolOutput::error(format!(
                "there is no MCP tool named `{name}`; use one of the `{PREFIX}…` tools offered"
            ));
        };
        let arguments = match arguments {
            Value::Object(map) => map,
            Value::Null => serde_json::Map::new(),
            other => {
                return ToolOutput::error(format!(
                    "the arguments must be a JSON object, not {other}"
                ));
            }
        };
        let mut params = CallToolRequestParams::new(tool.clone());
        params.arguments = Some(arguments);
        let called =
            tokio::time::timeout(self.call_timeout, server.service.call_tool(params)).await;
        let result = match called {
            Err(_) => {
                return ToolOutput::error(format!(
                    "the MCP tool `{tool}` of `{}` did not answer within {:.1} s and was cut off; call it with less to do, or do without it",
                    server.name,
                    self.call_timeout.as_secs_f64()
                ));
            }
            Ok(Err(error)) => {
                return ToolOutput::error(self.redactor.redact(&format!(
                    "the MCP server `{}` failed the call: {error}",
                    server.name
                )));
            }
            Ok(Ok(result)) => result,
        };
        // A server that changes its tools during a call says so before the call's answer, but
        // the notification is handled on a task of its own and may land after the next turn
        // is built: a server that can change its list is listed again after each call.
        let may_change = server
            .service
            .peer_info()
            .and_then(|info| {
                info.capabilities
                    .tools
                    .as_ref()
                    .and_then(|t| t.list_changed)
            })
            .unwrap_or(false);
        if may_change {
            server.changed.store(true, Ordering::SeqCst);
        }
        let mut parts = Vec::new();
        for block in &result.content {
            let block = serde_json::to_value(block).unwrap_or(Value::Null);
            match block["type"].as_str() {
                Some("text") => parts.push(block["text"].as_str().unwrap_or("").to_owned()),
                Some("image" | "audio") => parts.push(format!(
                    "[{} omitted]",
                    block["type"].as_str().unwrap_or("")
                )),
                _ => parts.push(block.to_string()),
            }
        }
        if let Some(structured) = &result.structured_content {
            parts.push(format!("structured content: {structured}"));
        }
        let mut content = self.redactor.redact(&parts.join("\n"));
        if content.len() > RESULT_CAP {
            let mut cut = RESULT_CAP;
            while !content.is_char_boundary(cut) {
                cut -= 1;
            }
            content.truncate(cut);
            content.push_str("\n[the result was cut here]");
        }
        ToolOutput {
            content,
            is_error: result.is_error.unwrap_or(false),
            effect: Effect::None,
        }
    }

    /// Stops every server.
    pub async fn shutdown(self) {
        for server in self.servers {
            let _ = server.service.cancel().await;
        }
    }
}

async fn start_one(
    sandbox: &dyn Sandbox,
    name: &str,
    server: &deft_core::McpServer,
    env: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, String>,
) -> Result<Server, String> {
    let field = format!("mcp.mcpServers.{name}");
    let mut argv = vec![resolve(
        &server.command,
        env,
        secrets,
        &format!("{field}.command"),
    )?];
    for (index, arg) in server.args.iter().enumerate() {
        argv.push(resolve(
            arg,
            env,
            secrets,
            &format!("{field}.args[{index}]"),
        )?);
    }
    let mut extra = Vec::new();
    for (key, value) in &server.env {
        extra.push((
            key.clone(),
            resolve(value, env, secrets, &format!("{field}.env.{key}"))?,
        ));
    }
    let request = ExecRequest {
        argv,
        cwd: None,
        timeout: Duration::MAX,
        output_cap: 0,
    };
    let process = sandbox
        .spawn(&request, &extra)
        .await
        .map_err(|error| format!("cannot start it: {error}"))?;
    // Its standard error is kept for a failure's explanation, and must be drained anyway.
    let said = Arc::new(std::sync::Mutex::new(String::new()));
    let mut stderr = process.stderr;
    {
        let said = said.clone();
        tokio::spawn(async move {
            let mut buffer = [0u8; 4096];
            while let Ok(read) = stderr.read(&mut buffer).await {
                if read == 0 {
                    break;
                }
                let mut said = said.lock().unwrap_or_else(|e| e.into_inner());
                said.push_str(&String::from_utf8_lossy(&buffer[..read]));
                if said.len() > 4096 {
                    let cut = said.len() - 2048;
                    let cut = (cut..said.len())
                        .find(|i| said.is_char_boundary(*i))
                        .unwrap_or(0);
                    said.drain(..cut);
                }
            }
        });
    }
    let listener = Listener::default();
    let changed = listener.changed.clone();
    let mut child = process.child;
    let connect = async {
        let service = rmcp::serve_client(listener, (process.stdout, process.stdin))
            .await
            .map_err(|error| error.to_string())?;
        let tools = service
            .list_all_tools()
            .await
            .map_err(|error| error.to_string())?;
        Ok::<_, String>((service, tools))
    };
    let outcome = tokio::time::timeout(START_TIMEOUT, connect).await;
    let why = |reason: String| {
        let said = said
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .trim()
            .to_owned();
        if said.is_empty() {
            reason
        } else {
            format!("{reason}; it said: {}", said.lines().last().unwrap_or(""))
        }
    };
    let (service, tools) = match outcome {
        Ok(Ok(connected)) => connected,
        Ok(Err(reason)) => {
            // A program that is not there exits at once; give its last words a moment.
            let _ = tokio::time::timeout(Duration::from_millis(500), child.wait()).await;
            return Err(why(format!("it did not start as an MCP server ({reason})")));
        }
        Err(_) => {
            return Err(why(format!(
                "it did not answer within {} s",
                START_TIMEOUT.as_secs()
            )));
        }
    };
    Ok(Server {
        name: name.to_owned(),
        service,
        changed,
        tools: Mutex::new(tools),
        _process: child,
    })
}

/// The event data of a server's start.
pub fn event(started: &Started) -> Value {
    match started {
        Started::Running { server, tools } => {
            json!({"step": "mcp", "status": "started", "server": server, "tools": tools})
        }
        Started::Failed { server, reason } => json!({
            "step": "mcp", "status": "failed", "server": server,
            "reason": format!("the MCP server `{server}` is not available, and the task goes on without it: {reason}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_resolve_from_env_vars_first_then_secrets() {
        let env = BTreeMap::from([
            ("REGION".to_owned(), "eu".to_owned()),
            ("TOKEN".to_owned(), "from-env".to_owned()),
        ]);
        let secrets = BTreeMap::from([
            ("TOKEN".to_owned(), "from-secret".to_owned()),
            ("API_KEY".to_owned(), "k".to_owned()),
        ]);
        assert_eq!(
            resolve("${REGION}-${API_KEY}", &env, &secrets, "f").unwrap(),
            "eu-k"
        );
        assert_eq!(
            resolve("${TOKEN}", &env, &secrets, "f").unwrap(),
            "from-env",
            "an env var wins"
        );
        assert_eq!(
            resolve("plain $HOME", &env, &secrets, "f").unwrap(),
            "plain $HOME"
        );
        let missing = resolve("${NOPE}", &env, &secrets, "mcp.mcpServers.x.env.A").unwrap_err();
        assert!(
            missing.contains("mcp.mcpServers.x.env.A: `${NOPE}` names no env var or secret"),
            "{missing}"
        );
        assert!(
            resolve("${OPEN", &env, &secrets, "f")
                .unwrap_err()
                .contains("not closed")
        );
    }

    #[test]
    fn offered_names_are_prefixed_and_in_the_characters_providers_take() {
        assert_eq!(
            offered_name("everything", "get-env"),
            "mcp__everything__get-env"
        );
        assert_eq!(
            offered_name("my server", "do.it/now"),
            "mcp__my_server__do_it_now"
        );
        assert_eq!(offered_name(&"s".repeat(80), "t").len(), 64);
    }
}
