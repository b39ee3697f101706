//! Outgoing webhooks: a person's URL checked when they save it, each body signed with their
//! secret, and one delivery attempt made under the same address policy as the egress proxy.
//!
//! The URL is the person's and deft runs on the operator's machine, so a webhook must not be a
//! way to reach this machine or its network: the host is resolved here, every address is
//! judged by `deft_egress::refusal` (this machine's own addresses, loopback, private and every
//! other special range), and the request is pinned to the address judged, so a second lookup
//! cannot move it. Only the operator's `[notifications] allow_private_targets` lifts that. No
//! redirect is followed, no proxy is used, no body is read back, and every wait has a timeout.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use deft_core::ValidationError;
use hmac::{Hmac, Mac};
use reqwest::Url;
use sha2::Sha256;

/// The header carrying `sha256=HEX(HMAC-SHA256(secret, body))`.
pub const SIGNATURE_HEADER: &str = "X-Deft-Signature-256";
/// The header carrying the body's `time` as Unix seconds.
pub const TIMESTAMP_HEADER: &str = "X-Deft-Timestamp";
/// The header naming the event (`task.asked`, ...).
pub const EVENT_HEADER: &str = "X-Deft-Event";
/// The header carrying the delivery's id, also the body's `delivery`.
pub const DELIVERY_HEADER: &str = "X-Deft-Delivery";

/// The longest URL accepted.
const URL_MAX: usize = 2048;
/// How long a name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The signature header's value for `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A new secret for a webhook: 256 random bits as 64 hex digits.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    hex::encode(bytes)
}

/// The shortest secret a person may set: shorter ones are guessed from a signature offline.
pub const SECRET_MIN: usize = 16;
/// The longest secret a person may set.
pub const SECRET_MAX: usize = 256;

/// Checks a secret a person typed; `field` names it in the error.
pub fn check_secret(text: &str, field: &str) -> Result<(), ValidationError> {
    let chars = text.chars().count();
    if !(SECRET_MIN..=SECRET_MAX).contains(&chars) {
        return Err(ValidationError::new(
            field,
            format!(
                "is {chars} characters; use {SECRET_MIN} to {SECRET_MAX}, or leave it empty for deft to make one"
            ),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            "holds a control character; use letters, digits and punctuation",
        ));
    }
    Ok(())
}

