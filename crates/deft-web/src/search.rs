//! Web search through the provider the operator configured: a self-hosted SearXNG, or Brave's
//! Search API. The provider is the operator's own choice, reached at the address configured
//! (a SearXNG on this machine is the usual case), so it is not held to the fetch's address
//! rules; its answers are still an attacker's text, so only capped strings and http(s) URLs
//! come out of it.

use std::fmt;
use std::time::Duration;

use reqwest::header::{ACCEPT, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::Serialize;

use crate::content::{cap_chars, clean_line, read_capped};
use crate::error::WebError;
use crate::fetch::USER_AGENT;
use crate::wire::{BraveResponse, SearxngResponse};

/// Brave's public API; tests and proxies of the operator's may point elsewhere.
pub const BRAVE_BASE_URL: &str = "https://api.search.brave.com";
/// The setting that holds the provider's address, as the operator writes it.
pub const SETTING_BASE_URL: &str = "web_search.base_url";
/// The setting that holds Brave's subscription token.
pub const SETTING_API_KEY: &str = "web_search.api_key";
/// The most results one search returns, whatever is asked.
pub const MAX_RESULTS: usize = 10;

const MAX_TITLE_CHARS: usize = 200;
const MAX_SNIPPET_CHARS: usize = 500;
const MAX_URL_BYTES: usize = 2048;
/// Brave refuses longer queries; no search engine needs more.
const MAX_QUERY_CHARS: usize = 400;
/// A page of results is tens of kilobytes; more is not a search answer.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
const SEARCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Where searches go, as the operator configured it.
#[derive(Clone)]
pub enum SearchProvider {
    /// A SearXNG instance with the `json` format enabled in its `settings.yml`.
    Searxng { base_url: String },
    /// Brave's Search API with a subscription token.
    Brave { api_key: String, base_url: String },
}

impl SearchProvider {
    /// Brave at its public address.
    pub fn brave(api_key: impl Into<String>) -> SearchProvider {
        SearchProvider::Brave {
            api_key: api_key.into(),
            base_url: BRAVE_BASE_URL.to_owned(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            SearchProvider::Searxng { .. } => "SearXNG",
            SearchProvider::Brave { .. } => "Brave Search",
        }
    }

    fn base_url(&self) -> &str {
        match self {
            SearchProvider::Searxng { base_url } | SearchProvider::Brave { base_url, .. } => {
                base_url
            }
        }
    }
}

/// The key never shows in logs or errors.
impl fmt::Debug for SearchProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SearchProvider::Searxng { base_url } => f
                .debug_struct("Searxng")
                .field("base_url", base_url)
                .finish(),
            SearchProvider::Brave { base_url, .. } => f
                .debug_struct("Brave")
                .field("api_key", &"[redacted]")
                .field("base_url", base_url)
                .finish(),
        }
    }
}

/// One search result, every string capped and the URL an http(s) one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SearchResult {
    pub title: String,
    pub url: String,
    pub snippet: String,
}

impl SearchResult {
    /// The result as deft keeps it, or `None` when its URL is not a plain http(s) one.
    /// `decorated` snippets (Brave's) carry `<strong>` marks and HTML entities.
    pub(crate) fn kept(
        title: &str,
        url: &str,
        snippet: Option<&str>,
        decorated: bool,
    ) -> Option<SearchResult> {
        if url.len() > MAX_URL_BYTES {
            return None;
        }
        let parsed = Url::parse(url).ok()?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.host().is_none()
            || !parsed.username().is_empty()
            || parsed.password().is_some()
        {
            return None;
        }
        let snippet = snippet.unwrap_or_default();
        let snippet = if decorated {
            undecorate(snippet)
        } else {
            snippet.to_owned()
        };
        let title = if decorated {
            undecorate(title)
        } else {
            title.to_owned()
        };
        Some(SearchResult {
            title: cap_chars(&clean_line(&title), MAX_TITLE_CHARS).0,
            url: parsed.to_string(),
            snippet: cap_chars(&clean_line(&snippet), MAX_SNIPPET_CHARS).0,
        })
    }

    /// This result for the model, fenced as untrusted data, numbered `[n]` for citing.
    pub fn render(&self, n: usize) -> String {
        crate::page::render_untrusted(n, &self.url, &self.title, &self.snippet)
    }
}

/// Brave marks the query's words with `<strong>` and escapes the rest as HTML.
fn undecorate(text: &str) -> String {
    let text = text.replace("<strong>", "").replace("</strong>", "");
    crate::content::decode_entities(&text)
}

/// Searches with one provider.
#[derive(Debug, Clone)]
pub struct SearchClient {
    provider: SearchProvider,
    endpoint: Url,
    /// Brave's token as a header, marked sensitive so no debug output shows it.
    token: Option<HeaderValue>,
    http: reqwest::Client,
}

