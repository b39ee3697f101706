//! The durable queue (SPEC §2): workers claim queued tasks with a lease, renew it while they
//! run, and a lease that runs out puts its task back in the queue.
//!
//! A claim picks, among queued tasks whose owner has fewer than `per_user` tasks running, the
//! one whose owner has the fewest running, then the one queued first: first in, first out per
//! user, and fair across users. On PostgreSQL the candidate row is taken with
//! `FOR UPDATE SKIP LOCKED`, so workers on many machines claim different tasks, and the owner's
//! row is locked while the running tasks are counted, so the limit holds across them. On
//! SQLite, `BEGIN IMMEDIATE` serialises claims.

use deft_core::{EventKind, StepEvent, StepStatus, TaskId, Timestamp, Transition, WorkStep};
use sqlx::Row as _;

use crate::tasks::{Actor, transition_in};
use crate::{Backend, Store, StoreError};

/// How many times a task may lose its worker in a row before deft stops retrying it.
pub const LEASES_LOST_BEFORE_ATTENTION: i64 = 3;

const CANDIDATE: &str = "SELECT t.id, t.user_id FROM tasks t WHERE t.state = 'queued' \
    AND (SELECT COUNT(*) FROM tasks r WHERE r.user_id = t.user_id AND r.state = 'in_progress') < $1 \
    ORDER BY (SELECT COUNT(*) FROM tasks r WHERE r.user_id = t.user_id AND r.state = 'in_progress'), \
    t.queued_at, t.id LIMIT 1";

impl Store {
    /// Claims the next task for `worker` until `expires`, or `None` when nothing may start.
    pub async fn claim_next(
        &self,
        worker: &str,
        expires: Timestamp,
        per_user: i64,
    ) -> Result<Option<TaskId>, StoreError> {
        let mut tx = self.begin_write().await?;
        let sql = match self.backend {
            Backend::Sqlite => CANDIDATE.to_owned(),
            Backend::Postgres => format!("{CANDIDATE} FOR UPDATE OF t SKIP LOCKED"),
        };
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(per_user)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let id = TaskId::from_stored(row.try_get("id")?);
        let owner: String = row.try_get("user_id")?;
        if self.backend == Backend::Postgres {
            // Other workers may be claiming this owner's other tasks right now: count again
            // while holding the owner's row.
            sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
                .bind(&owner)
                .execute(&mut *tx)
                .await?;
            let running: i64 = sqlx::query(
                "SELECT COUNT(*) AS n FROM tasks WHERE user_id = $1 AND state = 'in_progress'",
            )
            .bind(&owner)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
            if running >= per_user {
                return Ok(None);
            }
        }
        let (_, events) = transition_in(
            &mut tx,
            &self.key,
            Actor::Deft,
            &id,
            Transition::Start,
            None,
        )
        .await?;
        sqlx::query("UPDATE tasks SET lease_owner = $2, lease_expires = $3 WHERE id = $1")
            .bind(id.as_str())
            .bind(worker)
            .bind(expires.unix_millis())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        for event in &events {
            self.published(event);
        }
        Ok(Some(id))
    }

