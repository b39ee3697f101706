//! The cost of a sandbox, measured three ways in one run: create + exec `true` + destroy of a
//! bubblewrap sandbox, a bare `sh -c true`, and `podman run --rm` of a local image when podman
//! and the image `deft-bench` are present. That image is a busybox made locally:
//! `mkdir -p r/bin && cp /usr/bin/busybox r/bin && ln -s busybox r/bin/true &&
//! tar -C r -cf r.tar . && podman import r.tar deft-bench` (Debian's `busybox-static`).
//!
//! The sandbox is measured as deft runs it, with sandboxes started ahead of tasks (the pool);
//! each timed run starts once the pool is full again, so nothing runs beside it. Also shown:
//! the same without a pool (bubblewrap starting inside create), and runs back to back, where
//! the pool's refilling competes with them.
//!
//! Also on an image's root (a Debian root filesystem, `deft_testkit::rootfs::debian`), which is
//! never pooled (its root is known only once a task's repositories are): against the host's
//! root without a pool, where both start bubblewrap in create.
//!
//! Run with `cargo bench -p deft-sandbox --bench sandbox`; `DEFT_BENCH_RUNS` sets the number of
//! runs of each (default 50). Targets: within 3x a bare exec; at least 20x faster than podman;
//! an image's root within 1.5x of the host's, both unpooled.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports on stdout, and its misses on stderr"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use deft_core::NetworkLevel;
use deft_egress::{DomainSet, EgressPolicy, Resolver};
use deft_sandbox::bwrap::BwrapBackend;
use deft_sandbox::{
    ExecRequest, HostSupport, Limits, NativeBackend as _, NativeSandbox as _, SandboxSpec,
};

/// One sandbox's life, timed in its three parts: create, exec `true`, destroy.
async fn one_sandbox(backend: &BwrapBackend, workspaces: &Path, run: String) -> [Duration; 3] {
    one_sandbox_on(backend, workspaces, run, None).await
}

