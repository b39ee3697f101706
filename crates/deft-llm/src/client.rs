//! Calling a model: one HTTP request per attempt, streamed or not, retried when the failure is
//! passing (429, 5xx, overloaded, a reset connection, a cut stream), with a deadline per call, a
//! limit on silence inside a stream, and cancellation that drops the request at once.

use std::time::{Duration, Instant};

use eventsource_stream::Eventsource as _;
use futures_util::{Stream, StreamExt as _};
use rand::Rng as _;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::{ModelConfig, OLLAMA_URL, OllamaFound};
use crate::conversation::{Request, Response};
use crate::error::{ModelError, Protocol};
use crate::{anthropic, openai};

/// How calls are made. The defaults suit a long-running agent.
#[derive(Debug, Clone)]
pub struct CallPolicy {
    /// Streamed answers (the default) show progress and let a stalled answer be cut early.
    pub stream: bool,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The first backoff; it doubles per retry, with jitter, up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// The longest one attempt may take.
    pub call_timeout: Duration,
    /// The longest a stream may stay silent once it has begun. Before its first event only
    /// `call_timeout` bounds it: a local model on a few cores reads a long prompt for minutes
    /// before it says anything, and cutting it off there only makes it start over.
    pub idle_timeout: Duration,
    /// How many answers in a row with malformed tool calls are fed back before giving up.
    pub max_malformed_tool_calls: u32,
    /// The sampling temperature sent with each call; the provider's default when `None`.
    pub temperature: Option<f32>,
}

impl Default for CallPolicy {
    fn default() -> Self {
        CallPolicy {
            stream: true,
            max_retries: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            call_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(90),
            max_malformed_tool_calls: 3,
            temperature: None,
        }
    }
}

/// A model to call.
#[derive(Debug, Clone)]
pub struct ModelClient {
    config: ModelConfig,
    http: reqwest::Client,
    pub policy: CallPolicy,
}

/// The answer and what it took to get it.
#[derive(Debug, Clone)]
pub struct Completion {
    pub response: Response,
    /// Attempts made, the successful one included.
    pub attempts: u32,
    pub duration: Duration,
}

fn is_loopback(url: &str) -> bool {
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or("")
        .split(['/', ':'])
        .next()
        .unwrap_or("");
    matches!(host, "127.0.0.1" | "localhost" | "[" | "[::1]") || host.starts_with("127.")
}

fn http_client(base_url: &str) -> Result<reqwest::Client, ModelError> {
    let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
    // A model on this machine is not reached through a proxy from the environment.
    if is_loopback(base_url) {
        builder = builder.no_proxy();
    }
    builder.build().map_err(|error| ModelError::Config {
        setting: "model client".into(),
        message: error.to_string(),
    })
}

