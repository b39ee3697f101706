//! One page fetched for the agent, as the egress proxy would let a sandbox fetch it, and then
//! some: the host is decided by the task's [`EgressPolicy`], the name resolved here and every
//! address checked (the proxy's rule, copied: only a `custom` rule naming an IP address itself
//! lets a refused address through), and the connection pinned to the checked address so a DNS
//! answer that changes between check and use cannot move it. Redirects are followed by hand,
//! each hop checked afresh. The request carries nothing of deft's or the user's: no cookie, no
//! credential, no `Authorization`, no `Referer`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use deft_egress::{EgressPolicy, Resolver};
use reqwest::Url;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, HeaderMap, LOCATION};

use crate::content::{self, Kind, cap_chars, error_chain};
use crate::error::WebError;
use crate::page::Page;

/// Every request names deft, so a site's operator can tell what reads it.
pub const USER_AGENT: &str = concat!(
    "deft/",
    env!("CARGO_PKG_VERSION"),
    " (autonomous coding agent; web_fetch)"
);
/// Redirects followed at most; the next one is refused.
pub const MAX_REDIRECTS: usize = 5;
/// Bytes of a body read at most; the rest is never read and the page is marked truncated.
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// A body declared longer than this is refused before any of it is read.
pub const DEFAULT_MAX_DECLARED_BYTES: u64 = 16 * 1024 * 1024;
/// Characters of text kept (the head): about what a model reads usefully of one page.
pub const DEFAULT_MAX_TEXT_CHARS: usize = 20_000;
/// The whole fetch, every redirect included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_URL_BYTES: usize = 8 * 1024;
const ACCEPTED: &str = "text/html, application/xhtml+xml, text/plain;q=0.9, text/markdown;q=0.9, application/json;q=0.8, */*;q=0.1";

/// What a fetch may reach and how much of it it reads.
#[derive(Debug, Clone)]
pub struct FetchPolicy {
    /// The task's network level and allow-list: a host it refuses is never resolved.
    pub egress: EgressPolicy,
    /// How host names become addresses ([`Resolver::Fixed`] in tests).
    pub resolver: Resolver,
    pub max_body_bytes: usize,
    pub max_declared_bytes: u64,
    pub max_text_chars: usize,
    pub timeout: Duration,
}

