//! OpenAI Chat Completions (`POST {base}/chat/completions`), which OpenAI-compatible servers
//! (Ollama, vLLM, llama.cpp's server, OpenRouter) serve too: the request body, the answer, and
//! the chunks of a streamed answer. Written from OpenAI's public API reference.
//!
//! OpenAI caches long prompt prefixes by itself; the cached count arrives in
//! `usage.prompt_tokens_details.cached_tokens`.

use std::collections::BTreeMap;

use deft_core::Usage;
use serde_json::{Value, json};

use crate::conversation::{Content, Request, Response, Role, StopReason, ToolArguments, ToolCall};
use crate::error::{ModelError, Protocol};

pub fn request_body(model: &str, request: &Request, stream: bool) -> Value {
    let mut messages = Vec::new();
    let system: Vec<&str> = request
        .system
        .iter()
        .map(String::as_str)
        .filter(|part| !part.is_empty())
        .collect();
    if !system.is_empty() {
        messages.push(json!({ "role": "system", "content": system.join("\n\n") }));
    }
    for message in &request.messages {
        match message.role {
            Role::Assistant => {
                let text: String = message
                    .content
                    .iter()
                    .filter_map(|c| match c {
                        Content::Text(text) => Some(text.as_str()),
                        _ => None,
                    })
                    .collect();
                let calls: Vec<Value> = message
                    .content
                    .iter()
                    .filter_map(|c| match c {
                        Content::ToolCall(call) => Some(json!({
                            "id": call.id,
                            "type": "function",
                            "function": { "name": call.name, "arguments": call.arguments.to_json_text() },
                        })),
                        _ => None,
                    })
                    .collect();
                let mut entry = json!({ "role": "assistant", "content": if text.is_empty() { Value::Null } else { Value::String(text) } });
                if !calls.is_empty() {
                    entry["tool_calls"] = Value::Array(calls);
                }
                messages.push(entry);
            }
            Role::User => {
                // Tool results are messages of their own, and must directly follow the call.
                let mut text = String::new();
                for content in &message.content {
                    match content {
                        Content::ToolResult(result) => messages.push(json!({
                            "role": "tool",
                            "tool_call_id": result.call_id,
                            "content": result.content,
                        })),
                        Content::Text(part) => text.push_str(part),
                        Content::ToolCall(_) => {}
                    }
                }
                if !text.is_empty() {
                    messages.push(json!({ "role": "user", "content": text }));
                }
            }
        }
    }
    let mut body = json!({
        "model": model,
        "messages": messages,
        "max_completion_tokens": request.max_tokens,
        "stream": stream,
    });
    if stream {
        body["stream_options"] = json!({ "include_usage": true });
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "type": "function",
                    "function": { "name": tool.name, "description": tool.description, "parameters": tool.input_schema },
                })
            })
            .collect();
    }
    body
}

fn stop_reason(text: Option<&str>) -> StopReason {
    match text {
        Some("stop") => StopReason::EndTurn,
        Some("tool_calls" | "function_call") => StopReason::ToolUse,
        Some("length") => StopReason::MaxTokens,
        _ => StopReason::Other,
    }
}

fn usage(value: &Value) -> Usage {
    Usage {
        input_tokens: value["prompt_tokens"].as_i64().unwrap_or(0),
        output_tokens: value["completion_tokens"].as_i64().unwrap_or(0),
        cached_tokens: value["prompt_tokens_details"]["cached_tokens"]
            .as_i64()
            .unwrap_or(0),
    }
}

fn protocol(message: impl Into<String>) -> ModelError {
    ModelError::Protocol {
        protocol: Protocol::OpenAi,
        message: message.into(),
    }
}

