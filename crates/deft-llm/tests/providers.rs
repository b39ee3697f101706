//! The provider clients against the scripted model server (a real HTTP server on loopback)
//! and against response examples in the providers' documented shapes.

use std::time::{Duration, Instant};

use deft_core::Usage;
use deft_llm::{
    Completion, Content, Message, ModelClient, ModelConfig, ModelError, Protocol, Provider,
    Request, StopReason, ToolArguments, ToolResult, ToolSpec, complete_with_usable_tool_calls,
};
use deft_testkit::model_server::{ScriptedCall, ScriptedModel, Step, Turn};
use proptest::prelude::*;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn config(server: &ScriptedModel, provider: Provider) -> ModelConfig {
    ModelConfig {
        provider,
        model: "scripted-model".into(),
        base_url: match provider {
            Provider::Anthropic => server.url.clone(),
            _ => format!("{}/v1", server.url),
        },
        api_key: Some(deft_llm::ApiKey::new("test-key")),
        source: "the test".into(),
        model_setting: "DEFT_MODEL".into(),
        key_setting: "DEFT_MODEL_API_KEY".into(),
    }
}

fn client(server: &ScriptedModel, provider: Provider, stream: bool) -> ModelClient {
    let mut client = ModelClient::new(config(server, provider)).unwrap();
    client.policy.stream = stream;
    client.policy.initial_backoff = Duration::from_millis(10);
    client.policy.max_backoff = Duration::from_millis(50);
    client
}

fn tools() -> Vec<ToolSpec> {
    let schema = |field: &str| json!({"type": "object", "properties": {field: {"type": "string"}}, "required": [field]});
    vec![
        ToolSpec {
            name: "read_file".into(),
            description: "Read a file".into(),
            input_schema: schema("path"),
        },
        ToolSpec {
            name: "bash".into(),
            description: "Run a command".into(),
            input_schema: schema("command"),
        },
    ]
}

fn request() -> Request {
    let mut request = Request::new(
        "You are deft.",
        vec![Message::user("Fix the failing test.")],
    );
    request
        .system
        .push("Steering: use our error helper.".into());
    request.tools = tools();
    request
}

/// Runs the tool calls of `completion` as a stub would and appends the exchange.
fn answer_calls(request: &mut Request, completion: &Completion) {
    request.messages.push(completion.response.to_message());
    let results = completion
        .response
        .tool_calls()
        .map(|call| ToolResult {
            call_id: call.id.clone(),
            content: format!("output of {}", call.name),
            is_error: false,
        })
        .collect();
    request.messages.push(Message::tool_results(results));
}

