//! GitHub as a forge (SPEC §5 "GitHub"): authenticating as a GitHub App (JWT, then
//! installation tokens, cached and refreshed by octocrab) or with a personal token, the REST
//! calls deft makes, and the webhooks it receives.
//!
//! Responses are read into small types of our own rather than octocrab's full models: deft
//! needs a few fields of each, and a field GitHub adds or drops elsewhere must not break it.
//! Every route is built from a repository name checked by [`RepoName::parse`], so nothing
//! from a webhook reaches a URL unchecked.

mod checks;
mod client;
mod http;
mod oauth;
mod pulls;
mod review;
pub mod untrusted;
pub mod webhook;

pub use checks::{FAILING, FailingCheck, clean_log, clip};
pub use client::{Comment, GitHub, Permission, PullRequestInfo, RepoInfo, ReviewComment};
pub use http::web_url;
pub use oauth::{OAuthApp, Pkce, new_state};
pub use review::{ConversationComment, PullRequestHead, PullState, ReviewThread, ThreadComment};
pub use webhook::{Delivery, WebhookError};

/// `[github]` of the configuration (SPEC §5).
#[derive(Clone)]
pub struct GithubConfig {
    /// The REST API's base URL: `https://api.github.com`, or a GitHub Enterprise Server's
    /// `https://HOST/api/v3`.
    pub api_url: String,
    pub auth: GithubAuth,
    /// Signs webhook deliveries; without it, deliveries are refused.
    pub webhook_secret: Option<String>,
    /// The issue label that hands an issue to deft.
    pub label: String,
    /// The App's OAuth client, with which people connect their own GitHub accounts from the
    /// settings page; without it, an administrator links them (`deft user github`).
    pub oauth: Option<OAuthApp>,
}

impl std::fmt::Debug for GithubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubConfig")
            .field("api_url", &self.api_url)
            .field("auth", &self.auth)
            .field("label", &self.label)
            .field("oauth", &self.oauth)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub enum GithubAuth {
    /// A GitHub App: its id and private key (PEM).
    App {
        app_id: u64,
        private_key_pem: Vec<u8>,
    },
    /// A personal access token.
    Token(String),
}

impl std::fmt::Debug for GithubAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GithubAuth::App { app_id, .. } => write!(f, "App {{ app_id: {app_id} }}"),
            GithubAuth::Token(_) => write!(f, "Token"),
        }
    }
}

/// The public API; GitHub Enterprise Server takes `https://HOST/api/v3`.
pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// The label that hands an issue to deft unless configured otherwise.
pub const DEFAULT_LABEL: &str = "deft";

/// `owner/name`, checked to be safe in a URL path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(text: &str) -> Result<RepoName, GithubError> {
        let valid_part = |part: &str| {
            !part.is_empty()
                && part.len() <= 100
                && part != "."
                && part != ".."
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        match text.split_once('/') {
            Some((owner, name)) if valid_part(owner) && valid_part(name) => {
                Ok(RepoName(text.to_owned()))
            }
            _ => Err(GithubError::Invalid {
                what: format!("`{text}` is not a GitHub repository; write it as `owner/name`"),
            }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after the slash.
    pub fn name(&self) -> &str {
        self.0.split_once('/').map_or("", |(_, name)| name)
    }
}

impl std::fmt::Display for RepoName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    #[error("{what}")]
    Invalid { what: String },
    #[error("GitHub configuration: {what}")]
    Config { what: String },
    /// GitHub answered with an error.
    #[error("GitHub answered {status} to {call}: {message}")]
    Api {
        call: String,
        status: u16,
        message: String,
    },
    /// GitHub could not be reached or answered something unreadable.
    #[error("GitHub call {call} failed: {message}")]
    Transport { call: String, message: String },
    /// The App is not installed on the repository (or the token cannot see it).
    #[error(
        "the GitHub App cannot access {repo}; install it on the repository (or give the token access), then try again"
    )]
    NoAccess { repo: String },
}
