//! `deft sandbox run`: one command in a fresh sandbox, exactly as a task's would run (the same
//! backend, the user's env vars and secrets, the egress proxy), for debugging an environment
//! and for timing the sandbox.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use deft_core::{NetworkLevel, NetworkPolicy};
use deft_egress::{DomainSet, EgressPolicy, Resolver};
use deft_sandbox::bwrap::BwrapBackend;
use deft_sandbox::{
    ExecRequest, HostSupport, Limits, NativeBackend as _, NativeSandbox as _, SandboxSpec,
};

use crate::cli::SandboxCommand;
use crate::local;

#[allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the command's output and its network log"
)]
pub async fn run(command: SandboxCommand) -> anyhow::Result<ExitCode> {
    let SandboxCommand::Run {
        network,
        allow,
        workspace,
        user,
        timeout,
        data,
        command,
    } = command;
    let (_, store) = local::open_store(&data).await?;
    // A named user must exist; without a name, `admin`'s settings apply when it exists, and
    // on a fresh data dir the command runs on the defaults, saying so.
    let owner = match &user {
        Some(name) => Some(store.user_by_name(name).await.with_context(|| {
            format!(
                "no user named `{name}`; `deft user create {name}` makes one, or leave out `--user`"
            )
        })?),
        None => store.user_by_name("admin").await.ok(),
    };
    let (environment, secrets) = match &owner {
        Some(owner) => (
            store.environment(&owner.id).await?,
            store.secret_values(&owner.id).await?,
        ),
        None => (deft_store::Environment::default(), Default::default()),
    };
    store.close().await;
    let policy = match network {
        Some(level) => NetworkPolicy::new(NetworkLevel::parse(&level, "--network")?, &allow)?,
        None if allow.is_empty() => environment.network.clone(),
        None => anyhow::bail!("--allow needs `--network custom`"),
    };
    eprintln!(
        "deft: {}, network {}",
        match &owner {
            Some(owner) => format!(
                "the env vars and secrets of `{}` ({} and {})",
                owner.name,
                environment.env.as_map().len(),
                secrets.len()
            ),
            None => "no user yet on this data dir: no env vars or secrets".to_owned(),
        },
        policy.level.as_str()
    );
    let support = HostSupport::probe().await;
    let helper = std::env::current_exe().context("cannot find deft's own executable")?;
    // One sandbox: none is started ahead.
    let backend = BwrapBackend::new(support, helper)?.with_pool(0);
    let scratch = tempfile::tempdir().context("cannot make a scratch directory")?;
    let workspace = match workspace {
        Some(dir) => fs_err::canonicalize(dir)?,
        None => {
            let dir = scratch.path().join("workspace");
            fs_err::create_dir(&dir)?;
            dir
        }
    };
    let spec = SandboxSpec {
        workspace,
        state_dir: scratch.path().join("state"),
        env: environment.env.as_map().clone(),
        secrets,
        network: EgressPolicy::new(policy.level, policy.allow.clone(), DomainSet::default()),
        resolver: Resolver::System,
        limits: Limits::default(),
        root: None,
    };
    let (events, mut decisions) = tokio::sync::mpsc::unbounded_channel();
    let sandbox = backend.create(spec, events).await?;
    let network_log = tokio::spawn(async move {
        while let Some(event) = decisions.recv().await {
            let verdict = if event.allowed { "allowed" } else { "denied" };
            eprintln!(
                "deft: network {verdict} {}:{} ({})",
                event.host, event.port, event.rule
            );
        }
    });
    let request = ExecRequest {
        argv: command,
        cwd: None,
        timeout: Duration::from_secs(timeout),
        output_cap: 1024 * 1024,
    };
    let outcome = sandbox
        .exec(&request, &mut |piece| {
            use std::io::Write as _;
            let mut stdout = std::io::stdout();
            let _ = stdout.write_all(piece.as_bytes());
            let _ = stdout.flush();
        })
        .await;
    sandbox.destroy().await?;
    network_log.abort();
    let outcome = outcome?;
    for hit in &outcome.limits_hit {
        eprintln!("deft: {hit}");
    }
    if outcome.ending == deft_sandbox::Ending::TimedOut {
        eprintln!("deft: killed after {timeout} s, with all its children");
    }
    Ok(ExitCode::from(
        u8::try_from(outcome.exit_code()).unwrap_or(1),
    ))
}
