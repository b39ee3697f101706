//! Settings: repositories and the GitHub account, password, network level and allow-list,
//! plan approval, fixing failing checks, env vars, secrets (write-only), the MCP
//! configuration, learnings, this week's usage, API tokens.
//!
//! A refused form is drawn again with what was typed and the message beside its field; what
//! was stored before stays as it was.

use askama::Template;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use deft_core::{
    EnvVars, McpConfig, NetworkLevel, NetworkPolicy, Timestamp, ValidationError, validate_env_name,
};
use deft_store::StoreError;
use serde_json::json;

use super::{Chrome, WebError, WebForm, WebSession, render, when};
use crate::{ApiError, AppState};

pub struct RepoRow {
    pub name: String,
    pub location: String,
    pub branch: String,
}

pub struct Named {
    pub id: String,
    pub name: String,
    pub detail: String,
}

pub struct LevelChoice {
    pub value: &'static str,
    pub label: &'static str,
    pub selected: bool,
}

/// Messages beside fields, one per form.
#[derive(Default)]
pub struct Errors {
    pub repo: Option<String>,
    pub github: Option<String>,
    pub password: Option<String>,
    pub allow: Option<String>,
    pub env: Option<String>,
    pub secret: Option<String>,
    pub mcp: Option<String>,
    pub token: Option<String>,
    pub checks: Option<String>,
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    chrome: Chrome,
    repos: Vec<RepoRow>,
    /// `Some` when GitHub is configured: the user's linked login, if any.
    github: Option<Option<String>>,
    /// People connect their own GitHub accounts here (the App's OAuth client is set).
    github_connect: bool,
    has_password: bool,
    levels: Vec<LevelChoice>,
    allow_text: String,
    approve_plan: bool,
    fix_failing_checks: bool,
    check_fix_rounds: u32,
    env: Vec<Named>,
    secrets: Vec<Named>,
    mcp_text: String,
    learnings: Vec<Named>,
    used: i64,
    limit: Option<i64>,
    percent: i64,
    resets: String,
    tokens: Vec<Named>,
    new_token: Option<String>,
    errors: Errors,
    /// What was just saved, said once.
    notice: Option<String>,
}

fn level_label(level: NetworkLevel) -> &'static str {
    match level {
        NetworkLevel::Connections => "Connections only: the forge, nothing else",
        NetworkLevel::Common => "Common: connections plus package registries and tool hosts",
        NetworkLevel::Open => "Open: anything",
        NetworkLevel::Custom => "Custom: connections plus your allow-list",
    }
}

/// What the form sent back, to draw again in place of what is stored.
#[derive(Default)]
struct Typed {
    allow: Option<String>,
    level: Option<String>,
    mcp: Option<String>,
}

