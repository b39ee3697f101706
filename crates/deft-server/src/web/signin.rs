//! Signing in and out: a password form, the one-time login link, and limits on guesses that
//! one guesser cannot turn against other people.
//!
//! No session exists before sign-in, so the sign-in forms carry a CSRF token of their own: a
//! random value set in a short-lived cookie and repeated in a hidden field, which a hostile
//! page can send but not read.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
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
/// Failed sign-ins one client may make at one account within [`WINDOW`]. Counted per
/// (account, client) pair rather than per account, so that a guesser's failures lock the
/// guesser's client out and never the owner's.
const MAX_FAILURES_PER_ACCOUNT_AND_CLIENT: usize = 5;
/// Failed sign-ins one client may make across all accounts: slows one client spraying
/// guesses over many names. More than above, since people behind one NAT share an address.
const MAX_FAILURES_PER_CLIENT: usize = 30;
/// Failed sign-ins at one account from all clients together, past which a client that has
/// already failed at it is refused: a guesser with many addresses then gets one guess per
/// address per window instead of five. It never refuses a client that has not failed at the
/// account, so it cannot be used to lock the owner out; a locked-out owner who mistyped can
/// wait, or use a one-time link.
const ACCOUNT_CEILING: usize = 50;
const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Counters kept at most. Each key holds only its newest failures (no more than its limit),
/// and expired keys are dropped when the map fills; a flood of live keys from very many
/// addresses (each paced by the password hash) drops the keys that failed longest ago.
const MAX_KEYS: usize = 20_000;

/// What a failure is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LimitKey {
    /// One account from one client; `None` when the connection's address is unknown (a
    /// router served without connect info).
    Pair(String, Option<IpAddr>),
    Client(IpAddr),
    Account(String),
}

impl LimitKey {
    /// Failures kept: enough to decide, since only the newest `most` can still refuse.
    fn most(&self) -> usize {
        match self {
            LimitKey::Pair(..) => MAX_FAILURES_PER_ACCOUNT_AND_CLIENT,
            LimitKey::Client(_) => MAX_FAILURES_PER_CLIENT,
            LimitKey::Account(_) => ACCOUNT_CEILING,
        }
    }
}

/// The failures of one key still within the window.
#[derive(Debug, Clone, Copy, Default)]
struct Recent {
    count: usize,
    oldest: Option<Instant>,
    newest: Option<Instant>,
}

type Failures = HashMap<LimitKey, VecDeque<Instant>>;

fn recent(failures: &mut Failures, key: &LimitKey, now: Instant) -> Recent {
    let Some(times) = failures.get_mut(key) else {
        return Recent::default();
    };
    while times
        .front()
        .is_some_and(|at| now.duration_since(*at) >= WINDOW)
    {
        times.pop_front();
    }
    Recent {
        count: times.len(),
        oldest: times.front().copied(),
        newest: times.back().copied(),
    }
}

/// Counts failed sign-ins per (account, client), per client, and per account; past a limit,
/// sign-in is refused to that client until enough failures leave the window.
#[derive(Debug, Default)]
pub struct SignInLimiter {
    failures: Mutex<Failures>,
}

/// The keys of a sign-in: the pair, the client when known, the account.
fn limit_keys(account: &str, client: Option<IpAddr>) -> (LimitKey, Option<LimitKey>, LimitKey) {
    let account = account.trim().to_lowercase();
    let client = client.map(crate::proxy::client_key);
    (
        LimitKey::Pair(account.clone(), client),
        client.map(LimitKey::Client),
        LimitKey::Account(account),
    )
}

