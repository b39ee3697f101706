//! The web app: HTML pages rendered on the server from templates compiled into the binary,
//! with one small script for what must not reload (the live log, checks as you type).
//!
//! Every page is signed in by the session cookie; every form carries the session's CSRF token
//! in a hidden field, checked by [`WebForm`] before any handler runs. Pages read the store
//! through the same user-filtered calls as the API, so another user's task is a 404 here too.

mod ansi;
mod chat_list;
mod chat_stream;
pub(crate) mod chats;
mod diff;
pub mod diff_bench;
mod diff_view;
mod github;
mod highlight;
mod log;
mod log_page;
mod log_steps;
mod markdown;
pub(crate) mod notifications;
mod pulls;
mod settings;
mod signin;
mod tasks;

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use deft_core::{ChatMessage, Repository, User};
use futures_util::future::BoxFuture;

use crate::auth::SESSION_COOKIE;
use crate::{ApiError, AppState};

pub(crate) use settings::Flashes;
pub use signin::SignInLimiter;

/// The agent's side of a chat before its task exists: given the conversation so far, the
/// reply to show; `watch` is told its text so far as it is written (all of it each time, a
/// new start when the model starts again). Implemented by the binary, which holds the model
/// client.
pub trait ChatReplier: Send + Sync + std::fmt::Debug {
    fn reply<'a>(
        &'a self,
        user: &'a User,
        repos: &'a [Repository],
        messages: &'a [ChatMessage],
        watch: &'a (dyn Fn(&str) + Send + Sync),
    ) -> BoxFuture<'a, Result<ChatReply, String>>;
}

/// What the agent said in a chat, and what saying it cost (it counts towards the week's limit).
#[derive(Debug, Clone)]
pub struct ChatReply {
    pub text: String,
    /// `PROVIDER/NAME` of the model that answered.
    pub model: String,
    pub usage: deft_core::Usage,
}

/// A shared replier, as [`AppState`] holds it.
pub type SharedChatReplier = Arc<dyn ChatReplier>;

pub fn pages() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/tasks") }))
        .route("/login", get(signin::page).post(signin::submit))
        .route(
            "/login/link/{token}",
            get(signin::link_page).post(signin::link_submit),
        )
        .route("/logout", post(signin::logout))
        .route("/tasks", get(tasks::list))
        .route("/tasks/live", get(tasks::live_list))
        .route("/tasks/{id}", get(tasks::page))
        .route("/tasks/{id}/summary", get(tasks::summary))
        .route("/tasks/{id}/diff", get(pulls::page))
        .route(
            "/tasks/{id}/diff/{repo}/{action}",
            get(pulls::back).post(pulls::act),
        )
        .route("/tasks/{id}/log", get(log_page::live_log))
        .route("/tasks/{id}/events/{seq}", get(log_page::output))
        .route("/tasks/{id}/{action}", post(task_action))
        .route("/chats/new", get(chats::new_page))
        .route("/chats", get(chat_list::list).post(chats::start))
        .route("/chats/{id}", get(chats::page))
        .route("/chats/{id}/messages", post(chats::message))
        .route("/chats/{id}/reply", post(chat_stream::reply))
        .route("/chats/{id}/task", post(chats::create_task))
        .route("/settings", get(settings::page))
        .route("/settings/check", post(settings::check))
        .route("/settings/github/connect", get(github::connect))
        .route(github::CALLBACK_PATH, get(github::callback))
        .route("/settings/github/disconnect", post(github::disconnect))
        .route("/settings/{section}", post(settings::save))
        .route(
            "/settings/{section}/{item}/delete",
            get(settings::confirm_delete).post(settings::delete),
        )
        .route("/assets/app.css", get(stylesheet))
        .route("/assets/app.js", get(script))
        .route("/assets/notify.js", get(notify_script))
        // Browsers ask for `/favicon.ico` on pages that name no icon (an error from a proxy,
        // say); answering it keeps their consoles clean.
        .route("/favicon.svg", get(favicon))
        .route("/favicon.ico", get(favicon))
        .layer(axum::middleware::from_fn(page_headers))
}

/// What every signed-in page shows around its content.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub user: String,
    pub csrf: String,
    /// The navigation entry to mark as current.
    pub nav: &'static str,
    /// How many of the person's tasks wait for them, in the navigation and the page's title.
    pub attention: i64,
}

/// The signed-in person of a page request, by the session cookie.
#[derive(Debug, Clone)]
pub struct WebSession {
    pub user: User,
    pub csrf: String,
    /// How many of the user's tasks need attention as the request came in.
    pub attention: i64,
}

impl WebSession {
    pub fn chrome(&self, nav: &'static str) -> Chrome {
        Chrome {
            user: self.user.name.clone(),
            csrf: self.csrf.clone(),
            nav,
            attention: self.attention,
        }
    }
}

