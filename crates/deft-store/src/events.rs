//! The append-only event log of each task.
//!
//! An event's number comes from `tasks.last_seq`, bumped in the same transaction that inserts
//! the event: numbers are gap-free (a rolled-back write takes its number with it) and, because
//! the bump locks the task's row until commit, events of one task commit in number order. A
//! reader that asks for "everything after N" therefore never misses one that commits later
//! with a smaller number, which is what lets live streams promise exactly-once delivery.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use deft_core::{Event, EventKind, TaskId, Timestamp, UserId};
use sqlx::Row as _;
use sqlx::any::AnyRow;
use tokio::sync::{broadcast, watch};

use crate::{Store, StoreError, from_json};

/// Tells live readers in this process that a task has new events. It carries only the newest
/// number; readers fetch the events themselves, so a slow reader never makes a writer wait.
#[derive(Clone)]
pub struct EventBus {
    senders: Arc<Mutex<HashMap<TaskId, watch::Sender<i64>>>>,
    /// Counts new tasks and state changes in this process: a task queued, or a slot freed.
    queue: Arc<watch::Sender<u64>>,
    /// Every state change committed in this process, for the notifier: each process tells of
    /// the changes it made, so a change is told once whichever process made it.
    changes: broadcast::Sender<Event>,
}

/// State changes a slow listener may fall behind by before it misses some.
const CHANGES_BUFFERED: usize = 1024;

impl Default for EventBus {
    fn default() -> EventBus {
        EventBus {
            senders: Arc::default(),
            queue: Arc::default(),
            changes: broadcast::channel(CHANGES_BUFFERED).0,
        }
    }
}

/// A worker's view of the queue's changes: waiting returns at once when something changed
/// since it last looked, so a change made while the worker was busy claiming is not missed.
pub struct QueueChanges(watch::Receiver<u64>);

impl QueueChanges {
    /// Forgets the changes seen so far; call before looking at the queue.
    pub fn mark_seen(&mut self) {
        self.0.borrow_and_update();
    }

    /// Waits until the queue changes in this process or `poll` passes, which is how changes
    /// made by other processes (on PostgreSQL) are seen.
    pub async fn wait(&mut self, poll: std::time::Duration) {
        let _ = tokio::time::timeout(poll, self.0.changed()).await;
    }
}

impl EventBus {
    /// A receiver whose value changes whenever this process commits an event of `task`.
    pub fn subscribe(&self, task: &TaskId) -> watch::Receiver<i64> {
        let mut senders = self
            .senders
            .lock()
            .expect("event bus lock is never held across a panic");
        senders
            .entry(task.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Called by a subscriber about to drop its receiver: forgets the task when that receiver
    /// is the last, so that tasks streamed once do not stay in the map.
    pub fn release(&self, task: &TaskId) {
        let mut senders = self
            .senders
            .lock()
            .expect("event bus lock is never held across a panic");
        if senders
            .get(task)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            senders.remove(task);
        }
    }

    /// Follows the queue's changes in this process (for idle workers).
    pub fn queue_changes(&self) -> QueueChanges {
        QueueChanges(self.queue.subscribe())
    }

    /// The `state_changed` events this process commits from now on (redacted, as stored). A
    /// listener that falls [`CHANGES_BUFFERED`] behind is told how many it missed.
    pub fn state_changes(&self) -> broadcast::Receiver<Event> {
        self.changes.subscribe()
    }

    /// How many tasks have live subscribers (for tests and metrics).
    pub fn watched_tasks(&self) -> usize {
        self.senders
            .lock()
            .expect("event bus lock is never held across a panic")
            .len()
    }

    fn published(&self, task: &TaskId, seq: i64) {
        let mut senders = self
            .senders
            .lock()
            .expect("event bus lock is never held across a panic");
        if let Some(sender) = senders.get(task) {
            if sender.receiver_count() == 0 {
                senders.remove(task);
            } else {
                sender.send_replace(seq);
            }
        }
    }
}

pub(crate) fn event_from_row(row: &AnyRow) -> Result<Event, StoreError> {
    let kind: String = row.try_get("kind")?;
    let data: String = row.try_get("data")?;
    Ok(Event {
        seq: row.try_get("seq")?,
        task_id: TaskId::from_stored(row.try_get("task_id")?),
        at: Timestamp::from_unix_millis(row.try_get("at")?),
        kind: EventKind::parse(&kind).ok_or_else(|| StoreError::Corrupt {
            what: format!("event kind `{kind}`"),
        })?,
        data: from_json(&data, "event data")?,
    })
}

/// Appends one event inside the caller's transaction. The caller publishes it after commit.
pub(crate) async fn append_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    key: &crate::settings::Keyring,
    task: &TaskId,
    kind: EventKind,
    data: serde_json::Value,
    at: Timestamp,
) -> Result<Event, StoreError> {
    let change = RowChange::default();
    Ok(append_changing_in(tx, key, task, (kind, data, at), change)
        .await?
        .0)
}

