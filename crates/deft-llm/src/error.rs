//! What can go wrong in a model call, split by what the caller can do about it: retry it
//! (the provider is busy, the stream was cut), fix a setting (a bad key, an unknown model), or
//! give up (the request itself is refused).

use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Anthropic,
    OpenAi,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Anthropic => "Anthropic Messages",
            Protocol::OpenAi => "OpenAI Chat Completions",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("no model is configured; {hint}")]
    NotConfigured { hint: String },
    #[error("{setting}: {message}")]
    Config { setting: String, message: String },
    #[error("the model provider refused the API key ({message}); set {setting} to a valid key")]
    Auth { setting: String, message: String },
    #[error(
        "the model `{model}` is unknown to the provider ({message}); set {setting} to a model it serves"
    )]
    UnknownModel {
        model: String,
        setting: String,
        message: String,
    },
    #[error("the provider refused the request (HTTP {status}: {message})")]
    Rejected { status: u16, message: String },
    #[error("the provider is unavailable (HTTP {status}: {message})")]
    Unavailable {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("cannot reach the model at {base_url}: {message}")]
    Connect { base_url: String, message: String },
    #[error("the {protocol} answer stopped before it was complete")]
    StreamCut { protocol: Protocol },
    #[error("the model sent nothing for {0:?}")]
    IdleTimeout(Duration),
    #[error("the model call took longer than {0:?}")]
    Timeout(Duration),
    #[error("the {protocol} answer is not understood: {message}")]
    Protocol { protocol: Protocol, message: String },
    #[error("the model call was cancelled")]
    Cancelled,
    #[error("gave up after {attempts} attempts; the last: {last}")]
    RetriesExhausted {
        attempts: u32,
        last: Box<ModelError>,
    },
    #[error(
        "the model sent malformed tool calls {attempts} times in a row (the last: {detail}); try a more capable model"
    )]
    MalformedToolCalls { attempts: u32, detail: String },
}

impl ModelError {
    /// Whether trying the same call again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ModelError::Unavailable { .. }
                | ModelError::Connect { .. }
                | ModelError::StreamCut { .. }
                | ModelError::IdleTimeout(_)
                | ModelError::Timeout(_)
        )
    }

    /// How long the provider asked us to wait, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ModelError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// An `error` event inside a stream, by its type.
    pub(crate) fn from_stream_error(protocol: Protocol, kind: &str, message: String) -> ModelError {
        let status = match kind {
            "overloaded_error" => 529,
            "rate_limit_error" | "rate_limit_exceeded" => 429,
            "api_error" | "server_error" | "internal_server_error" => 500,
            _ => {
                return ModelError::Protocol {
                    protocol,
                    message: format!("{kind}: {message}"),
                };
            }
        };
        ModelError::Unavailable {
            status,
            message,
            retry_after: None,
        }
    }
}
