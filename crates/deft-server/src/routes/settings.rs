//! The user's environment (network, env vars, MCP), secrets and learnings.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::StatusCode;
use deft_core::{EnvVars, McpConfig, NetworkLevel, NetworkPolicy};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiPath};
use crate::{ApiError, views};

pub async fn environment(Caller { app, user }: Caller) -> Result<Json<Value>, ApiError> {
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
    /// Whether new tasks wait for plan approval by default.
    approve_plan: Option<bool>,
    /// Whether failing checks on a pull request's head commit start a round by themselves.
    fix_failing_checks: Option<bool>,
    /// The most rounds they start on one pull request (1 to 10).
    check_fix_rounds: Option<i64>,
}

pub async fn put_environment(
    Caller { app, user }: Caller,
    ApiJson(body): ApiJson<PutEnvironment>,
) -> Result<Json<Value>, ApiError> {
    // Everything is validated before anything is written: a bad part stores nothing.
    let environment = app
        .store
        .update_environment(&user.id, |environment| {
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
            if let Some(approve_plan) = body.approve_plan {
                environment.approve_plan = approve_plan;
            }
            if let Some(fix) = body.fix_failing_checks {
                environment.fix_failing_checks = fix;
            }
            if let Some(rounds) = body.check_fix_rounds {
                environment.check_fix_rounds =
                    deft_store::check_fix_rounds(rounds, "check_fix_rounds")?;
            }
            Ok(())
        })
        .await?;
    Ok(Json(views::environment(&environment)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutEnvVar {
    value: String,
}

/// Sets one environment variable, leaving the others as they are.
pub async fn put_env_var(
    Caller { app, user }: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<PutEnvVar>,
) -> Result<Json<Value>, ApiError> {
    let environment = app
        .store
        .update_environment(&user.id, |environment| {
            let mut vars = environment.env.as_map().clone();
            vars.insert(name, body.value);
            environment.env = EnvVars::new(vars)?;
            Ok(())
        })
        .await?;
    Ok(Json(views::environment(&environment)))
}

/// Removes one environment variable.
pub async fn delete_env_var(
    Caller { app, user }: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    app.store
        .update_environment(&user.id, |environment| {
            let mut vars = environment.env.as_map().clone();
            if vars.remove(&name).is_none() {
                return Err(deft_store::StoreError::NotFound {
                    what: "environment variable",
                });
            }
            environment.env = EnvVars::new(vars)?;
            Ok(())
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn secrets(Caller { app, user }: Caller) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "secrets": app.store.list_secrets(&user.id).await? }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutSecret {
    value: String,
}

pub async fn put_secret(
    Caller { app, user }: Caller,
    ApiPath(name): ApiPath<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    // Parsed by hand: serde's messages quote the offending value, and this one is a secret.
    let body: PutSecret = serde_json::from_slice(&body).map_err(|error| {
        let code = if error.is_syntax() || error.is_eof() {
            "malformed_json"
        } else {
            "invalid_input"
        };
        let mut error = ApiError::new(
            StatusCode::BAD_REQUEST,
            code,
            "the body must be `{\"value\": \"...\"}` with the secret's value as a string",
        );
        error.field = Some("value".into());
        error
    })?;
    let info = app.store.put_secret(&user.id, &name, &body.value).await?;
    Ok(Json(json!(info)))
}

pub async fn delete_secret(
    Caller { app, user }: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    app.store.delete_secret(&user.id, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn learnings(Caller { app, user }: Caller) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "learnings": app.store.list_learnings(&user.id).await? }),
    ))
}

pub async fn delete_learning(
    Caller { app, user }: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    app.store.delete_learning(&user.id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
