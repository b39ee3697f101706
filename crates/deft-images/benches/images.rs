//! What an environment from a Dockerfile costs a task: the cold build of the test Dockerfile
//! (`FROM` the local Debian base, a `RUN` writing a tool, an `ENV`), built, exported and
//! unpacked through Podman's Engine API, and the lookup of that image once cached (what every
//! later task on the repository pays).
//!
//! Run with `cargo bench -p deft-images --bench images`; `DEFT_BENCH_RUNS` sets the number of
//! cached lookups (default 50). Podman's storage and the base image are made on first use, in
//! the target directory, before anything is timed.

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::time::{Duration, Instant};

use deft_images::{BuildRequest, Images};

fn context(dockerfile: &str) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_size(dockerfile.len() as u64);
    tar.append_data(&mut header, "Dockerfile", dockerfile.as_bytes())
        .unwrap();
    tar.into_inner().unwrap()
}

fn main() {
    let runs: usize = std::env::var("DEFT_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let podman = deft_testkit::podman::PodmanService::start(
        &deft_testkit::rootfs::cache_dir().join("podman"),
    );
    deft_testkit::podman::base_image(&podman);
    let cache = tempfile::tempdir().unwrap();
    let images = Images::connect(podman.socket(), cache.path(), 1 << 40).unwrap();
    // A Dockerfile no earlier run built: its RUN step runs for real.
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let dockerfile = format!(
        "FROM localhost/deft-test-base:1\n\
         RUN printf '#!/bin/sh\\necho \"$GREETING\"\\n' > /usr/local/bin/greet && chmod +x /usr/local/bin/greet && echo {nonce}\n\
         ENV GREETING=hello\n"
    );
    let request = BuildRequest {
        context_tar: context(&dockerfile),
        dockerfile: "Dockerfile".to_owned(),
        contents_id: None,
        network: Default::default(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (cold, mut lookups) = runtime.block_on(async {
        let started = Instant::now();
        let built = images.prepare(&request, &mut |_| {}).await.unwrap();
        assert!(built.built);
        let cold = started.elapsed();
        drop(built);
        let mut lookups = Vec::new();
        for _ in 0..runs {
            let started = Instant::now();
            let cached = images.prepare(&request, &mut |_| {}).await.unwrap();
            lookups.push(started.elapsed());
            assert!(!cached.built);
        }
        (cold, lookups)
    });
    lookups.sort();
    let at = |q: f64| lookups[((lookups.len() as f64 * q) as usize).min(lookups.len() - 1)];
    println!("image benchmark: 1 cold build, {runs} cached lookups");
    println!("| measure | median | p90 |");
    println!("| --- | --- | --- |");
    println!(
        "| cold build of the test Dockerfile (build, export, unpack) | {:.0} ms | |",
        ms(cold)
    );
    println!(
        "| cached image lookup | {:.2} ms | {:.2} ms |",
        ms(at(0.5)),
        ms(at(0.9))
    );
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