impl FromRequestParts<AppState> for WebSession {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, WebError> {
        let next = parts
            .uri
            .path_and_query()
            .map_or("/tasks".to_owned(), ToString::to_string);
        let Some(token) = crate::auth::cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(WebError::SignIn { next });
        };
        match app.store.session(&token).await.map_err(ApiError::from)? {
            Some(session) => Ok(WebSession {
                attention: app
                    .store
                    .count_needing_attention(&session.user.id)
                    .await
                    .map_err(ApiError::from)?,
                user: session.user,
                csrf: session.csrf,
            }),
            None => Err(WebError::SignIn { next }),
        }
    }
}

/// A posted form of a signed-in page, its CSRF token checked.
#[derive(Debug)]
pub struct WebForm {
    pub session: WebSession,
    fields: Vec<(String, String)>,
}

/// The name of the hidden field that carries the CSRF token in every form.
pub const CSRF_FIELD: &str = "csrf";

impl WebForm {
    /// The field's value, `""` when it was not sent (an unchecked checkbox, say).
    pub fn get(&self, name: &str) -> &str {
        field(&self.fields, name)
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .collect()
    }

    pub fn checked(&self, name: &str) -> bool {
        !self.get(name).is_empty()
    }
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(key, _)| key == name)
        .map_or("", |(_, value)| value.as_str())
}

pub(crate) async fn form_fields(request: Request) -> Result<Vec<(String, String)>, WebError> {
    let bytes = axum::body::to_bytes(request.into_body(), crate::BODY_LIMIT)
        .await
        .map_err(|_| {
            WebError::page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "The form is larger than the server accepts (1 MiB); send less.",
            )
        })?;
    Ok(form_urlencoded::parse(&bytes).into_owned().collect())
}

impl FromRequest<AppState> for WebForm {
    type Rejection = WebError;

    async fn from_request(request: Request, app: &AppState) -> Result<Self, WebError> {
        let (mut parts, body) = request.into_parts();
        let session = WebSession::from_request_parts(&mut parts, app).await?;
        let fields = form_fields(Request::from_parts(parts, body)).await?;
        if !crate::auth::same_secret(
            field(&fields, CSRF_FIELD).as_bytes(),
            session.csrf.as_bytes(),
        ) {
            return Err(WebError::csrf());
        }
        Ok(WebForm { session, fields })
    }
}

/// How a page request fails: an HTML page that says what to do, or a trip to sign-in.
#[derive(Debug)]
pub enum WebError {
    Page { status: StatusCode, message: String },
    SignIn { next: String },
}

impl WebError {
    pub fn page(status: StatusCode, message: impl Into<String>) -> WebError {
        WebError::Page {
            status,
            message: message.into(),
        }
    }

    pub fn csrf() -> WebError {
        WebError::page(
            StatusCode::FORBIDDEN,
            "This form did not come from a page of this deft (its CSRF token is missing or stale), so nothing was changed. Go back, reload the page and send it again.",
        )
    }
}

impl From<ApiError> for WebError {
    fn from(error: ApiError) -> WebError {
        WebError::page(error.status, error.message)
    }
}

impl From<deft_store::StoreError> for WebError {
    fn from(error: deft_store::StoreError) -> WebError {
        ApiError::from(error).into()
    }
}

impl From<askama::Error> for WebError {
    fn from(error: askama::Error) -> WebError {
        tracing::error!(error = %error, "a page template failed to render");
        WebError::page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The page could not be drawn; see the server log for the cause.",
        )
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: &'a str,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        match self {
            WebError::SignIn { next } => {
                let target = format!(
                    "/login?next={}",
                    form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
                );
                Redirect::to(&target).into_response()
            }
            WebError::Page { status, message } => {
                let page = ErrorPage {
                    status: status.as_u16(),
                    reason: status.canonical_reason().unwrap_or("Error"),
                    message: &message,
                };
                match page.render() {
                    Ok(html) => (status, Html(html)).into_response(),
                    Err(_) => (status, message).into_response(),
                }
            }
        }
    }
}

/// Renders a page template.
pub fn render(template: &impl Template) -> Result<Response, WebError> {
    Ok(Html(template.render()?).into_response())
}