impl SearchClient {
    /// A client for the configured provider; `None` (nothing configured) is
    /// [`WebError::NotConfigured`], and a base URL that is not http(s) names the setting.
    pub fn new(provider: Option<SearchProvider>) -> Result<SearchClient, WebError> {
        let provider = provider.ok_or(WebError::NotConfigured)?;
        let endpoint = endpoint(&provider)?;
        let token = match &provider {
            SearchProvider::Searxng { .. } => None,
            SearchProvider::Brave { api_key, .. } => Some(token(api_key)?),
        };
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(5))
            .timeout(SEARCH_TIMEOUT)
            .build()
            .map_err(|error| WebError::Failed {
                url: provider.base_url().to_owned(),
                reason: format!("cannot set up an HTTP client: {error}"),
            })?;
        Ok(SearchClient {
            provider,
            endpoint,
            token,
            http,
        })
    }

    /// At most `max_results` (and at most [`MAX_RESULTS`]) results for `query`.
    pub async fn search(
        &self,
        query: &str,
        max_results: usize,
    ) -> Result<Vec<SearchResult>, WebError> {
        let query = query.trim();
        if query.is_empty() || query.chars().count() > MAX_QUERY_CHARS {
            return Err(WebError::Invalid {
                input: cap_chars(query, 80).0,
                reason: format!(
                    "a search query has 1 to {MAX_QUERY_CHARS} characters; write a few keywords"
                ),
            });
        }
        let max = max_results.clamp(1, MAX_RESULTS);
        let request = self.request(query, max);
        let response = request
            .send()
            .await
            .map_err(|error| self.unreachable(error))?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.refused(status));
        }
        let (body, cut) = read_capped(response, MAX_ANSWER_BYTES)
            .await
            .map_err(|error| self.unreachable(error))?;
        let broken = |why: String| WebError::Failed {
            url: self.provider.base_url().to_owned(),
            reason: format!(
                "the {} answer is not the JSON expected ({why}); check that {SETTING_BASE_URL} points at the {} itself",
                self.provider.name(),
                self.provider.name()
            ),
        };
        if cut {
            return Err(broken(format!("longer than {MAX_ANSWER_BYTES} bytes")));
        }
        let results = match self.provider {
            SearchProvider::Searxng { .. } => serde_json::from_slice::<SearxngResponse>(&body)
                .map(|answer| answer.into_results(max)),
            SearchProvider::Brave { .. } => serde_json::from_slice::<BraveResponse>(&body)
                .map(|answer| answer.into_results(max)),
        };
        results.map_err(|error| broken(error.to_string()))
    }

    fn request(&self, query: &str, max: usize) -> reqwest::RequestBuilder {
        let mut url = self.endpoint.clone();
        match &self.provider {
            SearchProvider::Searxng { .. } => {
                url.query_pairs_mut()
                    .append_pair("q", query)
                    .append_pair("format", "json");
                self.http.get(url)
            }
            SearchProvider::Brave { .. } => {
                url.query_pairs_mut()
                    .append_pair("q", query)
                    .append_pair("count", &max.to_string());
                let mut request = self.http.get(url).header(ACCEPT, "application/json");
                if let Some(token) = &self.token {
                    request = request.header("X-Subscription-Token", token.clone());
                }
                request
            }
        }
    }

    /// What an answer other than 2xx means, and what to do about it.
    fn refused(&self, status: StatusCode) -> WebError {
        let name = self.provider.name();
        let url = self.provider.base_url().to_owned();
        let code = status.as_u16();
        match (&self.provider, code) {
            (SearchProvider::Brave { .. }, 401 | 403) => WebError::Config {
                setting: SETTING_API_KEY,
                message: format!(
                    "{name} refused the API key (HTTP {code}); set it to a valid subscription token"
                ),
            },
            // SearXNG answers 403 to a format its settings.yml does not enable.
            (SearchProvider::Searxng { .. }, 403) => WebError::Config {
                setting: SETTING_BASE_URL,
                message: format!(
                    "the SearXNG at {url} refused the JSON format (HTTP 403); add `json` to `search.formats` in its settings.yml"
                ),
            },
            (SearchProvider::Searxng { .. }, 401) => WebError::Config {
                setting: SETTING_BASE_URL,
                message: format!(
                    "the SearXNG at {url} asks for a sign-in (HTTP 401); deft sends none, so point it at an instance open to deft"
                ),
            },
            (_, 429) | (_, 500..=599) => WebError::Transient {
                url,
                reason: format!("{name} answered HTTP {code}"),
            },
            (_, 300..=399) => WebError::Config {
                setting: SETTING_BASE_URL,
                message: format!(
                    "{name} at {url} redirects (HTTP {code}); set the address it redirects to"
                ),
            },
            _ => WebError::Failed {
                url,
                reason: format!("{name} answered HTTP {code}"),
            },
        }
    }

    fn unreachable(&self, error: reqwest::Error) -> WebError {
        let url = self.provider.base_url().to_owned();
        let name = self.provider.name();
        if error.is_timeout() || error.is_connect() || error.is_body() || error.is_request() {
            return WebError::Transient {
                url,
                reason: format!(
                    "cannot reach {name}: {}",
                    crate::content::error_chain(&error)
                ),
            };
        }
        WebError::Failed {
            url,
            reason: format!("{name}: {}", crate::content::error_chain(&error)),
        }
    }
}

