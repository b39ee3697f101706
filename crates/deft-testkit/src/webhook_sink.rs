//! An HTTP endpoint on loopback that keeps every request it receives (headers and body), for
//! tests of outgoing webhooks. It answers each with the status a test sets (200 by default),
//! or with a redirect; it checks nothing, so that the test checks signatures itself.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the webhook's body is JSON")
    }
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    /// Statuses to answer with, first to last; then 200.
    answers: Vec<u16>,
}

/// A running endpoint; it stops when dropped.
pub struct WebhookSink {
    pub address: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSink")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Drop for WebhookSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WebhookSink {
    /// Starts an endpoint on a free port of 127.0.0.1; every path is accepted.
    pub async fn start() -> WebhookSink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port is free");
        let address = listener
            .local_addr()
            .expect("a bound listener has an address");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let state = shared.clone();
                async move { answer(&state, uri.path().to_owned(), headers, body) }
            },
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WebhookSink {
            address,
            state,
            task,
        }
    }

    /// The URL of `path` on this endpoint.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// The next requests are answered with these statuses, in order (then 200). A 3xx status
    /// carries a `Location` to `/elsewhere`.
    pub fn answer_with(&self, statuses: &[u16]) {
        self.state
            .lock()
            .expect("no panic while the sink's lock is held")
            .answers = statuses.to_vec();
    }

    /// The requests received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state
            .lock()
            .expect("no panic while the sink's lock is held")
            .received
            .clone()
    }

    /// Waits up to `timeout` for `count` requests and returns them.
    pub async fn wait_for(&self, count: usize, timeout: std::time::Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let received = self.received();
            if received.len() >= count || tokio::time::Instant::now() >= deadline {
                return received;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

fn answer(state: &Mutex<State>, path: String, headers: HeaderMap, body: Bytes) -> Response {
    let mut state = state
        .lock()
        .expect("no panic while the sink's lock is held");
    state.received.push(Received {
        path,
        headers,
        body,
    });
    let status = if state.answers.is_empty() {
        200
    } else {
        state.answers.remove(0)
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if status.is_redirection() {
        return (status, [(header::LOCATION, "/elsewhere")], "moved").into_response();
    }
    (status, "ok").into_response()
}
