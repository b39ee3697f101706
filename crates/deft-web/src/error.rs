//! The one error of this crate. Each variant is a kind the caller acts on differently: retry a
//! `Transient`, fix a `Config`, pick another source for the rest. The messages are read by the
//! model (as a tool's answer) and by the operator, so each says what to do next.

/// Why a search or a fetch gave nothing.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error(
        "web search is not configured: the operator has set no search provider; answer from what you know or fetch a page whose address you have"
    )]
    NotConfigured,
    /// The operator's settings are wrong; `setting` names the one to fix.
    #[error("{setting}: {message}")]
    Config {
        setting: &'static str,
        message: String,
    },
    #[error("`{input}` cannot be used: {reason}")]
    Invalid { input: String, reason: String },
    /// The task's network rules, or the address the host resolves to, forbid it.
    #[error(
        "refused to fetch {url}: {reason}; this address is out of reach under the task's network rules, so use another source"
    )]
    Refused { url: String, reason: String },
    /// The page is behind a sign-in (`status` is the HTTP status, 200 for a login form).
    #[error(
        "{url} needs a sign-in ({reason}); deft reads public pages only and sends no credentials, so find a public source"
    )]
    AuthRequired {
        url: String,
        status: u16,
        reason: String,
    },
    #[error(
        "{url} is `{content_type}`, which deft does not read; fetch an HTML, text, Markdown or JSON page instead"
    )]
    Unsupported { url: String, content_type: String },
    #[error(
        "{url} declares {declared} bytes, more than the {limit} deft accepts; look for a smaller page"
    )]
    TooLarge {
        url: String,
        declared: u64,
        limit: u64,
    },
    /// A timeout, a dropped connection, HTTP 429 or 5xx: the same call may work later.
    #[error("{url} did not answer usefully ({reason}); try again later or use another source")]
    Transient { url: String, reason: String },
    #[error("{url} could not be read ({reason}); check the address or use another source")]
    Failed { url: String, reason: String },
}

impl WebError {
    /// Whether the same call may succeed if made again later.
    pub fn is_transient(&self) -> bool {
        matches!(self, WebError::Transient { .. })
    }
}
