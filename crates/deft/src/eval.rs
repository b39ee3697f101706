//! `deft eval SUITE`: runs each task of a suite (docs/EVALUATION.md) through the same engine
//! and model as `deft run`, checks each task's result in a sandbox, and reports per task and in
//! total: solved or not, how the task ended, wall time, model requests and tokens.
//!
//! A task: a fresh directory where the suite's `setup.sh` makes the repository (the suite is
//! the operator's, trusted, so it runs on the host); the task queued on it and run to its end;
//! then, when it completed, its branch checked by `check.rs`, which never lets the host run or
//! read what the task wrote. A task that completes without its check passing is not solved.

mod check;
mod report;
mod suite;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use deft_agent::{Engine, RunOutcome};
use deft_core::{AttentionKind, EventKind, TaskId, Timestamp, UserId};
use deft_sandbox::HostSupport;
use deft_sandbox::bwrap::BwrapBackend;
use deft_store::Store;
use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;

use self::check::Checked;
use self::report::{Report, TaskReport, Totals};
use self::suite::{Suite, SuiteTask};
use crate::cli::{DataArgs, ModelArgs};
use crate::{config, local, run, serve};

/// How long a task's `setup.sh` may run.
const SETUP_TIMEOUT: Duration = Duration::from_secs(300);

/// What `deft eval` is given.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// The suite: a directory with a directory per task (setup.sh, task.md, check.sh)
    pub suite: PathBuf,
    /// Tasks run at once
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: u16,
    /// Write the report as JSON to FILE (its shape: docs/EVALUATION.md)
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Show what changed against an earlier report (from `--json`)
    #[arg(long, value_name = "FILE")]
    pub compare: Option<PathBuf>,
    /// Run only this task (repeatable)
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
    /// Keep everything here (a new or empty directory): the data dir with every task's
    /// events, each task's repository, its setup output and event log [default: a temporary
    /// directory, removed at the end]
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Everything a task's run shares with the others.
struct Bench {
    suite: Suite,
    store: Store,
    owner: UserId,
    engine: Engine,
    checks: BwrapBackend,
    tasks_dir: PathBuf,
    cancel: CancellationToken,
}

#[allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the report on standard output, the progress on standard error"
)]
pub async fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    serve::init_logging("warn")?;
    crate::tuning::Tuning::load()?;
    let suite = suite::load(&args.suite, &args.only)?;
    let earlier = args.compare.as_deref().map(Report::read).transpose()?;
    // The model and the config file are found as `deft run` finds them.
    let home = std::env::var_os(crate::env_vars::DEFT_HOME).map(PathBuf::from);
    let config = config::load(
        args.model.config.as_deref(),
        &local::data_dir(home.as_deref())?,
    )?;
    let models = config::models(&args.model, &config)
        .await
        .context("no model to evaluate")?;
    let model = models.for_role(deft_llm::ModelRole::Executor).label();

    let (_temporary, work) = work_dir(args.work_dir.as_deref())?;
    let data = DataArgs {
        data_dir: Some(work.join("data")),
        database_url: None,
    };
    let (dir, store) = local::open_store(&data).await?;
    let owner = run::local_admin(&store, &dir).await?.id;
    let engine = run::engine(&store, &dir, &models, &config, None, 0).await?;
    let helper = std::env::current_exe().context("cannot find deft's own executable")?;
    let checks = BwrapBackend::new(HostSupport::probe().await, helper)?.with_pool(0);
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            stop.cancel();
        }
    });
    let tasks_dir = work.join("tasks");
    fs_err::create_dir_all(&tasks_dir)?;
    let bench = Bench {
        suite,
        store,
        owner,
        engine,
        checks,
        tasks_dir,
        cancel,
    };
    eprintln!(
        "eval: {} tasks of {} with {model}, {} at once",
        bench.suite.tasks.len(),
        bench.suite.dir.display(),
        args.parallel
    );
    let started_at = Timestamp::now();
    let mut tasks: Vec<(usize, TaskReport)> =
        futures_util::stream::iter(bench.suite.tasks.iter().enumerate())
            .map(|(index, task)| {
                let bench = &bench;
                async move {
                    let report = bench.run_task(task).await;
                    eprintln!(
                        "eval: {}: {} ({}{}) in {:.1} s",
                        task.name,
                        if report.solved {
                            "solved"
                        } else {
                            "not solved"
                        },
                        report.state,
                        match report.check.as_str() {
                            "not_run" => String::new(),
                            check => format!(", check {check}"),
                        },
                        report.wall_ms as f64 / 1000.0
                    );
                    (index, report)
                }
            })
            .buffer_unordered(usize::from(args.parallel))
            .collect()
            .await;
    tasks.sort_by_key(|(index, _)| *index);
    let tasks: Vec<TaskReport> = tasks.into_iter().map(|(_, report)| report).collect();
    let report = Report {
        version: report::VERSION,
        runner: "deft".into(),
        model,
        suite: args.suite.display().to_string(),
        started_at_unix_ms: started_at.unix_millis(),
        totals: Totals::of(&tasks),
        tasks,
    };
    bench.store.close().await;
    print!("{}", report.table());
    if let (Some(earlier), Some(path)) = (&earlier, &args.compare) {
        println!();
        print!("{}", report.compare(earlier, path));
    }
    if let Some(path) = &args.json {
        report.write(path)?;
        eprintln!("eval: the report is in {}", path.display());
    }
    if args.work_dir.is_some() {
        eprintln!(
            "eval: each task's repository, setup output and event log are in {}",
            work.join("tasks").display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The directory everything goes in: the one given (new or empty), else a temporary one,
/// whose guard removes it at the end.
fn work_dir(given: Option<&Path>) -> anyhow::Result<(Option<tempfile::TempDir>, PathBuf)> {
    let Some(dir) = given else {
        let temporary = tempfile::Builder::new()
            .prefix("deft-eval-")
            .tempdir()
            .context("cannot make a temporary directory; give one with `--work-dir DIR`")?;
        let path = temporary.path().to_owned();
        return Ok((Some(temporary), path));
    };
    match fs_err::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "--work-dir {}: not empty; give a new or empty directory (an earlier run's is kept as it was)",
                    dir.display()
                );
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            fs_err::create_dir_all(dir).context("--work-dir: give a writable directory")?;
        }
        Err(error) => return Err(error).context("--work-dir: give a new or empty directory"),
    }
    Ok((None, fs_err::canonicalize(dir)?))
}

