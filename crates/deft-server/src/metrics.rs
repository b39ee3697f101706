//! `GET /metrics` in Prometheus's text format: what the server and its workers did (requests,
//! state changes, model tokens, recorded where they happen with the `metrics` facade) and what
//! the queue holds now (tasks per state, read from the store at each scrape).
//!
//! Only counts across all users are exposed, never a user's name, task or text, so the route
//! needs no token: scrapers rarely carry one. Keep it off the public internet all the same.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::{ApiError, AppState};

/// The process's one recorder, installed on first use. A process where something else
/// installed a recorder first gets a handle that renders only the scrape-time gauges.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics shows only gauges");
            }
            handle
        })
        .clone()
}

/// Counts every request by method, route (its pattern, so ids do not multiply the series)
/// and status, and times it.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(
        "deft_http_requests_total",
        "method" => method.clone(),
        "route" => route.clone(),
        "status" => status
    )
    .increment(1);
    metrics::histogram!(
        "deft_http_request_duration_seconds",
        "method" => method,
        "route" => route
    )
    .record(started.elapsed().as_secs_f64());
    response
}

pub async fn render(State(app): State<AppState>) -> Result<Response, ApiError> {
    let counts = app.store.count_by_state().await?;
    for (state, count) in counts {
        metrics::gauge!("deft_tasks", "state" => state.as_str()).set(count as f64);
    }
    app.metrics.run_upkeep();
    let body = app.metrics.render();
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response())
}
