//! What is swept on a timer: finished tasks and chats past retention (from the database, by
//! any process with a store), and the workspaces of tasks that can no longer run (from this
//! process's disk, by the processes that run tasks).

use std::sync::Arc;
use std::time::Duration;

use deft_agent::Engine;
use deft_core::Timestamp;
use deft_store::Store;
use tokio_util::sync::CancellationToken;

use crate::SchedulerConfig;

/// How long finished tasks and chats are kept after their last activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Days of inactivity after which a finished task or a chat is deleted (`[retention] days`).
    pub days: u32,
    /// How often to look.
    pub every: Duration,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            days: 90,
            every: Duration::from_secs(3600),
        }
    }
}

impl Retention {
    /// At once and then every `every` until `shutdown`, deletes the finished tasks and chats
    /// that have been inactive for `days` (never anything on a forge).
    pub async fn keep(self, store: Store, shutdown: CancellationToken) {
        loop {
            let cutoff = Timestamp::now().plus_millis(-i64::from(self.days) * 86_400_000);
            match store.sweep_inactive(cutoff).await {
                Ok((0, 0)) => {}
                Ok((tasks, chats)) => tracing::info!(
                    tasks,
                    chats,
                    days = self.days,
                    "retention deleted inactive tasks and chats"
                ),
                Err(error) => tracing::error!(error = %error, "retention sweep failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.every) => {}
            }
        }
    }
}

/// At once and then every `workspace_sweep`, the files of tasks that can no longer run are
/// deleted (tasks swept by retention among them), and idle workspaces kept within
/// `idle_workspaces_bytes`.
pub(crate) async fn workspaces(
    engine: Arc<Engine>,
    config: Arc<SchedulerConfig>,
    shutdown: CancellationToken,
) {
    loop {
        let swept = engine.sweep_workspaces(config.idle_workspaces_bytes).await;
        if swept.removed > 0 || swept.evicted > 0 {
            tracing::info!(
                removed = swept.removed,
                evicted = swept.evicted,
                bytes = swept.bytes,
                "gave back task workspaces"
            );
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.workspace_sweep) => {}
        }
    }
}
