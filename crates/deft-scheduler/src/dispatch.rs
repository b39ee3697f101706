//! The claim loop and one claimed task's run: whenever a slot is free, the next task is
//! claimed (first in, first out per user, fair across users, at most `per_user` running per
//! user) and run beside the others, so the number running follows demand up to the
//! process's capacity. An idle loop waits on the store's state-change signal, with a short
//! poll for changes other processes make.

use std::sync::Arc;
use std::time::Duration;

use deft_agent::Engine;
use deft_core::{TaskId, TaskState, Timestamp};
use deft_store::Store;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::SchedulerConfig;
use crate::lease::{keep_lease, lease_expiry, worker_name};

/// How often an idle loop looks at the queue for tasks other processes queued or put back.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// How often a run's watcher looks for a cancel another process wrote.
const CANCEL_POLL: Duration = Duration::from_millis(250);

/// Claims and runs until `shutdown`, then waits for every run to drain. Expired leases (their
/// process died) are put back before each claim.
pub(crate) async fn dispatch(
    engine: Arc<Engine>,
    config: Arc<SchedulerConfig>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(config.capacity));
    let mut runs = JoinSet::new();
    let mut changes = engine.store.events().queue_changes();
    let mut claims: u64 = 0;
    loop {
        while runs.try_join_next().is_some() {}
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        if shutdown.is_cancelled() {
            break;
        }
        changes.mark_seen();
        if let Err(error) = engine.store.requeue_expired(Timestamp::now()).await {
            tracing::error!(error = %error, "cannot requeue expired leases");
        }
        let name = worker_name(&config.role, claims);
        let claimed = match engine
            .store
            .claim_next(&name, lease_expiry(config.lease), config.per_user)
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::error!(error = %error, "cannot read the queue");
                None
            }
        };
        let Some(task) = claimed else {
            drop(slot);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = changes.wait(IDLE_POLL) => continue,
            }
        };
        claims += 1;
        let run = Run {
            engine: engine.clone(),
            config: config.clone(),
            task,
            worker: name,
            shutdown: shutdown.clone(),
        };
        runs.spawn(run.go(slot));
    }
    while runs.join_next().await.is_some() {}
}

/// One claimed task, run under the lease `worker` names.
struct Run {
    engine: Arc<Engine>,
    config: Arc<SchedulerConfig>,
    task: TaskId,
    worker: String,
    shutdown: CancellationToken,
}

impl Run {
    /// Runs the task, holding its slot until it ends: the lease kept alive, a cancel watched
    /// for, and on a stop the task handed back at once.
    async fn go(self, _slot: OwnedSemaphorePermit) {
        let Run {
            engine,
            config,
            task,
            worker,
            shutdown,
        } = self;
        match engine.hold_for_weekly_limit(&task).await {
            Ok(Some(_)) => return,
            Ok(None) => {}
            Err(error) => {
                tracing::error!(task.id = %task, error = %error, "cannot check the weekly limit");
                return;
            }
        }
        tracing::info!(task.id = %task, worker = %worker, "running task");
        // Stopping drains the run (it ends at its next checkpoint); only a step still going
        // after the grace period is cut short.
        let cancel = CancellationToken::new();
        let hard_stop = tokio::spawn({
            let (shutdown, cancel, grace) =
                (shutdown.clone(), cancel.clone(), config.shutdown_grace);
            async move {
                shutdown.cancelled().await;
                tokio::time::sleep(grace).await;
                cancel.cancel();
            }
        });
        let watcher = tokio::spawn(stop_when_cancelled(
            engine.store.clone(),
            task.clone(),
            cancel.clone(),
        ));
        let heartbeat = tokio::spawn(keep_lease(
            engine.store.clone(),
            task.clone(),
            worker.clone(),
            config.lease,
            cancel.clone(),
        ));
        if let Err(error) = engine.run(&task, &cancel).await {
            tracing::error!(task.id = %task, error = %error, "the run failed");
        }
        watcher.abort();
        heartbeat.abort();
        hard_stop.abort();
        if shutdown.is_cancelled() {
            // Stopping: hand the task back now rather than when the lease runs out, so that
            // another worker (or this deft, restarted) continues it from its last step.
            match engine.store.release_lease(&task, &worker).await {
                Ok(true) => tracing::info!(task.id = %task, "put the task back in the queue"),
                Ok(false) => {}
                Err(error) => {
                    tracing::error!(task.id = %task, error = %error, "cannot put the task back")
                }
            }
        }
        // A task that can no longer run again gives its workspace back at once.
        engine.tidy_workspace(&task).await;
    }
}

/// Cancels a run as soon as its task is cancelled: the model call in flight is dropped and
/// the sandboxed command killed with its children.
async fn stop_when_cancelled(store: Store, task: TaskId, cancel: CancellationToken) {
    let mut wake = store.events().subscribe(&task);
    loop {
        wake.borrow_and_update();
        if store
            .task_by_id(&task)
            .await
            .is_ok_and(|t| t.state() == TaskState::Cancelled)
        {
            cancel.cancel();
            return;
        }
        tokio::select! {
            _ = wake.changed() => {}
            _ = tokio::time::sleep(CANCEL_POLL) => {}
        }
    }
}
