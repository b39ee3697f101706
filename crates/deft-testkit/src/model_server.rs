//! A scripted model server: a real HTTP server on loopback that answers the Anthropic Messages
//! API (`POST /v1/messages`) and OpenAI Chat Completions (`POST /v1/chat/completions`),
//! streamed or not, by playing a script of turns and faults. It also answers Ollama's
//! `GET /api/tags`.
//!
//! It is written from the providers' public API references, independently of deft's clients,
//! and checks every request it receives against the protocol's rules (headers, roles, every
//! tool result answering a call); a request that breaks one gets a 400 and is recorded in
//! [`ScriptedModel::violations`], so a test that ignores them still fails on the 400.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// One tool call of a scripted turn. `arguments` is the raw JSON text the model "writes", so a
/// script can send malformed arguments.
#[derive(Debug, Clone)]
pub struct ScriptedCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

impl ScriptedCall {
    pub fn new(id: &str, name: &str, arguments: &str) -> ScriptedCall {
        ScriptedCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }
}

/// Tokens as Anthropic reports them: `input` excludes the `cached` prompt tokens. (OpenAI's
/// `prompt_tokens` includes them; the server renders each the provider's way.)
#[derive(Debug, Clone, Copy, Default)]
pub struct ScriptedUsage {
    pub input: i64,
    pub output: i64,
    pub cached: i64,
}

/// What the model says in one turn.
#[derive(Debug, Clone, Default)]
pub struct Turn {
    pub text: String,
    pub tool_calls: Vec<ScriptedCall>,
    pub usage: ScriptedUsage,
}

impl Turn {
    pub fn text(text: &str) -> Turn {
        Turn {
            text: text.into(),
            usage: ScriptedUsage {
                input: 100,
                output: 20,
                cached: 0,
            },
            ..Turn::default()
        }
    }

    pub fn calls(calls: Vec<ScriptedCall>) -> Turn {
        Turn {
            tool_calls: calls,
            usage: ScriptedUsage {
                input: 100,
                output: 30,
                cached: 0,
            },
            ..Turn::default()
        }
    }

    pub fn with_usage(mut self, input: i64, output: i64, cached: i64) -> Turn {
        self.usage = ScriptedUsage {
            input,
            output,
            cached,
        };
        self
    }
}

/// One answer of the script.
#[derive(Debug, Clone)]
pub enum Step {
    /// A normal turn, streamed or not as the request asks.
    Reply(Turn),
    /// An error answer: `status`, the provider's error `kind` (`rate_limit_error`,
    /// `overloaded_error`, ...) and, when given, a `retry-after` header in seconds.
    Error {
        status: u16,
        kind: String,
        message: String,
        retry_after: Option<u64>,
    },
    /// The turn's stream (or body) is cut after `after_events` events.
    Cut { turn: Turn, after_events: usize },
    /// The turn's stream pauses for `pause` after `after_events` events, then goes on.
    Stall {
        turn: Turn,
        after_events: usize,
        pause: Duration,
    },
}

impl Step {
    pub fn error(status: u16, kind: &str, retry_after: Option<u64>) -> Step {
        Step::Error {
            status,
            kind: kind.into(),
            message: format!("scripted {kind}"),
            retry_after,
        }
    }
}

/// A request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `anthropic` or `openai`.
    pub protocol: &'static str,
    pub at: Instant,
    pub headers: HeaderMap,
    pub body: Value,
}

/// Answers a request when the script has run out: for tests with many tasks at once, whose
/// order of requests no script can know.
pub type Responder = Arc<dyn Fn(&str, &Value) -> Turn + Send + Sync>;

#[derive(Default)]
struct Script {
    responder: Option<Responder>,
    /// How long every answer takes, as a slow model would.
    delay: Option<Duration>,
    steps: VecDeque<Step>,
    api_key: Option<String>,
    requests: Vec<Recorded>,
    violations: Vec<String>,
    ollama_models: Vec<String>,
}