/// What else the event's own update of its task's row changes: one statement rather than two
/// for the writes that go with an event (a run's progress, a model call's tokens).
#[derive(Debug, Default)]
pub(crate) struct RowChange {
    pub progress: Option<String>,
    pub usage: deft_core::Usage,
}

/// [`append_in`], changing the task's row by `change` in the same statement; the event, and
/// the task's owner.
pub(crate) async fn append_changing_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    key: &crate::settings::Keyring,
    task: &TaskId,
    (kind, data, at): (EventKind, serde_json::Value, Timestamp),
    change: RowChange,
) -> Result<(Event, UserId), StoreError> {
    // The owner writing to the task gives it a fresh count of lost leases (`queue.rs`).
    let owner_wrote = i64::from(kind == EventKind::UserMessage);
    let row = sqlx::query(
        "UPDATE tasks SET last_seq = last_seq + 1, updated_at = $2, \
         leases_lost = CASE WHEN $3 = 1 THEN 0 ELSE leases_lost END, \
         progress = COALESCE($4, progress), input_tokens = input_tokens + $5, \
         output_tokens = output_tokens + $6, cached_tokens = cached_tokens + $7 WHERE id = $1 \
         RETURNING last_seq, user_id, \
         (SELECT secrets_rev FROM users WHERE users.id = tasks.user_id) AS secrets_rev",
    )
    .bind(task.as_str())
    .bind(at.unix_millis())
    .bind(owner_wrote)
    .bind(change.progress)
    .bind(change.usage.input_tokens)
    .bind(change.usage.output_tokens)
    .bind(change.usage.cached_tokens)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound { what: "task" })?;
    let seq: i64 = row.try_get("last_seq")?;
    let owner = UserId::from_stored(row.try_get("user_id")?);
    let secrets_rev: i64 = row.try_get("secrets_rev")?;
    // Whatever writes an event, the owner's secret values never reach the log (SPEC §3).
    let data = key
        .redactor_in(tx, &owner, secrets_rev)
        .await?
        .redact_json(&data);
    sqlx::query("INSERT INTO events (task_id, seq, at, kind, data) VALUES ($1, $2, $3, $4, $5)")
        .bind(task.as_str())
        .bind(seq)
        .bind(at.unix_millis())
        .bind(kind.as_str())
        .bind(data.to_string())
        .execute(&mut **tx)
        .await?;
    let event = Event {
        seq,
        task_id: task.clone(),
        at,
        kind,
        data,
    };
    Ok((event, owner))
}

impl Store {
    /// Appends an event to a task's log on behalf of deft itself (the agent, the scheduler).
    pub async fn append_event(
        &self,
        task: &TaskId,
        kind: EventKind,
        data: serde_json::Value,
    ) -> Result<Event, StoreError> {
        let tx = self.begin_write().await?;
        self.commit_with_event(tx, task, kind, data).await
    }

