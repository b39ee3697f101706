//! A person connects their own GitHub account through the GitHub App's user authorization
//! (the OAuth web flow, with `state` and PKCE): the address that sends them to GitHub, the
//! code GitHub sends back exchanged for a user token, and the login that token belongs to.
//! The token itself is dropped once the login is known: deft acts with the App's tokens.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::{GitHub, GithubError};

/// The App's OAuth client (`github.client_id`, `github.client_secret`) and GitHub's web host.
#[derive(Clone)]
pub struct OAuthApp {
    pub client_id: String,
    pub client_secret: String,
    /// Where people authorize: `https://github.com`, or a GitHub Enterprise Server's host
    /// (see [`crate::web_url`]).
    pub web_url: String,
}

impl std::fmt::Debug for OAuthApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthApp")
            .field("client_id", &self.client_id)
            .field("web_url", &self.web_url)
            .finish_non_exhaustive()
    }
}

/// A PKCE pair (RFC 7636, `S256`): the verifier stays with deft, the challenge goes to GitHub.
#[derive(Clone, PartialEq, Eq)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl std::fmt::Debug for Pkce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkce")
            .field("challenge", &self.challenge)
            .finish_non_exhaustive()
    }
}

impl Pkce {
    /// A new pair from 256 random bits.
    pub fn generate() -> Pkce {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        Pkce::from_verifier(URL_SAFE_NO_PAD.encode(secret))
    }

    /// The pair of a verifier: its challenge is `BASE64URL(SHA256(verifier))`.
    pub fn from_verifier(verifier: String) -> Pkce {
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Pkce {
            verifier,
            challenge,
        }
    }
}

/// A random `state` for one authorization: 256 bits, URL-safe.
pub fn new_state() -> String {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    URL_SAFE_NO_PAD.encode(secret)
}

fn query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(key, value)| format!("{key}={}", url_escape(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn url_escape(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

impl OAuthApp {
    /// Where to send a person to authorize the App: GitHub shows its page, then sends them to
    /// `redirect_uri` with `code` and this `state`.
    pub fn authorize_url(&self, redirect_uri: &str, state: &str, pkce: &Pkce) -> String {
        format!(
            "{}/login/oauth/authorize?{}",
            self.web_url.trim_end_matches('/'),
            query(&[
                ("client_id", &self.client_id),
                ("redirect_uri", redirect_uri),
                ("state", state),
                ("code_challenge", &pkce.challenge),
                ("code_challenge_method", "S256"),
                ("allow_signup", "false"),
            ])
        )
    }
}

/// The token endpoint's answer: a token, or GitHub's `error` (with status 200).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct UserAnswer {
    login: String,
}

impl GitHub {
    /// The App's user authorization, when `github.client_id` and `github.client_secret` are
    /// set.
    pub fn oauth(&self) -> Option<&OAuthApp> {
        self.oauth.as_ref()
    }

    /// Finishes an authorization: exchanges `code` (with the `redirect_uri` and the PKCE
    /// verifier of its start) for a user token, and returns the login it belongs to.
    pub async fn authorized_login(
        &self,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<String, GithubError> {
        let app = self.oauth.as_ref().ok_or_else(|| GithubError::Config {
            what: "set github.client_id and github.client_secret (the App's OAuth client) to let people connect their accounts".into(),
        })?;
        let call = "POST /login/oauth/access_token";
        let request = self
            .http
            .post(format!(
                "{}/login/oauth/access_token",
                app.web_url.trim_end_matches('/')
            ))
            .header("accept", "application/json")
            .json(&serde_json::json!({
                "client_id": app.client_id,
                "client_secret": app.client_secret,
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
            }));
        let answer: TokenAnswer =
            crate::http::json(call, crate::http::send(call, request).await?).await?;
        let token = match (answer.access_token, answer.error) {
            (Some(token), None) => token,
            (_, error) => {
                return Err(GithubError::Api {
                    call: call.into(),
                    status: 200,
                    message: format!(
                        "{}: {}",
                        error.unwrap_or_else(|| "no_token".into()),
                        answer.error_description.unwrap_or_default()
                    ),
                });
            }
        };
        let call = "GET /user";
        let request = self
            .http
            .get(format!("{}/user", self.api_url))
            .bearer_auth(token)
            .header("accept", "application/vnd.github+json");
        let user: UserAnswer =
            crate::http::json(call, crate::http::send(call, request).await?).await?;
        Ok(user.login)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_is_the_verifiers_sha256() {
        // RFC 7636, appendix B.
        let pkce = Pkce::from_verifier("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into());
        assert_eq!(
            pkce.challenge,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let fresh = Pkce::generate();
        assert_eq!(
            fresh.verifier.len(),
            43,
            "RFC 7636 asks for 43 to 128 characters"
        );
        assert_ne!(fresh, Pkce::generate());
        assert!(!format!("{fresh:?}").contains(&fresh.verifier));
    }

    #[test]
    fn the_authorize_url_carries_the_client_the_state_and_the_challenge() {
        let app = OAuthApp {
            client_id: "Iv1.8a61f9b3a7aba766".into(),
            client_secret: "s".into(),
            web_url: "https://github.com/".into(),
        };
        let pkce = Pkce::from_verifier("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into());
        assert_eq!(
            app.authorize_url(
                "https://deft.example/settings/github/callback",
                "st8",
                &pkce
            ),
            "https://github.com/login/oauth/authorize?client_id=Iv1.8a61f9b3a7aba766\
             &redirect_uri=https%3A%2F%2Fdeft.example%2Fsettings%2Fgithub%2Fcallback&state=st8\
             &code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM\
             &code_challenge_method=S256&allow_signup=false"
        );
        assert!(!format!("{app:?}").contains("client_secret"));
    }
}
