//! Settings: repositories and the GitHub account, password, network level and allow-list,
//! plan approval, fixing failing checks, env vars, secrets (write-only), the MCP
//! configuration, notifications (`notifications.rs`), learnings, this week's usage, API tokens.
//!
//! Every form posts, then redirects back to the settings (post/redirect/get), so a reload never
//! sends it again. A refused form comes back with what was typed (up to [`KEEP`] bytes) and
//! the message beside its field, carried over the redirect in memory once; what was stored
//! before stays as it was. Sizes are checked on saving against the limits the values will
//! meet later (a sandbox's message, a path), and long values are shortened when shown.

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

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Chrome, ConfirmPage, Moment, WebError, WebForm, WebSession, render, shorten};
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
    pub at: Option<Moment>,
}

/// What a task's sandbox accepts with each command, its environment included.
const SANDBOX_MESSAGE: usize = deft_core::EnvVars::SANDBOX_MESSAGE;
/// Of [`SANDBOX_MESSAGE`], what a person's variables (or one secret) may take.
const ENV_BUDGET: usize = deft_core::EnvVars::BUDGET;
/// The longest path Linux opens.
const PATH_MAX: usize = 4096;
/// What was typed is put back in its field up to this size; a longer value is not echoed.
const KEEP: usize = 4096;
/// The same for a configuration typed into a text area (an allow-list, MCP servers).
const KEEP_TEXT: usize = 32 * 1024;
/// Messages and listed values are shortened to about this many bytes.
const SHOWN: usize = 240;

/// What a refused form sends back to the page after the redirect, once.
#[derive(Default)]
pub(crate) struct Flash {
    pub(super) errors: Errors,
    pub(super) typed: Typed,
    /// A new API token, shown on the next page only.
    new_token: Option<String>,
}

/// Flashes by session, kept a few minutes at most: a refused form's page is drawn from its
/// flash right after the redirect. In memory, so a deft behind several replicas may draw the
/// page without its message; the form's state is unaffected either way.
#[derive(Default)]
pub(crate) struct Flashes(Mutex<HashMap<String, (Instant, Flash)>>);

impl std::fmt::Debug for Flashes {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Flashes can hold a new token: never printed.
        formatter.write_str("Flashes")
    }
}

const FLASH_LIFE: Duration = Duration::from_secs(300);
const FLASHES_MAX: usize = 10_000;

impl Flashes {
    fn put(&self, session: &WebSession, flash: Flash) {
        let mut flashes = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        flashes.retain(|_, (at, _)| at.elapsed() < FLASH_LIFE);
        if flashes.len() < FLASHES_MAX {
            flashes.insert(session.csrf.clone(), (Instant::now(), flash));
        }
    }

    fn take(&self, session: &WebSession) -> Flash {
        let mut flashes = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match flashes.remove(&session.csrf) {
            Some((at, flash)) if at.elapsed() < FLASH_LIFE => flash,
            _ => Flash::default(),
        }
    }
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
    pub webhook: Option<String>,
    pub email: Option<String>,
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
    resets: Moment,
    tokens: Vec<Named>,
    new_token: Option<String>,
    notifications: super::notifications::NotificationsView,
    errors: Errors,
    typed: Typed,
    /// What was just saved, said once beside the form that saved it: (section, text).
    notice: Option<(String, String)>,
}

impl SettingsPage {
    /// The notice, when it belongs to `section`'s form.
    fn notice_in(&self, section: &str) -> Option<&str> {
        self.notice
            .as_ref()
            .filter(|(at, _)| at == section)
            .map(|(_, text)| text.as_str())
    }
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
pub(crate) struct Typed {
    /// The notifications' forms, and a webhook secret deft just made.
    pub(super) notifications: super::notifications::TypedNotifications,
    allow: Option<String>,
    level: Option<String>,
    mcp: Option<String>,
    repo_path: String,
    github_repo: String,
    env_name: String,
    env_value: String,
    secret_name: String,
    token_label: String,
}

/// What was typed, if it is short enough to put back in its field.
fn kept(value: &str) -> String {
    if value.len() <= KEEP {
        value.to_owned()
    } else {
        String::new()
    }
}

async fn draw(
    app: &AppState,
    session: &WebSession,
    mut typed: Typed,
    errors: Errors,
    notice: Option<(String, String)>,
    new_token: Option<String>,
) -> Result<SettingsPage, WebError> {
    let user = &session.user;
    let environment = app.store.environment(&user.id).await?;
    let level = typed
        .level
        .take()
        .unwrap_or_else(|| environment.network.level.as_str().to_owned());
    let now = Timestamp::now();
    let usage = app.store.usage_since(&user.id, now.week_start()).await?;
    let notifications =
        super::notifications::view(app, &user.id, std::mem::take(&mut typed.notifications)).await?;
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
                name: shorten(&repo.name, SHOWN),
                location: shorten(&repo.location, SHOWN),
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
            .take()
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
                detail: shorten(value, SHOWN),
                at: None,
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
                detail: "set".to_owned(),
                at: Some(Moment::new(secret.updated_at)),
            })
            .collect(),
        mcp_text: typed.mcp.take().unwrap_or_else(|| {
            serde_json::to_string_pretty(&environment.mcp.to_json()).unwrap_or_default()
        }),
        learnings: app
            .store
            .list_learnings(&user.id)
            .await?
            .into_iter()
            .map(|learning| Named {
                id: learning.id.to_string(),
                name: shorten(&learning.text, 2000),
                detail: format!("from {},", learning.source),
                at: Some(Moment::new(learning.created_at)),
            })
            .collect(),
        used,
        limit,
        percent: limit.map_or(0, |limit| (used * 100 / limit.max(1)).min(100)),
        resets: Moment::new(now.next_week_start()),
        tokens: app
            .store
            .list_tokens(&user.id)
            .await?
            .into_iter()
            .map(|token| Named {
                id: token.id.to_string(),
                name: token.label,
                detail: "made".to_owned(),
                at: Some(Moment::new(token.created_at)),
            })
            .collect(),
        new_token,
        notifications,
        errors,
        typed,
        notice,
    })
}

