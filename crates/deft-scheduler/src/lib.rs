//! The scheduler of SPEC §2, the part of deft that decides which queued task runs where and
//! for how long: a claim loop that takes tasks from the store's durable queue up to this
//! process's capacity, a lease per run that is renewed while it lasts, a watcher that stops a
//! run its owner cancelled, a drain when the process stops, and the sweeps that give back
//! old tasks and their workspaces.
//!
//! `deft serve` and `deft worker` both run it; they differ only in the settings they pass.
//! Every setting arrives as a value in [`SchedulerConfig`] or [`Retention`]: the scheduler
//! reads no environment variable and prints nothing, so a person's view of it is the binary's.

#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod capacity;
mod dispatch;
mod lease;
mod sweep;

use std::sync::Arc;
use std::time::Duration;

use deft_agent::Engine;
use deft_core::{EventKind, StepEvent, StepStatus, TaskId, Transition, WorkStep};
use deft_store::{Actor, Backend, StoreError};
use tokio_util::sync::CancellationToken;

pub use sweep::Retention;

/// The shortest lease the scheduler takes: it renews a lease every third of its length, and a
/// renewal is a database write.
pub const MIN_LEASE: Duration = Duration::from_millis(100);

/// Tasks of one user running at once when `[limits] concurrent_tasks_per_user` is not set.
pub const DEFAULT_PER_USER: i64 = 10;

/// How one process schedules; [`SchedulerConfig::default`] gives deft's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// The role of this process (`serve`, `worker`), first in the name of each run's lease.
    pub role: String,
    /// Runs going at once in this process; at least 1.
    pub capacity: usize,
    /// Runs of one user going at once, across every process sharing the database; at least 1.
    pub per_user: i64,
    /// How long a claim lasts without renewal: a process that dies loses its tasks after this.
    /// At least [`MIN_LEASE`].
    pub lease: Duration,
    /// How long a stopping scheduler lets a step that is still going finish before cutting
    /// it short.
    pub shutdown_grace: Duration,
    /// How often the workspaces of tasks that can no longer run are looked for.
    pub workspace_sweep: Duration,
    /// The disk the workspaces of idle tasks may take, in bytes.
    pub idle_workspaces_bytes: u64,
}

impl Default for SchedulerConfig {
    fn default() -> SchedulerConfig {
        SchedulerConfig {
            role: "deft".to_owned(),
            capacity: capacity::FLOOR,
            per_user: DEFAULT_PER_USER,
            lease: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            workspace_sweep: Duration::from_secs(60),
            idle_workspaces_bytes: 20 * 1024 * 1024 * 1024,
        }
    }
}

/// Why the scheduler cannot start, or cannot do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// A setting it cannot run with; `setting` is the field of [`SchedulerConfig`].
    #[error("the scheduler's {setting} is {value}; it must be {expected}")]
    Setting {
        setting: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The scheduler of one process, over the engine that runs its tasks.
pub struct Scheduler {
    engine: Arc<Engine>,
    config: Arc<SchedulerConfig>,
    shutdown: CancellationToken,
}

impl Scheduler {
    /// A scheduler that runs until `shutdown` fires, then drains: the engine's runs end at
    /// their next checkpoint, and a step still going after the grace period is cut short.
    pub fn new(
        mut engine: Engine,
        config: SchedulerConfig,
        shutdown: CancellationToken,
    ) -> Result<Scheduler, SchedulerError> {
        check(&config)?;
        engine.drain = shutdown.clone();
        Ok(Scheduler {
            engine: Arc::new(engine),
            config: Arc::new(config),
            shutdown,
        })
    }

    /// Puts back in the queue the tasks a deft that died left running, so that they continue
    /// from their last recorded step; returns them. Only on SQLite, where one process holds
    /// every worker: on PostgreSQL other processes' runs are going, and their leases tell.
    pub async fn recover_abandoned(&self) -> Result<Vec<TaskId>, SchedulerError> {
        let store = &self.engine.store;
        if store.backend() != Backend::Sqlite {
            return Ok(Vec::new());
        }
        let abandoned = store.in_progress().await?;
        for task in &abandoned {
            let note = StepEvent::new(WorkStep::Recovery, StepStatus::Requeued)
                .reason("deft restarted while the task ran");
            let note = (EventKind::Step, note.to_data());
            store
                .transition(Actor::Deft, task, Transition::Requeue, Some(note))
                .await?;
        }
        Ok(abandoned)
    }

    /// Claims and runs tasks, and gives back the workspaces of tasks that can no longer run,
    /// until `shutdown`; returns when every run has drained.
    pub async fn run(self) {
        let sweeper = tokio::spawn(sweep::workspaces(
            self.engine.clone(),
            self.config.clone(),
            self.shutdown.clone(),
        ));
        dispatch::dispatch(self.engine, self.config, self.shutdown).await;
        let _ = sweeper.await;
    }
}

fn check(config: &SchedulerConfig) -> Result<(), SchedulerError> {
    let refuse = |setting, value: String, expected| {
        Err(SchedulerError::Setting {
            setting,
            value,
            expected,
        })
    };
    if config.capacity == 0 {
        return refuse("capacity", "0".into(), "at least 1");
    }
    if config.per_user < 1 {
        return refuse("per_user", config.per_user.to_string(), "at least 1");
    }
    if config.lease < MIN_LEASE {
        return refuse("lease", format!("{:?}", config.lease), "at least 100 ms");
    }
    if config.workspace_sweep.is_zero() {
        return refuse("workspace_sweep", "0".into(), "longer than nothing");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(change: impl FnOnce(&mut SchedulerConfig), expect: &str) {
        let mut config = SchedulerConfig::default();
        change(&mut config);
        let found = match super::check(&config) {
            Ok(()) => "ok".to_owned(),
            Err(error) => error.to_string(),
        };
        assert_eq!(found, expect);
    }

    #[test]
    fn settings_it_cannot_run_with_are_refused_naming_them() {
        check(|_| {}, "ok");
        check(
            |c| c.capacity = 0,
            "the scheduler's capacity is 0; it must be at least 1",
        );
        check(
            |c| c.per_user = 0,
            "the scheduler's per_user is 0; it must be at least 1",
        );
        check(
            |c| c.lease = Duration::from_millis(99),
            "the scheduler's lease is 99ms; it must be at least 100 ms",
        );
        check(|c| c.lease = MIN_LEASE, "ok");
        check(
            |c| c.workspace_sweep = Duration::ZERO,
            "the scheduler's workspace_sweep is 0; it must be longer than nothing",
        );
    }
}