    /// Which worker holds a task's lease, if any (for operators and tests).
    pub async fn lease_owner(&self, id: &TaskId) -> Result<Option<String>, StoreError> {
        let row =
            sqlx::query("SELECT lease_owner FROM tasks WHERE id = $1 AND state = 'in_progress'")
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row
            .map(|row| row.try_get::<Option<String>, _>("lease_owner"))
            .transpose()?
            .flatten())
    }

    /// How many times the task lost its worker since its owner last wrote to it (for
    /// operators and tests); at [`LEASES_LOST_BEFORE_ATTENTION`] and one more, it stops.
    pub async fn leases_lost(&self, id: &TaskId) -> Result<i64, StoreError> {
        sqlx::query("SELECT leases_lost FROM tasks WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound { what: "task" })?
            .try_get("leases_lost")
            .map_err(StoreError::from)
    }

    /// Extends `worker`'s lease on a running task; `false` when the lease is no longer its own
    /// (it ran out and the task went back to the queue).
    pub async fn renew_lease(
        &self,
        id: &TaskId,
        worker: &str,
        expires: Timestamp,
    ) -> Result<bool, StoreError> {
        let renewed = sqlx::query(
            "UPDATE tasks SET lease_expires = $3 WHERE id = $1 AND lease_owner = $2 AND state = 'in_progress'",
        )
        .bind(id.as_str())
        .bind(worker)
        .bind(expires.unix_millis())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(renewed == 1)
    }

    /// Puts a task `worker` is running back in the queue because the worker is stopping; the
    /// next worker continues it from its last recorded step. `false` when the task is no
    /// longer the worker's (it finished, waits for its owner, or was cancelled).
    pub async fn release_lease(&self, id: &TaskId, worker: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let held = sqlx::query(
            "UPDATE tasks SET lease_owner = NULL, lease_expires = NULL WHERE id = $1 \
             AND state = 'in_progress' AND lease_owner = $2 RETURNING last_seq",
        )
        .bind(id.as_str())
        .bind(worker)
        .fetch_optional(&mut *tx)
        .await?;
        if held.is_none() {
            return Ok(false);
        }
        let note = (
            EventKind::Step,
            StepEvent::new(WorkStep::Shutdown, StepStatus::Requeued)
                .reason("the worker running the task is stopping")
                .to_data(),
        );
        let (_, events) = transition_in(
            &mut tx,
            &self.key,
            Actor::Deft,
            id,
            Transition::Requeue,
            Some(note),
        )
        .await?;
        tx.commit().await?;
        for event in &events {
            self.published(event);
        }
        Ok(true)
    }

    /// Puts back in the queue every running task whose lease ran out before `now`: its worker
    /// died. A task whose workers died this way [`LEASES_LOST_BEFORE_ATTENTION`] times since
    /// its owner last wrote goes to `needs_attention` instead. Returns the tasks handled.
    pub async fn requeue_expired(&self, now: Timestamp) -> Result<Vec<TaskId>, StoreError> {
        let expired: Vec<TaskId> = sqlx::query(
            "SELECT id FROM tasks WHERE state = 'in_progress' AND lease_expires IS NOT NULL AND lease_expires < $1",
        )
        .bind(now.unix_millis())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| row.try_get::<String, _>("id").map(TaskId::from_stored))
        .collect::<Result<_, _>>()?;
        let mut requeued = Vec::new();
        for id in expired {
            let mut tx = self.begin_write().await?;
            // Read again under the write lock: the worker may have renewed or finished since.
            // A task that takes its worker down every time (it exhausts memory, say) would
            // otherwise go round the workers for ever: `leases_lost` counts the losses since
            // the owner last wrote (a `user_message` event resets it), this one included.
            let lost: Option<i64> = sqlx::query(
                "UPDATE tasks SET lease_owner = NULL, lease_expires = NULL, leases_lost = leases_lost + 1 \
                 WHERE id = $1 AND state = 'in_progress' AND lease_expires < $2 RETURNING leases_lost",
            )
            .bind(id.as_str())
            .bind(now.unix_millis())
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| row.try_get("leases_lost"))
            .transpose()?;
            let Some(lost) = lost else {
                continue;
            };
            let (transition, note) = if lost > LEASES_LOST_BEFORE_ATTENTION {
                let message = format!(
                    "the task's worker stopped {lost} times in a row while running it (it died or stalled); \
                     look at the last events for the cause, then answer to try again"
                );
                (
                    Transition::NeedAttention(deft_core::Attention {
                        kind: deft_core::AttentionKind::Error,
                        message,
                    }),
                    lease_expired(StepEvent::new(WorkStep::Recovery, StepStatus::GivenUp)),
                )
            } else {
                (
                    Transition::Requeue,
                    lease_expired(
                        StepEvent::new(WorkStep::Recovery, StepStatus::Requeued)
                            .reason("the worker running the task stopped renewing its lease"),
                    ),
                )
            };
            let (_, events) = transition_in(
                &mut tx,
                &self.key,
                Actor::Deft,
                &id,
                transition,
                Some((EventKind::Step, note)),
            )
            .await?;
            tx.commit().await?;
            for event in &events {
                self.published(event);
            }
            requeued.push(id);
        }
        Ok(requeued)
    }
}

/// A recovery's event when its cause is a lease that ran out (the migration that made
/// `tasks.leases_lost` counted these in the log).
fn lease_expired(event: StepEvent) -> serde_json::Value {
    StepEvent {
        cause: Some("lease_expired".to_owned()),
        ..event
    }
    .to_data()
}