async fn conversation_round_trips(provider: Provider, stream: bool) {
    let server = ScriptedModel::start(vec![
        Step::Reply(
            Turn {
                text: "Let me look at the test first.".into(),
                tool_calls: vec![ScriptedCall::new(
                    "call_1",
                    "read_file",
                    r#"{"path": "src/lib.rs"}"#,
                )],
                ..Turn::calls(vec![])
            }
            .with_usage(1000, 40, 800),
        ),
        Step::Reply(
            Turn::calls(vec![ScriptedCall::new(
                "call_2",
                "bash",
                r#"{"command": "cargo test"}"#,
            )])
            .with_usage(1100, 30, 900),
        ),
        Step::Reply(
            Turn::text("The test passes now: the off-by-one in `parse` is fixed.")
                .with_usage(1200, 25, 1000),
        ),
    ])
    .await;
    let mut client = client(&server, provider, stream);
    let cancel = CancellationToken::new();
    let mut request = request();

    let first = client.complete(&request, &cancel).await.unwrap();
    assert_eq!(first.response.stop_reason, StopReason::ToolUse);
    assert_eq!(first.response.text(), "Let me look at the test first.");
    let calls: Vec<_> = first.response.tool_calls().cloned().collect();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        (calls[0].id.as_str(), calls[0].name.as_str()),
        ("call_1", "read_file")
    );
    assert_eq!(
        calls[0].arguments,
        ToolArguments::Valid(json!({"path": "src/lib.rs"}))
    );
    assert_eq!(
        first.response.usage,
        Usage {
            input_tokens: 1800,
            output_tokens: 40,
            cached_tokens: 800
        }
    );
    assert_eq!(first.attempts, 1);
    answer_calls(&mut request, &first);

    let second = client.complete(&request, &cancel).await.unwrap();
    let call = second.response.tool_calls().next().unwrap().clone();
    assert_eq!(
        (call.name.as_str(), call.arguments.clone()),
        (
            "bash",
            ToolArguments::Valid(json!({"command": "cargo test"}))
        )
    );
    answer_calls(&mut request, &second);

    // `[model] temperature` goes with the call; unset, the provider's default holds.
    client.policy.temperature = Some(0.0);
    let last = client.complete(&request, &cancel).await.unwrap();
    assert_eq!(last.response.stop_reason, StopReason::EndTurn);
    assert_eq!(
        last.response.text(),
        "The test passes now: the off-by-one in `parse` is fixed."
    );
    assert_eq!(last.response.tool_calls().count(), 0);
    assert_eq!(last.response.model, "scripted-model");

    assert_eq!(server.violations(), Vec::<String>::new());
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| r.body["stream"] == json!(stream)));
    assert!(requests[0].body.get("temperature").is_none());
    assert_eq!(requests[2].body["temperature"], json!(0.0));
    let last_body = &requests[2].body;
    match provider {
        Provider::Anthropic => {
            // The stable prefix is marked for caching: the last tool and the last system block.
            assert_eq!(
                last_body["tools"][1]["cache_control"],
                json!({"type": "ephemeral"})
            );
            assert!(last_body["tools"][0].get("cache_control").is_none());
            assert_eq!(
                last_body["system"][1]["text"],
                "Steering: use our error helper."
            );
            assert_eq!(
                last_body["system"][1]["cache_control"],
                json!({"type": "ephemeral"})
            );
            assert_eq!(last_body["messages"].as_array().unwrap().len(), 5);
            assert_eq!(
                last_body["messages"][2]["content"][0]["tool_use_id"],
                "call_1"
            );
            assert_eq!(requests[0].headers["anthropic-version"], "2023-06-01");
        }
        _ => {
            let roles: Vec<&str> = last_body["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["role"].as_str().unwrap())
                .collect();
            assert_eq!(
                roles,
                ["system", "user", "assistant", "tool", "assistant", "tool"]
            );
            assert_eq!(last_body["messages"][3]["tool_call_id"], "call_1");
            assert_eq!(last_body["tools"][0]["function"]["name"], "read_file");
            if stream {
                assert_eq!(last_body["stream_options"], json!({"include_usage": true}));
            }
        }
    }
}

#[tokio::test]
async fn anthropic_streaming_conversation_round_trips() {
    conversation_round_trips(Provider::Anthropic, true).await;
}

#[tokio::test]
async fn anthropic_conversation_round_trips() {
    conversation_round_trips(Provider::Anthropic, false).await;
}

#[tokio::test]
async fn openai_streaming_conversation_round_trips() {
    conversation_round_trips(Provider::OpenAi, true).await;
}

#[tokio::test]
async fn openai_conversation_round_trips() {
    conversation_round_trips(Provider::OpenAi, false).await;
}