/// Pages load nothing from anywhere else, run only the app's own script, and are never framed.
async fn page_headers(request: Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("text/html") {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

const STYLESHEET: &str = include_str!("../../assets/app.css");
const SCRIPT: &str = include_str!("../../assets/app.js");
const FAVICON: &str = include_str!("../../assets/favicon.svg");

async fn favicon() -> Response {
    asset("image/svg+xml", FAVICON)
}

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", STYLESHEET)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// Browser notifications (`notify.js`), apart from `app.js`.
async fn notify_script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../assets/notify.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// A moment on a page: `<time datetime="{datetime}">{text}</time>`, which the script rewrites
/// into the reader's own time zone and a relative form; the UTC text is what shows without it.
#[derive(Debug, Clone)]
pub struct Moment {
    /// RFC 3339, in UTC.
    pub datetime: String,
    /// [`when`]'s text.
    pub text: String,
}

impl Moment {
    pub fn new(at: deft_core::Timestamp) -> Moment {
        Moment {
            datetime: at.to_rfc3339(),
            text: when(at),
        }
    }
}

/// `text` cut to about `max` bytes, its start and end kept around an ellipsis that says how
/// much was left out: what someone typed (a 1 MB path) is shown, not echoed back whole.
pub fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let half = max / 2;
    let mut head = half;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - half;
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    format!(
        "{}… ({} bytes left out) …{}",
        &text[..head],
        tail - head,
        &text[tail..]
    )
}

/// A moment as people read it in a list: `2026-11-29 14:03 UTC`.
pub fn when(at: deft_core::Timestamp) -> String {
    let text = at.to_rfc3339();
    // `2026-11-29T14:03:07.123Z` → `2026-11-29 14:03 UTC`
    match (text.get(..10), text.get(11..16)) {
        (Some(date), Some(time)) => format!("{date} {time} UTC"),
        _ => text,
    }
}

/// Human names of task states, for badges.
pub fn state_label(state: deft_core::TaskState) -> &'static str {
    match state {
        deft_core::TaskState::Queued => "Queued",
        deft_core::TaskState::InProgress => "In progress",
        deft_core::TaskState::NeedsAttention => "Needs attention",
        deft_core::TaskState::Completed => "Completed",
        deft_core::TaskState::Cancelled => "Cancelled",
    }
}

#[derive(Template)]
#[template(path = "confirm.html")]
pub(crate) struct ConfirmPage {
    pub chrome: Chrome,
    /// What is about to happen, as a question: "Revoke the API token `laptop`?".
    pub question: String,
    /// What it means, in a sentence.
    pub consequence: String,
    /// Where the confirmed form posts.
    pub action: String,
    /// The button that goes ahead: "Revoke".
    pub verb: &'static str,
    /// Where "Keep it" leads.
    pub back: String,
    /// Fields of the form that asked, posted again with the confirmation (name, value).
    pub carry: Vec<(&'static str, String)>,
}

/// Whether a posted form says its person confirmed, by the confirmation page's field or the
/// script's dialog.
pub(crate) fn confirmed(fields: &[(String, String)]) -> bool {
    field(fields, "confirm") == "yes"
}

/// A task's buttons. Cancelling asks first (a page without the script, a dialog with it); the
/// rest go straight to the task's own handler.
async fn task_action(
    axum::extract::State(app): axum::extract::State<AppState>,
    axum::extract::Path((id, action)): axum::extract::Path<(String, String)>,
    request: Request,
) -> Response {
    use axum::handler::Handler as _;
    if action != "cancel" {
        return tasks::act.call(request, app).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, crate::BODY_LIMIT).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return WebError::page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "The form is larger than the server accepts (1 MiB); send less.",
            )
            .into_response();
        }
    };
    let fields: Vec<(String, String)> = form_urlencoded::parse(&bytes).into_owned().collect();
    if confirmed(&fields) {
        let request = Request::from_parts(parts, axum::body::Body::from(bytes));
        return tasks::act.call(request, app).await;
    }
    let mut parts = parts;
    let session = match WebSession::from_request_parts(&mut parts, &app).await {
        Ok(session) => session,
        Err(error) => return error.into_response(),
    };
    if !crate::auth::same_secret(
        field(&fields, CSRF_FIELD).as_bytes(),
        session.csrf.as_bytes(),
    ) {
        return WebError::csrf().into_response();
    }
    let page = ConfirmPage {
        chrome: session.chrome("tasks"),
        question: "Cancel this task?".to_owned(),
        consequence: "Its run stops at once and it will not go on; what it already pushed stays."
            .to_owned(),
        action: format!("/tasks/{id}/cancel"),
        verb: "Cancel task",
        back: format!("/tasks/{id}"),
        carry: Vec::new(),
    };
    render(&page).into_response()
}

/// A page's form address opened as a page (a reload after an error, a bookmark, the address
/// bar): the page the form lives on, rather than the API's JSON refusal.
pub(crate) fn form_address(method: &axum::http::Method, path: &str) -> Option<String> {
    if method != axum::http::Method::GET || path.starts_with("/api/") {
        return None;
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["settings", ..] => Some(match parts.get(1) {
            Some(section) if !section.is_empty() && *section != "check" => {
                format!("/settings#{section}")
            }
            _ => "/settings".to_owned(),
        }),
        ["tasks", id, _] | ["chats", id, _] if !id.is_empty() => {
            Some(format!("/{}/{id}", parts[0]))
        }
        ["chats"] => Some("/chats/new".to_owned()),
        ["logout"] => Some("/tasks".to_owned()),
        _ => None,
    }
}