impl FetchPolicy {
    /// The task's egress policy with the system resolver and the default limits.
    pub fn new(egress: EgressPolicy) -> FetchPolicy {
        FetchPolicy {
            egress,
            resolver: Resolver::System,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_declared_bytes: DEFAULT_MAX_DECLARED_BYTES,
            max_text_chars: DEFAULT_MAX_TEXT_CHARS,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Fetches `url` under `policy` and returns its text, capped.
pub async fn fetch(url: &str, policy: &FetchPolicy) -> Result<Page, WebError> {
    let start = parse(url)?;
    let shown = start.to_string();
    tokio::time::timeout(policy.timeout, follow(start, policy))
        .await
        .unwrap_or_else(|_| {
            Err(WebError::Transient {
                url: shown,
                reason: format!("no whole answer within {:?}", policy.timeout),
            })
        })
}

fn parse(url: &str) -> Result<Url, WebError> {
    let invalid = |reason: String| WebError::Invalid {
        input: cap_chars(url, 200).0,
        reason,
    };
    if url.len() > MAX_URL_BYTES {
        return Err(invalid(format!(
            "longer than {MAX_URL_BYTES} bytes; no page needs such an address"
        )));
    }
    Url::parse(url.trim()).map_err(|error| {
        invalid(format!(
            "not an absolute URL ({error}); give a full https:// address"
        ))
    })
}

/// Requests hop after hop until a page that is not a redirect.
async fn follow(start: Url, policy: &FetchPolicy) -> Result<Page, WebError> {
    let mut url = start.clone();
    for hop in 0..=MAX_REDIRECTS {
        let response = request(&url, policy)
            .await
            .map_err(|error| via(error, hop, &start))?;
        match redirect(&url, &response)? {
            // A hop's address is as bounded as the first: it ends up in the Sources list and
            // in what the model reads.
            Some(next) if next.as_str().len() > MAX_URL_BYTES => {
                return Err(WebError::Refused {
                    url: start.to_string(),
                    reason: format!("it redirects to an address longer than {MAX_URL_BYTES} bytes"),
                });
            }
            Some(next) => url = next,
            None => return read_page(url, response, policy).await,
        }
    }
    Err(WebError::Refused {
        url: start.to_string(),
        reason: format!("it redirects more than {MAX_REDIRECTS} times (the last hop to {url})"),
    })
}

/// One GET of `url`, after its form, its host and its address are checked.
async fn request(url: &Url, policy: &FetchPolicy) -> Result<reqwest::Response, WebError> {
    check_form(url).map_err(|reason| WebError::Refused {
        url: url.to_string(),
        reason,
    })?;
    let pinned = pin(url, policy).await?;
    let client = client(&pinned).map_err(|error| WebError::Failed {
        url: url.to_string(),
        reason: format!("cannot set up an HTTP client: {}", error_chain(&error)),
    })?;
    client
        .get(url.clone())
        .header(ACCEPT, ACCEPTED)
        .send()
        .await
        .map_err(|error| transport(url, &error))
}

/// A client for one request to `pinned`: no proxy, no redirects followed, no `Referer`, and no
/// cookie store (reqwest keeps none unless asked).
fn client(pinned: &Pinned) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .user_agent(USER_AGENT)
        .connect_timeout(CONNECT_TIMEOUT);
    // An IP literal is connected to as written (and was checked as written); a name is
    // connected to the address checked, never resolved again.
    if !pinned.literal {
        builder = builder.resolve(&pinned.name, pinned.address);
    }
    builder.build()
}

/// A refusal at a later hop says where the chain began, so the model sees why a URL it never
/// wrote was refused.
fn via(error: WebError, hop: usize, start: &Url) -> WebError {
    match error {
        WebError::Refused { url, reason } if hop > 0 => WebError::Refused {
            url,
            reason: format!("{reason} (redirected there from {start})"),
        },
        other => other,
    }
}

/// The parts of a URL checked at every hop.
fn check_form(url: &Url) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "only http and https are fetched, not `{}:`",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "the URL carries a user name or password, and deft sends no credentials".into(),
        );
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL names no host".into());
    }
    Ok(())
}

/// The address a request to `url` goes to, once the host and the address are allowed.
#[derive(Debug)]
struct Pinned {
    name: String,
    literal: bool,
    address: SocketAddr,
}

async fn pin(url: &Url, policy: &FetchPolicy) -> Result<Pinned, WebError> {
    let refused = |reason: String| WebError::Refused {
        url: url.to_string(),
        reason,
    };
    let host = url.host_str().unwrap_or_default();
    // The URL's form of an IPv6 address is bracketed; rules and the resolver use the bare one.
    let name = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    let decision = policy.egress.decide(&name);
    if !decision.allowed {
        return Err(refused(decision.rule));
    }
    let literal = name.parse::<IpAddr>().ok();
    // The egress proxy's rule: a rule naming this very address is the person's own word that it
    // may be reached. A rule naming a host name is not: whoever runs its DNS decides where it
    // points.
    if let Some(ip) = literal
        && decision.named
    {
        return Ok(Pinned {
            name,
            literal: true,
            address: SocketAddr::new(ip, port),
        });
    }
    let addresses = match literal {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => lookup(&policy.resolver, &name, port)
            .await
            .map_err(|failure| failure.into_error(url))?,
    };
    let own = deft_egress::this_machine()
        .map_err(|error| refused(format!("{error}; refused rather than risk reaching it")))?;
    let mut refusals = Vec::new();
    for address in &addresses {
        match deft_egress::refusal(address.ip(), &own) {
            None => {
                return Ok(Pinned {
                    name,
                    literal: literal.is_some(),
                    address: *address,
                });
            }
            Some(refusal) => refusals.push(refusal),
        }
    }
    let Some(first) = refusals.first() else {
        return Err(WebError::Failed {
            url: url.to_string(),
            reason: format!("{name} has no address"),
        });
    };
    Err(refused(match (literal, refusals.len()) {
        (Some(_), _) => first.to_string(),
        (None, 1) => format!(
            "{name} resolves to {}, which {}",
            first.ip(),
            first.reason()
        ),
        (None, count) => format!(
            "{name} resolves to {}, which {}, and to {} more address(es), all refused too",
            first.ip(),
            first.reason(),
            count - 1
        ),
    }))
}

