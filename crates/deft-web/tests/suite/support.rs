//! Servers on 127.0.0.1 for the tests, and the policies that reach them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use axum::Router;
use deft_core::{AllowRule, NetworkLevel};
use deft_egress::{DomainSet, EgressPolicy, Resolver};
use deft_web::FetchPolicy;

/// A server on a free loopback port; it stops when dropped, and with the test's runtime.
pub struct Server {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub async fn start(router: Router) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Server { addr, task }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// A policy at `level` with `allow` rules and fixed DNS answers (no query leaves the test).
pub fn policy(level: NetworkLevel, allow: &[&str], names: &[(&str, &str)]) -> FetchPolicy {
    let allow = allow
        .iter()
        .map(|rule| AllowRule::parse(rule, "allow").expect("a valid rule"))
        .collect();
    let answers: HashMap<String, Vec<IpAddr>> = names
        .iter()
        .map(|(name, ip)| ((*name).to_owned(), vec![ip.parse().expect("an IP")]))
        .collect();
    let mut policy = FetchPolicy::new(EgressPolicy::new(level, allow, DomainSet::default()));
    policy.resolver = Resolver::Fixed(answers);
    policy
}

/// The `custom` level with a rule naming 127.0.0.1 itself: how the tests reach their servers,
/// and the only way a loopback address is let through.
pub fn loopback() -> FetchPolicy {
    policy(NetworkLevel::Custom, &["127.0.0.1"], &[])
}
