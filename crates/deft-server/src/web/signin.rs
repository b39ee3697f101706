//! Signing in and out: a password form, the one-time login link, and a limit on guesses.
//!
//! No session exists before sign-in, so the sign-in forms carry a CSRF token of their own: a
//! random value set in a short-lived cookie and repeated in a hidden field, which a hostile
//! page can send but not read.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use cookie::{Cookie, SameSite};
use serde::Deserialize;

use super::{WebError, WebForm, form_fields, render};
use crate::AppState;
use crate::auth::SESSION_COOKIE;

/// The cookie holding the sign-in forms' CSRF token.
const LOGIN_COOKIE: &str = "deft_login";
/// How long a browser session lasts.
const SESSION_DAYS: i64 = 14;
/// Failed sign-ins allowed per account within [`WINDOW`].
const MAX_FAILURES_PER_ACCOUNT: usize = 5;
/// Failed sign-ins allowed per client address: more, since people behind one proxy or NAT
/// share an address, and one of them guessing must not lock the others out.
const MAX_FAILURES_PER_ADDRESS: usize = 30;
const WINDOW: Duration = Duration::from_secs(15 * 60);

/// Counts failed sign-ins by account name and by client address; past a limit, sign-in is
/// refused for that key until the oldest failure leaves the window.
#[derive(Debug, Default)]
pub struct SignInLimiter {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl SignInLimiter {
    /// `Err(wait)` when any of `keys` has used up its failures.
    fn check(&self, keys: &[String]) -> Result<(), Duration> {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let mut wait = Duration::ZERO;
        for key in keys {
            if let Some(times) = failures.get_mut(key) {
                times.retain(|at| now.duration_since(*at) < WINDOW);
                let most = if key.starts_with("ip:") {
                    MAX_FAILURES_PER_ADDRESS
                } else {
                    MAX_FAILURES_PER_ACCOUNT
                };
                if times.len() >= most {
                    wait = wait.max(WINDOW - now.duration_since(times[0]));
                }
            }
        }
        if wait.is_zero() { Ok(()) } else { Err(wait) }
    }

    fn failed(&self, keys: &[String]) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        // Keys from many addresses must not grow the map without end.
        if failures.len() > 10_000 {
            failures.retain(|_, times| times.iter().any(|at| now.duration_since(*at) < WINDOW));
        }
        for key in keys {
            failures.entry(key.clone()).or_default().push(now);
        }
    }

    fn succeeded(&self, account: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(account);
    }
}

fn limit_keys(name: &str, client: Option<SocketAddr>) -> Vec<String> {
    let mut keys = vec![format!("name:{}", name.trim().to_lowercase())];
    if let Some(client) = client {
        keys.push(format!("ip:{}", client.ip()));
    }
    keys
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    csrf: &'a str,
    name: &'a str,
    next: &'a str,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "login_link.html")]
struct LinkPage<'a> {
    csrf: &'a str,
    token: &'a str,
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// Where to go after sign-in: only a path of this site, never another origin.
fn safe_next(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/tasks"
    }
}

fn login_csrf(headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    let existing = crate::auth::cookie(headers, LOGIN_COOKIE).filter(|value| value.len() >= 32);
    if let Some(value) = existing {
        return (value, None);
    }
    let value =
        deft_core::TokenId::generate().to_string() + &deft_core::TokenId::generate().to_string();
    let cookie = Cookie::build((LOGIN_COOKIE, value.clone()))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/login")
        .max_age(cookie::time::Duration::hours(1))
        .build();
    (value, HeaderValue::from_str(&cookie.to_string()).ok())
}

fn with_cookie(mut response: Response, cookie: Option<HeaderValue>) -> Response {
    if let Some(cookie) = cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

pub async fn page(
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> Result<Response, WebError> {
    let (csrf, cookie) = login_csrf(&headers);
    let next = safe_next(query.next.as_deref().unwrap_or("/tasks"));
    let page = LoginPage {
        csrf: &csrf,
        name: "",
        next,
        error: None,
    };
    Ok(with_cookie(render(&page)?, cookie))
}

/// The sign-in forms' fields, their CSRF token checked against the cookie.
async fn login_form(request: Request) -> Result<(Parts, Vec<(String, String)>), WebError> {
    let (parts, body) = request.into_parts();
    let expected = crate::auth::cookie(&parts.headers, LOGIN_COOKIE).unwrap_or_default();
    let fields = form_fields(Request::from_parts(parts.clone(), body)).await?;
    let sent = super::field(&fields, super::CSRF_FIELD);
    if expected.is_empty() || !crate::auth::same_secret(sent.as_bytes(), expected.as_bytes()) {
        return Err(WebError::csrf());
    }
    Ok((parts, fields))
}

pub async fn submit(State(app): State<AppState>, request: Request) -> Result<Response, WebError> {
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let (parts, fields) = login_form(request).await?;
    let name = super::field(&fields, "name").trim();
    let password = super::field(&fields, "password");
    let next = safe_next(super::field(&fields, "next"));
    let csrf = crate::auth::cookie(&parts.headers, LOGIN_COOKIE).unwrap_or_default();
    let refuse = |status: StatusCode, error: String| -> Result<Response, WebError> {
        let page = LoginPage {
            csrf: &csrf,
            name,
            next,
            error: Some(error),
        };
        Ok((status, render(&page)?).into_response())
    };
    if name.is_empty() || password.is_empty() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Write your user name and your password.".into(),
        );
    }
    let keys = limit_keys(name, client);
    if let Err(wait) = app.sign_in_limiter.check(&keys) {
        let minutes = wait.as_secs().div_ceil(60).max(1);
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many failed sign-ins. Wait {minutes} minute(s) and try again, or ask an administrator for a login link."
            ),
        );
    }
    let Some(user) = app.store.check_password(name, password).await? else {
        app.sign_in_limiter.failed(&keys);
        return refuse(
            StatusCode::UNAUTHORIZED,
            "Wrong user name or password. (No password yet? Use the login link `deft serve` printed, or `deft user passwd`.)".into(),
        );
    };
    app.sign_in_limiter.succeeded(&keys[0]);
    start_session(&app, &parts, &user.id, next).await
}