/// The running server; it stops when dropped.
pub struct ScriptedModel {
    /// `http://127.0.0.1:PORT`: the Anthropic base URL; add `/v1` for OpenAI's.
    pub url: String,
    script: Arc<Mutex<Script>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ScriptedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedModel")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Drop for ScriptedModel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Shared = Arc<Mutex<Script>>;

impl ScriptedModel {
    /// Starts a server that expects the API key `test-key` and plays `steps` in order.
    pub async fn start(steps: Vec<Step>) -> ScriptedModel {
        let script = Arc::new(Mutex::new(Script {
            steps: steps.into(),
            api_key: Some("test-key".into()),
            ..Script::default()
        }));
        let app = Router::new()
            .route("/v1/messages", post(anthropic))
            .route("/v1/chat/completions", post(openai))
            .route("/api/tags", get(ollama_tags))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("a bound address"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ScriptedModel { url, script, task }
    }

    /// The API key to expect (`None`: any or none, as a local server would).
    pub fn expect_api_key(&self, key: Option<&str>) {
        self.lock().api_key = key.map(str::to_owned);
    }

    /// Makes every answer take `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = Some(delay);
    }

    /// What to answer once the script has run out, decided from each request.
    pub fn respond_with(&self, responder: impl Fn(&str, &Value) -> Turn + Send + Sync + 'static) {
        self.lock().responder = Some(Arc::new(responder));
    }

    pub fn push(&self, step: Step) {
        self.lock().steps.push_back(step);
    }

    /// The models `GET /api/tags` lists, as Ollama would.
    pub fn set_ollama_models(&self, models: &[&str]) {
        self.lock().ollama_models = models.iter().map(|m| m.to_string()).collect();
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Protocol rules broken by requests so far.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    pub fn remaining_steps(&self) -> usize {
        self.lock().steps.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script
            .lock()
            .expect("the script lock is never poisoned")
    }
}

async fn ollama_tags(State(script): State<Shared>) -> Response {
    let models: Vec<Value> = script
        .lock()
        .unwrap()
        .ollama_models
        .iter()
        .map(|name| json!({ "name": name, "model": name }))
        .collect();
    axum::Json(json!({ "models": models })).into_response()
}

/// Records the request, checks auth and the protocol's rules, and takes the next step.
fn take(
    script: &Shared,
    protocol: &'static str,
    headers: &HeaderMap,
    body: &Value,
) -> Result<Step, Box<Response>> {
    let mut script = script.lock().unwrap();
    script.requests.push(Recorded {
        protocol,
        at: Instant::now(),
        headers: headers.clone(),
        body: body.clone(),
    });
    if let Some(key) = script.api_key.clone() {
        let sent = match protocol {
            "anthropic" => headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            _ => headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_owned),
        };
        if sent.as_deref() != Some(key.as_str()) {
            return Err(Box::new(error_response(
                protocol,
                401,
                "authentication_error",
                "invalid x-api-key",
                None,
            )));
        }
    }
    let problems = match protocol {
        "anthropic" => check_anthropic(headers, body),
        _ => check_openai(body),
    };
    if !problems.is_empty() {
        let message = problems.join("; ");
        script.violations.push(format!("{protocol}: {message}"));
        return Err(Box::new(error_response(
            protocol,
            400,
            "invalid_request_error",
            &message,
            None,
        )));
    }
    match script.steps.pop_front() {
        Some(step) => Ok(step),
        None if script.responder.is_some() => {
            let responder = script.responder.clone().expect("checked above");
            Ok(Step::Reply(responder(protocol, body)))
        }
        None => {
            script
                .violations
                .push(format!("{protocol}: a request after the script ended"));
            Err(Box::new(error_response(
                protocol,
                500,
                "api_error",
                "the script has no more steps",
                None,
            )))
        }
    }
}

fn check_anthropic(headers: &HeaderMap, body: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if headers.get("anthropic-version").is_none() {
        problems.push("the anthropic-version header is missing".to_owned());
    }
    if !body["model"].is_string() {
        problems.push("model: a string is required".into());
    }
    if !body["max_tokens"].is_u64() {
        problems.push("max_tokens: a positive integer is required".into());
    }
    let Some(messages) = body["messages"].as_array().filter(|m| !m.is_empty()) else {
        problems.push("messages: at least one message is required".into());
        return problems;
    };
    let mut expected_role = "user";
    let mut open_calls: Vec<String> = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or("");
        if role != expected_role {
            problems.push(format!("messages.{index}.role: expected `{expected_role}`, roles must alternate starting with `user`"));
        }
        let blocks = message["content"].as_array().cloned().unwrap_or_default();
        if role == "user" {
            let answered: Vec<String> = blocks
                .iter()
                .filter(|b| b["type"] == "tool_result")
                .filter_map(|b| b["tool_use_id"].as_str().map(str::to_owned))
                .collect();
            for id in &answered {
                if !open_calls.contains(id) {
                    problems.push(format!("messages.{index}: tool_result for `{id}`, which the previous assistant turn did not call"));
                }
            }
            for id in &open_calls {
                if !answered.contains(id) {
                    problems.push(format!(
                        "messages.{index}: the tool_use `{id}` has no tool_result"
                    ));
                }
            }
            open_calls.clear();
        } else {
            open_calls = blocks
                .iter()
                .filter(|b| b["type"] == "tool_use")
                .filter_map(|b| b["id"].as_str().map(str::to_owned))
                .collect();
            for block in blocks.iter().filter(|b| b["type"] == "tool_use") {
                if !block["input"].is_object() {
                    problems.push(format!(
                        "messages.{index}: tool_use input must be an object"
                    ));
                }
            }
        }
        expected_role = if role == "user" { "assistant" } else { "user" };
    }
    if expected_role != "assistant" {
        problems.push("the last message must be the user's".into());
    }
    problems
}

