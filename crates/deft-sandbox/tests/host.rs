//! The `host` backend: no isolation, so it refuses any network level it cannot enforce, and it
//! still redacts what commands print.

use std::collections::BTreeMap;
use std::time::Duration;

use deft_core::NetworkLevel;
use deft_egress::{DomainSet, EgressPolicy, Resolver};
use deft_sandbox::host::HostSandbox;
use deft_sandbox::{Ending, ExecRequest, Limits, Sandbox as _, SandboxError, SandboxSpec};

fn spec(level: NetworkLevel, workspace: std::path::PathBuf) -> SandboxSpec {
    SandboxSpec {
        state_dir: workspace.join(".state"),
        workspace,
        env: BTreeMap::new(),
        secrets: BTreeMap::from([("TOKEN".to_owned(), "host-secret-9f8e7d".to_owned())]),
        network: EgressPolicy::new(level, vec![], DomainSet::default()),
        resolver: Resolver::System,
        limits: Limits::default(),
        root: None,
    }
}

#[tokio::test]
async fn the_host_backend_refuses_what_it_cannot_enforce_and_redacts() {
    let dir = tempfile::tempdir().unwrap();
    let refused =
        HostSandbox::create(spec(NetworkLevel::Connections, dir.path().to_owned())).unwrap_err();
    assert!(
        matches!(refused, SandboxError::Unsupported(ref why) if why.contains("cannot enforce")),
        "{refused}"
    );
    let sandbox = HostSandbox::create(spec(NetworkLevel::Open, dir.path().to_owned())).unwrap();
    let outcome = sandbox
        .exec(
            &ExecRequest::shell("echo $TOKEN; echo err >&2; exit 4"),
            &mut |_| {},
        )
        .await
        .unwrap();
    assert_eq!(outcome.ending, Ending::Exited(4));
    assert!(
        outcome.output.contains("[secret:TOKEN]") && outcome.output.contains("err"),
        "{}",
        outcome.output
    );
    let slow = ExecRequest {
        timeout: Duration::from_millis(300),
        ..ExecRequest::shell("sleep 5")
    };
    assert_eq!(
        sandbox.exec(&slow, &mut |_| {}).await.unwrap().ending,
        Ending::TimedOut
    );
    sandbox.copy_in("note.txt", b"hello").await.unwrap();
    assert_eq!(
        sandbox.copy_out("/workspace/note.txt").await.unwrap(),
        b"hello"
    );
}

/// Checks a request needs are made once for every backend: before they were, the host
/// backend indexed an empty command and panicked, taking the task's worker with it.
#[tokio::test]
async fn an_empty_command_or_a_directory_outside_is_refused_by_the_host_backend_too() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = HostSandbox::create(spec(NetworkLevel::Open, dir.path().to_owned())).unwrap();
    let empty = ExecRequest {
        argv: Vec::new(),
        ..ExecRequest::shell("")
    };
    let refused = sandbox.exec(&empty, &mut |_| {}).await.unwrap_err();
    assert!(
        refused.to_string().contains("the command is empty"),
        "{refused}"
    );
    let refused = sandbox.spawn(&empty, &[]).await.unwrap_err();
    assert!(
        refused.to_string().contains("the command is empty"),
        "{refused}"
    );
    let outside = ExecRequest {
        cwd: Some("../..".into()),
        ..ExecRequest::shell("pwd")
    };
    let refused = sandbox.exec(&outside, &mut |_| {}).await.unwrap_err();
    assert!(
        matches!(refused, SandboxError::OutsideWorkspace { .. }),
        "{refused}"
    );
    let inside = ExecRequest {
        cwd: Some("/workspace/sub".into()),
        ..ExecRequest::shell("pwd")
    };
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let ran = sandbox.exec(&inside, &mut |_| {}).await.unwrap();
    assert!(ran.output.trim_end().ends_with("/sub"), "{}", ran.output);
}