async fn draw(
    app: &AppState,
    session: &WebSession,
    typed: Typed,
    errors: Errors,
    notice: Option<String>,
    new_token: Option<String>,
) -> Result<SettingsPage, WebError> {
    let user = &session.user;
    let environment = app.store.environment(&user.id).await?;
    let level = typed
        .level
        .unwrap_or_else(|| environment.network.level.as_str().to_owned());
    let now = Timestamp::now();
    let usage = app.store.usage_since(&user.id, now.week_start()).await?;
    let used = usage.input_tokens + usage.output_tokens;
    let limit = app.weekly_tokens;
    Ok(SettingsPage {
        chrome: session.chrome("settings"),
        repos: app
            .store
            .list_repositories(&user.id)
            .await?
            .into_iter()
            .map(|repo| RepoRow {
                name: repo.name,
                location: repo.location,
                branch: repo.default_branch,
            })
            .collect(),
        github: match &app.github {
            Some(_) => Some(app.store.github_login(&user.id).await?),
            None => None,
        },
        github_connect: app
            .github
            .as_ref()
            .is_some_and(|hooks| hooks.client.oauth().is_some()),
        has_password: app.store.has_password(&user.id).await?,
        levels: NetworkLevel::ALL
            .into_iter()
            .map(|l| LevelChoice {
                value: l.as_str(),
                label: level_label(l),
                selected: l.as_str() == level,
            })
            .collect(),
        allow_text: typed
            .allow
            .unwrap_or_else(|| environment.network.allow_strings().join("\n")),
        approve_plan: environment.approve_plan,
        fix_failing_checks: environment.fix_failing_checks,
        check_fix_rounds: environment.check_fix_rounds,
        env: environment
            .env
            .as_map()
            .iter()
            .map(|(name, value)| Named {
                id: name.clone(),
                name: name.clone(),
                detail: value.clone(),
            })
            .collect(),
        secrets: app
            .store
            .list_secrets(&user.id)
            .await?
            .into_iter()
            .map(|secret| Named {
                id: secret.name.clone(),
                name: secret.name,
                detail: format!("set {}", when(secret.updated_at)),
            })
            .collect(),
        mcp_text: typed.mcp.unwrap_or_else(|| {
            serde_json::to_string_pretty(&environment.mcp.to_json()).unwrap_or_default()
        }),
        learnings: app
            .store
            .list_learnings(&user.id)
            .await?
            .into_iter()
            .map(|learning| Named {
                id: learning.id.to_string(),
                name: learning.text,
                detail: format!("from {}, {}", learning.source, when(learning.created_at)),
            })
            .collect(),
        used,
        limit,
        percent: limit.map_or(0, |limit| (used * 100 / limit.max(1)).min(100)),
        resets: when(now.next_week_start()),
        tokens: app
            .store
            .list_tokens(&user.id)
            .await?
            .into_iter()
            .map(|token| Named {
                id: token.id.to_string(),
                name: token.label,
                detail: format!("made {}", when(token.created_at)),
            })
            .collect(),
        new_token,
        errors,
        notice,
    })
}

#[derive(Debug, serde::Deserialize)]
pub struct SettingsQuery {
    saved: Option<String>,
}

pub async fn page(
    State(app): State<AppState>,
    session: WebSession,
    axum::extract::Query(query): axum::extract::Query<SettingsQuery>,
) -> Result<Response, WebError> {
    let notice = query
        .saved
        .map(|what| format!("Saved: {}.", what.replace('-', " ")));
    render(
        &draw(
            &app,
            &session,
            Typed::default(),
            Errors::default(),
            notice,
            None,
        )
        .await?,
    )
}

fn saved(section: &str) -> Response {
    axum::response::Redirect::to(&format!("/settings?saved={section}#{section}")).into_response()
}

fn allow_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Checks an allow-list as typed; the message names the entry and its line.
fn check_allow(level: &str, text: &str) -> Result<NetworkPolicy, ValidationError> {
    let level = NetworkLevel::parse(level, "level")?;
    let lines = allow_lines(text);
    for (index, line) in lines.iter().enumerate() {
        deft_core::AllowRule::parse(line, "allow").map_err(|error| {
            ValidationError::new("allow", format!("line {}: {}", index + 1, error.message))
        })?;
    }
    NetworkPolicy::new(level, &lines)
}

fn check_mcp(text: &str) -> Result<McpConfig, ValidationError> {
    let text = if text.trim().is_empty() { "{}" } else { text };
    let value: serde_json::Value = serde_json::from_str(text).map_err(|error| {
        ValidationError::new(
            "mcp",
            format!(
                "is not valid JSON (line {}, column {}): {error}",
                error.line(),
                error.column()
            ),
        )
    })?;
    McpConfig::from_json(&value)
}

/// Answers the page's checks as you type, before anything is saved.
pub async fn check(form: WebForm) -> Response {
    let value = form.get("value");
    let result = match form.get("field") {
        "allow" => check_allow(form.get("level"), value).map(|_| ()),
        "mcp" => check_mcp(value).map(|_| ()),
        other => Err(ValidationError::new(
            "field",
            format!("cannot check `{other}`; use `allow` or `mcp`"),
        )),
    };
    match result {
        Ok(()) => Json(json!({"ok": true})).into_response(),
        Err(error) => Json(json!({"ok": false, "message": error.to_string()})).into_response(),
    }
}

async fn refused(
    app: &AppState,
    session: &WebSession,
    typed: Typed,
    errors: Errors,
    status: StatusCode,
) -> Result<Response, WebError> {
    let page = draw(app, session, typed, errors, None, None).await?;
    Ok((status, render(&page)?).into_response())
}