fn check_openai(body: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if !body["model"].is_string() {
        problems.push("model: a string is required".into());
    }
    let Some(messages) = body["messages"].as_array().filter(|m| !m.is_empty()) else {
        problems.push("messages: at least one message is required".into());
        return problems;
    };
    let mut open_calls: Vec<String> = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        match message["role"].as_str() {
            Some("tool") => {
                let id = message["tool_call_id"].as_str().unwrap_or("");
                match open_calls.iter().position(|open| open == id) {
                    Some(position) => {
                        open_calls.remove(position);
                    }
                    None => problems.push(format!("messages[{index}]: a tool message for `{id}` must answer a tool call of the assistant message before it")),
                }
            }
            Some(role @ ("system" | "user" | "assistant" | "developer")) => {
                if !open_calls.is_empty() {
                    problems.push(format!("messages[{index}]: the tool calls {open_calls:?} must be answered by tool messages first"));
                    open_calls.clear();
                }
                if role == "assistant" {
                    for call in message["tool_calls"].as_array().into_iter().flatten() {
                        open_calls.push(call["id"].as_str().unwrap_or("").to_owned());
                        if !call["function"]["arguments"].is_string() {
                            problems.push(format!(
                                "messages[{index}]: function.arguments must be a string"
                            ));
                        }
                    }
                }
            }
            other => problems.push(format!(
                "messages[{index}].role: `{}` is not a role",
                other.unwrap_or("none")
            )),
        }
    }
    if !open_calls.is_empty() {
        problems.push(format!("the tool calls {open_calls:?} are not answered"));
    }
    problems
}

fn error_response(
    protocol: &str,
    status: u16,
    kind: &str,
    message: &str,
    retry_after: Option<u64>,
) -> Response {
    let body = match protocol {
        "anthropic" => json!({ "type": "error", "error": { "type": kind, "message": message } }),
        _ => json!({ "error": { "message": message, "type": kind, "param": null, "code": kind } }),
    };
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response();
    if let Some(seconds) = retry_after {
        response.headers_mut().insert("retry-after", seconds.into());
    }
    response
}

async fn anthropic(State(script): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let step = match take(&script, "anthropic", &headers, &body) {
        Ok(step) => step,
        Err(response) => return *response,
    };
    let delay = script.lock().unwrap().delay;
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let model = body["model"].as_str().unwrap_or("").to_owned();
    play(
        step,
        "anthropic",
        body["stream"].as_bool().unwrap_or(false),
        &model,
    )
}

async fn openai(State(script): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let step = match take(&script, "openai", &headers, &body) {
        Ok(step) => step,
        Err(response) => return *response,
    };
    let delay = script.lock().unwrap().delay;
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let model = body["model"].as_str().unwrap_or("").to_owned();
    play(
        step,
        "openai",
        body["stream"].as_bool().unwrap_or(false),
        &model,
    )
}

