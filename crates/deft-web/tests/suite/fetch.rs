//! Fetches from a page server on 127.0.0.1 that plays every part a hostile site can: pages
//! behind sign-ins, endless and oversized bodies, redirects away and in circles, binary types.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use bytes::Bytes;
use deft_web::{USER_AGENT, WebError, fetch};
use futures_util::stream;

use super::support::{Server, loopback};

const ARTICLE: &str = r#"<!doctype html>
<html><head><title>Runtime &amp; tasks</title>
<style>body { color: red } .secret-style {}</style>
<script>var token = "secret-script"; fetch("/steal")</script></head>
<body><h1>The runtime</h1>
<p>Tasks are spawned on the runtime. Each task runs until it awaits.</p>
<script>document.write("secret-inline")</script>
<p>A blocking call in a task stalls every other task on its thread.</p>
<noscript>enable scripts</noscript>
</body></html>"#;

const LOGIN: &str = r#"<html><head><title>Sign in</title></head><body>
<form method="post" action="/session"><input name="user"><input type="password" name="pw">
<button>Sign in</button></form></body></html>"#;

fn html(body: impl Into<Body>) -> Response {
    ([("content-type", "text/html; charset=utf-8")], body.into()).into_response()
}

/// Chunks of `size` bytes of `fill`, `count` times (forever when `None`).
fn chunks(fill: u8, size: usize, count: Option<usize>) -> Body {
    let chunk = Bytes::from(vec![fill; size]);
    let all = stream::repeat_with(move || Ok::<_, Infallible>(chunk.clone()));
    match count {
        Some(count) => Body::from_stream(futures_util::StreamExt::take(all, count)),
        None => Body::from_stream(all),
    }
}