async fn start_session(
    app: &AppState,
    parts: &Parts,
    user: &deft_core::UserId,
    next: &str,
) -> Result<Response, WebError> {
    let session = app
        .store
        .start_session(user, SESSION_DAYS * 24 * 3600 * 1000)
        .await?;
    let cookie = Cookie::build((SESSION_COOKIE, session.token))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(behind_tls(parts))
        .path("/")
        .max_age(cookie::time::Duration::days(SESSION_DAYS))
        .build();
    let mut response = Redirect::to(next).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
        .headers_mut()
        .append(header::SET_COOKIE, expired(LOGIN_COOKIE, "/login"));
    Ok(response)
}

/// deft itself speaks plain HTTP; a TLS proxy in front says so, and then the cookie is marked
/// `Secure` so that the browser never sends it in clear.
fn behind_tls(parts: &Parts) -> bool {
    parts
        .headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

fn expired(name: &str, path: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}=; Path={path}; Max-Age=0; HttpOnly; SameSite=Lax"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A link is redeemed by a button, not by opening it: link previews and prefetchers open
/// links, and must not use up a one-time link.
pub async fn link_page(
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<Response, WebError> {
    let (csrf, cookie) = login_csrf(&headers);
    Ok(with_cookie(
        render(&LinkPage {
            csrf: &csrf,
            token: &token,
        })?,
        cookie,
    ))
}

pub async fn link_submit(
    State(app): State<AppState>,
    Path(token): Path<String>,
    request: Request,
) -> Result<Response, WebError> {
    let (parts, _) = login_form(request).await?;
    match app.store.redeem_login_link(&token).await? {
        Some(user) => start_session(&app, &parts, &user.id, "/settings#password").await,
        None => Err(WebError::page(
            StatusCode::UNAUTHORIZED,
            "This login link was already used or has expired. Sign in with your password, or make a new link with `deft user link NAME`.",
        )),
    }
}

pub async fn logout(State(app): State<AppState>, request: Request) -> Result<Response, WebError> {
    let (parts, body) = request.into_parts();
    let token = crate::auth::cookie(&parts.headers, SESSION_COOKIE);
    let form = {
        use axum::extract::FromRequest as _;
        WebForm::from_request(Request::from_parts(parts, body), &app).await?
    };
    drop(form);
    if let Some(token) = token {
        app.store.end_session(&token).await?;
    }
    let mut response = Redirect::to("/login").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, expired(SESSION_COOKIE, "/"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_returns_only_to_a_path_of_this_site() {
        assert_eq!(safe_next("/tasks/1?x=2"), "/tasks/1?x=2");
        for hostile in [
            "https://evil.example",
            "//evil.example/x",
            "/\\evil.example",
            "",
        ] {
            assert_eq!(safe_next(hostile), "/tasks", "{hostile}");
        }
    }

    #[test]
    fn an_account_locks_after_five_failures_an_address_after_thirty() {
        let limiter = SignInLimiter::default();
        let ada = limit_keys("Ada", Some("10.0.0.1:5000".parse().unwrap()));
        for _ in 0..MAX_FAILURES_PER_ACCOUNT {
            assert!(limiter.check(&ada).is_ok());
            limiter.failed(&ada);
        }
        let wait = limiter.check(&ada).unwrap_err();
        assert!(
            wait > Duration::from_secs(14 * 60) && wait <= WINDOW,
            "{wait:?}"
        );
        assert!(
            limiter.check(&limit_keys("ada", None)).is_err(),
            "names are matched without case"
        );
        // Another account from the same address is not locked out by Ada's guesses...
        let bob = limit_keys("bob", Some("10.0.0.1:6000".parse().unwrap()));
        assert!(limiter.check(&bob).is_ok());
        // ...until the address itself has failed thirty times.
        for n in 0..MAX_FAILURES_PER_ADDRESS - MAX_FAILURES_PER_ACCOUNT {
            let someone = limit_keys(&format!("user{n}"), Some("10.0.0.1:7000".parse().unwrap()));
            limiter.failed(&someone);
        }
        assert!(limiter.check(&bob).is_err());
        // A success clears the account's count, not the address's.
        let carol = limit_keys("carol", None);
        limiter.failed(&carol);
        limiter.succeeded(&carol[0]);
        assert!(limiter.failures.lock().unwrap().get(&carol[0]).is_none());
    }
}
