//! The task page's log: its steps and cards as the page draws them (`?show=` filters them,
//! `?before=` pages back), the live stream that sends what each new event changed
//! (`/tasks/{id}/log`), and an event's whole output (`/tasks/{id}/events/{seq}`), which a card
//! links to when it shows only the end.

use std::convert::Infallible;

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use deft_core::{Event, EventKind, Task, TaskId};
use futures_util::{Stream, StreamExt as _};
use serde::Deserialize;

use super::log::{Card, Detail};
use super::log_steps::{Change, Group, OPEN_OUTPUT, Show, Walker};
use super::{Chrome, Moment, WebError, WebSession, ansi, render};
use crate::AppState;

/// Events a page of the log reads at once; the newest of them are shown, as many as fit.
const LOG_EVENTS: i64 = 400;
/// Bytes a page's log may weigh, about: the summary above it and the page's chrome take the
/// rest of the 100 KB a page may weigh.
const LOG_BUDGET: usize = 60_000;
/// Characters of one event's output its own page shows.
const OUTPUT_PAGE: usize = 80_000;

/// The log's part of a task page's address.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LogQuery {
    /// Show the log up to this event, instead of its live end.
    pub before: Option<i64>,
    /// Show only one kind of card: `edits`, `commands`, `network` or `errors`.
    pub show: Option<String>,
}

impl LogQuery {
    pub fn show(&self) -> Result<Option<Show>, WebError> {
        match self.show.as_deref().filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(text) => Show::parse(text).map(Some).ok_or_else(|| {
                WebError::page(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "show: the log has no filter `{}`; use show=edits, commands, network or errors, or none for the whole log.",
                        text.chars().take(40).collect::<String>()
                    ),
                )
            }),
        }
    }
}

/// A filter's link above the log.
pub struct FilterLink {
    pub href: String,
    pub label: &'static str,
    pub current: bool,
}

/// The log as the task page draws it.
pub struct LogView {
    pub task: String,
    pub groups: Vec<Group>,
    /// The page of the events before these, when there are some.
    pub earlier: Option<String>,
    /// On an earlier page: the next page, and the live end.
    pub later: Option<String>,
    /// The live end of the log, where new events arrive.
    pub live: bool,
    pub last_seq: i64,
    /// The filter shown (`edits`), or empty.
    pub show: &'static str,
    pub filters: Vec<FilterLink>,
}

impl LogView {
    /// Cards on the page.
    pub fn cards(&self) -> usize {
        self.groups.iter().map(|g| g.cards.len()).sum()
    }
}

fn href(task: &TaskId, before: Option<i64>, show: Option<Show>) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(show) = show {
        query.append_pair("show", show.as_str());
    }
    if let Some(before) = before {
        query.append_pair("before", &before.to_string());
    }
    let query = query.finish();
    let query = if query.is_empty() {
        query
    } else {
        format!("?{query}")
    };
    format!("/tasks/{task}{query}#log-heading")
}

/// The plan's steps, which name the execution steps' groups.
fn plan_steps(task: &Task) -> Vec<String> {
    task.plan
        .as_ref()
        .map(|plan| plan.steps.clone())
        .unwrap_or_default()
}

/// The log of `task` as `query` asks: its live end, or the page before `query.before`.
pub async fn view(app: &AppState, task: &Task, query: &LogQuery) -> Result<LogView, WebError> {
    let show = query.show()?;
    let user = &task.owner;
    let events = match query.before {
        Some(before) => {
            app.store
                .events_after(user, &task.id, (before - LOG_EVENTS).max(0), LOG_EVENTS)
                .await?
        }
        None => app.store.last_events(user, &task.id, LOG_EVENTS).await?,
    };
    let last_seq = events.last().map_or(0, |e| e.seq);
    let mut walker = Walker::new(plan_steps(task));
    for event in &events {
        walker.feed(event);
    }
    if query.before.is_none() {
        walker.set_state(task.state());
    }
    let (groups, first) = walker.view(show, LOG_BUDGET);
    let earlier = first
        .filter(|first| *first > 1)
        .map(|first| href(&task.id, Some(first - 1), show));
    let filters = std::iter::once(None)
        .chain(Show::ALL.into_iter().map(Some))
        .map(|filter| FilterLink {
            href: href(&task.id, query.before, filter),
            label: filter.map_or("All", Show::label),
            current: filter == show,
        })
        .collect();
    Ok(LogView {
        task: task.id.to_string(),
        groups,
        earlier,
        later: query
            .before
            .map(|_| href(&task.id, Some(last_seq + LOG_EVENTS), show)),
        live: query.before.is_none(),
        last_seq,
        show: show.map_or("", Show::as_str),
        filters,
    })
}

/// One card alone, as the live stream sends it.
#[derive(Template)]
#[template(path = "log_entry.html")]
struct OneCard<'a> {
    card: &'a Card,
    group: &'a Group,
    task_id: &'a str,
}

/// A step's heading alone (its cards come as cards), as the live stream sends it.
#[derive(Template)]
#[template(path = "log_group.html")]
struct OneGroup<'a> {
    group: &'a Group,
    task_id: &'a str,
}

/// Where the live log resumes: after the event a reconnecting browser names in
/// `Last-Event-ID`, else after `?after=`, else at the start. A header that is not an event's
/// number is passed over.
#[derive(Debug)]
pub struct ResumeAfter(i64);

#[derive(Debug, Deserialize)]
struct AfterQuery {
    after: Option<i64>,
}

