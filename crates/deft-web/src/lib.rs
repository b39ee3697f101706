//! The agent's view of the web: `web_search(query)` through a search provider the operator
//! configured (SearXNG or Brave), and `web_fetch(url)` of one public page, turned into text.
//!
//! Guarantees: every page and every search result is taken as written by an attacker. A fetch
//! reaches only a host the task's [`deft_egress::EgressPolicy`] allows, connects only to an
//! address resolved and checked here (never this machine, loopback, private, link-local or any
//! other special-purpose range, unless a `custom` rule names that very IP address), re-checks
//! every redirect hop, carries no cookie, credential or secret, and reads at most a fixed number
//! of bytes in a fixed time. Pages behind a sign-in are refused, not read. What reaches the model
//! is capped text, fenced as untrusted data ([`render_untrusted`]), quoted in short excerpts.
//!
//! Limits: a host allowed by the policy is trusted with the request it is sent (the URL the
//! model chose); the login-wall check is a heuristic on the page's form and text; and the search
//! provider itself is the operator's, reached at the address configured, without these checks.

mod citations;
mod content;
mod error;
mod fetch;
mod page;
mod search;
pub mod wire;

pub use citations::{Citations, MAX_SOURCES};
pub use error::WebError;
pub use fetch::{
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_DECLARED_BYTES, DEFAULT_MAX_TEXT_CHARS, DEFAULT_TIMEOUT,
    FetchPolicy, MAX_REDIRECTS, USER_AGENT, fetch,
};
pub use page::{Page, render_untrusted};
pub use search::{
    BRAVE_BASE_URL, MAX_RESULTS, SETTING_API_KEY, SETTING_BASE_URL, SearchClient, SearchProvider,
    SearchResult,
};