async fn one_sandbox_on(
    backend: &BwrapBackend,
    workspaces: &Path,
    run: String,
    root: Option<deft_sandbox::ImageRoot>,
) -> [Duration; 3] {
    let workspace = workspaces.join(&run);
    std::fs::create_dir(&workspace).unwrap();
    let spec = SandboxSpec {
        state_dir: workspaces.join(format!("{run}.sandbox")),
        workspace,
        env: BTreeMap::new(),
        secrets: BTreeMap::new(),
        network: EgressPolicy::new(NetworkLevel::Connections, vec![], DomainSet::default()),
        resolver: Resolver::System,
        limits: Limits::default(),
        root,
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
    let total = started.elapsed();
    [created, executed - created, total - executed]
}

async fn bare() -> Duration {
    let started = Instant::now();
    let status = tokio::process::Command::new("sh")
        .args(["-c", "true"])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    started.elapsed()
}

/// Waits, untimed, until the backend's pool for `workspaces` is full again, so that nothing
/// runs in the background while the next run is timed.
async fn settle(backend: &BwrapBackend, workspaces: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while backend.ready(workspaces, &Limits::default()) < backend.pool_size()
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The killed sandboxes' cgroups are removed aside, after a 10 ms grace.
    tokio::time::sleep(Duration::from_millis(15)).await;
}

fn main() {
    let runs: usize = std::env::var("DEFT_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let rootfs = deft_testkit::rootfs::debian();
    let (bare_times, warm, cold, back_to_back, podman, image) = runtime.block_on(async {
        let support = HostSupport::probe().await;
        let helper = PathBuf::from(env!("CARGO_BIN_EXE_deft-sandbox-helper"));
        let pooled = BwrapBackend::new(support.clone(), helper.clone()).unwrap();
        let unpooled = BwrapBackend::new(support, helper).unwrap().with_pool(0);
        let dir = tempfile::tempdir().unwrap();
        let workspaces = dir.path().join("workspaces");
        std::fs::create_dir(&workspaces).unwrap();
        pooled.prewarm(&workspaces, &Limits::default());
        let mut bare_times = Vec::new();
        let mut warm: [Vec<Duration>; 3] = Default::default();
        let mut cold: [Vec<Duration>; 3] = Default::default();
        let mut image: [Vec<Duration>; 3] = Default::default();
        for run in 0..runs {
            settle(&pooled, &workspaces).await;
            bare_times.push(bare().await);
            let parts = one_sandbox(&pooled, &workspaces, format!("w{run}")).await;
            for (all, part) in warm.iter_mut().zip(parts) {
                all.push(part);
            }
            settle(&pooled, &workspaces).await;
            let parts = one_sandbox(&unpooled, &workspaces, format!("c{run}")).await;
            for (all, part) in cold.iter_mut().zip(parts) {
                all.push(part);
            }
            settle(&pooled, &workspaces).await;
            let root = deft_sandbox::ImageRoot {
                rootfs: rootfs.clone(),
                env: vec![],
            };
            let parts = one_sandbox_on(&unpooled, &workspaces, format!("i{run}"), Some(root)).await;
            for (all, part) in image.iter_mut().zip(parts) {
                all.push(part);
            }
        }
        settle(&pooled, &workspaces).await;
        let started = Instant::now();
        for run in 0..runs {
            one_sandbox(&pooled, &workspaces, format!("b{run}")).await;
        }
        let back_to_back = started.elapsed() / runs as u32;
        let podman = podman_runs(runs.min(10)).await;
        (bare_times, warm, cold, back_to_back, podman, image)
    });
    let total = |parts: &[Vec<Duration>; 3]| -> Vec<Duration> {
        (0..parts[0].len())
            .map(|i| parts[0][i] + parts[1][i] + parts[2][i])
            .collect()
    };
    let bare = summary(bare_times);
    let sandboxed = summary(total(&warm));
    let unpooled = summary(total(&cold));
    let on_image = summary(total(&image));
    println!("sandbox benchmark: {runs} runs each (median, p90)");
    println!("| measure | median | p90 |");
    println!("| --- | --- | --- |");
    println!(
        "| bare `sh -c true` | {:.2} ms | {:.2} ms |",
        ms(bare.0),
        ms(bare.1)
    );
    println!(
        "| sandbox: create + exec `true` + destroy | {:.2} ms | {:.2} ms |",
        ms(sandboxed.0),
        ms(sandboxed.1)
    );
    print_parts(warm);
    println!(
        "| the same without a pool (bubblewrap starts in create) | {:.2} ms | {:.2} ms |",
        ms(unpooled.0),
        ms(unpooled.1)
    );
    print_parts(cold);
    println!(
        "| on an image's root (never pooled) | {:.2} ms | {:.2} ms |",
        ms(on_image.0),
        ms(on_image.1)
    );
    print_parts(image);
    println!(
        "| {runs} sandboxes back to back, the pool refilling meanwhile: mean each | {:.2} ms | |",
        ms(back_to_back)
    );
    let mut missed = Vec::new();
    let ratio = ms(sandboxed.0) / ms(bare.0);
    println!("| sandbox / bare | {ratio:.1}x | |");
    if ratio > 3.0 {
        missed.push(format!(
            "the sandbox takes {ratio:.1}x a bare exec, not within 3x"
        ));
    }
    let image_ratio = ms(on_image.0) / ms(unpooled.0);
    println!("| image's root / host's root, both unpooled | {image_ratio:.2}x | |");
    if image_ratio > 1.5 {
        missed.push(format!(
            "an image's root takes {image_ratio:.2}x the host's, not within 1.5x"
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

/// One row per part of a sandbox's life.
fn print_parts(parts: [Vec<Duration>; 3]) {
    for (name, part) in ["create", "exec `true`", "destroy"].iter().zip(parts) {
        let part = summary(part);
        println!(
            "| … of which {name} | {:.2} ms | {:.2} ms |",
            ms(part.0),
            ms(part.1)
        );
    }
}

fn summary(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    (at(0.5), at(0.9))
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