impl SignInLimiter {
    /// `Err(wait)` when `client` may not try `account` now; `wait` is how long until it may.
    fn check(&self, account: &str, client: Option<IpAddr>) -> Result<(), Duration> {
        let now = Instant::now();
        let left = |at: Option<Instant>| {
            at.map_or(Duration::ZERO, |at| {
                WINDOW.saturating_sub(now.duration_since(at))
            })
        };
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (pair_key, client_key, account_key) = limit_keys(account, client);
        let mut wait = Duration::ZERO;
        let pair = recent(&mut failures, &pair_key, now);
        if pair.count >= pair_key.most() {
            wait = wait.max(left(pair.oldest));
        }
        if let Some(client_key) = client_key {
            let by_client = recent(&mut failures, &client_key, now);
            if by_client.count >= client_key.most() {
                wait = wait.max(left(by_client.oldest));
            }
        }
        let account = recent(&mut failures, &account_key, now);
        if account.count >= account_key.most() && pair.count > 0 {
            // Open again when the account falls below the ceiling or this client's own
            // failures there have all expired, whichever comes first.
            wait = wait.max(left(account.oldest).min(left(pair.newest)));
        }
        if wait.is_zero() { Ok(()) } else { Err(wait) }
    }

    fn failed(&self, account: &str, client: Option<IpAddr>) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_KEYS {
            prune(&mut failures, now);
        }
        let (pair, client, account) = limit_keys(account, client);
        for key in [Some(pair), client, Some(account)].into_iter().flatten() {
            let most = key.most();
            let times = failures.entry(key).or_default();
            times.push_back(now);
            while times.len() > most {
                times.pop_front();
            }
        }
    }

    /// The account opened from this client: its failures there are forgiven. The client's
    /// count across accounts and the account's ceiling stay, or a guesser could clear its own
    /// count by signing in to an account of its own between guesses.
    fn succeeded(&self, account: &str, client: Option<IpAddr>) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(&limit_keys(account, client).0);
    }
}

/// Drops expired keys, then, if the map is still mostly full, the keys whose newest failure
/// is oldest, down to three quarters: a sweep then comes at most every quarter of
/// [`MAX_KEYS`] new keys.
fn prune(failures: &mut Failures, now: Instant) {
    failures.retain(|_, times| {
        times
            .back()
            .is_some_and(|at| now.duration_since(*at) < WINDOW)
    });
    let keep = MAX_KEYS * 3 / 4;
    if failures.len() > keep {
        let mut by_age: Vec<(Instant, LimitKey)> = failures
            .iter()
            .map(|(key, times)| (times.back().copied().unwrap_or(now), key.clone()))
            .collect();
        by_age.sort_unstable_by_key(|(at, _)| *at);
        let excess = by_age.len() - keep;
        for (_, key) in by_age.into_iter().take(excess) {
            failures.remove(&key);
        }
    }
}

/// The client's address: the TCP peer, or the client a trusted proxy names.
fn client_address(app: &AppState, parts: &Parts) -> Option<IpAddr> {
    peer(parts).map(|peer| app.trusted_proxies.client(peer, &parts.headers))
}

fn peer(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
}