#[derive(Debug, serde::Deserialize)]
pub struct SettingsQuery {
    saved: Option<String>,
    removed: Option<String>,
}

pub async fn page(
    State(app): State<AppState>,
    session: WebSession,
    axum::extract::Query(query): axum::extract::Query<SettingsQuery>,
) -> Result<Response, WebError> {
    let notice = match (query.saved, query.removed) {
        (Some(section), _) => Some((section.clone(), format!("Saved: {section}."))),
        (None, Some(section)) => Some((section.clone(), format!("Removed from {section}."))),
        (None, None) => None,
    };
    let flash = app.flashes.take(&session);
    let notice = match &flash.new_token {
        Some(_) => Some((
            "tokens".to_owned(),
            "Token made. Copy it now: it will not be shown again.".to_owned(),
        )),
        None if flash.typed.notifications.new_secret.is_some() => Some((
            "webhook".to_owned(),
            "Webhook saved. Copy its secret now: it will not be shown again.".to_owned(),
        )),
        None => notice,
    };
    render(
        &draw(
            &app,
            &session,
            flash.typed,
            flash.errors,
            notice,
            flash.new_token,
        )
        .await?,
    )
}

/// The sections whose forms exist, which are the only ones a notice names.
const SECTIONS: [&str; 12] = [
    "repos",
    "network",
    "webhook",
    "email",
    "plan",
    "checks",
    "env",
    "secrets",
    "mcp",
    "learnings",
    "tokens",
    "password",
];

pub(super) fn saved(section: &str) -> Response {
    axum::response::Redirect::to(&format!("/settings?saved={section}#{section}")).into_response()
}