impl ModelClient {
    pub fn new(config: ModelConfig) -> Result<ModelClient, ModelError> {
        let http = http_client(&config.base_url)?;
        Ok(ModelClient {
            config,
            http,
            policy: CallPolicy::default(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Makes the call, retrying passing failures, until it succeeds, fails for good, or
    /// `cancel` fires (which drops the request in flight at once).
    pub async fn complete(
        &self,
        request: &Request,
        cancel: &CancellationToken,
    ) -> Result<Completion, ModelError> {
        self.complete_watched(request, cancel, None).await
    }

    /// As [`ModelClient::complete`], with `watch` told the answer's text so far as it streams
    /// in (all of it each time; a retried attempt starts again from nothing), for a reply
    /// shown as it is written.
    pub async fn complete_watched(
        &self,
        request: &Request,
        cancel: &CancellationToken,
        watch: Option<&TextWatch<'_>>,
    ) -> Result<Completion, ModelError> {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(ModelError::Cancelled),
                result = tokio::time::timeout(self.policy.call_timeout, self.attempt(request, watch)) => {
                    result.unwrap_or(Err(ModelError::Timeout(self.policy.call_timeout)))
                }
            };
            let error = match result {
                Ok(response) => {
                    tracing::debug!(
                        model = %self.config.label(),
                        input_tokens = response.usage.input_tokens,
                        output_tokens = response.usage.output_tokens,
                        cached_tokens = response.usage.cached_tokens,
                        attempts = attempt,
                        duration_ms = started.elapsed().as_millis() as u64,
                        "model call done"
                    );
                    return Ok(Completion {
                        response,
                        attempts: attempt,
                        duration: started.elapsed(),
                    });
                }
                Err(error) if error.is_retryable() => error,
                Err(error) => return Err(error),
            };
            if attempt > self.policy.max_retries {
                return Err(ModelError::RetriesExhausted {
                    attempts: attempt,
                    last: Box::new(error),
                });
            }
            let delay = error.retry_after().unwrap_or_else(|| self.backoff(attempt));
            tracing::warn!(model = %self.config.label(), attempt, delay_ms = delay.as_millis() as u64, error = %error, "model call failed; retrying");
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(ModelError::Cancelled),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Exponential backoff with jitter: half fixed, half random, so that many tasks hitting
    /// the same limit do not retry in step.
    fn backoff(&self, attempt: u32) -> Duration {
        let exponential = self
            .policy
            .initial_backoff
            .saturating_mul(1 << (attempt - 1).min(16));
        let capped = exponential.min(self.policy.max_backoff);
        let half = capped / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }

    async fn attempt(
        &self,
        request: &Request,
        watch: Option<&TextWatch<'_>>,
    ) -> Result<Response, ModelError> {
        let protocol = self.config.provider.protocol();
        let stream = self.policy.stream;
        let (url, body) = match protocol {
            Protocol::Anthropic => (
                format!("{}/v1/messages", self.config.base_url),
                anthropic::request_body(&self.config.model, request, stream),
            ),
            Protocol::OpenAi => (
                format!("{}/chat/completions", self.config.base_url),
                openai::request_body(&self.config.model, request, stream),
            ),
        };
        let mut body = body;
        if let Some(temperature) = self.policy.temperature {
            // Both protocols name it the same, at the top of the body.
            body["temperature"] = serde_json::json!(temperature);
        }
        let mut builder = self.http.post(&url).json(&body);
        builder = match (protocol, &self.config.api_key) {
            (Protocol::Anthropic, key) => {
                let builder = builder.header("anthropic-version", anthropic::API_VERSION);
                match key {
                    Some(key) => builder.header("x-api-key", key.expose()),
                    None => builder,
                }
            }
            (Protocol::OpenAi, Some(key)) => builder.bearer_auth(key.expose()),
            (Protocol::OpenAi, None) => builder,
        };
        let response = builder
            .send()
            .await
            .map_err(|error| self.transport(error))?;
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            let text = response.text().await.unwrap_or_default();
            return Err(self.refusal(status, &headers, &text));
        }
        if stream {
            assemble_watched(
                protocol,
                response.bytes_stream(),
                self.policy.idle_timeout,
                watch,
            )
            .await
        } else {
            let text = response
                .text()
                .await
                .map_err(|_| ModelError::StreamCut { protocol })?;
            let body: Value =
                serde_json::from_str(&text).map_err(|error| ModelError::Protocol {
                    protocol,
                    message: format!("the answer is not JSON: {error}"),
                })?;
            match protocol {
                Protocol::Anthropic => anthropic::parse_response(&body),
                Protocol::OpenAi => openai::parse_response(&body),
            }
        }
    }

    fn transport(&self, error: reqwest::Error) -> ModelError {
        ModelError::Connect {
            base_url: self.config.base_url.clone(),
            message: error.to_string(),
        }
    }

    /// Turns an error answer into what the caller can act on.
    fn refusal(&self, status: StatusCode, headers: &HeaderMap, text: &str) -> ModelError {
        let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let message = match self.config.provider.protocol() {
            Protocol::Anthropic => anthropic::error_message(&body),
            Protocol::OpenAi => openai::error_message(&body),
        }
        .unwrap_or_else(|| text.chars().take(300).collect());
        let code = body["error"]["code"]
            .as_str()
            .or(body["error"]["type"].as_str())
            .unwrap_or("");
        let mentions_model = code.contains("model_not_found")
            || (message.to_lowercase().contains("model")
                && (message.contains("not found") || message.contains("does not exist")));
        match status.as_u16() {
            401 | 403 => ModelError::Auth {
                setting: self.config.key_setting.clone(),
                message,
            },
            404 => ModelError::UnknownModel {
                model: self.config.model.clone(),
                setting: self.config.model_setting.clone(),
                message,
            },
            400 if mentions_model => ModelError::UnknownModel {
                model: self.config.model.clone(),
                setting: self.config.model_setting.clone(),
                message,
            },
            408 | 409 | 429 | 500..=599 => ModelError::Unavailable {
                status: status.as_u16(),
                message,
                retry_after: retry_after(headers),
            },
            other => ModelError::Rejected {
                status: other,
                message,
            },
        }
    }
}

/// `retry-after` in seconds (HTTP allows a date too; providers send seconds), or OpenAI's
/// `retry-after-ms`.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
    };
    if let Some(millis) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Some(Duration::from_secs_f64(millis.max(0.0) / 1000.0));
    }
    header("retry-after")
        .and_then(|v| v.parse::<f64>().ok())
        .map(|secs| Duration::from_secs_f64(secs.clamp(0.0, 3600.0)))
}

