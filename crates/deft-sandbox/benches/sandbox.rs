//! The cost of a sandbox, measured three ways in one run: create + exec `true` + destroy of a
//! bubblewrap sandbox, a bare `sh -c true`, and `podman run --rm` of a local image when podman
//! and the image `deft-bench` are present. That image is a busybox made locally:
//! `mkdir -p r/bin && cp /usr/bin/busybox r/bin && ln -s busybox r/bin/true &&
//! tar -C r -cf r.tar . && podman import r.tar deft-bench` (Debian's `busybox-static`).
//!
//! Run with `cargo bench -p deft-sandbox --bench sandbox`; `DEFT_BENCH_RUNS` sets the number of
//! runs of each (default 50). Targets: within 3x a bare exec; at least 20x faster than podman.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports on stdout, and its misses on stderr"
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use deft_core::NetworkLevel;
use deft_egress::{DomainSet, EgressPolicy, Resolver};
use deft_sandbox::bwrap::BwrapBackend;
use deft_sandbox::{ExecRequest, HostSupport, Limits, Sandbox as _, SandboxSpec};

fn main() {
    let runs: usize = std::env::var("DEFT_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (bare, sandboxed, podman, parts) = runtime.block_on(async {
        let support = HostSupport::probe().await;
        let backend = BwrapBackend::new(
            support,
            PathBuf::from(env!("CARGO_BIN_EXE_deft-sandbox-helper")),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut bare = Vec::new();
        let mut sandboxed = Vec::new();
        let mut parts: [Vec<Duration>; 3] = Default::default();
        for run in 0..runs {
            let started = Instant::now();
            let status = tokio::process::Command::new("sh")
                .args(["-c", "true"])
                .status()
                .await
                .unwrap();
            assert!(status.success());
            bare.push(started.elapsed());

            let workspace = dir.path().join(format!("w{run}"));
            std::fs::create_dir(&workspace).unwrap();
            let spec = SandboxSpec {
                workspace,
                state_dir: dir.path().join(format!("s{run}")),
                env: BTreeMap::new(),
                secrets: BTreeMap::new(),
                network: EgressPolicy::new(NetworkLevel::Connections, vec![], DomainSet::default()),
                resolver: Resolver::System,
                limits: Limits::default(),
            };
            let started = Instant::now();
            let (events, _decisions) = tokio::sync::mpsc::unbounded_channel();
            let sandbox = backend.create(spec, events).await.unwrap();
            let created = started.elapsed();
            let request = ExecRequest {
                argv: vec!["true".into()],
                ..ExecRequest::shell("")
            };
            let outcome = sandbox.exec(&request, &mut |_| {}).await.unwrap();
            assert_eq!(outcome.exit_code(), 0, "{}", outcome.output);
            let executed = started.elapsed();
            sandbox.destroy().await.unwrap();
            sandboxed.push(started.elapsed());
            parts[0].push(created);
            parts[1].push(executed - created);
            parts[2].push(started.elapsed() - executed);
        }
        let podman = podman_runs(runs.min(10)).await;
        (bare, sandboxed, podman, parts)
    });
    let bare = summary(bare);
    let sandboxed = summary(sandboxed);
    println!("sandbox benchmark: {runs} runs each (median, p90)");
    println!("| measure | median | p90 |");
    println!("| --- | --- | --- |");
    println!(
        "| bare `sh -c true` | {:.2} ms | {:.2} ms |",
        ms(bare.0),
        ms(bare.1)
    );
    println!(
        "| bwrap sandbox: create + exec `true` + destroy | {:.2} ms | {:.2} ms |",
        ms(sandboxed.0),
        ms(sandboxed.1)
    );
    for (name, part) in ["create", "exec `true`", "destroy"].iter().zip(parts) {
        let part = summary(part);
        println!(
            "| … of which {name} | {:.2} ms | {:.2} ms |",
            ms(part.0),
            ms(part.1)
        );
    }
    let mut missed = Vec::new();
    let ratio = ms(sandboxed.0) / ms(bare.0);
    println!("| sandbox / bare | {ratio:.1}x | |");
    if ratio > 3.0 {
        missed.push(format!(
            "the sandbox takes {ratio:.1}x a bare exec, not within 3x"
        ));
    }
    match podman {
        Some(podman) => {
            let podman = summary(podman);
            println!(
                "| `podman run --rm deft-bench true` | {:.2} ms | {:.2} ms |",
                ms(podman.0),
                ms(podman.1)
            );
            let speedup = ms(podman.0) / ms(sandboxed.0);
            println!("| podman / sandbox | {speedup:.1}x | |");
            if speedup < 20.0 {
                missed.push(format!(
                    "the sandbox is {speedup:.1}x faster than podman, not 20x"
                ));
            }
        }
        None => println!(
            "| `podman run --rm` | not measured: podman or the local image `deft-bench` is missing | |"
        ),
    }
    if !missed.is_empty() {
        eprintln!("targets missed: {}", missed.join("; "));
        std::process::exit(1);
    }
    println!("all targets met");
}

async fn podman_runs(runs: usize) -> Option<Vec<Duration>> {
    let exists = tokio::process::Command::new("podman")
        .args(["image", "exists", "deft-bench"])
        .status()
        .await
        .ok()?;
    if !exists.success() {
        return None;
    }
    let mut times = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let status = tokio::process::Command::new("podman")
            // runc and explicit ulimits: what makes podman run on a host with hybrid cgroups.
            .args([
                "run",
                "--rm",
                "--runtime",
                "runc",
                "--ulimit",
                "nofile=1024:1024",
            ])
            .args([
                "--ulimit",
                "nproc=1024:1024",
                "--network=none",
                "deft-bench",
                "true",
            ])
            .status()
            .await
            .ok()?;
        status.success().then_some(())?;
        times.push(started.elapsed());
    }
    Some(times)
}

fn summary(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    (at(0.5), at(0.9))
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
