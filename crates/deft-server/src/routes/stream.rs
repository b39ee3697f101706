//! `GET /tasks/{id}/events/stream`: the event log as Server-Sent Events, live.
//!
//! The stream keeps one number, the last event sent, and only ever asks the store for events
//! after it. The store numbers events without gaps and commits them in number order, so a
//! reader that connects while events are being written, or reconnects with `Last-Event-ID`,
//! receives every event exactly once, in order. A write in this process wakes the stream at
//! once; a poll catches writes by other processes.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use deft_core::{Event, TaskId, UserId};
use futures_util::{Stream, StreamExt as _};
use serde::Deserialize;
use tokio::sync::watch;

use crate::auth::Caller;
use crate::extract::{ApiPath, ApiQuery};
use crate::{ApiError, AppState, views};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    after: Option<i64>,
}

pub async fn events(
    Caller { app, user }: Caller,
    ApiPath(task): ApiPath<TaskId>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    app.store.task(&user.id, &task).await?;
    // A reconnecting browser sends the last id it saw; it wins over the query.
    let after = match headers.get("last-event-id") {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse::<i64>().ok())
            .ok_or_else(|| ApiError::field("Last-Event-ID", "must be the number of an event"))?,
        None => query.after.unwrap_or(0),
    };
    Ok(live(app, user.id, task, after, |event, sse| {
        sse.data(views::event(event).to_string())
    }))
}

/// [`follow`] as Server-Sent Events, kept alive: `render` fills each in, given it with the
/// event's number as its id, which a reconnecting client sends back as `Last-Event-ID`.
pub(crate) fn live(
    app: AppState,
    user: UserId,
    task: TaskId,
    after: i64,
    render: impl Fn(&Event, SseEvent) -> SseEvent + Send + 'static,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let stream = follow(app, user, task, after).map(move |event| {
        Ok(render(
            &event,
            SseEvent::default().id(event.seq.to_string()),
        ))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The task's events after `after`, then each new one as it is written, until the server
/// stops. The caller has checked that `user` owns `task`.
pub(crate) fn follow(
    app: AppState,
    user: UserId,
    task: TaskId,
    after: i64,
) -> impl Stream<Item = Event> {
    let wake = app.store.events().subscribe(&task);
    let reader = Reader {
        app,
        user,
        task,
        after,
        pending: VecDeque::new(),
        wake,
    };
    futures_util::stream::unfold(reader, |mut reader| async move {
        let event = reader.next().await?;
        Some((event, reader))
    })
}

/// Events a [`Reader`] reads from the store at a time.
const BATCH: i64 = 500;

struct Reader {
    app: AppState,
    user: UserId,
    task: TaskId,
    after: i64,
    pending: VecDeque<Event>,
    wake: watch::Receiver<i64>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.app.store.events().release(&self.task);
    }
}

impl Reader {
    /// The next event after the last one sent, waiting for it if need be; `None` ends the
    /// stream (the server is stopping, or the store failed and the client should reconnect).
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.after = event.seq;
                return Some(event);
            }
            // Mark the current value seen before reading, so a write that lands after the
            // read still wakes the wait below.
            self.wake.borrow_and_update();
            match self
                .app
                .store
                .events_after(&self.user, &self.task, self.after, BATCH)
                .await
            {
                Ok(events) if !events.is_empty() => {
                    self.pending.extend(events);
                    continue;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(task.id = %self.task, error = %error, "event stream read failed");
                    return None;
                }
            }
            tokio::select! {
                _ = self.app.shutdown.cancelled() => return None,
                woke = self.wake.changed() => {
                    // The bus never drops a sender that has receivers; if it did, poll.
                    if woke.is_err() {
                        tokio::time::sleep(self.app.stream_poll).await;
                    }
                }
                _ = tokio::time::sleep(self.app.stream_poll) => {}
            }
        }
    }
}
