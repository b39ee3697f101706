//! The task list and a task's page: state and why, plan with progress, pull requests with
//! their diffs, the controls its state allows, and the live log.

use std::convert::Infallible;

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use deft_core::{AttentionKind, EventKind, Task, TaskId, TaskState, Transition};
use deft_store::{Actor, TaskFilter};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::json;

use super::log::{self, Detail, LogEntry, OneEntry};
use super::{Chrome, WebError, WebForm, WebSession, render, state_label, when};
use crate::AppState;
use crate::views::{RepoNames, repo_names};

/// A task as a row of the list.
pub struct Row {
    pub id: String,
    pub title: String,
    pub state: &'static str,
    pub state_label: &'static str,
    pub repos: String,
    pub updated: String,
}

/// A filter link above the list.
pub struct Filter {
    pub href: String,
    pub label: &'static str,
    pub current: bool,
}

#[derive(Template)]
#[template(path = "tasks.html")]
struct ListPage {
    chrome: Chrome,
    filters: Vec<Filter>,
    rows: Vec<Row>,
    next: Option<String>,
    empty_note: &'static str,
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    state: Option<String>,
    before: Option<TaskId>,
}

fn title(description: &str) -> String {
    let line = description
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    if line.chars().count() > 120 {
        format!("{}…", line.chars().take(120).collect::<String>())
    } else {
        line.to_owned()
    }
}

fn repo_list(task: &Task, names: &RepoNames) -> String {
    task.repos
        .iter()
        .map(|id| names.get(id).cloned().unwrap_or_else(|| id.to_string()))
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn list(
    State(app): State<AppState>,
    session: WebSession,
    Query(query): Query<ListQuery>,
) -> Result<Response, WebError> {
    let state = match query.state.as_deref().filter(|s| !s.is_empty()) {
        Some(text) => Some(TaskState::parse(text).ok_or_else(|| {
            WebError::page(
                StatusCode::BAD_REQUEST,
                format!(
                    "There is no task state `{text}`; pick one of the filters on the task list."
                ),
            )
        })?),
        None => None,
    };
    let filter = TaskFilter {
        state,
        before: query.before,
        limit: 50,

        ..Default::default()
    };
    let page = app.store.list_tasks(&session.user.id, &filter).await?;
    let names = repo_names(app.store.list_repositories(&session.user.id).await?);
    let rows = page
        .tasks
        .iter()
        .map(|task| Row {
            id: task.id.to_string(),
            title: title(&task.description),
            state: task.state().as_str(),
            state_label: state_label(task.state()),
            repos: repo_list(task, &names),
            updated: when(task.updated_at),
        })
        .collect();
    let mut filters = vec![Filter {
        href: "/tasks".into(),
        label: "All",
        current: state.is_none(),
    }];
    filters.extend(TaskState::ALL.into_iter().map(|s| Filter {
        href: format!("/tasks?state={}", s.as_str()),
        label: state_label(s),
        current: state == Some(s),
    }));
    let state_query = state.map_or(String::new(), |s| format!("state={}&", s.as_str()));
    let list = ListPage {
        chrome: session.chrome("tasks"),
        filters,
        rows,
        next: page
            .next_before
            .map(|before| format!("/tasks?{state_query}before={before}")),
        empty_note: if state.is_some() {
            "No task is in this state."
        } else {
            "No tasks yet. Start a chat to describe what you want done."
        },
    };
    render(&list)
}

/// A plan step and how far the task is with it.
pub struct StepView {
    pub text: String,
    /// `done`, `current` or `todo`.
    pub status: &'static str,
}

pub struct PlanView {
    pub requirements: Vec<String>,
    pub criteria: Vec<String>,
    pub steps: Vec<StepView>,
    pub done: usize,
}

/// A web page the task read or cited, numbered as its `[n]` markers are.
pub struct SourceView {
    pub number: usize,
    pub title: String,
    /// The page's address, when it is one a link may lead to (http or https).
    pub link: Option<String>,
    pub shown_url: String,
    pub fetched: bool,
}

pub struct PullRequestView {
    pub repo: String,
    pub title: String,
    pub base: String,
    pub head: String,
    pub status: String,
    pub url: Option<String>,
    pub lines: Vec<(&'static str, String)>,
    pub files: usize,
    pub error: Option<String>,
}

/// What the task page shows above the log, also served alone to refresh it live.
pub struct Summary {
    pub id: String,
    pub csrf: String,
    pub title: String,
    pub description: String,
    pub state: &'static str,
    pub state_label: &'static str,
    /// Why the task is where it is, in a sentence.
    pub why: Option<String>,
    pub attention_kind: Option<&'static str>,
    pub repos: String,
    pub created: String,
    pub tokens: String,
    pub plan: Option<PlanView>,
    /// The web pages the task searched up or read, by their `[n]`.
    pub sources: Vec<SourceView>,
    pub pull_requests: Vec<PullRequestView>,
    pub can_answer: bool,
    pub can_approve: bool,
    pub can_feedback: bool,
    pub can_cancel: bool,
    pub chat: Option<String>,
    /// A refused control's message, shown beside its field.
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "task.html")]
struct TaskPage {
    chrome: Chrome,
    summary: Summary,
    log: Vec<LogEntry>,
    /// Where the page of earlier events starts, when the log has earlier events.
    earlier: Option<i64>,
    /// Whether the shown events are an earlier page, with more after them.
    later: bool,
    last_seq: i64,
}

#[derive(Template)]
#[template(path = "task_summary.html")]
struct SummaryFragment {
    summary: Summary,
}

fn attention_label(kind: AttentionKind) -> &'static str {
    match kind {
        AttentionKind::Question => "The agent asks",
        AttentionKind::PlanApproval => "The plan waits for your approval",
        AttentionKind::Error => "Something needs fixing",
        AttentionKind::WeeklyLimit => "This week's token limit is reached",
        AttentionKind::TokenBudget => "The task's token budget is spent",
    }
}

