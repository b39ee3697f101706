//! Who is calling: `Authorization: Bearer TOKEN`, or the web app's session cookie (SPEC §5),
//! each looked up by its token's hash.
//!
//! A browser sends the cookie with any request, including one a hostile page makes it send,
//! so a request signed in by the cookie that changes anything must also carry the session's
//! CSRF token in `X-CSRF-Token`, which only the web app's own pages can read.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use deft_core::User;

use crate::{ApiError, AppState};

/// The web app's session cookie.
pub const SESSION_COOKIE: &str = "deft_session";
/// The header carrying the session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The authenticated caller. Taking it as an argument is what makes a handler need a token.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub User);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(header) = parts.headers.get(header::AUTHORIZATION) else {
            return match cookie(&parts.headers, SESSION_COOKIE) {
                Some(token) => from_session(parts, state, &token).await,
                None => Err(ApiError::unauthorized(
                    "no credentials; send `Authorization: Bearer TOKEN` (make a token with `deft token create`) or sign in to the web app",
                )),
            };
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer TOKEN`")
            })?;
        match state.store.user_for_token(token).await? {
            Some(user) => Ok(CurrentUser(user)),
            None => Err(ApiError::unauthorized(
                "the token is not valid; make a new one with `deft token create`",
            )),
        }
    }
}

/// The authenticated caller with the server's state: what an API handler that acts for a user
/// takes, as [`CurrentUser`] and the state together.
#[derive(Debug, Clone)]
pub struct Caller {
    pub app: AppState,
    pub user: User,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let CurrentUser(user) = CurrentUser::from_request_parts(parts, state).await?;
        Ok(Caller {
            app: state.clone(),
            user,
        })
    }
}

/// The value of the cookie `name` in the request's headers.
pub(crate) fn cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == name)
        .map(|cookie| cookie.value().to_owned())
}

async fn from_session(
    parts: &Parts,
    state: &AppState,
    token: &str,
) -> Result<CurrentUser, ApiError> {
    let Some(session) = state.store.session(token).await? else {
        return Err(ApiError::unauthorized(
            "the session has ended or expired; sign in again",
        ));
    };
    let reads_only = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !reads_only {
        let sent = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        if !same_secret(sent.as_bytes(), session.csrf.as_bytes()) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "a change made with the session cookie must carry the session's CSRF token in `X-CSRF-Token`; reload the page and try again",
            ));
        }
    }
    Ok(CurrentUser(session.user))
}

/// Compares in time independent of where the inputs differ.
pub(crate) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
