//! A person connects their own GitHub account from the settings page, and disconnects it:
//! `GET /settings/github/connect` starts the GitHub App's user authorization (a `state` and a
//! PKCE verifier kept server-side, bound to this browser session, for ten minutes), GitHub
//! sends them back to `GET /settings/github/callback`, where the code is exchanged and the
//! login linked; `POST /settings/github/disconnect` unlinks it and stops their GitHub tasks.
//!
//! Connecting is a link, not a form: the pages' Content-Security-Policy allows forms to go
//! only to this origin, and browsers apply that to a form's redirect too.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::{WebError, WebForm, WebSession};
use crate::AppState;
use crate::auth::SESSION_COOKIE;

/// How long an authorization may take, from the click to GitHub's answer.
const AUTHORIZATION_TTL_MS: i64 = 10 * 60 * 1000;

/// Where GitHub sends people back; the App's callback URL is this path on deft's address.
pub const CALLBACK_PATH: &str = "/settings/github/callback";

fn not_set_up() -> WebError {
    WebError::page(
        StatusCode::NOT_FOUND,
        "Connecting GitHub accounts is not set up on this deft: an administrator sets github.client_id and github.client_secret (the GitHub App's OAuth client), or links accounts with `deft user github NAME LOGIN`.",
    )
}

/// deft's own address as the browser reached it: `https` when a trusted proxy says so.
fn callback_url(app: &AppState, request: &Request) -> String {
    let headers = request.headers();
    let https = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|info| app.trusted_proxies.forwarded_https(info.0.ip(), headers));
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    format!(
        "{}://{host}{CALLBACK_PATH}",
        if https { "https" } else { "http" }
    )
}

pub async fn connect(
    State(app): State<AppState>,
    session: WebSession,
    request: Request,
) -> Result<Response, WebError> {
    let Some(oauth) = app.github.as_ref().and_then(|hooks| hooks.client.oauth()) else {
        return Err(not_set_up());
    };
    let token = crate::auth::cookie(request.headers(), SESSION_COOKIE).unwrap_or_default();
    let redirect = callback_url(&app, &request);
    let pkce = deft_github::Pkce::generate();
    let state = deft_github::new_state();
    app.store
        .begin_github_authorization(
            &session.user.id,
            &token,
            &state,
            &pkce.verifier,
            &redirect,
            AUTHORIZATION_TTL_MS,
        )
        .await?;
    Ok(Redirect::to(&oauth.authorize_url(&redirect, &state, &pkce)).into_response())
}

#[derive(Debug, serde::Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

pub async fn callback(
    State(app): State<AppState>,
    session: WebSession,
    Query(answer): Query<Callback>,
    headers: axum::http::HeaderMap,
) -> Result<Response, WebError> {
    let Some(hooks) = app.github.clone() else {
        return Err(not_set_up());
    };
    let token = crate::auth::cookie(&headers, SESSION_COOKIE).unwrap_or_default();
    let pending = match &answer.state {
        Some(state) => app.store.take_github_authorization(state, &token).await?,
        None => None,
    };
    let refused = |message: String| {
        super::settings::refused_github(&app, &session, message, StatusCode::BAD_REQUEST)
    };
    let Some(pending) = pending.filter(|p| p.user == session.user.id) else {
        return refused("GitHub: this answer does not belong to a connection started here, or it came after ten minutes; press Connect GitHub again.".into()).await;
    };
    if let Some(error) = answer.error {
        return refused(format!(
            "GitHub: the authorization was not given ({error}); press Connect GitHub again and authorize the App."
        ))
        .await;
    }
    let code = answer.code.unwrap_or_default();
    let login = match hooks
        .client
        .authorized_login(&code, &pending.redirect_uri, &pending.verifier)
        .await
    {
        Ok(login) => login,
        Err(error) => {
            tracing::warn!(error = %error, "a GitHub authorization could not be finished");
            return refused(format!(
                "GitHub: the authorization could not be finished ({error}); press Connect GitHub again."
            ))
            .await;
        }
    };
    if let Err(error) = app.store.link_github(&session.user.id, &login).await {
        return refused(format!("GitHub: {}", crate::ApiError::from(error).message)).await;
    }
    Ok(Redirect::to("/settings?saved=github-account#repos").into_response())
}

pub async fn disconnect(State(app): State<AppState>, form: WebForm) -> Result<Response, WebError> {
    crate::github::disconnect_user(&app, &form.session.user.id).await?;
    Ok(Redirect::to("/settings?saved=github-disconnected#repos").into_response())
}
