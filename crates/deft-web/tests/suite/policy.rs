//! The task's network rules decide every fetch, and no host name reaches this machine or its
//! networks, whatever the level.

use axum::Router;
use axum::response::Redirect;
use axum::routing::get;
use deft_core::NetworkLevel;
use deft_web::{WebError, fetch};

use super::support::{Server, loopback, policy};

async fn site() -> Server {
    let router = Router::new()
        .route("/", get(|| async { "hello from loopback" }))
        .route(
            "/to-docs",
            get(|| async { Redirect::temporary("http://www.docs.example:1/") }),
        );
    Server::start(router).await
}

fn refusal(error: WebError) -> (String, String) {
    match error {
        WebError::Refused { url, reason } => (url, reason),
        other => panic!("a refusal, not {other:?}"),
    }
}

#[tokio::test]
async fn a_host_the_level_refuses_is_refused_with_its_rule() {
    // Without the decision, the server below would answer.
    let server = site().await;
    let connections = policy(NetworkLevel::Connections, &[], &[]);
    let (_, reason) = refusal(fetch(&server.url("/"), &connections).await.unwrap_err());
    assert_eq!(
        reason,
        "no rule of the `connections` level allows 127.0.0.1"
    );
    // No DNS answer is given: were the decision skipped, the fetch would stop at resolving.
    let common = policy(NetworkLevel::Common, &[], &[]);
    let (_, reason) = refusal(fetch("https://example.com/", &common).await.unwrap_err());
    assert_eq!(reason, "no rule of the `common` level allows example.com");
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_even_when_open() {
    // Without the address check the fetch would connect to 127.0.0.1, where the server is.
    let server = site().await;
    let open = policy(NetworkLevel::Open, &[], &[("intranet.test", "127.0.0.1")]);
    let url = format!("http://intranet.test:{}/", server.addr.port());
    let (_, reason) = refusal(fetch(&url, &open).await.unwrap_err());
    assert!(
        reason.starts_with("intranet.test resolves to 127.0.0.1, which is"),
        "{reason}"
    );
    // Any loopback address, not only this machine's own: refused by its range.
    let other = policy(NetworkLevel::Open, &[], &[("intranet.test", "127.0.0.2")]);
    let (_, reason) = refusal(fetch(&url, &other).await.unwrap_err());
    assert!(reason.contains("127.0.0.0/8 (loopback)"), "{reason}");
}

#[tokio::test]
async fn a_loopback_address_is_refused_unless_a_rule_names_it() {
    let server = site().await;
    // `open` allows every host, but names none: the address itself is still refused.
    let open = policy(NetworkLevel::Open, &[], &[]);
    let (_, reason) = refusal(fetch(&server.url("/"), &open).await.unwrap_err());
    assert!(reason.starts_with("127.0.0.1 is "), "{reason}");
    // A rule naming a host name is not a rule naming the address it resolves to.
    let named = policy(
        NetworkLevel::Custom,
        &["pages.test"],
        &[("pages.test", "127.0.0.1")],
    );
    let url = format!("http://pages.test:{}/", server.addr.port());
    let (_, reason) = refusal(fetch(&url, &named).await.unwrap_err());
    assert!(
        reason.starts_with("pages.test resolves to 127.0.0.1"),
        "{reason}"
    );
    // The address named by a custom rule: reached.
    let page = fetch(&server.url("/"), &loopback()).await.unwrap();
    assert_eq!(page.text, "hello from loopback");
}

#[tokio::test]
async fn a_redirect_to_a_name_that_points_inside_is_refused() {
    // The redirect's host is allowed by a domain rule, but it resolves to loopback. Without the
    // address check at every hop, the fetch would go on to it.
    let server = site().await;
    let rules = policy(
        NetworkLevel::Custom,
        &["127.0.0.1", ".docs.example"],
        &[("www.docs.example", "127.0.0.1")],
    );
    let (url, reason) = refusal(fetch(&server.url("/to-docs"), &rules).await.unwrap_err());
    assert_eq!(url, "http://www.docs.example:1/");
    assert!(
        reason.starts_with("www.docs.example resolves to 127.0.0.1")
            && reason.contains("(redirected there from http://127.0.0.1:"),
        "{reason}"
    );
}
