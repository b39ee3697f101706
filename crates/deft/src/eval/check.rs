//! A task's check, run on its result without the host ever running or reading what the task
//! wrote: the task's branch is cloned by the forge's jail from the repository deft pushed it
//! to (which no task writes) into a fresh directory, the suite's `check.sh` is copied in beside
//! the clone (never read from the result), and the check runs in a fresh sandbox, without
//! network, env vars or secrets, with a time limit.

use std::path::Path;

use anyhow::Context as _;
use deft_egress::{DomainSet, EgressPolicy, Resolver};
use deft_sandbox::bwrap::BwrapBackend;
use deft_sandbox::{
    Ending, ExecRequest, Limits, NativeBackend as _, NativeSandbox as _, SandboxSpec,
};

use super::suite::SuiteTask;

/// Where the suite's files of the task are, beside the clone, in the check's workspace.
const SUITE_DIR: &str = ".suite";
/// The most output of a check kept (its end is what a report shows).
const OUTPUT_CAP: usize = 64 * 1024;

/// How a check ended.
#[derive(Debug)]
pub enum Checked {
    Passed(String),
    Failed(String),
    TimedOut(String),
    /// It could not be run: the branch is not there, the clone or the sandbox failed.
    Error(String),
}

impl Checked {
    pub fn word(&self) -> &'static str {
        match self {
            Checked::Passed(_) => "passed",
            Checked::Failed(_) => "failed",
            Checked::TimedOut(_) => "timed_out",
            Checked::Error(_) => "error",
        }
    }

    pub fn output(&self) -> &str {
        match self {
            Checked::Passed(out)
            | Checked::Failed(out)
            | Checked::TimedOut(out)
            | Checked::Error(out) => out,
        }
    }
}

/// Runs `task`'s check on `branch` of `repo` (the repository the task was registered with and
/// pushed to), in `scratch`, a directory that does not exist yet.
pub async fn check(
    backend: &BwrapBackend,
    task: &SuiteTask,
    repo: &Path,
    branch: &str,
    scratch: &Path,
) -> Checked {
    match run(backend, task, repo, branch, scratch).await {
        Ok(checked) => checked,
        Err(error) => Checked::Error(format!("{error:#}")),
    }
}

async fn run(
    backend: &BwrapBackend,
    task: &SuiteTask,
    repo: &Path,
    branch: &str,
    scratch: &Path,
) -> anyhow::Result<Checked> {
    let reference = format!("refs/heads/{branch}");
    let Some(head) = deft_forge::private::resolve_ref(repo, &reference).await? else {
        return Ok(Checked::Error(format!(
            "the task's branch {branch} is not in {}",
            repo.display()
        )));
    };
    let workspace = scratch.join("workspace");
    fs_err::create_dir_all(&workspace)?;
    copy_regular_files(&task.dir, &workspace.join(SUITE_DIR))?;
    // The jail makes the clone (and gives the whole workspace to the sandbox's user).
    let clone = workspace.join(&task.name);
    deft_forge::private::clone_on_branch(repo, &clone, branch, &head)
        .await
        .with_context(|| format!("cloning {branch} for the check"))?;
    let spec = SandboxSpec {
        workspace,
        state_dir: scratch.join("state"),
        env: Default::default(),
        secrets: Default::default(),
        network: EgressPolicy::new(
            deft_core::NetworkLevel::Connections,
            Vec::new(),
            DomainSet::default(),
        ),
        resolver: Resolver::System,
        limits: Limits::default(),
        root: None,
    };
    // Nothing may leave the check's sandbox, so no decision is worth reading.
    let (events, _decisions) = tokio::sync::mpsc::unbounded_channel();
    let sandbox = backend
        .create(spec, events)
        .await
        .context("making the check's sandbox")?;
    let request = ExecRequest {
        argv: vec!["/bin/sh".into(), format!("/workspace/{SUITE_DIR}/check.sh")],
        cwd: Some(task.name.clone()),
        timeout: task.settings.check_timeout(),
        output_cap: OUTPUT_CAP,
    };
    let outcome = sandbox.exec(&request, &mut |_| {}).await;
    let _ = sandbox.destroy().await;
    let outcome = outcome.context("running check.sh in the sandbox")?;
    let output = tail(&outcome.output, 2000);
    Ok(match outcome.ending {
        Ending::TimedOut => Checked::TimedOut(format!(
            "{output}\nkilled after {} s",
            task.settings.check_timeout().as_secs()
        )),
        _ if outcome.exit_code() == 0 => Checked::Passed(output),
        _ => Checked::Failed(output),
    })
}

/// Copies the regular files under `from` (the suite's, trusted) to `to`, made fresh; links
/// are left out.
fn copy_regular_files(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs_err::create_dir_all(to)?;
    for entry in fs_err::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_regular_files(&entry.path(), &target)?;
        } else if kind.is_file() {
            fs_err::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// The last `max` bytes of `text`, cut at a character.
fn tail(text: &str, max: usize) -> String {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].trim_end().to_owned()
}
