//! The Anthropic Messages API (`POST /v1/messages`): the request body, the answer, and the
//! server-sent events of a streamed answer. Written from Anthropic's public API reference.
//!
//! Prompt caching: the last tool definition and the last system block carry
//! `cache_control: {"type": "ephemeral"}`, so the stable prefix (tools, system prompt,
//! steering) is cached across the many calls of a task.

use std::collections::BTreeMap;

use deft_core::Usage;
use serde_json::{Value, json};

use crate::conversation::{Content, Request, Response, Role, StopReason, ToolArguments, ToolCall};
use crate::error::{ModelError, Protocol};

pub const API_VERSION: &str = "2023-06-01";

pub fn request_body(model: &str, request: &Request, stream: bool) -> Value {
    let cache = json!({ "type": "ephemeral" });
    let system_count = request
        .system
        .iter()
        .filter(|part| !part.is_empty())
        .count();
    let system: Vec<Value> = request
        .system
        .iter()
        .filter(|part| !part.is_empty())
        .enumerate()
        .map(|(index, part)| {
            let mut block = json!({ "type": "text", "text": part });
            if index + 1 == system_count {
                block["cache_control"] = cache.clone();
            }
            block
        })
        .collect();
    let tools: Vec<Value> = request
        .tools
        .iter()
        .enumerate()
        .map(|(index, tool)| {
            let mut spec = json!({
                "name": tool.name,
                "description": tool.description,
                "input_schema": tool.input_schema,
            });
            if index + 1 == request.tools.len() {
                spec["cache_control"] = cache.clone();
            }
            spec
        })
        .collect();
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|message| {
            let role = match message.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            let content: Vec<Value> = message
                .content
                .iter()
                .map(|content| match content {
                    Content::Text(text) => json!({ "type": "text", "text": text }),
                    Content::ToolCall(call) => json!({
                        "type": "tool_use",
                        "id": call.id,
                        "name": call.name,
                        "input": call.arguments.as_object(),
                    }),
                    Content::ToolResult(result) => json!({
                        "type": "tool_result",
                        "tool_use_id": result.call_id,
                        "content": result.content,
                        "is_error": result.is_error,
                    }),
                })
                .collect();
            json!({ "role": role, "content": content })
        })
        .collect();
    let mut body = json!({
        "model": model,
        "max_tokens": request.max_tokens,
        "messages": messages,
        "stream": stream,
    });
    if !system.is_empty() {
        body["system"] = Value::Array(system);
    }
    if !tools.is_empty() {
        body["tools"] = Value::Array(tools);
    }
    body
}

fn stop_reason(text: Option<&str>) -> StopReason {
    match text {
        Some("end_turn") => StopReason::EndTurn,
        Some("tool_use") => StopReason::ToolUse,
        Some("max_tokens") => StopReason::MaxTokens,
        _ => StopReason::Other,
    }
}

/// Anthropic counts cached prompt tokens apart from `input_tokens`; deft's `input_tokens` is
/// the whole prompt.
fn usage(value: &Value) -> Usage {
    let count = |key: &str| value[key].as_i64().unwrap_or(0);
    let cached = count("cache_read_input_tokens");
    Usage {
        input_tokens: count("input_tokens") + cached + count("cache_creation_input_tokens"),
        output_tokens: count("output_tokens"),
        cached_tokens: cached,
    }
}

fn protocol(message: impl Into<String>) -> ModelError {
    ModelError::Protocol {
        protocol: Protocol::Anthropic,
        message: message.into(),
    }
}

/// Reads a whole (not streamed) answer.
pub fn parse_response(body: &Value) -> Result<Response, ModelError> {
    let blocks = body["content"]
        .as_array()
        .ok_or_else(|| protocol("the answer has no `content` array"))?;
    let mut content = Vec::new();
    for block in blocks {
        match block["type"].as_str() {
            Some("text") => content.push(Content::Text(
                block["text"].as_str().unwrap_or("").to_owned(),
            )),
            Some("tool_use") => {
                let arguments = match &block["input"] {
                    input @ Value::Object(_) => ToolArguments::Valid(input.clone()),
                    Value::String(raw) => ToolArguments::parse(raw),
                    other => ToolArguments::parse(&other.to_string()),
                };
                content.push(Content::ToolCall(ToolCall {
                    id: block["id"].as_str().unwrap_or("").to_owned(),
                    name: block["name"].as_str().unwrap_or("").to_owned(),
                    arguments,
                }));
            }
            // Thinking and other blocks carry nothing the agent acts on.
            _ => {}
        }
    }
    Ok(Response {
        content,
        stop_reason: stop_reason(body["stop_reason"].as_str()),
        usage: usage(&body["usage"]),
        model: body["model"].as_str().unwrap_or("").to_owned(),
    })
}

