//! The search providers' JSON answers, as far as deft reads them. Every other field is ignored,
//! and every field read may be missing or null: a provider that leaves one out still gives
//! results.
//!
//! Public so that tests (and a curious operator) can parse a saved answer with the very types
//! the client uses.

use serde::{Deserialize, Deserializer};

use crate::search::SearchResult;

/// SearXNG's `GET /search?format=json` answer (its "Search API" page).
#[derive(Debug, Clone, Deserialize)]
pub struct SearxngResponse {
    #[serde(default, deserialize_with = "or_default")]
    pub query: String,
    #[serde(default, deserialize_with = "or_default")]
    pub results: Vec<SearxngResult>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SearxngResult {
    #[serde(default, deserialize_with = "or_default")]
    pub url: String,
    #[serde(default, deserialize_with = "or_default")]
    pub title: String,
    /// The snippet, as plain text.
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub engine: Option<String>,
}

/// Brave Search's `GET /res/v1/web/search` answer (`WebSearchApiResponse`); only `web` is read.
#[derive(Debug, Clone, Deserialize)]
pub struct BraveResponse {
    #[serde(rename = "type", default, deserialize_with = "or_default")]
    pub kind: String,
    #[serde(default)]
    pub web: Option<BraveWeb>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BraveWeb {
    #[serde(default, deserialize_with = "or_default")]
    pub results: Vec<BraveResult>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BraveResult {
    #[serde(default, deserialize_with = "or_default")]
    pub title: String,
    #[serde(default, deserialize_with = "or_default")]
    pub url: String,
    /// The snippet, with the query's words in `<strong>` and HTML entities escaped.
    #[serde(default)]
    pub description: Option<String>,
}

impl SearxngResponse {
    /// The results deft keeps (http/https only, strings capped), at most `max`.
    pub fn into_results(self, max: usize) -> Vec<SearchResult> {
        self.results
            .into_iter()
            .filter_map(|r| SearchResult::kept(&r.title, &r.url, r.content.as_deref(), false))
            .take(max)
            .collect()
    }
}

impl BraveResponse {
    /// The results deft keeps (http/https only, strings capped), at most `max`.
    pub fn into_results(self, max: usize) -> Vec<SearchResult> {
        self.web
            .map(|web| web.results)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| SearchResult::kept(&r.title, &r.url, r.description.as_deref(), true))
            .take(max)
            .collect()
    }
}

/// A null read as the type's default, as a missing field is.
fn or_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_and_missing_fields_are_empty() {
        let answer: SearxngResponse = serde_json::from_str(
            r#"{"query": null, "results": [{"url": "https://example.org/", "title": null, "content": null}, {}]}"#,
        )
        .unwrap();
        let results = answer.into_results(10);
        assert_eq!(results.len(), 1);
        assert_eq!(
            (results[0].title.as_str(), results[0].snippet.as_str()),
            ("", "")
        );
        let answer: BraveResponse =
            serde_json::from_str(r#"{"type": "search", "web": {"results": null}}"#).unwrap();
        assert!(answer.into_results(10).is_empty());
        let answer: BraveResponse = serde_json::from_str(r#"{"type": "search"}"#).unwrap();
        assert!(answer.into_results(10).is_empty());
    }
}
