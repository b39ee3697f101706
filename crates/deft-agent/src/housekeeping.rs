//! Giving back the disk tasks used: after each run, and in the scheduler's sweep, a task's
//! files go when it can no longer run again, and idle workspaces are kept within a budget
//! (`workspaces::fate` says which is which).

use std::collections::HashSet;

use deft_core::{ForgeKind, PullRequestStatus, TaskId, TaskState};
use deft_forge::LocalBranchState;

use crate::Engine;
use crate::workspaces::{Fate, Found, Workspaces, fate, over_budget};

/// What one sweep did, for the log and `deft doctor`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Tasks whose files were deleted because they can no longer run.
    pub removed: usize,
    /// Idle workspaces given back for the budget (their task clones again if it runs).
    pub evicted: usize,
    /// Bytes every task's files take after the sweep.
    pub bytes: u64,
}

/// The tasks whose runs are going in this process: the sweep never touches their files. A
/// run enters through the gate a sweep holds while it decides on one task, so a task never
/// starts between the sweep's look at its state and the deletion.
#[derive(Debug, Default)]
pub struct ActiveTasks {
    running: std::sync::Mutex<HashSet<TaskId>>,
    gate: tokio::sync::Mutex<()>,
}

/// A run's hold on its task's files, released when dropped.
pub struct ActiveRun<'a> {
    tasks: &'a ActiveTasks,
    id: TaskId,
}

impl ActiveTasks {
    pub async fn enter(&self, id: &TaskId) -> ActiveRun<'_> {
        let _gate = self.gate.lock().await;
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.clone());
        ActiveRun {
            tasks: self,
            id: id.clone(),
        }
    }

    fn is_running(&self, id: &TaskId) -> bool {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(id)
    }
}

impl Drop for ActiveRun<'_> {
    fn drop(&mut self) {
        self.tasks
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl Engine {
    fn task_files(&self) -> Workspaces {
        Workspaces::new(&self.workspaces)
    }

    /// After a run: a task that can no longer run again (cancelled, or completed with every
    /// pull request merged or closed) gives its files back at once.
    pub async fn tidy_workspace(&self, id: &TaskId) {
        let _gate = self.active.gate.lock().await;
        if self.active.is_running(id) {
            return;
        }
        let task = match self.store.task_by_id(id).await {
            Ok(task) => Some(task),
            Err(deft_store::StoreError::NotFound { .. }) => None,
            Err(error) => {
                tracing::warn!(task.id = %id, %error, "cannot read a task to tidy its workspace");
                return;
            }
        };
        if fate(task.as_ref()) == Fate::Remove {
            self.remove_files(id, false).await;
        }
    }

    /// Every task with files here: those that can no longer run lose them; then the idle
    /// ones are given back, least recently changed first, until they fit in `budget` bytes.
    /// Local pull requests are read from their repositories first (merged, or the branch
    /// deleted), as GitHub's are from its webhooks.
    pub async fn sweep_workspaces(&self, budget: u64) -> Swept {
        let files = self.task_files();
        let mut swept = Swept::default();
        let tasks = match files.tasks() {
            Ok(tasks) => tasks,
            Err(error) => {
                tracing::warn!(%error, dir = %files.root().display(), "cannot list the task workspaces");
                return swept;
            }
        };
        let mut idle: Vec<Found> = Vec::new();
        for id in tasks {
            let _gate = self.active.gate.lock().await;
            if self.active.is_running(&id) {
                continue;
            }
            let task = match self.store.task_by_id(&id).await {
                Ok(task) if self.refresh_local_pull_requests(&task).await => {
                    Some(self.store.task_by_id(&id).await.unwrap_or(task))
                }
                Ok(task) => Some(task),
                Err(deft_store::StoreError::NotFound { .. }) => None,
                Err(error) => {
                    tracing::warn!(task.id = %id, %error, "cannot read a task to sweep its workspace");
                    continue;
                }
            };
            match fate(task.as_ref()) {
                Fate::Remove => {
                    if self.remove_files(&id, false).await {
                        swept.removed += 1;
                    }
                }
                Fate::Idle => {
                    // Walking a tree a task filled may take long: off the async threads.
                    let (files, id) = (files.clone(), id.clone());
                    idle.extend(
                        tokio::task::spawn_blocking(move || files.found(&id))
                            .await
                            .ok()
                            .flatten(),
                    );
                }
                Fate::Keep => {}
            }
        }
        for found in over_budget(idle, budget) {
            let _gate = self.active.gate.lock().await;
            // Still idle now that the sweep comes back to it?
            let still_idle = !self.active.is_running(&found.task)
                && self
                    .store
                    .task_by_id(&found.task)
                    .await
                    .is_ok_and(|task| task.state() == TaskState::Completed);
            if still_idle && self.remove_files(&found.task, true).await {
                swept.evicted += 1;
            }
        }
        swept.bytes = tokio::task::spawn_blocking(move || files.total_bytes())
            .await
            .unwrap_or(0);
        swept
    }

    /// Marks the task's open pull requests on the local forge merged or closed when its
    /// repository says so; whether any changed.
    async fn refresh_local_pull_requests(&self, task: &deft_core::Task) -> bool {
        let mut changed = false;
        if task.state() != TaskState::Completed {
            return changed;
        }
        for pull in &task.pull_requests {
            if pull.status != PullRequestStatus::Open {
                continue;
            }
            let Ok(repo) = self.store.repository(&task.owner, pull.repo.as_str()).await else {
                continue;
            };
            if repo.forge != ForgeKind::Local {
                continue;
            }
            let status = match deft_forge::local_branch_state(
                std::path::Path::new(&repo.location),
                &pull.head,
                &pull.base,
            )
            .await
            {
                Ok(LocalBranchState::Open) => continue,
                Ok(LocalBranchState::Merged) => PullRequestStatus::Merged,
                Ok(LocalBranchState::Closed) => PullRequestStatus::Closed,
                Err(error) => {
                    tracing::warn!(task.id = %task.id, %error, "cannot read a local pull request's branch");
                    continue;
                }
            };
            match self
                .store
                .set_pull_request_status(&task.id, &pull.repo, status)
                .await
            {
                Ok(updated) => changed |= updated,
                Err(error) => {
                    tracing::warn!(task.id = %task.id, %error, "cannot record a pull request's state")
                }
            }
        }
        changed
    }

    /// Deletes the task's files off the async threads; whether it did.
    async fn remove_files(&self, id: &TaskId, keep_bases: bool) -> bool {
        let files = self.task_files();
        let task = id.clone();
        match tokio::task::spawn_blocking(move || files.remove(&task, keep_bases)).await {
            Ok(Ok(())) => {
                tracing::info!(task.id = %id, keep_bases, "deleted a task's workspace");
                true
            }
            Ok(Err(error)) => {
                tracing::warn!(task.id = %id, %error, "cannot delete a task's workspace");
                false
            }
            Err(_) => false,
        }
    }
}
