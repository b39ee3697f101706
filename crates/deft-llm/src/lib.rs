//! Model providers (SPEC §4): one provider-neutral conversation, three ways to send it
//! (Anthropic Messages, OpenAI Chat Completions, any OpenAI-compatible server), and the
//! robustness a long-running agent needs: retries with backoff that honour `retry-after`,
//! deadlines, idle-stream limits, cancellation, and bounded recovery from malformed tool calls.
//!
//! API keys live in [`ApiKey`], which never prints; nothing here logs a key or a prompt.

mod anthropic;
mod client;
mod config;
mod conversation;
mod error;
mod openai;
mod tools;

pub use client::{CallPolicy, Completion, ModelClient, TextWatch, assemble, probe_ollama};
pub use config::{
    ApiKey, DEFAULT_ANTHROPIC_MODEL, DEFAULT_OPENAI_MODEL, MODEL_ENV_VARS, ModelConfig, ModelFile,
    ModelInputs, ModelRole, Models, OLLAMA_URL, OllamaFound, Provider, RoleFile,
    not_configured_hint, parse_model, resolve,
};
pub use conversation::{
    Content, Message, Request, Response, Role, StopReason, ToolArguments, ToolCall, ToolResult,
    ToolSpec,
};
pub use error::{ModelError, Protocol};
pub use tools::{complete_with_usable_tool_calls, problem};

/// Resolves the models, probing Ollama only when nothing else names one.
pub async fn resolve_with_probe(
    mut inputs: ModelInputs,
    ollama_url: Option<&str>,
) -> Result<Models, ModelError> {
    if inputs.needs_probe() && inputs.ollama.is_none() {
        inputs.ollama = probe_ollama(ollama_url).await;
    }
    resolve(&inputs)
}
