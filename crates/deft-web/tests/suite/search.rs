//! Search against stand-ins of the two providers, serving answers of the providers' real shape.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use deft_web::wire::{BraveResponse, SearxngResponse};
use deft_web::{SETTING_API_KEY, SETTING_BASE_URL, SearchClient, SearchProvider, WebError};

use super::support::Server;

// SearXNG's answer to `GET /search?q=…&format=json`: the envelope (`query`, `number_of_results`,
// `results`, `answers`, `corrections`, `infoboxes`, `suggestions`, `unresponsive_engines`) and a
// result's fields as SearXNG's "Search API" documentation page (docs.searxng.org, dev/search_api)
// and its JSON output give them; trimmed to three results.
const SEARXNG: &str = include_str!("../payloads/searxng-search.json");
// Brave's `WebSearchApiResponse` as its Web Search API documentation describes it (the
// "Response Objects" page of the API dashboard's documentation: `type`, `query`, `mixed`, `web`
// with `results` of `SearchResult`), trimmed to three results.
const BRAVE: &str = include_str!("../payloads/brave-web-search.json");
const TOKEN: &str = "test-subscription-token";

fn json(body: &'static str) -> Response {
    ([("content-type", "application/json")], body).into_response()
}

/// A SearXNG stand-in: answers `body` to `/search?q=…&format=json` only, and keeps each `q`.
async fn searxng(body: &'static str, seen: Arc<Mutex<Vec<String>>>) -> Server {
    let router = Router::new().route(
        "/search",
        get(
            move |Query(query): Query<HashMap<String, String>>| async move {
                if query.get("format").map(String::as_str) != Some("json") || query.len() != 2 {
                    return StatusCode::BAD_REQUEST.into_response();
                }
                seen.lock().unwrap().push(query["q"].clone());
                json(body)
            },
        ),
    );
    Server::start(router).await
}

/// A Brave stand-in: `/res/v1/web/search?q=…&count=N` with the JSON `Accept` and the token.
async fn brave(seen: Arc<Mutex<Vec<String>>>) -> Server {
    let router = Router::new().route(
        "/res/v1/web/search",
        get(
            move |headers: HeaderMap, Query(query): Query<HashMap<String, String>>| async move {
                if headers.get("x-subscription-token").and_then(|v| v.to_str().ok()) != Some(TOKEN)
                {
                    let body = r#"{"type":"ErrorResponse","error":{"code":"SUBSCRIPTION_TOKEN_INVALID","status":401}}"#;
                    return (StatusCode::UNAUTHORIZED, json(body)).into_response();
                }
                if headers.get("accept").and_then(|v| v.to_str().ok()) != Some("application/json") {
                    return StatusCode::NOT_ACCEPTABLE.into_response();
                }
                let (Some(q), Some(count)) = (query.get("q"), query.get("count")) else {
                    return StatusCode::UNPROCESSABLE_ENTITY.into_response();
                };
                seen.lock().unwrap().push(format!("{q} count={count}"));
                json(BRAVE)
            },
        ),
    );
    Server::start(router).await
}

fn searxng_client(server: &Server) -> SearchClient {
    SearchClient::new(Some(SearchProvider::Searxng {
        base_url: server.url(""),
    }))
    .unwrap()
}

fn brave_client(server: &Server, api_key: &str) -> SearchClient {
    SearchClient::new(Some(SearchProvider::Brave {
        api_key: api_key.into(),
        base_url: server.url(""),
    }))
    .unwrap()
}

#[test]
fn the_kept_payloads_parse_with_the_clients_types() {
    let searxng: SearxngResponse = serde_json::from_str(SEARXNG).unwrap();
    assert_eq!(searxng.query, "tokio runtime");
    assert_eq!(searxng.results.len(), 3);
    assert_eq!(searxng.into_results(10).len(), 3);
    let brave: BraveResponse = serde_json::from_str(BRAVE).unwrap();
    assert_eq!(brave.kind, "search");
    let results = brave.into_results(10);
    assert_eq!(results.len(), 3);
    assert_eq!(
        results[2].snippet,
        "What does the tokio runtime do when a task awaits? It's a work-stealing scheduler & a reactor."
    );
    assert_eq!(results[2].title, "Tokio's runtime explained");
}

