//! Who is calling: `Authorization: Bearer TOKEN`, looked up by the token's hash.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use deft_core::User;

use crate::{ApiError, AppState};

/// The authenticated caller. Taking it as an argument is what makes a handler need a token.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub User);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized(
                "no credentials; send `Authorization: Bearer TOKEN` (make a token with `deft token create`)",
            )
        })?;
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
