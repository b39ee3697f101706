//! What the container backend costs, next to what the engine alone costs: a sandbox's create
//! (a container started, deft's init connected and ready), one command (`true`, the median of
//! the runs, through deft's resident init) and destroy, beside a bare `exec` of `true` through
//! the Engine API in a running container of the same engine (create the exec, start it
//! attached, read it to its end, inspect its exit code), which is what running each command
//! through the engine would cost at least.
//!
//! Run with `cargo bench -p deft-container --bench container`; `DEFT_BENCH_RUNS` sets the
//! number of runs of each (default 50; creates and destroys take a tenth of them, at least 5).
//! A real Podman is started as in the tests (`deft_testkit::podman`). Target: an exec within
//! 3x of a bare exec once started.

#![allow(clippy::print_stdout, reason = "a benchmark's results are its output")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bollard::exec::{CreateExecOptions, StartExecResults};
use deft_sandbox::{
    ExecRequest, ImageRoot, Limits, NativeBackend as _, NativeSandbox as _, SandboxSpec,
};
use futures_util::StreamExt as _;

const HELPER: &str = env!("CARGO_BIN_EXE_deft-container-helper");

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn spec(dir: &std::path::Path, run: usize) -> SandboxSpec {
    let workspace = dir.join(format!("w{run}"));
    std::fs::create_dir_all(&workspace).unwrap();
    SandboxSpec {
        workspace,
        state_dir: dir.join(format!("w{run}.sandbox")),
        env: Default::default(),
        secrets: Default::default(),
        network: deft_egress::EgressPolicy::new(
            deft_core::NetworkLevel::Connections,
            vec![],
            deft_egress::DomainSet::default(),
        ),
        resolver: deft_egress::Resolver::System,
        limits: Limits::default(),
        root: Some(ImageRoot {
            rootfs: deft_testkit::rootfs::debian(),
            env: vec![],
        }),
    }
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("DEFT_BENCH_RUNS")
        .ok()
        .and_then(|runs| runs.parse().ok())
        .unwrap_or(50);
    let service = deft_testkit::podman::PodmanService::start(
        &deft_testkit::rootfs::cache_dir().join("podman"),
    );
    let backend =
        deft_container::ContainerBackend::connect(service.socket(), PathBuf::from(HELPER))
            .await
            .expect("the container backend runs on this Podman");
    let dir = tempfile::tempdir().unwrap();
    let lives = (runs / 10).max(5);
    let (mut creates, mut execs, mut destroys) = (Vec::new(), Vec::new(), Vec::new());
    let request = ExecRequest {
        argv: vec!["true".to_owned()],
        ..ExecRequest::shell("")
    };
    // The first create lays the root out and imports its image: not timed.
    let (sender, _events) = tokio::sync::mpsc::unbounded_channel();
    let warm = backend.create(spec(dir.path(), 0), sender).await.unwrap();
    warm.destroy().await.unwrap();
    for life in 1..=lives {
        let (sender, _events) = tokio::sync::mpsc::unbounded_channel();
        let started = Instant::now();
        let sandbox = backend
            .create(spec(dir.path(), life), sender)
            .await
            .unwrap();
        creates.push(started.elapsed());
        let count = if life == 1 { runs } else { 1 };
        for _ in 0..count {
            let started = Instant::now();
            let outcome = sandbox.exec(&request, &mut |_| {}).await.unwrap();
            execs.push(started.elapsed());
            assert_eq!(outcome.exit_code(), 0);
        }
        let started = Instant::now();
        sandbox.destroy().await.unwrap();
        destroys.push(started.elapsed());
    }

    // The same engine's own exec, in a running container of the test base image.
    let docker = bollard::Docker::connect_with_unix(
        service.socket().to_str().unwrap(),
        120,
        bollard::API_DEFAULT_VERSION,
    )
    .unwrap();
    let image = deft_testkit::podman::base_image(&service);
    let name = format!("deft-bench-bare-{}", std::process::id());
    let created = docker
        .create_container(
            Some(bollard::query_parameters::CreateContainerOptions {
                name: Some(name.clone()),
                ..Default::default()
            }),
            bollard::models::ContainerCreateBody {
                image: Some(image),
                cmd: Some(vec!["sleep".to_owned(), "infinity".to_owned()]),
                host_config: Some(bollard::models::HostConfig {
                    network_mode: Some("none".to_owned()),
                    auto_remove: Some(true),
                    // This Podman applies limits above its own otherwise (see CRATES.md).
                    ulimits: Some(
                        [("nofile", 4096), ("nproc", 32768)]
                            .map(|(name, limit)| bollard::models::ResourcesUlimits {
                                name: Some(name.to_owned()),
                                soft: Some(limit),
                                hard: Some(limit),
                            })
                            .to_vec(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    docker
        .start_container(
            &created.id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .unwrap();
    let mut bare = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let exec = docker
            .create_exec(
                &created.id,
                CreateExecOptions {
                    cmd: Some(vec!["true"]),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        if let StartExecResults::Attached { mut output, .. } =
            docker.start_exec(&exec.id, None).await.unwrap()
        {
            while output.next().await.is_some() {}
        }
        let inspected = docker.inspect_exec(&exec.id).await.unwrap();
        bare.push(started.elapsed());
        assert_eq!(inspected.exit_code, Some(0));
    }
    let _ = docker
        .remove_container(
            &created.id,
            Some(bollard::query_parameters::RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await;

    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    let (exec, bare) = (median(execs), median(bare));
    println!("container backend, {runs} runs (creates and destroys: {lives})");
    println!("  create             {:8.2} ms", ms(median(creates)));
    println!("  exec `true`        {:8.2} ms", ms(exec));
    println!("  destroy            {:8.2} ms", ms(median(destroys)));
    println!("  bare engine exec   {:8.2} ms", ms(bare));
    println!(
        "  exec / bare exec   {:8.2}x",
        exec.as_secs_f64() / bare.as_secs_f64()
    );
}