async fn summary_of(
    app: &AppState,
    session: &WebSession,
    id: &TaskId,
) -> Result<Summary, WebError> {
    let task = app.store.task(&session.user.id, id).await?;
    let names = repo_names(app.store.list_repositories(&session.user.id).await?);
    let progress = app.store.progress(id).await?;
    let allows = |transition: Transition| task.status.apply(transition).is_ok();
    let merged = !task.pull_requests.is_empty()
        && task
            .pull_requests
            .iter()
            .all(|pr| pr.status == deft_core::PullRequestStatus::Merged);
    let why = match (&task.status, task.queue_position) {
        (deft_core::TaskStatus::NeedsAttention(attention), _) => Some(attention.message.clone()),
        (deft_core::TaskStatus::Queued, Some(position)) => Some(format!(
            "Waiting for a free slot: {position} task(s) ahead of it."
        )),
        (deft_core::TaskStatus::Queued, None) => Some("Waiting for a free slot.".into()),
        (deft_core::TaskStatus::InProgress, _) => Some(format!(
            "Working: {}.",
            progress.as_ref().map_or("starting", |p| p.phase.as_str())
        )),
        (deft_core::TaskStatus::Completed, _) if merged => {
            Some("Done and merged: the task is final; create a new task for more work.".into())
        }
        (deft_core::TaskStatus::Completed, _) if !task.pull_requests.is_empty() => Some(
            "Done: its pull requests are open for review. Feedback sends it back to work.".into(),
        ),
        (deft_core::TaskStatus::Completed, _) => Some("Done.".into()),
        (deft_core::TaskStatus::Cancelled, _) => {
            Some("Cancelled; a cancelled task is final.".into())
        }
    };
    let plan = task.plan.as_ref().map(|plan| {
        let done = match &progress {
            Some(progress) => progress.steps_done(plan.steps.len()),
            None if task.state() == TaskState::Completed => plan.steps.len(),
            None => 0,
        }
        .min(plan.steps.len());
        let running = task.state() == TaskState::InProgress;
        PlanView {
            requirements: plan.requirements.clone(),
            criteria: plan.acceptance_criteria.clone(),
            steps: plan
                .steps
                .iter()
                .enumerate()
                .map(|(index, text)| StepView {
                    text: text.clone(),
                    status: if index < done {
                        "done"
                    } else if index == done && running {
                        "current"
                    } else {
                        "todo"
                    },
                })
                .collect(),
            done,
        }
    });
    let sources = progress
        .as_ref()
        .map(|progress| {
            progress
                .sources
                .iter()
                .enumerate()
                .map(|(index, source)| SourceView {
                    number: index + 1,
                    title: if source.title.trim().is_empty() {
                        source.url.clone()
                    } else {
                        source.title.clone()
                    },
                    link: (source.url.starts_with("https://") || source.url.starts_with("http://"))
                        .then(|| source.url.clone()),
                    shown_url: source.url.chars().take(200).collect(),
                    fetched: source.fetched,
                })
                .collect()
        })
        .unwrap_or_default();
    let mut pull_requests = Vec::new();
    for pr in &task.pull_requests {
        let repo = app
            .store
            .repository(&session.user.id, pr.repo.as_str())
            .await;
        let (lines, error) = match repo {
            Ok(repo) => match crate::routes::tasks::pull_request_diff(app, &repo, pr).await {
                Ok(diff) => (log::diff_lines(&diff), None),
                Err(error) => (
                    Vec::new(),
                    Some(format!("The diff cannot be read: {error}")),
                ),
            },
            Err(_) => (
                Vec::new(),
                Some("The repository is no longer registered.".into()),
            ),
        };
        pull_requests.push(PullRequestView {
            repo: names
                .get(&pr.repo)
                .cloned()
                .unwrap_or_else(|| pr.repo.to_string()),
            title: pr.title.clone(),
            base: pr.base.clone(),
            head: pr.head.clone(),
            status: pr.status.as_str().to_owned(),
            url: pr.url.clone(),
            files: lines
                .iter()
                .filter(|(class, line)| *class == "file" && line.starts_with("+++"))
                .count(),
            lines,
            error,
        });
    }
    Ok(Summary {
        id: task.id.to_string(),
        csrf: session.csrf.clone(),
        title: title(&task.description),
        description: task.description.clone(),
        state: task.state().as_str(),
        state_label: state_label(task.state()),
        why,
        attention_kind: task.status.attention().map(|a| attention_label(a.kind)),
        repos: repo_list(&task, &names),
        created: when(task.created_at),
        tokens: format!(
            "{} in, {} out",
            task.usage.input_tokens, task.usage.output_tokens
        ),
        plan,
        sources,
        pull_requests,
        can_answer: allows(Transition::Answer),
        can_approve: allows(Transition::Approve),
        // A task whose pull requests were all merged is final (the store refuses feedback).
        can_feedback: allows(Transition::Feedback) && !merged,
        can_cancel: allows(Transition::Cancel),
        chat: task.chat_id.as_ref().map(ToString::to_string),
        error: None,
    })
}