/// Why a name gave no address.
enum LookupFailure {
    Slow(String),
    Unknown(String),
}

impl LookupFailure {
    fn into_error(self, url: &Url) -> WebError {
        match self {
            LookupFailure::Slow(reason) => WebError::Transient {
                url: url.to_string(),
                reason,
            },
            LookupFailure::Unknown(reason) => WebError::Failed {
                url: url.to_string(),
                reason,
            },
        }
    }
}

async fn lookup(
    resolver: &Resolver,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, LookupFailure> {
    match resolver {
        Resolver::System => {
            let found =
                tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port)))
                    .await
                    .map_err(|_| LookupFailure::Slow(format!("resolving {host} took too long")))?
                    .map_err(|error| {
                        LookupFailure::Unknown(format!("cannot resolve {host}: {error}"))
                    })?;
            Ok(found.collect())
        }
        Resolver::Fixed(answers) => answers
            .get(host)
            .map(|ips| ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect())
            .ok_or_else(|| LookupFailure::Unknown(format!("cannot resolve {host}: no such name"))),
    }
}

/// Where a redirect points, or `None` when the response is not a redirect.
fn redirect(url: &Url, response: &reqwest::Response) -> Result<Option<Url>, WebError> {
    if !matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
        return Ok(None);
    }
    let failed = |reason: String| WebError::Failed {
        url: url.to_string(),
        reason,
    };
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| {
            failed(format!(
                "a redirect (HTTP {}) without a readable Location",
                response.status().as_u16()
            ))
        })?;
    url.join(location).map(Some).map_err(|error| {
        failed(format!(
            "a redirect to `{}`, which is not a URL ({error})",
            cap_chars(location, 200).0
        ))
    })
}

fn transport(url: &Url, error: &reqwest::Error) -> WebError {
    let reason = error_chain(error);
    if error.is_timeout() || error.is_connect() || error.is_body() || error.is_request() {
        return WebError::Transient {
            url: url.to_string(),
            reason,
        };
    }
    WebError::Failed {
        url: url.to_string(),
        reason,
    }
}

/// What a final status means: only 2xx has a page to read.
fn check_status(url: &Url, status: u16) -> Result<(), WebError> {
    let url = url.to_string();
    match status {
        200..=299 => Ok(()),
        401 | 403 | 407 => Err(WebError::AuthRequired {
            url,
            status,
            reason: format!("HTTP {status}"),
        }),
        408 | 429 | 500..=599 => Err(WebError::Transient {
            url,
            reason: format!("HTTP {status}"),
        }),
        404 | 410 => Err(WebError::Failed {
            url,
            reason: format!("HTTP {status}: there is no such page"),
        }),
        _ => Err(WebError::Failed {
            url,
            reason: format!("HTTP {status}"),
        }),
    }
}

/// The declared length, when there is a readable one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

async fn read_page(
    url: Url,
    response: reqwest::Response,
    policy: &FetchPolicy,
) -> Result<Page, WebError> {
    let status = response.status().as_u16();
    check_status(&url, status)?;
    let unsupported = |content_type: String| WebError::Unsupported {
        url: url.to_string(),
        content_type,
    };
    let declared_kind = content::kind_of(response.headers()).map_err(unsupported)?;
    // deft asks for no compression; a body compressed anyway would be read as garbage text.
    if let Some(encoding) = content::encoding(response.headers()) {
        return Err(unsupported(format!("{encoding}-compressed data")));
    }
    if let Some(declared) = declared_length(response.headers())
        && declared > policy.max_declared_bytes
    {
        return Err(WebError::TooLarge {
            url: url.to_string(),
            declared,
            limit: policy.max_declared_bytes,
        });
    }
    let headers = response.headers().clone();
    let (body, cut) = content::read_capped(response, policy.max_body_bytes)
        .await
        .map_err(|error| transport(&url, &error))?;
    let kind = match declared_kind {
        Some(kind) => kind,
        None => content::sniff(&body)
            .ok_or_else(|| unsupported("binary data of no declared type".into()))?,
    };
    let decoded = content::decode(&body, &headers);
    let (title, text) = match kind {
        Kind::Text => (None, decoded),
        Kind::Html => html_page(&url, decoded).await?,
    };
    let (text, text_cut) = cap_chars(&content::tidy(&text), policy.max_text_chars);
    Ok(Page {
        url: url.to_string(),
        title,
        text,
        truncated: cut || text_cut,
        status,
        bytes_read: body.len(),
    })
}