impl<S: Send + Sync> FromRequestParts<S> for ResumeAfter {
    type Rejection = QueryRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, QueryRejection> {
        let Query(query) = Query::<AfterQuery>::from_request_parts(parts, state).await?;
        let after = parts
            .headers
            .get("last-event-id")
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.trim().parse::<i64>().ok())
            .or(query.after)
            .unwrap_or(0);
        Ok(ResumeAfter(after))
    }
}

/// What one event changed, as Server-Sent Events: `group` (a step's heading, new or changed)
/// and `card` (a card, new or completed), the last carrying the event's number as its id.
fn changes(walker: &mut Walker, event: &Event) -> Vec<SseEvent> {
    let task_id = event.task_id.as_str();
    let mut out = Vec::new();
    for change in walker.feed(event) {
        let html = match change {
            Change::Group(index) => {
                walker.settle(index);
                // The heading alone: the page keeps the cards it has.
                let cards = std::mem::take(&mut walker.groups[index].cards);
                let html = OneGroup {
                    group: &walker.groups[index],
                    task_id,
                }
                .render();
                walker.groups[index].cards = cards;
                html.map(|html| ("group", html))
            }
            Change::Card(group, card) => {
                walker.groups[group].cards[card].trim(OPEN_OUTPUT);
                let group = &walker.groups[group];
                let html = OneCard {
                    card: &group.cards[card],
                    group,
                    task_id,
                }
                .render();
                html.map(|html| ("card", html))
            }
        };
        match html {
            Ok((kind, html)) => out.push(SseEvent::default().event(kind).data(html)),
            Err(error) => tracing::warn!(error = %error, "a log card could not be drawn"),
        }
    }
    let id = event.seq.to_string();
    match out.pop() {
        Some(last) => out.push(last.id(id)),
        // Nothing to draw; the browser still learns where it is.
        None => out.push(SseEvent::default().id(id).comment("")),
    }
    out
}

/// The log's changes as Server-Sent Events, each card or heading rendered.
pub async fn live_log(
    State(app): State<AppState>,
    session: WebSession,
    Path(id): Path<TaskId>,
    ResumeAfter(after): ResumeAfter,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, WebError> {
    let task = app.store.task(&session.user.id, &id).await?;
    let user = session.user.id;
    // The events the page drew, so that a new one lands in the step it belongs to.
    let mut walker = Walker::new(plan_steps(&task));
    if after > 0 {
        let seen = app
            .store
            .events_after(&user, &id, (after - LOG_EVENTS).max(0), LOG_EVENTS)
            .await?;
        for event in seen.iter().filter(|e| e.seq <= after) {
            walker.feed(event);
        }
    }
    walker.set_state(task.state());
    let stream = crate::routes::stream::follow(app, user, id, after)
        .map(move |event| {
            let sent = changes(&mut walker, &event);
            forget_settled(&mut walker);
            futures_util::stream::iter(sent.into_iter().map(Ok))
        })
        .flatten();
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A long-open stream keeps only what a later event may still change: the output of a card
/// whose call has its result is dropped once sent.
fn forget_settled(walker: &mut Walker) {
    for group in &mut walker.groups {
        for card in &mut group.cards {
            if !card.pending() && card.question.is_none() {
                card.detail = None;
            }
        }
    }
}

#[derive(Template)]
#[template(path = "log_output.html")]
struct OutputPage {
    chrome: Chrome,
    task: String,
    seq: i64,
    title: String,
    at: Moment,
    html: String,
    cut: usize,
}

/// An event's whole text: a command's output, a new file, a message.
fn whole_text(event: &Event) -> (String, String) {
    let data = &event.data;
    let text = |key: &str| data[key].as_str().unwrap_or_default().to_owned();
    match event.kind {
        EventKind::ToolResult => ("Output".into(), text("content")),
        EventKind::ToolCall if data["name"] == "bash" => (
            "Command".into(),
            data["arguments"]["command"]
                .as_str()
                .unwrap_or_default()
                .into(),
        ),
        EventKind::ToolCall if data["arguments"]["file_text"].is_string() => (
            format!(
                "New file {}",
                data["arguments"]["path"].as_str().unwrap_or_default()
            ),
            data["arguments"]["file_text"]
                .as_str()
                .unwrap_or_default()
                .into(),
        ),
        EventKind::Step if data["output"].is_string() => ("Output".into(), text("output")),
        EventKind::Question => ("Question".into(), text("question")),
        EventKind::UserMessage | EventKind::Error => ("Message".into(), text("message")),
        _ => (
            "Event".into(),
            serde_json::to_string_pretty(data).unwrap_or_default(),
        ),
    }
}

/// `GET /tasks/{id}/events/{seq}`: one event's whole output, for the owner.
pub async fn output(
    State(app): State<AppState>,
    session: WebSession,
    Path((id, seq)): Path<(TaskId, i64)>,
) -> Result<Response, WebError> {
    app.store.task(&session.user.id, &id).await?;
    let event = app
        .store
        .events_after(&session.user.id, &id, seq.saturating_sub(1), 1)
        .await?
        .into_iter()
        .find(|event| event.seq == seq)
        .ok_or_else(|| {
            WebError::page(
                StatusCode::NOT_FOUND,
                format!("This task has no event {seq}; go back to the task's page and follow a link from its log."),
            )
        })?;
    let (title, mut text) = whole_text(&event);
    let total = text.chars().count();
    let cut = total.saturating_sub(OUTPUT_PAGE);
    if cut > 0 {
        text = text.chars().skip(cut).collect();
    }
    render(&OutputPage {
        chrome: session.chrome("tasks"),
        task: id.to_string(),
        seq,
        title,
        at: Moment::new(event.at),
        html: ansi::to_html(&text),
        cut,
    })
}