async fn task_page(
    app: &AppState,
    session: &WebSession,
    id: &TaskId,
    error: Option<String>,
    from: Option<i64>,
) -> Result<Response, WebError> {
    let mut summary = summary_of(app, session, id).await?;
    summary.error = error;
    // A long log shows its end; the page stays light, and the whole log is one link away.
    let events = match from {
        Some(after) => {
            app.store
                .events_after(&session.user.id, id, after, LOG_PAGE)
                .await?
        }
        None => {
            app.store
                .last_events(&session.user.id, id, LOG_PAGE)
                .await?
        }
    };
    let first_seq = events.first().map_or(1, |e| e.seq);
    let last_seq = events.last().map_or(0, |e| e.seq);
    let page = TaskPage {
        chrome: session.chrome("tasks"),
        summary,
        log: events.iter().map(log::entry).collect(),
        earlier: (first_seq > 1).then(|| (first_seq - 1).saturating_sub(LOG_PAGE).max(0)),
        later: from.is_some() && events.len() as i64 == LOG_PAGE,
        last_seq,
    };
    render(&page)
}

/// Events a task page shows at once.
const LOG_PAGE: i64 = 60;

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    /// Show the log from after this event instead of its end.
    from: Option<i64>,
}

pub async fn page(
    State(app): State<AppState>,
    session: WebSession,
    Path(id): Path<TaskId>,
    Query(query): Query<PageQuery>,
) -> Result<Response, WebError> {
    task_page(&app, &session, &id, None, query.from).await
}

