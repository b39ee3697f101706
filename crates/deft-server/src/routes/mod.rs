//! The routes of SPEC §5, one module per resource.

pub(crate) mod chats;
pub(crate) mod notifications;
pub(crate) mod repos;
pub(crate) mod settings;
pub(crate) mod stream;
pub(crate) mod tasks;

use std::any::Any;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, extract::State};
use serde_json::json;

use crate::auth::CurrentUser;
use crate::{ApiError, AppState};

pub fn api() -> Router<AppState> {
    Router::new()
        .route("/me", get(me))
        .route("/tasks", post(tasks::create).get(tasks::list))
        .route("/tasks/{id}", get(tasks::show))
        .route("/tasks/{id}/events", get(tasks::events))
        .route("/tasks/{id}/diff", get(tasks::diff))
        .route("/tasks/{id}/events/stream", get(stream::events))
        .route("/tasks/{id}/cancel", post(tasks::cancel))
        .route("/tasks/{id}/answer", post(tasks::answer))
        .route("/tasks/{id}/approve", post(tasks::approve))
        .route("/tasks/{id}/feedback", post(tasks::feedback))
        .route("/chats", post(chats::create))
        .route("/chats/{id}", get(chats::show))
        .route("/chats/{id}/messages", post(chats::message))
        .route("/chats/{id}/task", post(chats::create_task))
        .route(
            "/settings/environment",
            get(settings::environment).put(settings::put_environment),
        )
        .route(
            "/settings/environment/env/{name}",
            put(settings::put_env_var).delete(settings::delete_env_var),
        )
        .route(
            "/settings/notifications",
            get(notifications::show).put(notifications::put),
        )
        .route("/secrets", get(settings::secrets))
        .route(
            "/secrets/{name}",
            put(settings::put_secret).delete(settings::delete_secret),
        )
        .route("/repos", get(repos::list).post(repos::add))
        .route("/repos/github", get(repos::github_list))
        .route("/repos/{id}/environment", put(repos::put_environment))
        .route("/learnings", get(settings::learnings))
        .route("/learnings/{id}", delete(settings::delete_learning))
}

pub fn health() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz))
}

/// Liveness that means it: the database answers. It also says which model tasks will use.
async fn healthz(State(app): State<AppState>) -> Response {
    let model = match &app.model {
        crate::ModelReadiness::Ready { label } => json!({ "ready": true, "name": label }),
        crate::ModelReadiness::Missing { message } => json!({ "ready": false, "message": message }),
    };
    match app.store.ping().await {
        Ok(()) => Json(json!({ "status": "ok", "model": model })).into_response(),
        Err(error) => {
            tracing::error!(error = %error, "health check failed");
            let message = "the database does not answer; see the server log";
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message).into_response()
        }
    }
}

async fn me(CurrentUser(user): CurrentUser) -> Json<serde_json::Value> {
    Json(json!({ "id": user.id, "name": user.name, "is_admin": user.is_admin }))
}

/// An unknown address: a page for a browser, the error envelope for everything else.
pub async fn not_found(uri: axum::http::Uri, headers: axum::http::HeaderMap) -> Response {
    let wants_page = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_page && !uri.path().starts_with("/api/") {
        return crate::web::WebError::page(
            StatusCode::NOT_FOUND,
            "There is no page at this address. Start from your task list.",
        )
        .into_response();
    }
    ApiError::not_found("route").into_response()
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; see the HTTP API in the SPEC",
    )
}

/// A panic in one handler becomes a 500 for that request; the server goes on.
pub fn panicked(_: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the server could not complete the request; see its log for the cause",
    )
    .into_response()
}
