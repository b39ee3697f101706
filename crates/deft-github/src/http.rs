//! The calls deft makes past octocrab: GraphQL (octocrab would put its URL under a GitHub
//! Enterprise Server's `/api/v3`, where it is not), the OAuth endpoints on GitHub's web host,
//! and downloads GitHub answers with a redirect (job logs), which are followed without the
//! token, as GitHub's pre-signed addresses expect.

use std::time::Duration;

use crate::GithubError;

/// How long one of these calls may take, the download of a log's tail included.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The client for these calls: no redirect followed by itself, no proxy from the environment
/// for GitHub on this machine (as for the model, `deft_llm`).
pub(crate) fn client(api_url: &str) -> Result<reqwest::Client, GithubError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("deft/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    if is_loopback(api_url) {
        builder = builder.no_proxy();
    }
    builder.build().map_err(|error| GithubError::Config {
        what: format!("api_url `{api_url}`: {error}"),
    })
}

fn is_loopback(url: &str) -> bool {
    let host = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

/// GraphQL's endpoint for a REST base URL: `https://api.github.com/graphql`, or a GitHub
/// Enterprise Server's `https://HOST/api/graphql` for `https://HOST/api/v3`.
pub(crate) fn graphql_url(api_url: &str) -> String {
    let api_url = api_url.trim_end_matches('/');
    match api_url.strip_suffix("/api/v3") {
        Some(host) => format!("{host}/api/graphql"),
        None => format!("{api_url}/graphql"),
    }
}

/// GitHub's web host for a REST base URL, where people authorize Apps: `https://github.com`
/// for the public API, `https://HOST` for a GitHub Enterprise Server's `https://HOST/api/v3`,
/// and the base URL itself otherwise (a stand-in serving both).
pub fn web_url(api_url: &str) -> String {
    let api_url = api_url.trim_end_matches('/');
    if let Some(host) = api_url.strip_suffix("/api/v3") {
        return host.to_owned();
    }
    api_url.replacen("://api.github.com", "://github.com", 1)
}

/// Sends `request`, named `call` in errors; an answer that is not 2xx or 3xx is an error
/// carrying GitHub's `message` (or the start of its body).
pub(crate) async fn send(
    call: &str,
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, GithubError> {
    let response = request
        .send()
        .await
        .map_err(|error| GithubError::Transport {
            call: call.to_owned(),
            message: error.to_string(),
        })?;
    let status = response.status();
    if status.is_success() || status.is_redirection() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|body| body["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| text.chars().take(200).collect());
    Err(GithubError::Api {
        call: call.to_owned(),
        status: status.as_u16(),
        message,
    })
}

/// Reads a JSON answer, naming `call` when it is not what was expected.
pub(crate) async fn json<T: serde::de::DeserializeOwned>(
    call: &str,
    response: reqwest::Response,
) -> Result<T, GithubError> {
    response
        .json()
        .await
        .map_err(|error| GithubError::Transport {
            call: call.to_owned(),
            message: format!("unreadable answer: {error}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graphql_and_the_web_host_follow_the_rest_base_url() {
        let check = |api: &str, graphql: &str, web: &str| {
            assert_eq!(
                (graphql_url(api).as_str(), web_url(api).as_str()),
                (graphql, web)
            );
        };
        check(
            "https://api.github.com",
            "https://api.github.com/graphql",
            "https://github.com",
        );
        check(
            "https://ghe.example/api/v3/",
            "https://ghe.example/api/graphql",
            "https://ghe.example",
        );
        check(
            "http://127.0.0.1:4000",
            "http://127.0.0.1:4000/graphql",
            "http://127.0.0.1:4000",
        );
        assert!(is_loopback("http://127.0.0.1:4000") && !is_loopback("https://api.github.com"));
    }
}
