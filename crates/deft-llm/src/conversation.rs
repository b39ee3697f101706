//! The provider-neutral conversation: what the agent says to a model and what it gets back.
//! Each provider module translates these to and from its own wire format.

use deft_core::Usage;
use serde_json::Value;

/// A function the model may call, described by a JSON Schema of its arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

/// The arguments of a tool call as the model sent them.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolArguments {
    /// A JSON object.
    Valid(Value),
    /// Not a JSON object: kept as sent, so it can be shown back to the model.
    Malformed { raw: String, error: String },
}

impl ToolArguments {
    /// Parses arguments that arrive as a JSON string (OpenAI, and Anthropic's streamed deltas).
    pub fn parse(raw: &str) -> ToolArguments {
        // A call without arguments is sent as an empty string by some servers.
        if raw.trim().is_empty() {
            return ToolArguments::Valid(Value::Object(Default::default()));
        }
        match serde_json::from_str::<Value>(raw) {
            Ok(value @ Value::Object(_)) => ToolArguments::Valid(value),
            Ok(other) => ToolArguments::Malformed {
                raw: raw.to_owned(),
                error: format!("arguments must be a JSON object, not {}", json_type(&other)),
            },
            Err(error) => ToolArguments::Malformed {
                raw: raw.to_owned(),
                error: error.to_string(),
            },
        }
    }

    /// The arguments as an object, `{}` when malformed (what can be echoed back to a provider).
    pub fn as_object(&self) -> Value {
        match self {
            ToolArguments::Valid(value) => value.clone(),
            ToolArguments::Malformed { .. } => Value::Object(Default::default()),
        }
    }

    /// The arguments as the JSON text a provider expects in a transcript.
    pub fn to_json_text(&self) -> String {
        match self {
            ToolArguments::Valid(value) => value.to_string(),
            ToolArguments::Malformed { raw, .. } => raw.clone(),
        }
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: ToolArguments,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    pub call_id: String,
    pub content: String,
    pub is_error: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Text(String),
    ToolCall(ToolCall),
    ToolResult(ToolResult),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Content>,
}

impl Message {
    pub fn user(text: impl Into<String>) -> Message {
        Message {
            role: Role::User,
            content: vec![Content::Text(text.into())],
        }
    }

    pub fn tool_results(results: Vec<ToolResult>) -> Message {
        Message {
            role: Role::User,
            content: results.into_iter().map(Content::ToolResult).collect(),
        }
    }
}

/// One call to a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The system prompt in parts that change at different rates (the prompt, then steering):
    /// the whole of it is the stable prefix that providers may cache.
    pub system: Vec<String>,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    pub max_tokens: u32,
}

impl Request {
    pub fn new(system: impl Into<String>, messages: Vec<Message>) -> Request {
        Request {
            system: vec![system.into()],
            messages,
            tools: Vec::new(),
            max_tokens: 8192,
        }
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// It finished its turn.
    EndTurn,
    /// It wants its tool calls run.
    ToolUse,
    /// It ran out of `max_tokens`.
    MaxTokens,
    /// Anything else the provider said (a stop sequence, a content filter).
    Other,
}

/// The model's answer to one call.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// Text and tool calls, in the order the model produced them.
    pub content: Vec<Content>,
    pub stop_reason: StopReason,
    /// All prompt tokens (cached ones included), output tokens, and the prompt tokens read
    /// from the provider's cache.
    pub usage: Usage,
    /// The model that answered, as the provider names it.
    pub model: String,
}

impl Response {
    /// All the text of the answer.
    pub fn text(&self) -> String {
        self.content
            .iter()
            .filter_map(|content| match content {
                Content::Text(text) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn tool_calls(&self) -> impl Iterator<Item = &ToolCall> {
        self.content.iter().filter_map(|content| match content {
            Content::ToolCall(call) => Some(call),
            _ => None,
        })
    }

    /// The answer as a message of the transcript, to send back with the next call.
    pub fn to_message(&self) -> Message {
        let content = self
            .content
            .iter()
            .filter(|content| !matches!(content, Content::ToolResult(_)))
            .cloned()
            .collect();
        Message {
            role: Role::Assistant,
            content,
        }
    }
}