/// Reads a whole (not streamed) answer.
pub fn parse_response(body: &Value) -> Result<Response, ModelError> {
    let choice = body["choices"]
        .get(0)
        .ok_or_else(|| protocol("the answer has no choices"))?;
    let message = &choice["message"];
    let mut content = Vec::new();
    if let Some(text) = message["content"].as_str()
        && !text.is_empty()
    {
        content.push(Content::Text(text.to_owned()));
    }
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        let arguments = match &call["function"]["arguments"] {
            Value::String(raw) => ToolArguments::parse(raw),
            // Some compatible servers send the arguments as an object.
            object @ Value::Object(_) => ToolArguments::Valid(object.clone()),
            other => ToolArguments::parse(&other.to_string()),
        };
        content.push(Content::ToolCall(ToolCall {
            id: call["id"].as_str().unwrap_or("").to_owned(),
            name: call["function"]["name"].as_str().unwrap_or("").to_owned(),
            arguments,
        }));
    }
    Ok(Response {
        content,
        stop_reason: stop_reason(choice["finish_reason"].as_str()),
        usage: usage(&body["usage"]),
        model: body["model"].as_str().unwrap_or("").to_owned(),
    })
}

/// Builds the answer from the chunks of a stream, in any chunking.
#[derive(Debug, Default)]
pub struct StreamAssembler {
    text: String,
    calls: BTreeMap<u64, PartialCall>,
    finish_reason: Option<String>,
    usage: Value,
    model: String,
    done: bool,
}

#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

impl StreamAssembler {
    /// The answer's text so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Takes one event's data. `Ok(true)` at `[DONE]`.
    pub fn push(&mut self, data: &str) -> Result<bool, ModelError> {
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(true);
        }
        let chunk: Value = serde_json::from_str(data)
            .map_err(|error| protocol(format!("a chunk is not JSON: {error}")))?;
        if let Some(error) = chunk.get("error") {
            let kind = error["type"]
                .as_str()
                .or(error["code"].as_str())
                .unwrap_or("error")
                .to_owned();
            let message = error["message"].as_str().unwrap_or("").to_owned();
            return Err(ModelError::from_stream_error(
                Protocol::OpenAi,
                &kind,
                message,
            ));
        }
        if let Some(model) = chunk["model"].as_str() {
            self.model = model.to_owned();
        }
        if chunk["usage"].is_object() {
            self.usage = chunk["usage"].clone();
        }
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            let delta = &choice["delta"];
            if let Some(text) = delta["content"].as_str() {
                self.text.push_str(text);
            }
            for (position, call) in delta["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                // Servers that send each call whole sometimes leave out the index.
                let index = call["index"].as_u64().unwrap_or(position as u64);
                let partial = self.calls.entry(index).or_default();
                if let Some(id) = call["id"].as_str() {
                    partial.id = id.to_owned();
                }
                if let Some(name) = call["function"]["name"].as_str() {
                    partial.name.push_str(name);
                }
                match &call["function"]["arguments"] {
                    Value::String(piece) => partial.arguments.push_str(piece),
                    object @ Value::Object(_) => partial.arguments = object.to_string(),
                    _ => {}
                }
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                self.finish_reason = Some(reason.to_owned());
            }
        }
        Ok(false)
    }

    pub fn finish(self) -> Result<Response, ModelError> {
        // `[DONE]` ends a complete stream; a server that omits it must at least have said
        // why the model stopped.
        if !self.done && self.finish_reason.is_none() {
            return Err(ModelError::StreamCut {
                protocol: Protocol::OpenAi,
            });
        }
        let mut content = Vec::new();
        if !self.text.is_empty() {
            content.push(Content::Text(self.text));
        }
        for call in self.calls.into_values() {
            content.push(Content::ToolCall(ToolCall {
                id: call.id,
                name: call.name,
                arguments: ToolArguments::parse(&call.arguments),
            }));
        }
        Ok(Response {
            content,
            stop_reason: stop_reason(self.finish_reason.as_deref()),
            usage: usage(&self.usage),
            model: self.model,
        })
    }
}

pub fn error_message(body: &Value) -> Option<String> {
    body["error"]["message"]
        .as_str()
        .or(body["error"].as_str())
        .map(str::to_owned)
}