fn play(step: Step, protocol: &str, stream: bool, model: &str) -> Response {
    let (turn, cut_after, stall) = match step {
        Step::Error {
            status,
            kind,
            message,
            retry_after,
        } => return error_response(protocol, status, &kind, &message, retry_after),
        Step::Reply(turn) => (turn, None, None),
        Step::Cut { turn, after_events } => (turn, Some(after_events), None),
        Step::Stall {
            turn,
            after_events,
            pause,
        } => (turn, None, Some((after_events, pause))),
    };
    if !stream {
        let body = match protocol {
            "anthropic" => anthropic_message(&turn, model),
            _ => openai_completion(&turn, model),
        }
        .to_string();
        if let Some(after) = cut_after {
            // A body that stops halfway, then a dropped connection.
            let half = Bytes::from(body[..body.len().min(after.max(1) * 8)].to_owned());
            let chunks: Vec<Result<Bytes, std::io::Error>> =
                vec![Ok(half), Err(std::io::Error::other("scripted cut"))];
            return Response::builder()
                .header("content-type", "application/json")
                .header("content-length", body.len().to_string())
                .body(Body::from_stream(futures_util::stream::iter(chunks)))
                .unwrap();
        }
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
    }
    let events = match protocol {
        "anthropic" => anthropic_events(&turn, model),
        _ => openai_events(&turn, model),
    };
    let events: Arc<Vec<Bytes>> = Arc::new(events.into_iter().map(Bytes::from).collect());
    // Event by event, so a cut or a pause lands between two events; an error item makes the
    // server drop the connection, as a failing upstream would.
    let stream = futures_util::stream::unfold((0usize, false), move |(index, ended)| {
        let events = events.clone();
        async move {
            if ended {
                return None;
            }
            if cut_after == Some(index) {
                return Some((Err(std::io::Error::other("scripted cut")), (index, true)));
            }
            let event = events.get(index)?.clone();
            if let Some((after, pause)) = stall
                && after == index
            {
                tokio::time::sleep(pause).await;
            }
            Some((Ok::<Bytes, std::io::Error>(event), (index + 1, false)))
        }
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .unwrap()
}

/// Splits text into pieces of at most `size` characters, as a model streams it.
fn pieces(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(size)
        .map(|chunk| chunk.iter().collect())
        .collect()
}

fn sse(event: Option<&str>, data: &Value) -> String {
    match event {
        Some(name) => format!("event: {name}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

fn anthropic_message(turn: &Turn, model: &str) -> Value {
    let mut content = Vec::new();
    if !turn.text.is_empty() {
        content.push(json!({ "type": "text", "text": turn.text }));
    }
    for call in &turn.tool_calls {
        // A real answer always carries an object; a malformed script sends the raw text.
        let input = serde_json::from_str::<Value>(&call.arguments)
            .unwrap_or(Value::String(call.arguments.clone()));
        content
            .push(json!({ "type": "tool_use", "id": call.id, "name": call.name, "input": input }));
    }
    json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": if turn.tool_calls.is_empty() { "end_turn" } else { "tool_use" },
        "stop_sequence": null,
        "usage": {
            "input_tokens": turn.usage.input,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": turn.usage.cached,
            "output_tokens": turn.usage.output,
        },
    })
}

fn anthropic_events(turn: &Turn, model: &str) -> Vec<String> {
    let mut events = vec![sse(
        Some("message_start"),
        &json!({
            "type": "message_start",
            "message": {
                "id": "msg_014p7gG3wDgGV9EUtLvnow3U",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {
                    "input_tokens": turn.usage.input,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": turn.usage.cached,
                    "output_tokens": 1,
                },
            },
        }),
    )];
    let mut index = 0;
    if !turn.text.is_empty() {
        events.push(sse(Some("content_block_start"), &json!({ "type": "content_block_start", "index": index, "content_block": { "type": "text", "text": "" } })));
        events.push(sse(Some("ping"), &json!({ "type": "ping" })));
        for piece in pieces(&turn.text, 5) {
            events.push(sse(
                Some("content_block_delta"),
                &json!({ "type": "content_block_delta", "index": index, "delta": { "type": "text_delta", "text": piece } }),
            ));
        }
        events.push(sse(
            Some("content_block_stop"),
            &json!({ "type": "content_block_stop", "index": index }),
        ));
        index += 1;
    }
    for call in &turn.tool_calls {
        events.push(sse(
            Some("content_block_start"),
            &json!({ "type": "content_block_start", "index": index, "content_block": { "type": "tool_use", "id": call.id, "name": call.name, "input": {} } }),
        ));
        let mut parts = vec![String::new()];
        parts.extend(pieces(&call.arguments, 7));
        for part in parts {
            events.push(sse(
                Some("content_block_delta"),
                &json!({ "type": "content_block_delta", "index": index, "delta": { "type": "input_json_delta", "partial_json": part } }),
            ));
        }
        events.push(sse(
            Some("content_block_stop"),
            &json!({ "type": "content_block_stop", "index": index }),
        ));
        index += 1;
    }
    events.push(sse(
        Some("message_delta"),
        &json!({
            "type": "message_delta",
            "delta": { "stop_reason": if turn.tool_calls.is_empty() { "end_turn" } else { "tool_use" }, "stop_sequence": null },
            "usage": { "output_tokens": turn.usage.output },
        }),
    ));
    events.push(sse(
        Some("message_stop"),
        &json!({ "type": "message_stop" }),
    ));
    events
}

fn openai_usage(turn: &Turn) -> Value {
    json!({
        "prompt_tokens": turn.usage.input + turn.usage.cached,
        "completion_tokens": turn.usage.output,
        "total_tokens": turn.usage.input + turn.usage.cached + turn.usage.output,
        "prompt_tokens_details": { "cached_tokens": turn.usage.cached, "audio_tokens": 0 },
        "completion_tokens_details": { "reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0 },
    })
}

fn openai_completion(turn: &Turn, model: &str) -> Value {
    let mut message = json!({
        "role": "assistant",
        "content": if turn.text.is_empty() { Value::Null } else { Value::String(turn.text.clone()) },
        "refusal": null,
    });
    if !turn.tool_calls.is_empty() {
        message["tool_calls"] = turn
            .tool_calls
            .iter()
            .map(|call| json!({ "id": call.id, "type": "function", "function": { "name": call.name, "arguments": call.arguments } }))
            .collect();
    }
    json!({
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "created": 1699896916,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": if turn.tool_calls.is_empty() { "stop" } else { "tool_calls" },
        }],
        "usage": openai_usage(turn),
        "system_fingerprint": "fp_44709d6fcb",
    })
}

fn openai_events(turn: &Turn, model: &str) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        sse(
            None,
            &json!({
                "id": "chatcmpl-123",
                "object": "chat.completion.chunk",
                "created": 1694268190,
                "model": model,
                "system_fingerprint": "fp_44709d6fcb",
                "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
            }),
        )
    };
    let mut events = vec![chunk(
        json!({ "role": "assistant", "content": "", "refusal": null }),
        Value::Null,
    )];
    for piece in pieces(&turn.text, 5) {
        events.push(chunk(json!({ "content": piece }), Value::Null));
    }
    for (index, call) in turn.tool_calls.iter().enumerate() {
        events.push(chunk(
            json!({ "tool_calls": [{ "index": index, "id": call.id, "type": "function", "function": { "name": call.name, "arguments": "" } }] }),
            Value::Null,
        ));
        for piece in pieces(&call.arguments, 7) {
            events.push(chunk(
                json!({ "tool_calls": [{ "index": index, "function": { "arguments": piece } }] }),
                Value::Null,
            ));
        }
    }
    events.push(chunk(
        json!({}),
        json!(if turn.tool_calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        }),
    ));
    events.push(sse(
        None,
        &json!({
            "id": "chatcmpl-123",
            "object": "chat.completion.chunk",
            "created": 1694268190,
            "model": model,
            "system_fingerprint": "fp_44709d6fcb",
            "choices": [],
            "usage": openai_usage(turn),
        }),
    ));
    events.push("data: [DONE]\n\n".to_owned());
    events
}