async fn pages() -> Server {
    let router = Router::new()
        .route("/article", get(|| async { html(ARTICLE) }))
        .route(
            "/private",
            get(|| async { (StatusCode::UNAUTHORIZED, "sign in first") }),
        )
        .route(
            "/forbidden",
            get(|| async { (StatusCode::FORBIDDEN, "no") }),
        )
        .route(
            "/proxy-auth",
            get(|| async { (StatusCode::PROXY_AUTHENTICATION_REQUIRED, "no") }),
        )
        .route("/account/home", get(|| async { html(LOGIN) }))
        .route(
            "/big",
            get(|| async {
                // 5 MB with its length declared (under the hard maximum, over the cap).
                let body = "<p>word word word word</p>\n".repeat(5_000_000 / 27);
                html(body)
            }),
        )
        .route(
            "/endless",
            get(|| async {
                (
                    [("content-type", "text/plain")],
                    chunks(b'a', 64 * 1024, None),
                )
            }),
        )
        .route(
            "/declared-huge",
            get(|| async {
                // A start, then nothing: the rest would only come by waiting.
                let start =
                    stream::once(async { Ok::<_, Infallible>(Bytes::from_static(b"start")) });
                let body =
                    Body::from_stream(futures_util::StreamExt::chain(start, stream::pending()));
                (
                    [
                        ("content-type", "text/plain"),
                        ("content-length", "1000000000"),
                    ],
                    body,
                )
            }),
        )
        .route(
            "/long-text",
            get(|| async { ([("content-type", "text/plain")], "0123456789".repeat(5_000)) }),
        )
        .route(
            "/latin1",
            get(|| async {
                (
                    [("content-type", "text/plain; charset=iso-8859-1")],
                    Bytes::from_static(b"caf\xe9"),
                )
            }),
        )
        .route(
            "/image",
            get(|| async {
                (
                    [("content-type", "image/png")],
                    Bytes::from_static(b"\x89PNG\r\n\x1a\n"),
                )
            }),
        )
        .route(
            "/gzip",
            get(|| async {
                let headers = [("content-type", "text/html"), ("content-encoding", "gzip")];
                (headers, Bytes::from_static(b"\x1f\x8b\x08\0"))
            }),
        )
        .route(
            "/untyped-binary",
            get(|| async { Bytes::from_static(b"\x7fELF\x02\x01\x01\0\0\0") }),
        )
        .route(
            "/away",
            get(|| async { Redirect::temporary("http://elsewhere.test/") }),
        )
        .route(
            "/to-file",
            get(|| async { Redirect::temporary("file:///etc/passwd") }),
        )
        .route(
            "/chain/{n}",
            get(|Path(n): Path<u32>| async move {
                match n {
                    0 => html(ARTICLE),
                    n => Redirect::to(&format!("/chain/{}", n - 1)).into_response(),
                }
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
        .route(
            "/set-cookie",
            get(|| async {
                (
                    [
                        ("set-cookie", "session=stolen; Path=/"),
                        ("location", "/echo"),
                    ],
                    StatusCode::FOUND,
                )
            }),
        )
        .route(
            "/echo",
            get(|headers: HeaderMap| async move {
                let mut seen: Vec<String> = headers
                    .iter()
                    .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap_or("?")))
                    .collect();
                seen.sort();
                ([("content-type", "text/plain")], seen.join("\n"))
            }),
        );
    Server::start(router).await
}

#[tokio::test]
async fn an_html_page_becomes_text_without_its_scripts_and_styles() {
    let server = pages().await;
    let page = fetch(&server.url("/article"), &loopback()).await.unwrap();
    assert_eq!(page.title.as_deref(), Some("Runtime & tasks"));
    assert_eq!(page.status, 200);
    assert!(!page.truncated);
    assert!(
        page.text.contains("Tasks are spawned on the runtime."),
        "{}",
        page.text
    );
    assert!(
        page.text.contains("stalls every other task"),
        "{}",
        page.text
    );
    for hidden in [
        "secret-script",
        "secret-inline",
        "secret-style",
        "color: red",
        "<p>",
    ] {
        assert!(!page.text.contains(hidden), "{hidden} in {}", page.text);
    }
    let rendered = page.render(1, "blocking task");
    assert!(rendered.starts_with("[1] <untrusted_web_content source=\"http://127.0.0.1:"));
    assert!(
        rendered.contains("A blocking call in a task stalls"),
        "{rendered}"
    );
}

#[tokio::test]
async fn pages_behind_authentication_are_refused() {
    // Without the status check these would come back as pages of their error text.
    let server = pages().await;
    for (path, expect) in [("/private", 401), ("/forbidden", 403), ("/proxy-auth", 407)] {
        let error = fetch(&server.url(path), &loopback()).await.unwrap_err();
        assert!(
            matches!(error, WebError::AuthRequired { status, .. } if status == expect),
            "{path}: {error:?}"
        );
    }
}

#[tokio::test]
async fn a_login_wall_is_refused() {
    // Without the login-wall check this 200 page would come back as its form's text.
    let server = pages().await;
    let error = fetch(&server.url("/account/home"), &loopback())
        .await
        .unwrap_err();
    let WebError::AuthRequired { status, reason, .. } = &error else {
        panic!("a sign-in refusal, not {error:?}")
    };
    assert_eq!(*status, 200);
    assert!(reason.contains("password"), "{reason}");
    assert!(
        error.to_string().contains("find a public source"),
        "{error}"
    );
}

#[tokio::test]
async fn a_five_megabyte_page_is_cut_at_the_cap() {
    // Without the cap all 5 MB would be read (`bytes_read`) and turned into text.
    let server = pages().await;
    let policy = loopback();
    let page = fetch(&server.url("/big"), &policy).await.unwrap();
    assert!(page.truncated);
    assert_eq!(page.bytes_read, policy.max_body_bytes);
    assert!(page.text.chars().count() <= policy.max_text_chars);
}

#[tokio::test]
async fn an_endless_body_stops_at_the_cap() {
    // Without the cap this read would go on until the time limit, and memory with it.
    let server = pages().await;
    let mut policy = loopback();
    policy.max_body_bytes = 256 * 1024;
    policy.timeout = Duration::from_secs(10);
    let started = Instant::now();
    let page = fetch(&server.url("/endless"), &policy).await.unwrap();
    assert!(page.truncated);
    assert_eq!(page.bytes_read, 256 * 1024);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_declared_huge_body_is_refused_unread() {
    // Without the declared-length check the fetch would read up to the cap and wait for the
    // rest, which never comes, until the time limit.
    let server = pages().await;
    let mut policy = loopback();
    policy.timeout = Duration::from_secs(5);
    let error = fetch(&server.url("/declared-huge"), &policy)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            WebError::TooLarge {
                declared: 1_000_000_000,
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn text_is_capped_for_the_model() {
    let server = pages().await;
    let mut policy = loopback();
    policy.max_text_chars = 1000;
    let page = fetch(&server.url("/long-text"), &policy).await.unwrap();
    assert_eq!(page.text.chars().count(), 1000);
    assert!(page.text.starts_with("0123456789"));
    assert!(page.truncated);
}

#[tokio::test]
async fn text_is_decoded_by_its_charset() {
    let server = pages().await;
    let page = fetch(&server.url("/latin1"), &loopback()).await.unwrap();
    assert_eq!(page.text, "café");
}

#[tokio::test]
async fn binary_types_are_refused_by_name() {
    let server = pages().await;
    let error = fetch(&server.url("/image"), &loopback()).await.unwrap_err();
    assert!(
        matches!(&error, WebError::Unsupported { content_type, .. } if content_type == "image/png"),
        "{error:?}"
    );
    assert!(error.to_string().contains("`image/png`"), "{error}");
    let error = fetch(&server.url("/untyped-binary"), &loopback())
        .await
        .unwrap_err();
    assert!(matches!(error, WebError::Unsupported { .. }), "{error:?}");
    let error = fetch(&server.url("/gzip"), &loopback()).await.unwrap_err();
    assert!(
        matches!(&error, WebError::Unsupported { content_type, .. } if content_type == "gzip-compressed data"),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_redirect_to_a_host_the_policy_refuses_is_refused_with_the_rule() {
    // Without the per-hop decision the redirect would be followed to elsewhere.test.
    let server = pages().await;
    let error = fetch(&server.url("/away"), &loopback()).await.unwrap_err();
    let WebError::Refused { url, reason } = &error else {
        panic!("a refusal, not {error:?}")
    };
    assert_eq!(url, "http://elsewhere.test/");
    assert!(
        reason.starts_with("no rule of the `custom` level allows elsewhere.test (redirected there from http://127.0.0.1:"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_redirect_to_another_scheme_is_refused() {
    let server = pages().await;
    let error = fetch(&server.url("/to-file"), &loopback())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, WebError::Refused { reason, .. } if reason.contains("not `file:`")),
        "{error:?}"
    );
}

#[tokio::test]
async fn five_redirects_are_followed_and_a_sixth_is_refused() {
    let server = pages().await;
    let page = fetch(&server.url("/chain/5"), &loopback()).await.unwrap();
    assert!(page.url.ends_with("/chain/0"), "{}", page.url);
    // Without the hop limit this chain would be followed to its end.
    let error = fetch(&server.url("/chain/6"), &loopback())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, WebError::Refused { reason, .. } if reason.contains("more than 5 times")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_slow_server_is_a_transient_failure() {
    let server = pages().await;
    let mut policy = loopback();
    policy.timeout = Duration::from_millis(500);
    let error = fetch(&server.url("/slow"), &policy).await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
}

#[tokio::test]
async fn requests_carry_no_cookie_credential_or_referer() {
    let server = pages().await;
    let page = fetch(&server.url("/set-cookie"), &loopback())
        .await
        .unwrap();
    let headers = page.text.to_ascii_lowercase();
    for absent in ["cookie", "authorization", "referer", "proxy-"] {
        assert!(!headers.contains(absent), "{absent} sent:\n{}", page.text);
    }
    assert!(
        page.text.contains(&format!("user-agent: {USER_AGENT}")),
        "{}",
        page.text
    );
}

#[tokio::test]
async fn urls_with_credentials_are_refused() {
    let server = pages().await;
    let url = format!("http://user:secret@{}/echo", server.addr);
    let error = fetch(&url, &loopback()).await.unwrap_err();
    assert!(
        matches!(&error, WebError::Refused { reason, .. } if reason.contains("user name or password")),
        "{error:?}"
    );
}