#[tokio::test]
async fn openai_compatible_servers_work_without_a_key() {
    let server = ScriptedModel::start(vec![Step::Reply(Turn::text("hello"))]).await;
    server.expect_api_key(None);
    let mut config = config(&server, Provider::OpenAiCompatible);
    config.api_key = None;
    let client = ModelClient::new(config).unwrap();
    let done = client
        .complete(&request(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(done.response.text(), "hello");
    assert!(server.requests()[0].headers.get("authorization").is_none());
}

#[tokio::test]
async fn retry_after_is_honoured_with_one_retry() {
    for provider in [Provider::Anthropic, Provider::OpenAi] {
        let server = ScriptedModel::start(vec![
            Step::error(429, "rate_limit_error", Some(1)),
            Step::Reply(Turn::text("ok")),
        ])
        .await;
        let done = client(&server, provider, true)
            .complete(&request(), &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!((done.response.text().as_str(), done.attempts), ("ok", 2));
        let requests = server.requests();
        assert_eq!(requests.len(), 2, "exactly one retry");
        let waited = requests[1].at - requests[0].at;
        assert!(
            waited >= Duration::from_secs(1),
            "retried after {waited:?}, before retry-after"
        );
    }
}

#[tokio::test]
async fn bad_keys_are_not_retried_and_name_the_setting() {
    for provider in [Provider::Anthropic, Provider::OpenAi] {
        let server = ScriptedModel::start(vec![Step::Reply(Turn::text("never"))]).await;
        server.expect_api_key(Some("the-right-key"));
        let error = client(&server, provider, true)
            .complete(&request(), &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(error, ModelError::Auth { .. }), "{error}");
        assert!(
            error
                .to_string()
                .contains("set DEFT_MODEL_API_KEY to a valid key"),
            "{error}"
        );
        assert_eq!(server.requests().len(), 1, "no retry");
    }
}

#[tokio::test]
async fn unknown_models_are_not_retried_and_name_the_setting() {
    let server = ScriptedModel::start(vec![Step::Error {
        status: 404,
        kind: "not_found_error".into(),
        message: "model: scripted-model".into(),
        retry_after: None,
    }])
    .await;
    let error = client(&server, Provider::Anthropic, false)
        .complete(&request(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "the model `scripted-model` is unknown to the provider (model: scripted-model); set DEFT_MODEL to a model it serves"
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_cut_stream_is_retried_as_a_whole_call() {
    for (provider, stream) in [
        (Provider::Anthropic, true),
        (Provider::OpenAi, true),
        (Provider::OpenAi, false),
    ] {
        let turn = Turn::calls(vec![ScriptedCall::new(
            "call_9",
            "bash",
            r#"{"command": "make"}"#,
        )]);
        let server = ScriptedModel::start(vec![
            Step::Cut {
                turn: turn.clone(),
                after_events: 4,
            },
            Step::Reply(turn),
        ])
        .await;
        let done = client(&server, provider, stream)
            .complete(&request(), &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(done.attempts, 2);
        assert_eq!(
            done.response.tool_calls().next().unwrap().arguments,
            ToolArguments::Valid(json!({"command": "make"}))
        );
        assert_eq!(server.requests().len(), 2);
    }
}

#[tokio::test]
async fn overload_and_server_errors_are_retried_then_given_up() {
    let server = ScriptedModel::start(vec![
        Step::error(529, "overloaded_error", None),
        Step::error(500, "api_error", None),
        Step::Reply(Turn::text("ok")),
    ])
    .await;
    let done = client(&server, Provider::Anthropic, true)
        .complete(&request(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(done.attempts, 3);

    let server = ScriptedModel::start(
        (0..3)
            .map(|_| Step::error(503, "server_error", None))
            .collect(),
    )
    .await;
    let mut client = client(&server, Provider::OpenAi, true);
    client.policy.max_retries = 2;
    let error = client
        .complete(&request(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(error, ModelError::RetriesExhausted { attempts: 3, .. }),
        "{error}"
    );
}

#[tokio::test]
async fn malformed_tool_arguments_are_fed_back_then_given_up_on() {
    for provider in [Provider::Anthropic, Provider::OpenAi] {
        let broken = || {
            Step::Reply(Turn::calls(vec![ScriptedCall::new(
                "call_b",
                "bash",
                r#"{"command": "ls"#,
            )]))
        };
        // Fed back once, then the model gets it right.
        let server = ScriptedModel::start(vec![
            broken(),
            Step::Reply(Turn::calls(vec![ScriptedCall::new(
                "call_c",
                "bash",
                r#"{"command": "ls"}"#,
            )])),
        ])
        .await;
        let client = client(&server, provider, true);
        let mut request = request();
        let done =
            complete_with_usable_tool_calls(&client, &mut request, &CancellationToken::new())
                .await
                .unwrap();
        assert_eq!(done.response.tool_calls().next().unwrap().id, "call_c");
        assert_eq!(server.violations(), Vec::<String>::new());
        let fed_back = server.requests()[1].body.to_string();
        assert!(
            fed_back.contains("are not a valid JSON object"),
            "{fed_back}"
        );
        assert!(matches!(
            request.messages.last().unwrap().content[0],
            Content::ToolResult(ToolResult { is_error: true, .. })
        ));

        // Always broken: given up after the configured count.
        let server = ScriptedModel::start((0..3).map(|_| broken()).collect()).await;
        let mut client = self::client(&server, provider, true);
        client.policy.max_malformed_tool_calls = 2;
        let error = complete_with_usable_tool_calls(
            &client,
            &mut self::request(),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(error, ModelError::MalformedToolCalls { attempts: 3, .. }),
            "{error}"
        );
        assert_eq!(server.requests().len(), 3);
    }
}

#[tokio::test]
async fn cancellation_aborts_the_call_at_once() {
    let turn = Turn::text("a long answer that never comes");
    let server = ScriptedModel::start(vec![Step::Stall {
        turn,
        after_events: 2,
        pause: Duration::from_secs(30),
    }])
    .await;
    let client = client(&server, Provider::Anthropic, true);
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let canceller = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            cancel.cancel();
        })
    };
    let error = client.complete(&request(), &cancel).await.unwrap_err();
    canceller.await.unwrap();
    assert!(matches!(error, ModelError::Cancelled));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_silent_stream_hits_the_idle_timeout_and_is_retried() {
    let turn = Turn::text("slow");
    let server = ScriptedModel::start(vec![
        Step::Stall {
            turn: turn.clone(),
            after_events: 2,
            pause: Duration::from_secs(5),
        },
        Step::Reply(turn),
    ])
    .await;
    let mut client = client(&server, Provider::OpenAi, true);
    client.policy.idle_timeout = Duration::from_millis(300);
    let done = client
        .complete(&request(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((done.response.text().as_str(), done.attempts), ("slow", 2));
}

/// A local model reading a long prompt says nothing for minutes before its first token:
/// that wait is bounded by the call's timeout, not the idle one, or the call only restarts.
#[tokio::test]
async fn the_wait_for_the_first_event_is_not_idleness() {
    let turn = Turn::text("read it all");
    let server = ScriptedModel::start(vec![Step::Stall {
        turn: turn.clone(),
        after_events: 0,
        pause: Duration::from_millis(1200),
    }])
    .await;
    let mut client = client(&server, Provider::OpenAi, true);
    client.policy.idle_timeout = Duration::from_millis(300);
    let done = client
        .complete(&request(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        (done.response.text().as_str(), done.attempts),
        ("read it all", 1)
    );
}

#[tokio::test]
async fn ollama_is_found_by_its_tags() {
    let server = ScriptedModel::start(vec![]).await;
    server.set_ollama_models(&["qwen2.5-coder:7b"]);
    let found = deft_llm::probe_ollama(Some(&server.url)).await.unwrap();
    assert_eq!(found.models, ["qwen2.5-coder:7b"]);
    assert!(
        deft_llm::probe_ollama(Some("http://127.0.0.1:9"))
            .await
            .is_none()
    );
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Assembles `text` delivered in pieces cut at `cuts` (byte offsets, any order).
fn assemble_in_pieces(
    protocol: Protocol,
    text: &str,
    cuts: &[usize],
) -> Result<deft_llm::Response, ModelError> {
    let bytes = text.as_bytes();
    let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (bytes.len() + 1)).collect();
    cuts.push(0);
    cuts.push(bytes.len());
    cuts.sort();
    cuts.dedup();
    let chunks: Vec<Result<Vec<u8>, String>> = cuts
        .windows(2)
        .map(|w| Ok(bytes[w[0]..w[1]].to_vec()))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(deft_llm::assemble(
        protocol,
        futures_util::stream::iter(chunks),
        Duration::from_secs(5),
    ))
}

fn expected_anthropic() -> Vec<Content> {
    vec![
        Content::Text("Okay, let's check the weather for San Francisco, CA:".into()),
        Content::ToolCall(deft_llm::ToolCall {
            id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into(),
            name: "get_weather".into(),
            arguments: ToolArguments::Valid(
                json!({"location": "San Francisco, CA", "unit": "fahrenheit"}),
            ),
        }),
        Content::ToolCall(deft_llm::ToolCall {
            id: "toolu_01Hq5v1PXQ7Ls4z3rX9kEwDn".into(),
            name: "get_time".into(),
            arguments: ToolArguments::Valid(json!({"timezone": "America/Los_Angeles"})),
        }),
    ]
}

fn expected_openai() -> Vec<Content> {
    vec![
        Content::Text("Checking both cities.".into()),
        Content::ToolCall(deft_llm::ToolCall {
            id: "call_DdmO9pD3xa9XTPNJ32zg2hcA".into(),
            name: "get_current_weather".into(),
            arguments: ToolArguments::Valid(json!({"location": "Boston, MA"})),
        }),
        Content::ToolCall(deft_llm::ToolCall {
            id: "call_1LWkM9oYHpYBL2yTnVX4Lq2e".into(),
            name: "get_current_weather".into(),
            arguments: ToolArguments::Valid(json!({"location": "Tokyo"})),
        }),
    ]
}

#[test]
fn documented_streams_assemble_whole() {
    let anthropic = assemble_in_pieces(
        Protocol::Anthropic,
        &fixture("anthropic-stream-tool-use.sse"),
        &[],
    )
    .unwrap();
    assert_eq!(anthropic.content, expected_anthropic());
    assert_eq!(anthropic.stop_reason, StopReason::ToolUse);
    assert_eq!(
        anthropic.usage,
        Usage {
            input_tokens: 1496,
            output_tokens: 89,
            cached_tokens: 1024
        }
    );
    let openai = assemble_in_pieces(
        Protocol::OpenAi,
        &fixture("openai-stream-tool-calls.sse"),
        &[],
    )
    .unwrap();
    assert_eq!(openai.content, expected_openai());
    assert_eq!(
        openai.usage,
        Usage {
            input_tokens: 181,
            output_tokens: 52,
            cached_tokens: 128
        }
    );
}

#[test]
fn a_stream_without_its_end_is_cut() {
    let text = fixture("anthropic-stream-tool-use.sse");
    let truncated = &text[..text.find("event: message_delta").unwrap()];
    assert!(matches!(
        assemble_in_pieces(Protocol::Anthropic, truncated, &[]),
        Err(ModelError::StreamCut { .. })
    ));
    let text = fixture("openai-stream-tool-calls.sse");
    let truncated = &text[..text.find("\"finish_reason\":\"tool_calls\"").unwrap()];
    let truncated = &truncated[..truncated.rfind("data: ").unwrap()];
    assert!(matches!(
        assemble_in_pieces(Protocol::OpenAi, truncated, &[]),
        Err(ModelError::StreamCut { .. })
    ));
}

#[test]
fn documented_answers_parse() {
    let body: Value = serde_json::from_str(&fixture("anthropic-message-tool-use.json")).unwrap();
    let anthropic = deft_llm_parse(Protocol::Anthropic, &body);
    assert_eq!(
        anthropic.text(),
        "I'll check the current weather in San Francisco for you."
    );
    assert_eq!(
        anthropic.tool_calls().next().unwrap().arguments,
        ToolArguments::Valid(json!({"location": "San Francisco, CA", "unit": "celsius"}))
    );
    assert_eq!(
        anthropic.usage,
        Usage {
            input_tokens: 3895,
            output_tokens: 503,
            cached_tokens: 1800
        }
    );
    let body: Value =
        serde_json::from_str(&fixture("openai-chat-completion-tool-calls.json")).unwrap();
    let openai = deft_llm_parse(Protocol::OpenAi, &body);
    assert_eq!(openai.stop_reason, StopReason::ToolUse);
    assert_eq!(
        openai.tool_calls().next().unwrap().arguments,
        ToolArguments::Valid(json!({"location": "Boston, MA"}))
    );
    assert_eq!(
        openai.usage,
        Usage {
            input_tokens: 82,
            output_tokens: 17,
            cached_tokens: 64
        }
    );
}

/// Parses a whole answer by serving it from a one-shot HTTP server to the real client.
fn deft_llm_parse(protocol: Protocol, body: &Value) -> deft_llm::Response {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let body = body.to_string();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buffer = vec![0u8; 65536];
            let mut read = 0;
            // Read the request head and its body before answering.
            loop {
                read += socket.read(&mut buffer[read..]).await.unwrap();
                let head = String::from_utf8_lossy(&buffer[..read]).to_string();
                if let Some(end) = head.find("\r\n\r\n") {
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                        .unwrap_or(0);
                    if read >= end + 4 + length {
                        break;
                    }
                }
            }
            let answer = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            socket.write_all(answer.as_bytes()).await.unwrap();
        });
        let provider = match protocol {
            Protocol::Anthropic => Provider::Anthropic,
            Protocol::OpenAi => Provider::OpenAi,
        };
        let config = ModelConfig {
            provider,
            model: "m".into(),
            base_url: if provider == Provider::Anthropic { url } else { format!("{url}/v1") },
            api_key: Some(deft_llm::ApiKey::new("k")),
            source: "test".into(),
            model_setting: "DEFT_MODEL".into(),
            key_setting: "DEFT_MODEL_API_KEY".into(),
        };
        let mut client = ModelClient::new(config).unwrap();
        client.policy.stream = false;
        client.policy.max_retries = 0;
        client.complete(&request(), &CancellationToken::new()).await.unwrap().response
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// However the bytes of a stream are split, the same answer comes out.
    #[test]
    fn any_split_of_a_stream_assembles_the_same_answer(cuts in prop::collection::vec(0usize..6000, 0..40)) {
        let anthropic = assemble_in_pieces(Protocol::Anthropic, &fixture("anthropic-stream-tool-use.sse"), &cuts).unwrap();
        prop_assert_eq!(anthropic.content, expected_anthropic());
        let openai = assemble_in_pieces(Protocol::OpenAi, &fixture("openai-stream-tool-calls.sse"), &cuts).unwrap();
        prop_assert_eq!(openai.content, expected_openai());
        prop_assert_eq!(openai.usage.cached_tokens, 128);
    }
}

/// A watched call is told its text as it streams in, growing piece by piece to the whole
/// answer, with both protocols.
#[tokio::test]
async fn a_watched_call_sees_the_text_grow_as_it_streams() {
    for provider in [Provider::Anthropic, Provider::OpenAi] {
        let server = ScriptedModel::start(vec![Step::Reply(Turn::text(
            "The greeting is written in English and ends with a newline.",
        ))])
        .await;
        let seen = std::sync::Mutex::new(Vec::<String>::new());
        let watch = |text: &str| seen.lock().unwrap().push(text.to_owned());
        let completion = client(&server, provider, true)
            .complete_watched(&request(), &CancellationToken::new(), Some(&watch))
            .await
            .unwrap();
        let seen = seen.into_inner().unwrap();
        let whole = completion.response.text();
        assert_eq!(seen.last(), Some(&whole), "{provider:?}");
        let distinct: Vec<&String> = seen.iter().filter(|text| !text.is_empty()).collect();
        assert!(distinct.len() >= 2, "{provider:?}: {seen:?}");
        assert!(
            distinct
                .windows(2)
                .all(|pair| pair[1].starts_with(pair[0].as_str())),
            "{provider:?}: {seen:?}"
        );
    }
}
