//! The user's environment (network, env vars, MCP), secrets and learnings.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use deft_core::{EnvVars, McpConfig, NetworkLevel, NetworkPolicy};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::CurrentUser;
use crate::extract::ApiJson;
use crate::{ApiError, AppState, views};

pub async fn environment(
    State(app): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(views::environment(
        &app.store.environment(&user.id).await?,
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkBody {
    level: String,
    #[serde(default)]
    allow: Vec<String>,
}

/// Each part is optional: what is given replaces that part, what is absent stays as it was.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutEnvironment {
    network: Option<NetworkBody>,
    env: Option<BTreeMap<String, String>>,
    mcp: Option<Value>,
}

pub async fn put_environment(
    State(app): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<PutEnvironment>,
) -> Result<Json<Value>, ApiError> {
    // Everything is validated before anything is written: a bad part stores nothing.
    let mut environment = app.store.environment(&user.id).await?;
    if let Some(network) = body.network {
        let level = NetworkLevel::parse(&network.level, "network.level")?;
        environment.network = NetworkPolicy::new(level, &network.allow)?;
    }
    if let Some(env) = body.env {
        environment.env = EnvVars::new(env)?;
    }
    if let Some(mcp) = body.mcp {
        environment.mcp = McpConfig::from_json(&mcp)?;
    }
    app.store.put_environment(&user.id, &environment).await?;
    Ok(Json(views::environment(&environment)))
}

pub async fn secrets(
    State(app): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "secrets": app.store.list_secrets(&user.id).await? }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutSecret {
    value: String,
}

impl std::fmt::Debug for PutSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PutSecret { value: [redacted] }")
    }
}

pub async fn put_secret(
    State(app): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<PutSecret>,
) -> Result<Json<Value>, ApiError> {
    let info = app.store.put_secret(&user.id, &name, &body.value).await?;
    Ok(Json(json!(info)))
}

pub async fn delete_secret(
    State(app): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.store.delete_secret(&user.id, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn learnings(
    State(app): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "learnings": app.store.list_learnings(&user.id).await? }),
    ))
}

pub async fn delete_learning(
    State(app): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.store.delete_learning(&user.id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