/// The settings drawn again with `message` beside the GitHub account (a connection that
/// could not be finished).
pub(super) async fn refused_github(
    app: &AppState,
    session: &WebSession,
    message: String,
    status: StatusCode,
) -> Result<Response, WebError> {
    let errors = Errors {
        github: Some(message),
        ..Errors::default()
    };
    refused(app, session, Typed::default(), errors, status).await
}

/// The change of the failing checks' setting, as the form sent it.
fn check_fixes(
    enabled: bool,
    rounds: &str,
) -> Result<impl FnOnce(&mut deft_store::Environment) -> Result<(), StoreError>, ValidationError> {
    let rounds = rounds.trim().parse::<i64>().map_err(|_| {
        ValidationError::new(
            "check_fix_rounds",
            format!("must be a whole number of rounds, not `{}`", rounds.trim()),
        )
    })?;
    let rounds = deft_store::check_fix_rounds(rounds, "check_fix_rounds")?;
    Ok(move |environment: &mut deft_store::Environment| {
        environment.fix_failing_checks = enabled;
        environment.check_fix_rounds = rounds;
        Ok(())
    })
}

fn message(error: StoreError) -> (StatusCode, String) {
    let error = ApiError::from(error);
    (error.status, error.message)
}

/// Where a refusal's message goes: beside the field of the form that was sent.
type Place = fn(&mut Errors, String);

/// Back to the settings after a form: saved, or drawn again with the message in its place.
async fn finish(
    app: &AppState,
    session: &WebSession,
    section: &str,
    result: Result<(), (StatusCode, String)>,
    typed: Typed,
    place: Place,
) -> Result<Response, WebError> {
    match result {
        Ok(()) => Ok(saved(section)),
        Err((status, error)) => {
            let mut errors = Errors::default();
            place(&mut errors, error);
            refused(app, session, typed, errors, status).await
        }
    }
}

/// Stores a change to the environment that passed its checks; a failed check stores nothing.
async fn save_environment<F>(
    app: &AppState,
    session: &WebSession,
    section: &str,
    change: Result<F, ValidationError>,
    typed: Typed,
    place: Place,
) -> Result<Response, WebError>
where
    F: FnOnce(&mut deft_store::Environment) -> Result<(), StoreError>,
{
    let result = match change {
        Ok(change) => app
            .store
            .update_environment(&session.user.id, change)
            .await
            .map(|_| ())
            .map_err(message),
        Err(error) => Err((StatusCode::BAD_REQUEST, error.to_string())),
    };
    finish(app, session, section, result, typed, place).await
}