/// The title and text of an HTML page, unless it is a sign-in form. Parsing is CPU work on up
/// to the body cap, so it runs off the async threads; a panic in the parser fails this fetch
/// only.
async fn html_page(url: &Url, html: String) -> Result<(Option<String>, String), WebError> {
    let path = url.path().to_owned();
    let read = tokio::task::spawn_blocking(move || {
        let text = content::html_to_text(&html)?;
        let wall = content::login_wall(&html, &text, &path);
        Ok::<_, String>((content::html_title(&html), text, wall))
    })
    .await;
    let failed = |reason: String| WebError::Failed {
        url: url.to_string(),
        reason,
    };
    let (title, text, wall) = match read {
        Ok(Ok(read)) => read,
        Ok(Err(reason)) => return Err(failed(reason)),
        Err(_) => return Err(failed("the page's HTML could not be read".into())),
    };
    if let Some(reason) = wall {
        return Err(WebError::AuthRequired {
            url: url.to_string(),
            status: 200,
            reason,
        });
    }
    Ok((title, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_form_of(url: &str, expect: Result<(), &str>) {
        let url = Url::parse(url).unwrap();
        let got = check_form(&url);
        match expect {
            Ok(()) => assert_eq!(got, Ok(()), "{url}"),
            Err(part) => assert!(
                got.as_ref().is_err_and(|why| why.contains(part)),
                "{url}: {got:?}"
            ),
        }
    }

    #[test]
    fn only_plain_http_urls_are_requested() {
        check_form_of("https://example.org/a?b#c", Ok(()));
        check_form_of("http://[::1]:8080/", Ok(()));
        check_form_of("file:///etc/passwd", Err("not `file:`"));
        check_form_of("ftp://example.org/", Err("not `ftp:`"));
        check_form_of("gopher://example.org/", Err("not `gopher:`"));
        check_form_of("https://user@example.org/", Err("user name or password"));
        check_form_of("https://:pw@example.org/", Err("user name or password"));
    }

    #[tokio::test]
    async fn a_name_is_connected_to_the_checked_address_only() {
        // `.invalid` never resolves (RFC 6761): the request can only reach the server through
        // the pinned address. Without the pin, the name would be resolved again, and a DNS
        // answer changed since the check (rebinding) would choose where it goes.
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = vec![0; 4096];
            let read = stream.read(&mut head).await.unwrap();
            stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\npinned",
                )
                .await
                .unwrap();
            String::from_utf8_lossy(&head[..read]).into_owned()
        });
        let pinned = Pinned {
            name: "pinned.invalid".into(),
            literal: false,
            address,
        };
        let url = format!("http://pinned.invalid:{}/", address.port());
        let answer = client(&pinned).unwrap().get(&url).send().await.unwrap();
        assert_eq!(answer.text().await.unwrap(), "pinned");
        let head = server.await.unwrap();
        assert!(
            head.contains(&format!("host: pinned.invalid:{}", address.port())),
            "{head}"
        );
    }

    #[test]
    fn statuses_keep_their_kind() {
        let url = Url::parse("https://example.org/").unwrap();
        assert!(check_status(&url, 200).is_ok());
        assert!(matches!(
            check_status(&url, 407),
            Err(WebError::AuthRequired { status: 407, .. })
        ));
        assert!(check_status(&url, 503).unwrap_err().is_transient());
        assert!(check_status(&url, 429).unwrap_err().is_transient());
        assert!(matches!(
            check_status(&url, 404),
            Err(WebError::Failed { .. })
        ));
    }
}
