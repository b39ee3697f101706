//! The `host` backend: commands run directly on this machine, in the workspace, with no
//! isolation at all. It exists for developing deft on machines without bubblewrap and is only
//! ever used when named explicitly; it cannot enforce a network level, so it accepts only
//! `open`.

use deft_core::{NetworkLevel, Redactor};

use crate::output::{CappedOutput, OutputText, Stderr, read_streams};
use crate::{
    CheckedCommand, Ending, LimitCounts, NativeBackend, NativeSandbox, Ran, SandboxError,
    SandboxProcess, SandboxSpec,
};

/// Commands of a task, run on the host. Its programs are never paused: nothing here can be
/// stopped apart from the host, since the host backend isolates nothing.
#[derive(Debug)]
pub struct HostSandbox {
    spec: SandboxSpec,
    redactor: Redactor,
}

impl HostSandbox {
    pub fn create(spec: SandboxSpec) -> Result<HostSandbox, SandboxError> {
        if spec.network.level != NetworkLevel::Open {
            return Err(SandboxError::Unsupported(format!(
                "the host backend cannot enforce the `{}` network level; use the bwrap backend, or the `open` level",
                spec.network.level.as_str()
            )));
        }
        let redactor = Redactor::new(&spec.secrets);
        Ok(HostSandbox { spec, redactor })
    }
}

impl NativeSandbox for HostSandbox {
    async fn run(
        &self,
        command: &CheckedCommand<'_>,
        on_output: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Ran, SandboxError> {
        let request = command.request();
        let mut child = tokio::process::Command::new(command.program())
            .args(command.args())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&self.spec.secrets)
            .envs(&self.spec.env)
            .current_dir(command.dir_on_host(&self.spec.workspace))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .map_err(|error| SandboxError::Start(format!("{}: {error}", command.program())))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let mut text = OutputText::new(self.redactor.stream());
        let mut kept = CappedOutput::new(request.output_cap);
        let run = async {
            read_streams(
                stdout,
                stderr,
                Stderr::Output,
                &mut text,
                &mut kept,
                on_output,
            )
            .await;
            child.wait().await
        };
        let ending = match tokio::time::timeout(request.timeout, run).await {
            Ok(Ok(status)) => {
                use std::os::unix::process::ExitStatusExt as _;
                status
                    .code()
                    .map(Ending::Exited)
                    .or(status.signal().map(Ending::Signaled))
                    .unwrap_or(Ending::Exited(-1))
            }
            Ok(Err(error)) => return Err(SandboxError::io("waiting for the command")(error)),
            Err(_) => {
                if let Some(pid) = child
                    .id()
                    .and_then(|pid| rustix::process::Pid::from_raw(pid as i32))
                {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
                let _ = child.wait().await;
                Ending::TimedOut
            }
        };
        let rest = text.finish();
        kept.push(&rest);
        // Nothing here counts what a command ran into; only the disk is measured.
        Ok(Ran::new(ending, kept.finish(), LimitCounts::default()))
    }

    /// A long-running program, on the host like every command here.
    async fn spawn(
        &self,
        command: &CheckedCommand<'_>,
        extra_env: &[(String, String)],
    ) -> Result<SandboxProcess, SandboxError> {
        let program = command.program();
        let mut child = tokio::process::Command::new(program)
            .args(command.args())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&self.spec.secrets)
            .envs(&self.spec.env)
            .envs(extra_env.iter().cloned())
            .current_dir(command.dir_on_host(&self.spec.workspace))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .map_err(|error| SandboxError::Start(format!("{program}: {error}")))?;
        Ok(SandboxProcess {
            stdin: child.stdin.take().expect("piped"),
            stdout: child.stdout.take().expect("piped"),
            stderr: child.stderr.take().expect("piped"),
            child,
        })
    }

    fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    fn spec(&self) -> &SandboxSpec {
        &self.spec
    }
}

/// Makes [`HostSandbox`]es: only when named explicitly, never as a fallback.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostBackend;

impl NativeBackend for HostBackend {
    const NAME: &'static str = "host";

    type Sandbox = HostSandbox;

    async fn create(
        &self,
        spec: SandboxSpec,
        _events: tokio::sync::mpsc::UnboundedSender<crate::ProxyEvent>,
    ) -> Result<HostSandbox, SandboxError> {
        if spec.root.is_some() {
            return Err(SandboxError::Unsupported(
                "the host backend cannot run on an image's root; use the bwrap backend".into(),
            ));
        }
        HostSandbox::create(spec)
    }
}