/// Assembles a streamed answer from the body's bytes, however they are chunked; silence of
/// `idle_timeout` after the first event is a dead stream (the wait for the first is the
/// caller's to bound).
pub async fn assemble<S, B, E>(
    protocol: Protocol,
    bytes: S,
    idle_timeout: Duration,
) -> Result<Response, ModelError>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    assemble_watched(protocol, bytes, idle_timeout, None).await
}

/// What is told an answer's text so far, as it streams in.
pub type TextWatch<'a> = dyn Fn(&str) + Send + Sync + 'a;

async fn assemble_watched<S, B, E>(
    protocol: Protocol,
    bytes: S,
    idle_timeout: Duration,
    watch: Option<&TextWatch<'_>>,
) -> Result<Response, ModelError>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let mut events = bytes.eventsource();
    let mut anthropic = anthropic::StreamAssembler::default();
    let mut openai = openai::StreamAssembler::default();
    let mut begun = false;
    loop {
        let next = if begun {
            tokio::time::timeout(idle_timeout, events.next())
                .await
                .map_err(|_| ModelError::IdleTimeout(idle_timeout))?
        } else {
            events.next().await
        };
        begun = true;
        let Some(event) = next else { break };
        // A transport error mid-body: the connection was cut.
        let Ok(event) = event else {
            return Err(ModelError::StreamCut { protocol });
        };
        let done = match protocol {
            Protocol::Anthropic => anthropic.push(&event.data)?,
            Protocol::OpenAi => openai.push(&event.data)?,
        };
        if let Some(watch) = watch {
            match protocol {
                Protocol::Anthropic => watch(&anthropic.text()),
                Protocol::OpenAi => watch(openai.text()),
            }
        }
        if done {
            break;
        }
    }
    match protocol {
        Protocol::Anthropic => anthropic.finish(),
        Protocol::OpenAi => openai.finish(),
    }
}

/// Asks an Ollama server for its models; `None` when nothing answers within half a second.
pub async fn probe_ollama(url: Option<&str>) -> Option<OllamaFound> {
    let url = url.unwrap_or(OLLAMA_URL).trim_end_matches('/').to_owned();
    let http = http_client(&url).ok()?;
    let response = http
        .get(format!("{url}/api/tags"))
        .timeout(Duration::from_millis(500))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body: Value = response.json().await.ok()?;
    let models = body["models"]
        .as_array()?
        .iter()
        .filter_map(|m| m["name"].as_str().map(str::to_owned))
        .collect();
    Some(OllamaFound { url, models })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_milliseconds() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", "1500".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        assert!(is_loopback("http://127.0.0.1:11434/v1"));
        assert!(is_loopback("http://localhost:8080"));
        assert!(!is_loopback("https://api.anthropic.com"));
    }
}
