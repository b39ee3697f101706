//! deft's HTTP surface: the API of SPEC §5 (JSON under `/api/v1`, `/healthz`, `/metrics`, live
//! event streams) and the web app built on the same store calls.
//!
//! Only this crate knows HTTP and JSON shapes. Every handler takes the caller as a
//! [`auth::CurrentUser`] and passes the user's id to the store, which filters by it, so another
//! user's object is a 404 by construction. Every failure leaves through [`ApiError`], the one
//! error envelope of SPEC §5.

mod auth;
mod error;
mod extract;
mod github;
mod metrics;
mod proxy;
mod routes;
mod views;
mod web;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use deft_store::Store;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
pub use github::{GithubHooks, resume as resume_github_deliveries};
pub use proxy::{TrustedProxies, TrustedProxyError};
/// The diff page's drawing, for `benches/diff.rs` only.
#[doc(hidden)]
pub use web::diff_bench;
pub use web::{ChatReplier, ChatReply, SharedChatReplier, SignInLimiter};

/// Whether a model is configured, decided at start (SPEC §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelReadiness {
    /// `PROVIDER/NAME` of the model tasks will use.
    Ready { label: String },
    /// No usable model: new tasks wait in `needs_attention` with this message, which says
    /// what to set.
    Missing { message: String },
}

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Store,
    pub model: ModelReadiness,
    /// Where local repositories may be registered from; unrestricted means admins only.
    pub local_roots: deft_forge::LocalRoots,
    /// Cancelled when the server stops: live streams end so that shutdown does not wait on them.
    pub shutdown: CancellationToken,
    /// How often a live stream looks for events written by other processes (workers on a
    /// shared PostgreSQL); events written in this process wake it at once.
    pub stream_poll: Duration,
    /// Renders `/metrics`.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// `limits.weekly_tokens`, shown against this week's usage in the settings.
    pub weekly_tokens: Option<i64>,
    /// The agent's replies in a chat before its task exists; `None` without a model.
    pub chat: Option<SharedChatReplier>,
    /// Failed web sign-ins, to slow down guessing.
    pub sign_in_limiter: std::sync::Arc<SignInLimiter>,
    /// `[server] trusted_proxies`: whose `X-Forwarded-For` and `X-Forwarded-Proto` are
    /// believed; empty believes no one.
    pub trusted_proxies: TrustedProxies,
    /// GitHub's webhooks and repositories; `None` when `[github]` is not configured.
    pub github: Option<GithubHooks>,
    /// What a refused or finished settings form shows on the page it redirects to.
    pub(crate) flashes: std::sync::Arc<web::Flashes>,
    /// Tells people about their tasks; its settings say whether e-mail can be sent and where
    /// webhooks may point. `None`: no e-mail, and webhooks to public addresses only.
    pub notifier: Option<deft_notify::Notifier>,
}

impl AppState {
    pub fn new(store: Store, model: ModelReadiness, shutdown: CancellationToken) -> AppState {
        AppState {
            store,
            model,
            local_roots: deft_forge::LocalRoots::unrestricted(),
            shutdown,
            stream_poll: Duration::from_secs(1),
            metrics: metrics::handle(),
            weekly_tokens: None,
            chat: None,
            sign_in_limiter: std::sync::Arc::default(),
            trusted_proxies: TrustedProxies::default(),
            github: None,
            flashes: std::sync::Arc::default(),
            notifier: None,
        }
    }
}

/// The largest request body accepted: descriptions and MCP configurations are small.
pub(crate) const BODY_LIMIT: usize = 1024 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .nest("/api/v1", routes::api())
        .merge(routes::health())
        .merge(web::pages())
        .route("/webhooks/github", axum::routing::post(github::receive))
        .route("/metrics", axum::routing::get(metrics::render))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // Pages, styles, scripts and JSON shrink to a quarter or less in gzip. The default
        // predicate leaves Server-Sent Events alone (a compressor would hold their events
        // back until its buffer fills), and bodies under 32 bytes.
        .layer(tower_http::compression::CompressionLayer::new())
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            routes::panicked,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .route_layer(axum::middleware::from_fn(metrics::track))
        .with_state(state)
}

/// A form's address opened as a page goes to the page the form is on; anything else is the
/// API's refusal.
async fn method_not_allowed(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    match web::form_address(&method, uri.path()) {
        Some(page) => axum::response::Redirect::to(&page).into_response(),
        None => routes::method_not_allowed().await.into_response(),
    }
}

/// Serves the API on `listener` until `state.shutdown` is cancelled, then finishes the requests
/// in flight.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    let shutdown = state.shutdown.clone();
    // The client's address keys the sign-in limit (through `trusted_proxies` behind a proxy).
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