/// How a task's run ended, before its check.
struct Ending {
    state: &'static str,
    reason: Option<String>,
    question: bool,
    task: Option<TaskId>,
}

impl Ending {
    fn failed(reason: String) -> Ending {
        Ending {
            state: "failed",
            reason: Some(reason),
            question: false,
            task: None,
        }
    }
}

impl Bench {
    async fn run_task(&self, task: &SuiteTask) -> TaskReport {
        let dir = self.tasks_dir.join(&task.name);
        let repo = dir.join(&task.name);
        let started = Instant::now();
        let ending = match self.setup(task, &dir, &repo).await {
            Ok(()) => self.engine_run(task, &dir, &repo).await,
            Err(error) => Ending::failed(format!("{error:#}")),
        };
        let wall = started.elapsed();
        let (requests, usage) = match &ending.task {
            Some(id) => self.usage(id).await,
            None => (0, deft_core::Usage::default()),
        };
        let checked = match (&ending.task, ending.state) {
            (Some(id), "completed") => Some(self.check(task, id, &dir, &repo).await),
            _ => None,
        };
        let solved = match &checked {
            Some(checked) => matches!(checked, Checked::Passed(_)),
            None => ending.question && task.settings.expect_question,
        };
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        TaskReport {
            name: task.name.clone(),
            solved,
            state: ending.state.to_owned(),
            reason: ending.reason,
            check: checked.as_ref().map_or("not_run", Checked::word).to_owned(),
            check_output: checked.as_ref().map(|c| c.output().to_owned()),
            wall_ms: u64::try_from(wall.as_millis()).unwrap_or(u64::MAX),
            requests,
            prompt_tokens: count(usage.input_tokens),
            completion_tokens: count(usage.output_tokens),
            cached_tokens: count(usage.cached_tokens),
        }
    }