/// Brave's token as a header value; an empty one, or one no header can carry, names the setting.
fn token(api_key: &str) -> Result<HeaderValue, WebError> {
    let bad = |why: &str| WebError::Config {
        setting: SETTING_API_KEY,
        message: format!("the Brave Search API key {why}; copy the subscription token as issued"),
    };
    let api_key = api_key.trim();
    if api_key.is_empty() {
        return Err(bad("is empty"));
    }
    let mut token =
        HeaderValue::from_str(api_key).map_err(|_| bad("has characters a header cannot carry"))?;
    token.set_sensitive(true);
    Ok(token)
}

/// The search endpoint under the configured base URL (which may have a path of its own).
fn endpoint(provider: &SearchProvider) -> Result<Url, WebError> {
    let base = provider.base_url();
    let bad = |why: &str| WebError::Config {
        setting: SETTING_BASE_URL,
        message: format!("`{base}` {why}; write the provider's http:// or https:// address"),
    };
    let mut url = Url::parse(base).map_err(|error| bad(&format!("is not a URL ({error})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(bad("is not an http(s) address"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("has a query or fragment"));
    }
    // The address is in every error the model reads: no password may ride in it.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(WebError::Config {
            setting: SETTING_BASE_URL,
            message: "has a user name or password in it; put the provider behind an address that needs none (deft sends no credentials but Brave's key)".into(),
        });
    }
    let path: &[&str] = match provider {
        SearchProvider::Searxng { .. } => &["search"],
        SearchProvider::Brave { .. } => &["res", "v1", "web", "search"],
    };
    url.path_segments_mut()
        .map_err(|()| bad("cannot carry a path"))?
        .pop_if_empty()
        .extend(path);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_kept(url: &str, kept: bool) {
        assert_eq!(
            SearchResult::kept("t", url, None, false).is_some(),
            kept,
            "{url}"
        );
    }

    #[test]
    fn only_plain_http_urls_are_kept() {
        check_kept("https://example.org/a", true);
        check_kept("http://example.org", true);
        check_kept("javascript:alert(1)", false);
        check_kept("data:text/html,<b>x</b>", false);
        check_kept("file:///etc/passwd", false);
        check_kept("ftp://example.org/", false);
        check_kept("https://user:pw@example.org/", false);
        check_kept("not a url", false);
        check_kept(&format!("https://example.org/{}", "a".repeat(3000)), false);
    }

    #[test]
    fn strings_are_capped_and_cleaned() {
        let long = "word ".repeat(400);
        let result = SearchResult::kept(&long, "https://example.org/", Some(&long), false).unwrap();
        assert_eq!(result.title.chars().count(), MAX_TITLE_CHARS);
        assert_eq!(result.snippet.chars().count(), MAX_SNIPPET_CHARS);
        let brave = SearchResult::kept(
            "A\n<strong>b</strong>",
            "https://example.org/",
            Some("x &amp; <strong>y</strong>&#x27;s\tz"),
            true,
        )
        .unwrap();
        assert_eq!(brave.title, "A b");
        assert_eq!(brave.snippet, "x & y's z");
    }

    #[test]
    fn endpoints_keep_the_base_path() {
        let searxng = |base: &str| {
            endpoint(&SearchProvider::Searxng {
                base_url: base.into(),
            })
            .map(|url| url.to_string())
        };
        assert_eq!(
            searxng("http://127.0.0.1:8888").unwrap(),
            "http://127.0.0.1:8888/search"
        );
        assert_eq!(
            searxng("https://example.org/searx/").unwrap(),
            "https://example.org/searx/search"
        );
        assert_eq!(
            endpoint(&SearchProvider::brave("k")).unwrap().path(),
            "/res/v1/web/search"
        );
        let WebError::Config { setting, .. } = searxng("file:///tmp").unwrap_err() else {
            panic!("a config error")
        };
        assert_eq!(setting, SETTING_BASE_URL);
    }

    #[test]
    fn the_key_is_never_shown() {
        let shown = format!("{:?}", SearchProvider::brave("secret-token"));
        assert!(!shown.contains("secret-token"), "{shown}");
    }
}