/// Checks a webhook URL as a person typed it; `field` names it in the error. An address
/// written in the URL is judged now; a name is judged at each delivery, when it is resolved.
pub fn check_url(text: &str, field: &str, allow_private: bool) -> Result<Url, ValidationError> {
    let text = text.trim();
    let refuse = |message: String| Err(ValidationError::new(field, message));
    if text.is_empty() {
        return refuse(
            "is empty; give the https:// address your service gave for incoming webhooks".into(),
        );
    }
    if text.len() > URL_MAX {
        return refuse(format!(
            "is {} bytes long, over the {URL_MAX} a webhook URL may be; use the address your service gave",
            text.len()
        ));
    }
    let Ok(url) = Url::parse(text) else {
        return refuse(
            "is not a URL; give a full address such as https://hooks.example.com/deft".into(),
        );
    };
    if !matches!(url.scheme(), "http" | "https") {
        return refuse(format!(
            "uses `{}:`; give an https:// (or http://) address",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return refuse("carries a user name or password; remove them, since deliveries are proved by their signature".into());
    }
    let Some(host) = url.host_str().filter(|host| !host.is_empty()) else {
        return refuse(
            "names no host; give a full address such as https://hooks.example.com/deft".into(),
        );
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>()
        && !allow_private
        && let Some(why) = judge(ip)
    {
        return refuse(why);
    }
    Ok(url)
}

/// Why deft will not send to `ip` (with what to do), or `None` when it may.
fn judge(ip: IpAddr) -> Option<String> {
    let own = match deft_egress::this_machine() {
        Ok(own) => own,
        Err(error) => {
            return Some(format!(
                "{error}; refused rather than risk reaching this machine"
            ));
        }
    };
    deft_egress::refusal(ip, &own).map(|refusal| {
        format!(
            "points at {refusal}; deft sends webhooks to public addresses only (an operator can allow private ones with `[notifications] allow_private_targets = true`)"
        )
    })
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver answered 2xx with this status.
    Delivered(u16),
    /// Worth trying again (no connection, a timeout, 408, 429, 5xx).
    Transient(String),
    /// Trying again would not help (a refused address, a redirect, another 4xx).
    Permanent(String),
}

/// A request ready to send.
#[derive(Debug)]
pub struct Request<'a> {
    pub url: &'a Url,
    pub body: &'a [u8],
    pub secret: &'a [u8],
    pub event: &'a str,
    pub delivery: &'a str,
    /// The body's time, Unix seconds.
    pub timestamp: i64,
}

/// Makes one attempt at `request`, within `timeout`.
pub async fn send(request: &Request<'_>, allow_private: bool, timeout: Duration) -> Attempt {
    let pinned = match pin(request.url, allow_private).await {
        Ok(pinned) => pinned,
        Err(attempt) => return attempt,
    };
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .user_agent(concat!("deft-notify/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout);
    if let Some((name, address)) = &pinned {
        builder = builder.resolve(name, *address);
    }
    let client = match builder.build() {
        Ok(client) => client,
        Err(error) => return Attempt::Permanent(format!("cannot make an HTTP client: {error}")),
    };
    let response = client
        .post(request.url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(EVENT_HEADER, request.event)
        .header(DELIVERY_HEADER, request.delivery)
        .header(TIMESTAMP_HEADER, request.timestamp.to_string())
        .header(SIGNATURE_HEADER, sign(request.secret, request.body))
        .body(request.body.to_vec())
        .send()
        .await;
    let response = match response {
        Ok(response) => response,
        Err(error) if error.is_timeout() => {
            return Attempt::Transient(format!("no answer within {} s", timeout.as_secs()));
        }
        Err(error) => {
            // A Slack webhook's URL carries its secret in the path: never in a message.
            let error = error.without_url();
            return Attempt::Transient(format!(
                "cannot reach {}: {}",
                host(request.url),
                root(&error)
            ));
        }
    };
    // The body is never read: what the receiver says beyond its status is not ours to keep.
    let status = response.status().as_u16();
    match status {
        200..=299 => Attempt::Delivered(status),
        300..=399 => Attempt::Permanent(format!(
            "answered {status}, a redirect, and deft follows none; give the address it redirects to"
        )),
        408 | 429 | 500..=599 => Attempt::Transient(format!("answered {status}")),
        _ => Attempt::Permanent(format!(
            "answered {status}; check the URL and that the receiver accepts deft's JSON"
        )),
    }
}

/// The deepest cause of a client error: reqwest's own message is "error sending request".
fn root(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn host(url: &Url) -> String {
    url.host_str().unwrap_or_default().to_owned()
}

/// The address to connect to for a name (`Some`), or `None` for an address in the URL, which
/// is connected to as written once judged.
async fn pin(url: &Url, allow_private: bool) -> Result<Option<(String, SocketAddr)>, Attempt> {
    let host = host(url);
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if let Ok(ip) = bare.parse::<IpAddr>() {
        if !allow_private && let Some(why) = judge(ip) {
            return Err(Attempt::Permanent(format!("the URL {why}")));
        }
        return Ok(None);
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let found = tokio::time::timeout(
        RESOLVE_TIMEOUT,
        tokio::net::lookup_host((bare.as_str(), port)),
    )
    .await
    .map_err(|_| Attempt::Transient(format!("resolving {bare} took too long")))?
    .map_err(|error| Attempt::Transient(format!("cannot resolve {bare}: {error}")))?
    .collect::<Vec<_>>();
    let mut refused = None;
    for address in found {
        if allow_private {
            return Ok(Some((bare, address)));
        }
        match judge(address.ip()) {
            None => return Ok(Some((bare, address))),
            Some(why) => refused = refused.or(Some(why)),
        }
    }
    Err(match refused {
        Some(why) => Attempt::Permanent(format!("{bare} resolves to an address that {why}")),
        None => Attempt::Transient(format!("{bare} has no address")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, allow_private: bool, expect: Result<&str, &str>) {
        let got = check_url(text, "webhook_url", allow_private);
        match (got, expect) {
            (Ok(url), Ok(want)) => assert_eq!(url.as_str(), want),
            (Err(error), Err(want)) => {
                assert_eq!(error.field, "webhook_url");
                assert!(error.message.contains(want), "{text}: {}", error.message);
            }
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn urls_are_checked_naming_the_fix() {
        check(
            "https://hooks.example.com/x",
            false,
            Ok("https://hooks.example.com/x"),
        );
        check(
            "  http://hooks.example.com  ",
            false,
            Ok("http://hooks.example.com/"),
        );
        check("", false, Err("is empty"));
        check("hooks.example.com/x", false, Err("is not a URL"));
        check("ftp://hooks.example.com", false, Err("uses `ftp:`"));
        check("javascript:alert(1)", false, Err("uses `javascript:`"));
        check(
            r#"javascript:alert(1)"><script>window.ran=1</script>"#,
            true,
            Err("uses `javascript:`"),
        );
        check(
            "https://u:p@hooks.example.com",
            false,
            Err("user name or password"),
        );
        check("https://127.0.0.1:9/x", false, Err("allow_private_targets"));
        check("https://10.1.2.3/x", false, Err("public addresses only"));
        check("https://[::1]/x", false, Err("public addresses only"));
        check(
            "https://169.254.169.254/latest",
            false,
            Err("public addresses only"),
        );
        check("https://127.0.0.1:9/x", true, Ok("https://127.0.0.1:9/x"));
        let long = format!("https://hooks.example.com/{}", "a".repeat(3000));
        check(&long, false, Err("over the 2048"));
    }

    #[test]
    fn the_signature_is_github_style_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