/// The command an administrator runs for a one-time link, with the name as typed when it can
/// be pasted into a shell as it is.
fn link_command(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    format!("deft user link {}", if plain { name } else { "NAME" })
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
    let (parts, fields) = login_form(request).await?;
    let client = client_address(&app, &parts);
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
    if let Err(wait) = app.sign_in_limiter.check(name, client) {
        let minutes = wait.as_secs().div_ceil(60).max(1);
        let minutes = if minutes == 1 {
            "1 minute".to_owned()
        } else {
            format!("{minutes} minutes")
        };
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many failed sign-ins from this browser; try again in {minutes}, or ask an administrator for a one-time link: `{}`.",
                link_command(name)
            ),
        );
    }
    let Some(user) = app.store.check_password(name, password).await? else {
        app.sign_in_limiter.failed(name, client);
        return refuse(
            StatusCode::UNAUTHORIZED,
            "Wrong user name or password. (No password yet? Use the login link `deft serve` printed, or `deft user passwd`.)".into(),
        );
    };
    app.sign_in_limiter.succeeded(name, client);
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
        .secure(behind_tls(app, parts))
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
/// `Secure` so that the browser never sends it in clear. Only a trusted proxy is believed.
fn behind_tls(app: &AppState, parts: &Parts) -> bool {
    peer(parts).is_some_and(|peer| app.trusted_proxies.forwarded_https(peer, &parts.headers))
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
    // Not limited: the token is the credential, long and random, so it cannot be guessed,
    // and it is how a locked-out owner gets back in.
    match app.store.redeem_login_link(&token).await? {
        Some(user) => {
            app.sign_in_limiter
                .succeeded(&user.name, client_address(&app, &parts));
            start_session(&app, &parts, &user.id, "/settings#password").await
        }
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

    fn at(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn a_guesser_locks_out_its_own_client_not_the_owner() {
        let limiter = SignInLimiter::default();
        let guesser = at("10.0.0.1");
        for _ in 0..MAX_FAILURES_PER_ACCOUNT_AND_CLIENT {
            assert!(limiter.check("Ada", guesser).is_ok());
            limiter.failed("Ada", guesser);
        }
        let wait = limiter.check("ada", guesser).unwrap_err();
        assert!(
            wait > Duration::from_secs(14 * 60) && wait <= WINDOW,
            "names are matched without case: {wait:?}"
        );
        // The owner, from another client, is not locked out.
        assert!(limiter.check("ada", at("192.0.2.7")).is_ok());
        // Another account from the guesser's client is open...
        assert!(limiter.check("bob", guesser).is_ok());
        // ...until the client has failed thirty times, across accounts.
        for n in 0..MAX_FAILURES_PER_CLIENT - MAX_FAILURES_PER_ACCOUNT_AND_CLIENT {
            limiter.failed(&format!("user{n}"), guesser);
        }
        assert!(limiter.check("bob", guesser).is_err());
        assert!(limiter.check("bob", at("192.0.2.7")).is_ok());
        // An IPv6 client is its /64: a fresh address in it is the same client.
        let v6 = at("2001:db8::1");
        for _ in 0..MAX_FAILURES_PER_ACCOUNT_AND_CLIENT {
            limiter.failed("carol", v6);
        }
        assert!(limiter.check("carol", at("2001:db8::ffff:2")).is_err());
        assert!(limiter.check("carol", at("2001:db8:0:1::1")).is_ok());
        // A success forgives the pair's failures, not the client's count across accounts.
        let carol = at("10.0.0.2");
        limiter.failed("carol", carol);
        limiter.succeeded("Carol", carol);
        let failures = limiter.failures.lock().unwrap();
        let (pair, client, _) = limit_keys("carol", carol);
        assert!(failures.get(&pair).is_none());
        assert_eq!(failures[&client.unwrap()].len(), 1);
    }

    #[test]
    fn past_the_account_ceiling_only_clients_that_failed_are_refused() {
        let limiter = SignInLimiter::default();
        for n in 0..ACCOUNT_CEILING {
            let client = at(&format!("10.0.{}.{}", n / 200, n % 200));
            assert!(limiter.check("admin", client).is_ok());
            limiter.failed("admin", client);
        }
        // One guess per address now, not five...
        assert!(limiter.check("admin", at("10.0.0.3")).is_err());
        // ...while a client that has not failed (the owner's) is never refused.
        assert!(limiter.check("admin", at("192.0.2.7")).is_ok());
        assert!(limiter.check("someone-else", at("10.0.0.3")).is_ok());
    }

    #[test]
    fn the_counters_take_bounded_memory() {
        let limiter = SignInLimiter::default();
        for n in 0..MAX_KEYS {
            let client = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n as u32));
            limiter.failed(&format!("user{n}"), Some(client));
            assert!(limiter.failures.lock().unwrap().len() <= MAX_KEYS + 2);
        }
        for _ in 0..100 {
            limiter.failed("admin", at("10.0.0.1"));
        }
        let failures = limiter.failures.lock().unwrap();
        assert_eq!(
            failures[&LimitKey::Account("admin".into())].len(),
            ACCOUNT_CEILING
        );
        assert_eq!(
            failures[&LimitKey::Client("10.0.0.1".parse().unwrap())].len(),
            MAX_FAILURES_PER_CLIENT
        );
    }

    #[test]
    fn the_refusal_names_the_command_to_run() {
        assert_eq!(link_command("ada.l-1"), "deft user link ada.l-1");
        assert_eq!(link_command("a b; rm"), "deft user link NAME");
    }
}