/// Builds the answer from the events of a stream, in any chunking.
#[derive(Debug, Default)]
pub struct StreamAssembler {
    blocks: BTreeMap<u64, Block>,
    stop_reason: Option<String>,
    usage: Value,
    model: String,
    stopped: bool,
}

#[derive(Debug)]
enum Block {
    Text(String),
    Tool {
        id: String,
        name: String,
        json: String,
    },
    Ignored,
}

impl StreamAssembler {
    /// The answer's text so far, its text blocks in order.
    pub fn text(&self) -> String {
        self.blocks
            .values()
            .filter_map(|block| match block {
                Block::Text(text) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Takes one event. `Ok(true)` once the message is complete.
    pub fn push(&mut self, data: &str) -> Result<bool, ModelError> {
        let event: Value = serde_json::from_str(data)
            .map_err(|error| protocol(format!("an event is not JSON: {error}")))?;
        match event["type"].as_str() {
            Some("message_start") => {
                self.model = event["message"]["model"].as_str().unwrap_or("").to_owned();
                self.usage = event["message"]["usage"].clone();
            }
            Some("content_block_start") => {
                let index = event["index"]
                    .as_u64()
                    .ok_or_else(|| protocol("a block has no index"))?;
                let block = &event["content_block"];
                let block = match block["type"].as_str() {
                    Some("text") => Block::Text(block["text"].as_str().unwrap_or("").to_owned()),
                    Some("tool_use") => Block::Tool {
                        id: block["id"].as_str().unwrap_or("").to_owned(),
                        name: block["name"].as_str().unwrap_or("").to_owned(),
                        json: String::new(),
                    },
                    _ => Block::Ignored,
                };
                self.blocks.insert(index, block);
            }
            Some("content_block_delta") => {
                let index = event["index"]
                    .as_u64()
                    .ok_or_else(|| protocol("a delta has no index"))?;
                let block = self.blocks.get_mut(&index).ok_or_else(|| {
                    protocol(format!("a delta for block {index}, which never started"))
                })?;
                let delta = &event["delta"];
                match (block, delta["type"].as_str()) {
                    (Block::Text(text), Some("text_delta")) => {
                        text.push_str(delta["text"].as_str().unwrap_or(""))
                    }
                    (Block::Tool { json, .. }, Some("input_json_delta")) => {
                        json.push_str(delta["partial_json"].as_str().unwrap_or(""))
                    }
                    _ => {}
                }
            }
            Some("message_delta") => {
                if let Some(reason) = event["delta"]["stop_reason"].as_str() {
                    self.stop_reason = Some(reason.to_owned());
                }
                // The final usage is cumulative; keep the input counts of message_start when
                // it does not repeat them.
                if let Some(final_usage) = event["usage"].as_object() {
                    for (key, value) in final_usage {
                        self.usage[key] = value.clone();
                    }
                }
            }
            Some("message_stop") => {
                self.stopped = true;
                return Ok(true);
            }
            Some("error") => {
                let kind = event["error"]["type"].as_str().unwrap_or("error");
                let message = event["error"]["message"].as_str().unwrap_or("").to_owned();
                return Err(ModelError::from_stream_error(
                    Protocol::Anthropic,
                    kind,
                    message,
                ));
            }
            _ => {}
        }
        Ok(false)
    }

    pub fn finish(self) -> Result<Response, ModelError> {
        if !self.stopped {
            return Err(ModelError::StreamCut {
                protocol: Protocol::Anthropic,
            });
        }
        let content = self
            .blocks
            .into_values()
            .filter_map(|block| match block {
                Block::Text(text) if !text.is_empty() => Some(Content::Text(text)),
                Block::Tool { id, name, json } => Some(Content::ToolCall(ToolCall {
                    id,
                    name,
                    arguments: ToolArguments::parse(&json),
                })),
                _ => None,
            })
            .collect();
        Ok(Response {
            content,
            stop_reason: stop_reason(self.stop_reason.as_deref()),
            usage: usage(&self.usage),
            model: self.model,
        })
    }
}

/// What an error answer says, for the user.
pub fn error_message(body: &Value) -> Option<String> {
    body["error"]["message"].as_str().map(str::to_owned)
}