    /// Appends one event at the end of the write `tx`, commits, and wakes the task's
    /// watchers: how a write that logs one event ends.
    pub(crate) async fn commit_with_event(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Any>,
        task: &TaskId,
        kind: EventKind,
        data: serde_json::Value,
    ) -> Result<Event, StoreError> {
        let event = append_in(&mut tx, &self.key, task, kind, data, Timestamp::now()).await?;
        tx.commit().await?;
        self.published(&event);
        Ok(event)
    }

    pub(crate) fn published(&self, event: &Event) {
        self.events.published(&event.task_id, event.seq);
        if event.kind == EventKind::StateChanged {
            let to = event.data["to"].as_str().unwrap_or("unknown").to_owned();
            metrics::counter!("deft_task_state_changes_total", "to" => to).increment(1);
            // No listener (no notifier in this process) is not an error.
            let _ = self.events.changes.send(event.clone());
        }
        if matches!(event.kind, EventKind::StateChanged | EventKind::TaskCreated) {
            self.events.queue.send_modify(|changes| *changes += 1);
        }
    }

    /// Up to `limit` events of the user's task numbered after `after`, in order. An unknown
    /// task, or another user's, has no events: check the task exists to tell the two apart.
    pub async fn events_after(
        &self,
        user: &UserId,
        task: &TaskId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT e.task_id, e.seq, e.at, e.kind, e.data FROM events e \
             JOIN tasks t ON t.id = e.task_id \
             WHERE t.user_id = $1 AND e.task_id = $2 AND e.seq > $3 ORDER BY e.seq LIMIT $4",
        )
        .bind(user.as_str())
        .bind(task.as_str())
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// The questions the task has put to its owner, oldest first: what was already asked is
    /// not asked again.
    pub async fn questions_asked(&self, task: &TaskId) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT e.task_id, e.seq, e.at, e.kind, e.data FROM events e \
             WHERE e.task_id = $1 AND e.kind = $2 ORDER BY e.seq",
        )
        .bind(task.as_str())
        .bind(EventKind::Question.as_str())
        .fetch_all(&self.pool)
        .await?;
        let events = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(events
            .iter()
            .filter_map(|event| event.data["question"].as_str().map(str::to_owned))
            .collect())
    }

    /// The last `limit` events of the user's task, in order: what a page shows of a long log.
    pub async fn last_events(
        &self,
        user: &UserId,
        task: &TaskId,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT e.task_id, e.seq, e.at, e.kind, e.data FROM events e \
             JOIN tasks t ON t.id = e.task_id \
             WHERE t.user_id = $1 AND e.task_id = $2 ORDER BY e.seq DESC LIMIT $3",
        )
        .bind(user.as_str())
        .bind(task.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut events = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        events.reverse();
        Ok(events)
    }
}

impl Store {
    /// What the owner said to the task after event `after` (answers, feedback, steering), and
    /// nothing else of its log, with the number of the task's last event: what the engine
    /// needs to hear, and where to start next time, so that no event is read twice.
    pub async fn owner_messages_after(
        &self,
        task: &TaskId,
        after: i64,
    ) -> Result<(Vec<Event>, i64), StoreError> {
        // One statement, asked each turn: the task's last number, with the owner's messages
        // after `after` when there are any.
        let rows = sqlx::query(
            "SELECT t.last_seq, e.task_id, e.seq, e.at, e.kind, e.data FROM tasks t \
             LEFT JOIN events e ON e.task_id = t.id AND e.seq > $2 AND e.kind = $3 \
             WHERE t.id = $1 ORDER BY e.seq",
        )
        .bind(task.as_str())
        .bind(after)
        .bind(EventKind::UserMessage.as_str())
        .fetch_all(&self.pool)
        .await?;
        let first = rows.first().ok_or(StoreError::NotFound { what: "task" })?;
        let last: i64 = first.try_get("last_seq")?;
        let rows: Vec<_> = rows
            .iter()
            .filter(|row| {
                row.try_get::<Option<i64>, _>("seq")
                    .ok()
                    .flatten()
                    .is_some()
            })
            .collect();
        let events = rows
            .iter()
            .map(|row| event_from_row(row))
            .collect::<Result<_, _>>()?;
        Ok((events, last))
    }
}
