//! How fast `POST /webhooks/github` answers (target: within a second, the work queued behind
//! the answer), measured on the release binary: signed deliveries built from the real
//! `issues/labeled` example, each with a new delivery id, then the same ids again (which are
//! answered as duplicates).
//!
//! Run with `cargo bench -p deft --bench webhook`; `DEFT_BENCH_DELIVERIES` sets how many
//! (default 500). The figures go into docs/PERFORMANCE.md.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports on stdout, and its misses on stderr"
)]

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "bench-secret";

fn main() {
    let deliveries: usize = std::env::var("DEFT_BENCH_DELIVERIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: the work after each answer fails fast, as it would with
    // GitHub unreachable; the answer does not wait for it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_deft"))
        .args([
            "serve",
            "--workers",
            "0",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("DEFT_LOG", "error")
        .env("DEFT_GITHUB_TOKEN", "bench-token")
        .env("DEFT_GITHUB_API_URL", format!("http://127.0.0.1:{closed}"))
        .env("DEFT_GITHUB_WEBHOOK_SECRET", SECRET)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("deft serve exited").unwrap();
        if let Some(rest) = line.split("serving the API on ").nth(1) {
            break rest.split("/api/v1").next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap();
    let mut payload = deft_testkit::github_server::fixture("issues", "labeled.payload.json");
    payload["label"]["name"] = serde_json::json!("deft");
    let body = serde_json::to_vec(&payload).unwrap();
    let signature = deft_github::webhook::sign(SECRET.as_bytes(), &body);
    let send = |id: &str| {
        let started = Instant::now();
        let response = client
            .post(format!("{base}/webhooks/github"))
            .header("content-type", "application/json")
            .header("x-github-event", "issues")
            .header("x-github-delivery", id)
            .header("x-hub-signature-256", &signature)
            .body(body.clone())
            .send()
            .unwrap();
        (started.elapsed(), response.status().as_u16())
    };
    let mut fresh = Vec::new();
    let mut again = Vec::new();
    for n in 0..deliveries {
        let (took, status) = send(&format!("bench-{n}"));
        assert_eq!(status, 202, "a new delivery is accepted");
        fresh.push(took);
        std::thread::sleep(Duration::from_millis(5));
    }
    for n in 0..deliveries {
        let (took, status) = send(&format!("bench-{n}"));
        assert_eq!(status, 200, "a delivery seen before is a duplicate");
        again.push(took);
    }
    let _ = child.kill();
    let _ = child.wait();
    let report = |name: &str, mut times: Vec<Duration>| {
        times.sort();
        let pct = |p: f64| {
            let index = ((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1;
            times[index].as_secs_f64() * 1000.0
        };
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {:.2} ms |",
            pct(0.5),
            pct(0.99),
            pct(1.0)
        );
        pct(1.0)
    };
    println!("deft webhook benchmark: {deliveries} signed `issues` deliveries, then each again");
    println!("| delivery | p50 | p99 | max |");
    println!("| --- | --- | --- | --- |");
    let worst = report("new (verified, recorded, answered 202)", fresh)
        .max(report("repeated (answered 200 duplicate)", again));
    if worst >= 1000.0 {
        eprintln!("target missed: a delivery took {worst:.0} ms to answer, not under a second");
        std::process::exit(1);
    }
}
