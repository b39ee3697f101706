//! The `deft` binary: parse the command line, run the command, and turn the outcome into an
//! exit code. The exit-code policy lives here and nowhere else.

mod chat;
mod cli;
mod client;
mod config;
mod doctor;
mod env_build;
mod env_vars;
mod eval;
mod local;
mod notifications;
mod run;
mod sandbox_run;
mod serve;
mod tuning;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    // The sandbox's launcher and init are this same binary, started with a verb of their own,
    // before any runtime exists (see `deft_sandbox::inner`).
    let args: Vec<String> = std::env::args().collect();
    if !args.get(1).is_some_and(|verb| {
        verb == deft_sandbox::inner::LAUNCH || verb == deft_sandbox::inner::INIT
    }) {
        raise_descriptor_limit();
    }
    match args.get(1).map(String::as_str) {
        Some(deft_sandbox::inner::LAUNCH) => {
            report(
                &anyhow::anyhow!(deft_sandbox::inner::launch(&args[2..]))
                    .context("the sandbox launcher failed"),
            );
            return ExitCode::from(125);
        }
        Some(deft_sandbox::inner::INIT) => {
            let code = deft_sandbox::inner::init(&args[2..]);
            return ExitCode::from(u8::try_from(code).unwrap_or(125));
        }
        _ => {}
    }
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            report(&anyhow::anyhow!(error).context("cannot start the async runtime"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(error) => {
            report(&error);
            ExitCode::FAILURE
        }
    }
}

#[allow(
    clippy::print_stderr,
    reason = "the binary's one place that reports a failed command"
)]
fn report(error: &anyhow::Error) {
    eprintln!("error: {error:#}");
}

/// Raises the soft limit on open descriptors to the hard one: each running task holds a few
/// dozen (its sandbox, its proxy's connections), and the usual soft limit of 1,024 would be
/// reached by a busy server long before its hard limit. Sandboxes set their own limit.
fn raise_descriptor_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}