    /// Runs the suite's `setup.sh` in `repo`, a new empty directory, its output kept in
    /// `dir/setup.log`.
    async fn setup(&self, task: &SuiteTask, dir: &Path, repo: &Path) -> anyhow::Result<()> {
        fs_err::create_dir_all(repo)?;
        let log_path = dir.join("setup.log");
        let log = fs_err::File::create(&log_path)?;
        let mut command = tokio::process::Command::new("/bin/sh");
        command
            .arg(task.file("setup.sh"))
            .current_dir(repo)
            .env("GIT_AUTHOR_NAME", "deft eval")
            .env("GIT_AUTHOR_EMAIL", "eval@deft.invalid")
            .env("GIT_COMMITTER_NAME", "deft eval")
            .env("GIT_COMMITTER_EMAIL", "eval@deft.invalid")
            .stdin(std::process::Stdio::null())
            .stdout(log.file().try_clone()?)
            .stderr(log.into_parts().0)
            .kill_on_drop(true);
        let status = tokio::time::timeout(SETUP_TIMEOUT, command.status())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "{}: still running after {} s",
                    task.file("setup.sh").display(),
                    SETUP_TIMEOUT.as_secs()
                )
            })?
            .context("cannot start /bin/sh for setup.sh")?;
        if !status.success() {
            let output = fs_err::read_to_string(&log_path).unwrap_or_default();
            bail!(
                "{} exited with {status}: {}",
                task.file("setup.sh").display(),
                output.lines().last().unwrap_or("(no output)")
            );
        }
        let made = deft_forge::inspect_local(&repo.to_string_lossy())
            .await
            .map_err(anyhow::Error::from);
        made.with_context(|| {
            format!(
                "{} must make a git repository with a commit in the directory it runs in",
                task.file("setup.sh").display()
            )
        })?;
        Ok(())
    }

    /// Queues the task on `repo` and runs it to its end or its time limit, its events
    /// written to `dir/events.log` as they come.
    async fn engine_run(&self, task: &SuiteTask, dir: &Path, repo: &Path) -> Ending {
        let path = repo.to_string_lossy().into_owned();
        let queued =
            run::queue_task(&self.store, &self.owner, &[path], &task.description, false).await;
        let queued = match queued {
            Ok(queued) => queued,
            Err(error) => return Ending::failed(format!("{error:#}")),
        };
        let log = match fs_err::File::create(dir.join("events.log")) {
            Ok(log) => log,
            Err(error) => return Ending::failed(error.to_string()),
        };
        let logging = CancellationToken::new();
        let logger = tokio::spawn(run::write_events(
            self.store.clone(),
            self.owner.clone(),
            queued.id.clone(),
            logging.clone(),
            std::io::BufWriter::new(log),
        ));
        let cancel = self.cancel.child_token();
        let limit = task.settings.timeout();
        // At its time limit the run is cancelled, and ends at its next await.
        let timer = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                tokio::time::sleep(limit).await;
                cancel.cancel();
            })
        };
        let outcome = run::run_task(&self.engine, &queued.id, &cancel).await;
        timer.abort();
        logging.cancel();
        let _ = logger.await;
        let mut ending = match outcome {
            Ok(RunOutcome::Completed) => Ending {
                state: "completed",
                reason: None,
                question: false,
                task: None,
            },
            Ok(RunOutcome::NeedsAttention(attention)) => Ending {
                state: "needs_attention",
                reason: Some(format!(
                    "{}: {}",
                    attention.kind.as_str(),
                    attention.message.lines().next().unwrap_or_default()
                )),
                question: attention.kind == AttentionKind::Question,
                task: None,
            },
            Ok(RunOutcome::Cancelled) if self.cancel.is_cancelled() => Ending {
                state: "cancelled",
                reason: Some("interrupted".into()),
                question: false,
                task: None,
            },
            Ok(RunOutcome::Cancelled) => Ending {
                state: "cancelled",
                reason: Some(format!(
                    "it ran past its time limit of {} s",
                    limit.as_secs()
                )),
                question: false,
                task: None,
            },
            Err(error) => Ending::failed(format!("{error:#}")),
        };
        ending.task = Some(queued.id);
        ending
    }

    /// The model requests the task made (its `model_call` events) and the tokens the store
    /// recorded for it.
    async fn usage(&self, id: &TaskId) -> (u64, deft_core::Usage) {
        let usage = match self.store.task_by_id(id).await {
            Ok(task) => task.usage,
            Err(_) => deft_core::Usage::default(),
        };
        let (mut requests, mut last) = (0, 0);
        while let Ok(events) = self.store.events_after(&self.owner, id, last, 1000).await {
            let Some(end) = events.last() else { break };
            last = end.seq;
            requests += events
                .iter()
                .filter(|event| event.kind == EventKind::ModelCall)
                .count() as u64;
        }
        (requests, usage)
    }

    /// The check of a completed task, on the branch it pushed to `repo`.
    async fn check(&self, task: &SuiteTask, id: &TaskId, dir: &Path, repo: &Path) -> Checked {
        let branch = match self.store.task_by_id(id).await {
            Ok(found) => found.pull_requests.first().map(|pr| pr.head.clone()),
            Err(error) => return Checked::Error(error.to_string()),
        };
        let Some(branch) = branch else {
            return Checked::Error("the task completed without a branch".into());
        };
        check::check(&self.checks, task, repo, &branch, &dir.join("check")).await
    }
}
