//! The attack suite on the host's root: the system directories of the machine deft runs on,
//! with bubblewrap; and what only bubblewrap's sandboxes do (the pool of them started ahead of
//! tasks).

#[path = "attacks/suite.rs"]
mod suite;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use deft_core::NetworkLevel;
use deft_egress::{DomainSet, EgressPolicy};
use deft_sandbox::bwrap::BwrapBackend;
use deft_sandbox::{
    ExecRequest, HostSupport, Limits, NativeBackend as _, NativeSandbox as _, SandboxSpec,
};
use tokio::sync::mpsc;

const HELPER: &str = env!("CARGO_BIN_EXE_deft-sandbox-helper");

async fn backend() -> suite::Backend {
    let backend = BwrapBackend::new(HostSupport::probe().await, PathBuf::from(HELPER))
        .expect("bubblewrap works here");
    suite::Backend {
        backend: Box::new(backend),
        keep: Box::new(()),
    }
}

fn root() -> Option<deft_sandbox::ImageRoot> {
    None
}

#[tokio::test]
async fn a_sandbox_that_died_while_waiting_in_the_pool_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let workspaces = dir.path().join("workspaces");
    std::fs::create_dir(&workspaces).unwrap();
    let backend = BwrapBackend::new(HostSupport::probe().await, PathBuf::from(HELPER))
        .expect("bubblewrap works here");
    backend.prewarm(&workspaces, &Limits::default());
    let started = std::time::Instant::now();
    while backend.ready(&workspaces, &Limits::default()) < backend.pool_size() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the pool never filled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Every waiting sandbox dies: the bubblewrap processes binding a stage whose mounts show
    // this test's directory of workspaces (when deft is root the launcher stages it, so the
    // command line names the staged copy; the mount table names the original).
    let ours = workspaces.canonicalize().unwrap().display().to_string();
    let mut killed = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains("/.deft/stage") {
            continue;
        }
        let mounts = std::fs::read_to_string(entry.path().join("mountinfo")).unwrap_or_default();
        let named = String::from_utf8_lossy(&cmdline).contains(&ours);
        if named || mounts.contains(&ours) {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(pid).unwrap(),
                rustix::process::Signal::KILL,
            );
            killed += 1;
        }
    }
    assert!(killed > 0, "no pooled sandbox was found to kill");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let workspace = workspaces.join("task");
    std::fs::create_dir(&workspace).unwrap();
    let spec = SandboxSpec {
        workspace,
        state_dir: workspaces.join("task.sandbox"),
        env: BTreeMap::new(),
        secrets: BTreeMap::new(),
        network: EgressPolicy::new(NetworkLevel::Connections, vec![], DomainSet::default()),
        resolver: deft_egress::Resolver::System,
        limits: Limits::default(),
        root: None,
    };
    let (sender, _events) = mpsc::unbounded_channel();
    let sandbox = backend
        .create(spec, sender)
        .await
        .expect("a dead pooled sandbox is replaced");
    let outcome = sandbox
        .exec(&ExecRequest::shell("echo alive"), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(outcome.output.trim(), "alive");
}
