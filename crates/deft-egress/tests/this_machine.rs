//! The proxy refuses this machine's own addresses, read from its interfaces: a fixed list of
//! private ranges let a task reach the host's services through the address of its own network
//! interface (public, or in a range nobody listed) under the `open` level.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use deft_core::NetworkLevel;
use deft_egress::{DomainSet, EgressPolicy, EgressProxy, Resolver};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Reads the proxy's answer up to the end of its head (or its close); a proxy that let the
/// tunnel through keeps the connection open, hence the time limit.
async fn answer_head(client: &mut tokio::net::UnixStream) -> String {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(read) => answer.extend_from_slice(&chunk[..read]),
            }
        }
        // The body of a refusal follows its head; read what came with it.
        if let Ok(Ok(read)) =
            tokio::time::timeout(Duration::from_millis(200), client.read(&mut chunk)).await
        {
            answer.extend_from_slice(&chunk[..read]);
        }
    })
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn connect_to_an_address_of_this_machine_is_refused_at_the_open_level() {
    let interfaces = if_addrs::get_if_addrs().expect("getifaddrs");
    // A non-loopback IPv4 address, which the listener on 0.0.0.0 answers on; loopback is refused
    // by its range anyway, so it shows less, but every machine has it.
    let target = match interfaces
        .iter()
        .find_map(|interface| match interface.ip() {
            IpAddr::V4(ip) if !ip.is_loopback() => Some((ip, interface.name.clone())),
            _ => None,
        }) {
        Some(found) => found,
        None => {
            // Said where the test's output is read, so a pass on loopback alone is not mistaken
            // for a pass on a real interface.
            #[allow(clippy::print_stderr)]
            {
                eprintln!(
                    "note: no non-loopback IPv4 interface address here; checking 127.0.0.1 only"
                );
            }
            (Ipv4Addr::LOCALHOST, "lo".to_owned())
        }
    };
    let (ip, interface) = target;

    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("proxy.sock");
    let (events, mut decisions) = tokio::sync::mpsc::unbounded_channel();
    let policy = EgressPolicy::new(NetworkLevel::Open, vec![], DomainSet::default());
    // No name is looked up: the target is an address.
    let _proxy =
        EgressProxy::start_with(&socket, policy, events, Resolver::Fixed(Default::default()))
            .unwrap();

    let mut client = tokio::net::UnixStream::connect(&socket).await.unwrap();
    client
        .write_all(format!("CONNECT {ip}:{port} HTTP/1.1\r\nHost: {ip}:{port}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let answer = answer_head(&mut client).await;
    let reason = format!("{ip} is an address of this machine ({interface})");
    assert!(
        answer.starts_with("HTTP/1.1 403 Forbidden\r\n") && answer.contains(&reason),
        "the proxy answered {answer:?}"
    );
    let decision = decisions.recv().await.unwrap();
    assert!(
        !decision.allowed && decision.rule.contains(&reason),
        "{decision:?}"
    );
    drop(client);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "the listener on 0.0.0.0 was reached"
    );

    // Every address the interfaces have is refused as this machine's, by the same reading the
    // proxy makes.
    let own = deft_egress::this_machine().unwrap();
    for interface in &interfaces {
        let refusal = deft_egress::refusal(interface.ip(), &own)
            .unwrap_or_else(|| panic!("{} of {} is let through", interface.ip(), interface.name));
        assert!(
            refusal
                .to_string()
                .contains("is an address of this machine"),
            "{refusal}"
        );
    }
}

/// One sandbox cannot hold more than `MAX_CONNECTIONS` connections through its proxy at once:
/// each costs deft descriptors, which one task would otherwise use up for every other. Idle
/// connections (no request yet) hold their slot; the next one is closed at once.
#[tokio::test]
async fn a_sandbox_holds_at_most_the_proxys_connection_limit() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("proxy.sock");
    let (events, _decisions) = tokio::sync::mpsc::unbounded_channel();
    let _proxy = EgressProxy::start_with(
        &socket,
        EgressPolicy::new(NetworkLevel::Open, vec![], DomainSet::default()),
        events,
        Resolver::System,
    )
    .unwrap();
    let mut held = Vec::new();
    for _ in 0..deft_egress::MAX_CONNECTIONS {
        held.push(tokio::net::UnixStream::connect(&socket).await.unwrap());
    }
    // Each accepted connection waits for its request; give the proxy time to take them all.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut byte))
        .await
        .expect("the connection past the limit is closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // A slot freed is a slot taken again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = tokio::net::UnixStream::connect(&socket).await.unwrap();
    again
        .write_all(b"CONNECT 192.0.2.1:443 HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    assert!(answer_head(&mut again).await.contains("403"));
}