fn removed(section: &str) -> Response {
    axum::response::Redirect::to(&format!("/settings?removed={section}#{section}")).into_response()
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

/// Back to the form's section with its message and what was typed, over a redirect, so the
/// address bar holds the settings page and not the form's address.
pub(super) fn refused_to(
    app: &AppState,
    session: &WebSession,
    section: &str,
    flash: Flash,
) -> Response {
    app.flashes.put(session, flash);
    let section = if SECTIONS.contains(&section) {
        section
    } else {
        "repos"
    };
    axum::response::Redirect::to(&format!("/settings#{section}")).into_response()
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
        Err((_, error)) => {
            let mut errors = Errors::default();
            place(&mut errors, shorten(&error, SHOWN * 2));
            let flash = Flash {
                errors,
                typed,
                new_token: None,
            };
            Ok(refused_to(app, session, section, flash))
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
            let typed = Typed {
                repo_path: kept(path),
                github_repo: kept(github),
                ..Typed::default()
            };
            let result = if !github.is_empty() {
                crate::routes::repos::register_github(app, user, github, "github").await
            } else if path.is_empty() {
                Err(ApiError::field(
                    "path",
                    "is empty; give the absolute path of a git repository on the server",
                ))
            } else if path.len() > PATH_MAX {
                Err(ApiError::field(
                    "path",
                    format!(
                        "is {} bytes long, over the {PATH_MAX} a path on the server can be; give the absolute path of a git repository on the server",
                        path.len()
                    ),
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
                allow: (allow.len() <= KEEP_TEXT).then(|| allow.to_owned()),
                level: Some(level.to_owned()),
                ..Typed::default()
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
            let typed = Typed {
                env_name: kept(&name),
                env_value: kept(&value),
                ..Typed::default()
            };
            let change = validate_env_name(&name, "name").map(|()| {
                move |environment: &mut deft_store::Environment| {
                    let mut vars = environment.env.as_map().clone();
                    vars.insert(name.clone(), value);
                    check_env_size(&vars, &name)?;
                    environment.env = EnvVars::new(vars)?;
                    Ok(())
                }
            });
            save_environment(app, session, "env", change, typed, |e, m| e.env = Some(m)).await
        }
        "secrets" => {
            let (name, value) = (form.get("name").trim(), form.get("value"));
            // The value is never put back: it is a secret.
            let typed = Typed {
                secret_name: kept(name),
                ..Typed::default()
            };
            let result = match check_secret_size(value) {
                Ok(()) => app
                    .store
                    .put_secret(&user.id, name, value)
                    .await
                    .map(|_| ())
                    .map_err(message),
                Err(error) => Err((StatusCode::BAD_REQUEST, error.to_string())),
            };
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
                mcp: (text.len() <= KEEP_TEXT).then(|| text.to_owned()),
                ..Typed::default()
            };
            save_environment(app, session, "mcp", change, typed, |e, m| e.mcp = Some(m)).await
        }
        "tokens" => {
            let label = form.get("label").trim();
            let typed = Typed {
                token_label: kept(label),
                ..Typed::default()
            };
            if label.is_empty() || label.chars().count() > 100 {
                let error = "Label: give the token a name of 1 to 100 characters, such as the machine that will use it.";
                let result = Err((StatusCode::BAD_REQUEST, error.to_owned()));
                return finish(app, session, "tokens", result, typed, |e, m| {
                    e.token = Some(m);
                })
                .await;
            }
            let token = app.store.create_token(user, label).await?;
            // Shown once, on the page after the redirect only: never in a URL, never again.
            let flash = Flash {
                new_token: Some(token.token),
                ..Flash::default()
            };
            Ok(refused_to(app, session, "tokens", flash))
        }
        "webhook" | "email" => super::notifications::save(app, session, &section, &form).await,
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
    if form.get("confirm") != "yes" {
        return confirm_page(&form.session, &section, &item);
    }
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
        "webhook" => app.store.remove_webhook(&user.id).await?,
        _ => {
            return Err(WebError::page(
                StatusCode::NOT_FOUND,
                "There is no such settings section; use the buttons on the settings page.",
            ));
        }
    }
    Ok(removed(&section))
}

/// A delete's address opened as a page (a link, a reload): the question, not the deletion.
pub async fn confirm_delete(
    session: WebSession,
    Path((section, item)): Path<(String, String)>,
) -> Result<Response, WebError> {
    confirm_page(&session, &section, &item)
}

/// Asks before a delete or revoke; its form posts again with `confirm=yes`.
fn confirm_page(session: &WebSession, section: &str, item: &str) -> Result<Response, WebError> {
    let shown = shorten(item, SHOWN);
    let (question, consequence, verb) = match section {
        "env" => (
            format!("Delete the variable {shown}?"),
            "Tasks that start from now on run without it.",
            "Delete",
        ),
        "secrets" => (
            format!("Delete the secret {shown}?"),
            "Tasks that start from now on run without it; its value cannot be shown again, so keep a copy if you need it.",
            "Delete",
        ),
        "learnings" => (
            "Delete this learning?".to_owned(),
            "The agent stops applying it to later tasks.",
            "Delete",
        ),
        "tokens" => (
            "Revoke this API token?".to_owned(),
            "Anything that uses it is refused from now on.",
            "Revoke",
        ),
        "webhook" => (
            "Remove the webhook?".to_owned(),
            "Tasks stop telling it anything, and its secret is forgotten: a webhook added later gets a new one.",
            "Remove",
        ),
        _ => {
            return Err(WebError::page(
                StatusCode::NOT_FOUND,
                "There is no such settings section; use the buttons on the settings page.",
            ));
        }
    };
    let item = form_urlencoded::byte_serialize(item.as_bytes()).collect::<String>();
    render(&ConfirmPage {
        chrome: session.chrome("settings"),
        question,
        consequence: consequence.to_owned(),
        action: format!("/settings/{section}/{item}/delete"),
        verb,
        back: format!("/settings#{section}"),
        carry: Vec::new(),
    })
}

/// The bytes `vars` take in a sandbox's message: each name and value as JSON writes them.
fn env_size(vars: &std::collections::BTreeMap<String, String>) -> usize {
    vars.iter()
        .map(|(name, value)| json_len(name) + json_len(value) + 2)
        .sum()
}

fn json_len(text: &str) -> usize {
    serde_json::to_string(text).map_or(text.len(), |quoted| quoted.len())
}

/// Refuses variables that would make every task's commands too large for its sandbox.
fn check_env_size(
    vars: &std::collections::BTreeMap<String, String>,
    name: &str,
) -> Result<(), ValidationError> {
    let size = env_size(vars);
    if size <= ENV_BUDGET {
        return Ok(());
    }
    Err(ValidationError::new(
        format!("env.{name}"),
        format!(
            "this value would make your variables {size} bytes, over the {ENV_BUDGET} they may take of the {SANDBOX_MESSAGE} bytes a task's sandbox accepts with each command, so every task would fail; nothing was saved. Shorten the value, or put the data in a file in the repository and name the file in the variable."
        ),
    ))
}

fn check_secret_size(value: &str) -> Result<(), ValidationError> {
    let size = json_len(value);
    if size <= ENV_BUDGET {
        return Ok(());
    }
    Err(ValidationError::new(
        "value",
        format!(
            "is {size} bytes, over the {ENV_BUDGET} a secret may take of the {SANDBOX_MESSAGE} bytes a task's sandbox accepts with each command; nothing was saved. Keep large credentials in a file the task fetches, and store only its key here."
        ),
    ))
}