#[tokio::test]
async fn searxng_results_come_back_capped_in_number() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = searxng(SEARXNG, seen.clone()).await;
    let results = searxng_client(&server)
        .search("tokio runtime", 2)
        .await
        .unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].url, "https://tokio.rs/");
    assert_eq!(results[0].title, "Tokio - An asynchronous Rust runtime");
    assert!(results[0].snippet.starts_with("Tokio is an event-driven"));
    assert_eq!(*seen.lock().unwrap(), ["tokio runtime"]);
}

#[tokio::test]
async fn a_query_cannot_add_parameters_of_its_own() {
    // Without the query's encoding, `&format=html` would reach the stand-in as a parameter,
    // which it refuses (two parameters only).
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = searxng(SEARXNG, seen.clone()).await;
    searxng_client(&server)
        .search("a&format=html #frag", 5)
        .await
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), ["a&format=html #frag"]);
}

#[tokio::test]
async fn brave_results_come_back_with_the_token_sent() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = brave(seen.clone()).await;
    let results = brave_client(&server, TOKEN)
        .search("tokio runtime", 50)
        .await
        .unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(
        results[0].snippet,
        "Tokio is an asynchronous runtime for the Rust programming language. It provides the building blocks needed for writing network applications."
    );
    // At most ten results are asked for, whatever the caller wants.
    assert_eq!(*seen.lock().unwrap(), ["tokio runtime count=10"]);
}

#[tokio::test]
async fn a_wrong_brave_key_names_the_setting_to_fix() {
    let server = brave(Arc::default()).await;
    let error = brave_client(&server, "wrong")
        .search("x", 3)
        .await
        .unwrap_err();
    let WebError::Config { setting, message } = &error else {
        panic!("a configuration error, not {error:?}")
    };
    assert_eq!(*setting, SETTING_API_KEY);
    assert!(message.contains("HTTP 401"), "{message}");
    assert!(
        !error.to_string().contains("wrong"),
        "the key is not shown: {error}"
    );
}

#[tokio::test]
async fn provider_answers_keep_their_kind() {
    let router = Router::new()
        .route(
            "/busy/search",
            get(|| async { StatusCode::TOO_MANY_REQUESTS }),
        )
        .route("/down/search", get(|| async { StatusCode::BAD_GATEWAY }))
        .route("/nojson/search", get(|| async { StatusCode::FORBIDDEN }))
        .route("/html/search", get(|| async { "<html>not json</html>" }));
    let server = Server::start(router).await;
    let search = |path: &str| {
        let client = SearchClient::new(Some(SearchProvider::Searxng {
            base_url: server.url(path),
        }))
        .unwrap();
        async move { client.search("q", 5).await.unwrap_err() }
    };
    assert!(search("/busy").await.is_transient());
    assert!(search("/down").await.is_transient());
    let error = search("/nojson").await;
    assert!(
        matches!(error, WebError::Config { setting, ref message } if setting == SETTING_BASE_URL && message.contains("search.formats")),
        "{error:?}"
    );
    assert!(matches!(search("/html").await, WebError::Failed { .. }));
    let closed = SearchClient::new(Some(SearchProvider::Searxng {
        base_url: "http://127.0.0.1:9".into(),
    }))
    .unwrap();
    assert!(closed.search("q", 1).await.unwrap_err().is_transient());
}

#[tokio::test]
async fn hostile_results_are_filtered_and_capped() {
    // Without the scheme check the `javascript:` and `file:` results would be kept, and without
    // the caps the 10,000-character title and snippet would reach the model whole.
    let hostile: &'static str = Box::leak(
        serde_json::json!({
            "query": "q",
            "results": [
                {"url": "javascript:alert(1)", "title": "click", "content": "x"},
                {"url": "file:///etc/shadow", "title": "local", "content": "x"},
                {"url": "https://example.org/", "title": "t".repeat(10_000), "content": "s\n".repeat(5_000)},
                {"title": "no url"}
            ]
        })
        .to_string()
        .into_boxed_str(),
    );
    let server = searxng(hostile, Arc::default()).await;
    let results = searxng_client(&server).search("q", 10).await.unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].url, "https://example.org/");
    assert_eq!(results[0].title.chars().count(), 200);
    assert_eq!(results[0].snippet.chars().count(), 500);
    assert!(!results[0].snippet.contains('\n'));
}

#[test]
fn nothing_configured_says_so() {
    let error = SearchClient::new(None).unwrap_err();
    assert!(matches!(error, WebError::NotConfigured));
    assert!(error.to_string().contains("no search provider"));
}