pub async fn summary(
    State(app): State<AppState>,
    session: WebSession,
    Path(id): Path<TaskId>,
) -> Result<Response, WebError> {
    let summary = summary_of(&app, &session, &id).await?;
    render(&SummaryFragment { summary })
}

/// Where the live log resumes: after the event a reconnecting browser names in
/// `Last-Event-ID`, else after `?after=`, else at the start. A header that is not an event's
/// number is passed over.
#[derive(Debug)]
pub struct ResumeAfter(i64);

#[derive(Debug, Deserialize)]
struct LogQuery {
    after: Option<i64>,
}

impl<S: Send + Sync> FromRequestParts<S> for ResumeAfter {
    type Rejection = QueryRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, QueryRejection> {
        let Query(query) = Query::<LogQuery>::from_request_parts(parts, state).await?;
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

/// The log's new entries as Server-Sent Events, each one rendered `<li>`.
pub async fn live_log(
    State(app): State<AppState>,
    session: WebSession,
    Path(id): Path<TaskId>,
    ResumeAfter(after): ResumeAfter,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, WebError> {
    app.store.task(&session.user.id, &id).await?;
    let user = session.user.id;
    Ok(crate::routes::stream::live(
        app,
        user,
        id,
        after,
        |event, sse| {
            let entry = log::entry(event);
            let html = OneEntry { entry: &entry }.render().unwrap_or_else(|error| {
                format!("<li>event {} could not be shown: {error}</li>", event.seq)
            });
            sse.event("entry").data(html)
        },
    ))
}

/// The owner's controls: cancel, answer, approve, feedback.
pub async fn act(
    State(app): State<AppState>,
    Path((id, action)): Path<(TaskId, String)>,
    form: WebForm,
) -> Result<Response, WebError> {
    let user = &form.session.user;
    let message = form.get("message").trim().to_owned();
    let needs_message = |kind: &str| -> Result<(EventKind, serde_json::Value), String> {
        if message.is_empty() {
            Err(format!("Message: write your {kind} first."))
        } else {
            Ok((
                EventKind::UserMessage,
                json!({ "kind": kind, "author": user.name, "message": message }),
            ))
        }
    };
    let result = match action.as_str() {
        "cancel" => Ok((Transition::Cancel, None)),
        "answer" => needs_message("answer").map(|note| (Transition::Answer, Some(note))),
        "feedback" => needs_message("feedback").map(|note| (Transition::Feedback, Some(note))),
        "approve" => Ok((
            Transition::Approve,
            Some((
                EventKind::UserMessage,
                json!({ "kind": "approval", "author": user.name, "plan": null }),
            )),
        )),
        _ => {
            return Err(WebError::page(
                StatusCode::NOT_FOUND,
                "There is no such task action; use the buttons on the task's page.",
            ));
        }
    };
    let outcome = match result {
        // Approval also moves the plan into place, so it has its own store call.
        Ok((Transition::Approve, Some(note))) => app
            .store
            .approve_plan(&user.id, &id, None, note)
            .await
            .map(|_| ())
            .map_err(crate::ApiError::from),
        Ok((transition, note)) => app
            .store
            .transition(Actor::Owner(&user.id), &id, transition, note)
            .await
            .map(|_| ())
            .map_err(crate::ApiError::from),
        Err(message) => {
            let mut response = task_page(&app, &form.session, &id, Some(message), None).await?;
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(response);
        }
    };
    match outcome {
        Ok(()) => Ok(axum::response::Redirect::to(&format!("/tasks/{id}#summary")).into_response()),
        Err(error) if error.status == StatusCode::NOT_FOUND => Err(error.into()),
        Err(error) => {
            let mut response =
                task_page(&app, &form.session, &id, Some(error.message), None).await?;
            *response.status_mut() = error.status;
            Ok(response.into_response())
        }
    }
}