pub async fn save(
    State(app): State<AppState>,
    Path(section): Path<String>,
    form: WebForm,
) -> Result<Response, WebError> {
    let (app, session) = (&app, &form.session);
    let user = &session.user;
    let typed = Typed::default();
    match section.as_str() {
        "repos" => {
            let path = form.get("path").trim();
            let github = form.get("github").trim();
            let result = if !github.is_empty() {
                crate::routes::repos::register_github(app, user, github, "github").await
            } else if path.is_empty() {
                Err(ApiError::field(
                    "path",
                    "is empty; give the absolute path of a git repository on the server",
                ))
            } else {
                crate::routes::repos::register_local(app, user, path, "path").await
            };
            let result = result.map(|_| ()).map_err(|e| (e.status, e.message));
            let place: Place = if github.is_empty() {
                |e, m| e.repo = Some(m)
            } else {
                |e, m| e.github = Some(m)
            };
            finish(app, session, "repos", result, typed, place).await
        }
        "password" => {
            let new = form.get("new_password");
            let result = if new != form.get("confirm_password") {
                Err("The two new passwords differ; type the same one twice.".to_owned())
            } else if app.store.has_password(&user.id).await?
                && app
                    .store
                    .check_password(&user.name, form.get("current_password"))
                    .await?
                    .is_none()
            {
                Err("The current password is wrong; nothing was changed.".to_owned())
            } else {
                app.store
                    .set_password(&user.id, new)
                    .await
                    .map_err(|e| message(e).1)
            };
            let result = result.map_err(|error| (StatusCode::BAD_REQUEST, error));
            finish(app, session, "password", result, typed, |e, m| {
                e.password = Some(m);
            })
            .await
        }
        "network" => {
            let (level, allow) = (form.get("level"), form.get("allow"));
            let change = check_allow(level, allow).map(|policy| {
                move |environment: &mut deft_store::Environment| {
                    environment.network = policy;
                    Ok(())
                }
            });
            let typed = Typed {
                allow: Some(allow.to_owned()),
                level: Some(level.to_owned()),
                mcp: None,
            };
            save_environment(app, session, "network", change, typed, |e, m| {
                e.allow = Some(m);
            })
            .await
        }
        "plan" => {
            let approve = form.checked("approve_plan");
            let change: Result<_, ValidationError> =
                Ok(move |environment: &mut deft_store::Environment| {
                    environment.approve_plan = approve;
                    Ok(())
                });
            save_environment(app, session, "plan", change, typed, |e, m| {
                e.allow = Some(m);
            })
            .await
        }
        "checks" => {
            let change = check_fixes(
                form.checked("fix_failing_checks"),
                form.get("check_fix_rounds"),
            );
            save_environment(app, session, "checks", change, typed, |e, m| {
                e.checks = Some(m);
            })
            .await
        }
        "env" => {
            let name = form.get("name").trim().to_owned();
            let value = form.get("value").to_owned();
            let change = validate_env_name(&name, "name").map(|()| {
                move |environment: &mut deft_store::Environment| {
                    let mut vars = environment.env.as_map().clone();
                    vars.insert(name, value);
                    environment.env = EnvVars::new(vars)?;
                    Ok(())
                }
            });
            save_environment(app, session, "env", change, typed, |e, m| e.env = Some(m)).await
        }
        "secrets" => {
            let result = app
                .store
                .put_secret(&user.id, form.get("name").trim(), form.get("value"))
                .await
                .map(|_| ())
                .map_err(message);
            finish(app, session, "secrets", result, typed, |e, m| {
                e.secret = Some(m);
            })
            .await
        }
        "mcp" => {
            let text = form.get("mcp");
            let change = check_mcp(text).map(|mcp| {
                move |environment: &mut deft_store::Environment| {
                    environment.mcp = mcp;
                    Ok(())
                }
            });
            let typed = Typed {
                mcp: Some(text.to_owned()),
                ..Typed::default()
            };
            save_environment(app, session, "mcp", change, typed, |e, m| e.mcp = Some(m)).await
        }
        "tokens" => {
            let label = form.get("label").trim();
            if label.is_empty() || label.chars().count() > 100 {
                let error = "Label: give the token a name of 1 to 100 characters, such as the machine that will use it.";
                let result = Err((StatusCode::BAD_REQUEST, error.to_owned()));
                return finish(app, session, "tokens", result, typed, |e, m| {
                    e.token = Some(m);
                })
                .await;
            }
            let token = app.store.create_token(user, label).await?;
            // Shown once, on this response only: never in a URL, never again.
            let notice = Some("Token made. Copy it now: it will not be shown again.".to_owned());
            let page = draw(
                app,
                session,
                typed,
                Errors::default(),
                notice,
                Some(token.token),
            )
            .await?;
            render(&page)
        }
        _ => Err(WebError::page(
            StatusCode::NOT_FOUND,
            "There is no such settings section; use the forms on the settings page.",
        )),
    }
}

pub async fn delete(
    State(app): State<AppState>,
    Path((section, item)): Path<(String, String)>,
    form: WebForm,
) -> Result<Response, WebError> {
    let user = &form.session.user;
    match section.as_str() {
        "env" => {
            app.store
                .update_environment(&user.id, |environment| {
                    let mut vars = environment.env.as_map().clone();
                    if vars.remove(&item).is_none() {
                        return Err(StoreError::NotFound {
                            what: "environment variable",
                        });
                    }
                    environment.env = EnvVars::new(vars)?;
                    Ok(())
                })
                .await?;
        }
        "secrets" => app.store.delete_secret(&user.id, &item).await?,
        "learnings" => app.store.delete_learning(&user.id, &item).await?,
        "tokens" => app.store.revoke_token(&user.id, &item).await?,
        _ => {
            return Err(WebError::page(
                StatusCode::NOT_FOUND,
                "There is no such settings section; use the buttons on the settings page.",
            ));
        }
    }
    Ok(saved(&section))
}
