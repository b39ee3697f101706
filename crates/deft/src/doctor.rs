//! `deft doctor`: checks what deft needs on this machine and says how to fix each gap.

#![allow(clippy::print_stdout, reason = "the report is the command's output")]

use std::process::ExitCode;

use crate::cli::DataArgs;
use crate::env_vars::DEFT_MODEL;
use crate::local;

enum Check {
    Ok(String),
    /// Works, but something a task will need is missing.
    Warn(String),
    /// deft cannot do its job until this is fixed.
    Fail(String),
}

pub async fn run(data: &DataArgs) -> anyhow::Result<ExitCode> {
    let checks = [
        (
            "git",
            program("git", &["--version"], "install it: `apt-get install git`").await,
        ),
        (
            "bubblewrap",
            program(
                "bwrap",
                &["--version"],
                "the sandbox needs it: `apt-get install bubblewrap`",
            )
            .await,
        ),
        ("database", database(data).await),
        ("model", model()),
    ];
    let mut failed = false;
    for (name, check) in checks {
        let (mark, text) = match check {
            Check::Ok(text) => ("ok  ", text),
            Check::Warn(text) => ("warn", text),
            Check::Fail(text) => {
                failed = true;
                ("FAIL", text)
            }
        };
        println!("{mark}  {name:<11} {text}");
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn program(name: &str, args: &[&str], fix: &str) -> Check {
    match tokio::process::Command::new(name).args(args).output().await {
        Ok(output) if output.status.success() => Check::Ok(
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned(),
        ),
        Ok(output) => Check::Fail(format!("`{name}` fails ({}); {fix}", output.status)),
        Err(_) => Check::Fail(format!("`{name}` is not installed; {fix}")),
    }
}

async fn database(data: &DataArgs) -> Check {
    match local::open_store(data).await {
        Ok((dir, store)) => {
            let result = store.ping().await;
            store.close().await;
            match result {
                Ok(()) => Check::Ok(format!(
                    "{:?} database answers (data dir {})",
                    store.backend(),
                    dir.display()
                )),
                Err(error) => Check::Fail(format!("{error}")),
            }
        }
        Err(error) => Check::Fail(format!("{error:#}")),
    }
}

fn model() -> Check {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty());
    if set(DEFT_MODEL) {
        Check::Ok(format!("{DEFT_MODEL} is set"))
    } else if set("ANTHROPIC_API_KEY") {
        Check::Ok("ANTHROPIC_API_KEY is set: anthropic".into())
    } else if set("OPENAI_API_KEY") {
        Check::Ok("OPENAI_API_KEY is set: openai".into())
    } else {
        Check::Warn(format!(
            "no model configured; set {DEFT_MODEL}=PROVIDER/NAME with DEFT_MODEL_API_KEY, or ANTHROPIC_API_KEY or OPENAI_API_KEY"
        ))
    }
}
