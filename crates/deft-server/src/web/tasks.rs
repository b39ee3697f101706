//! The task list and a task's page: state and why, plan with progress, pull requests with
//! their diffs, the controls its state allows, and the live log.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use deft_core::{
    Attention, AttentionKind, EventKind, ForgeKind, Plan, RepoId, Task, TaskId, TaskState,
    Timestamp, Transition, UserId,
};
use deft_store::{Actor, DiffStat, Listing, TaskFilter};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::json;

use super::log::Detail;
use super::log_page::{self, LogQuery, LogView};
use super::{Chrome, Moment, WebError, WebForm, WebSession, render, state_label, when};
use crate::AppState;
use crate::views::{RepoNames, repo_names};

/// A task as a row of the list: what it is, why it needs the person if it does, how long it
/// ran, what it cost, and its pull requests.
pub struct Row {
    pub id: String,
    pub title: String,
    pub state: &'static str,
    pub state_label: &'static str,
    /// Why the task waits for its owner: "Asks: …", "Plan waits for approval", "Error: …".
    pub reason: Option<String>,
    pub repos: String,
    /// How long it runs or ran, and since when it waits or ended.
    pub time: String,
    pub updated: String,
    /// RFC 3339, for `<time datetime>`.
    pub updated_at: String,
    pub tokens: String,
    pub pull_requests: Vec<RowPullRequest>,
}

/// A pull request as a row shows it: a link, and its +/- lines when its diff was read.
pub struct RowPullRequest {
    pub href: String,
    pub label: String,
    pub status: &'static str,
    pub stat: Option<DiffStat>,
}

/// A filter link above the list.
pub struct Filter {
    pub href: String,
    pub label: &'static str,
    pub current: bool,
}

/// A repository to filter by.
pub struct RepoChoice {
    pub id: String,
    pub name: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "tasks.html")]
struct ListPage {
    chrome: Chrome,
    filters: Vec<Filter>,
    /// The rows, drawn by `task_rows.html` as the live stream draws them.
    rows: String,
    state: Option<&'static str>,
    text: String,
    repos: Vec<RepoChoice>,
    next: Option<String>,
    /// The live stream of this list, for its first page.
    live: Option<String>,
}

/// The rows of the list.
pub struct ListRows {
    pub rows: Vec<Row>,
    /// How many of them need attention (they come first).
    pub attention: usize,
    pub empty_note: &'static str,
}

/// The rows alone, as the list's live stream sends them.
#[derive(Template)]
#[template(path = "task_rows.html")]
struct TaskRows {
    list: ListRows,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListQuery {
    state: Option<String>,
    before: Option<TaskId>,
    /// Text the description holds.
    q: Option<String>,
    /// A repository's id.
    repo: Option<String>,
    /// For the live stream: the fingerprint of the rows the page shows ([`fingerprint`]).
    shown: Option<String>,
}

impl ListQuery {
    fn state(&self) -> Result<Option<TaskState>, WebError> {
        match self.state.as_deref().filter(|s| !s.is_empty()) {
            Some(text) => Ok(Some(TaskState::parse(text).ok_or_else(|| {
                WebError::page(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "There is no task state `{}`; pick one of the filters on the task list.",
                        text.chars().take(80).collect::<String>()
                    ),
                )
            })?)),
            None => Ok(None),
        }
    }

    fn text(&self) -> Option<String> {
        self.q
            .as_deref()
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(|q| q.chars().take(200).collect())
    }

    fn repo(&self) -> Option<RepoId> {
        self.repo
            .as_deref()
            .filter(|r| !r.is_empty())
            .map(|r| RepoId::from_stored(r.to_owned()))
    }

    /// The search and repository as a query string (`q=…&repo=…&`), to carry into links.
    fn search_query(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(text) = self.text() {
            query.append_pair("q", &text);
        }
        if let Some(repo) = self.repo() {
            query.append_pair("repo", repo.as_str());
        }
        let mut query = query.finish();
        if !query.is_empty() {
            query.push('&');
        }
        query
    }
}

pub(super) fn title(description: &str) -> String {
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

/// Why a task waits for its owner, in a line of the list.
fn reason(attention: &Attention) -> String {
    let message = || {
        let line = attention
            .message
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if line.chars().count() > 160 {
            format!("{}…", line.chars().take(160).collect::<String>())
        } else {
            line
        }
    };
    match attention.kind {
        AttentionKind::Question => format!("Asks: {}", message()),
        AttentionKind::PlanApproval => "Plan waits for approval".into(),
        AttentionKind::Error => format!("Error: {}", message()),
        AttentionKind::WeeklyLimit => format!("Weekly limit: {}", message()),
        AttentionKind::TokenBudget => format!("Token budget spent: {}", message()),
    }
}

/// A span of time as a list shows it: to the minute past the first, so a live list changes
/// for the clock at most once a minute.
fn span(millis: i64) -> String {
    let minutes = millis.max(0) / 60_000;
    match minutes {
        0 => "under a minute".into(),
        1..60 => format!("{minutes} min"),
        60..1440 => format!("{} h {} min", minutes / 60, minutes % 60),
        _ => format!("{} d {} h", minutes / 1440, minutes % 1440 / 60),
    }
}

fn row_time(task: &Task, listing: Option<&Listing>, now: Timestamp) -> String {
    let started = listing
        .and_then(|l| l.round_started)
        .unwrap_or(task.created_at)
        .unix_millis();
    let since = |at: Timestamp| span(now.unix_millis() - at.unix_millis());
    let ran = span(task.updated_at.unix_millis() - started);
    match task.state() {
        TaskState::Queued => format!("queued for {}", span(now.unix_millis() - started)),
        TaskState::InProgress => format!("running for {}", span(now.unix_millis() - started)),
        TaskState::NeedsAttention => {
            format!("ran {ran}, waiting for {}", since(task.updated_at))
        }
        TaskState::Completed => format!("ran {ran}, done {} ago", since(task.updated_at)),
        TaskState::Cancelled => format!("ran {ran}, cancelled {} ago", since(task.updated_at)),
    }
}

/// Tokens as a person reads them: `950`, `12.3k`, `4.1M`.
fn token_count(tokens: i64) -> String {
    match tokens {
        ..1_000 => tokens.to_string(),
        1_000..1_000_000 => format!("{:.1}k", tokens as f64 / 1e3),
        _ => format!("{:.1}M", tokens as f64 / 1e6),
    }
}

/// Diffs a list reads at most per showing, for pull requests whose lines are not known yet;
/// the rest are read on a later showing (the counts are kept).
const DIFFS_PER_LIST: usize = 8;

/// The rows of the list as `query` asks, with the tasks that need attention first on its first
/// page, and the link to the next page.
async fn rows(
    app: &AppState,
    user: &UserId,
    query: &ListQuery,
) -> Result<(ListRows, Option<String>), WebError> {
    let state = query.state()?;
    let filter = TaskFilter {
        text: query.text(),
        repo: query.repo(),
        before: query.before.clone(),
        limit: 50,
        ..Default::default()
    };
    let mut pages = Vec::new();
    let first_page = query.before.is_none();
    match state {
        Some(state) => pages.push(
            app.store
                .list_tasks(
                    user,
                    &TaskFilter {
                        state: Some(state),
                        ..filter.clone()
                    },
                )
                .await?,
        ),
        None => {
            if first_page {
                let waiting = TaskFilter {
                    state: Some(TaskState::NeedsAttention),
                    limit: 200,
                    ..filter.clone()
                };
                pages.push(app.store.list_tasks(user, &waiting).await?);
            }
            let rest = TaskFilter {
                except: Some(TaskState::NeedsAttention),
                ..filter.clone()
            };
            pages.push(app.store.list_tasks(user, &rest).await?);
        }
    }
    let next = pages.last().and_then(|page| page.next_before.clone());
    let repos = app.store.list_repositories(user).await?;
    let names = repo_names(repos.clone());
    let now = Timestamp::now();
    let mut reads = 0;
    let mut rows = Vec::new();
    for page in &mut pages {
        for task in &page.tasks {
            let listing = page.listings.get_mut(&task.id);
            let mut pull_requests = Vec::new();
            for pr in &task.pull_requests {
                let mut stat = listing
                    .as_ref()
                    .and_then(|l| l.diff_stats.get(&pr.repo))
                    .copied();
                // A local pull request's diff is on this disk: read it once, then keep its
                // counts. GitHub's are kept when the task's page reads them.
                let local = repos
                    .iter()
                    .find(|r| r.id == pr.repo && r.forge == ForgeKind::Local);
                if let (None, Some(repo)) = (stat, local)
                    && reads < DIFFS_PER_LIST
                {
                    reads += 1;
                    if let Ok(diff) = crate::routes::tasks::pull_request_diff(app, repo, pr).await {
                        let counted = super::diff::stat(&diff);
                        app.store
                            .set_diff_stat(user, &task.id, &pr.repo, &pr.head, counted)
                            .await?;
                        stat = Some(counted);
                    }
                }
                pull_requests.push(RowPullRequest {
                    href: pr
                        .url
                        .clone()
                        .unwrap_or_else(|| format!("/tasks/{}#prs-heading", task.id)),
                    label: if task.pull_requests.len() > 1 {
                        format!(
                            "Pull request ({})",
                            names.get(&pr.repo).map_or("?", String::as_str)
                        )
                    } else {
                        "Pull request".into()
                    },
                    status: pr.status.as_str(),
                    stat,
                });
            }
            rows.push(Row {
                id: task.id.to_string(),
                title: title(&task.description),
                state: task.state().as_str(),
                state_label: state_label(task.state()),
                reason: task.status.attention().map(reason),
                repos: repo_list(task, &names),
                time: row_time(task, listing.as_deref(), now),
                updated: when(task.updated_at),
                updated_at: task.updated_at.to_rfc3339(),
                tokens: token_count(task.usage.input_tokens + task.usage.output_tokens),
                pull_requests,
            });
        }
    }
    let searched = query.text().is_some() || query.repo().is_some();
    let list = ListRows {
        attention: rows
            .iter()
            .filter(|row| row.state == TaskState::NeedsAttention.as_str())
            .count(),
        rows,
        empty_note: if searched {
            "No task matches this search."
        } else if state.is_some() {
            "No task is in this state."
        } else {
            "No tasks yet. Start a chat to describe what you want done."
        },
    };
    let state_query = state.map_or(String::new(), |s| format!("state={}&", s.as_str()));
    let next = next.map(|before| {
        format!(
            "/tasks?{state_query}{}before={before}",
            query.search_query()
        )
    });
    Ok((list, next))
}

pub async fn list(
    State(app): State<AppState>,
    session: WebSession,
    Query(query): Query<ListQuery>,
) -> Result<Response, WebError> {
    let state = query.state()?;
    let (list, next) = rows(&app, &session.user.id, &query).await?;
    let rows = TaskRows { list }.render()?;
    let search = query.search_query();
    let mut filters = vec![Filter {
        href: format!("/tasks?{}", search.trim_end_matches('&')),
        label: "All",
        current: state.is_none(),
    }];
    filters.extend(TaskState::ALL.into_iter().map(|s| Filter {
        href: format!("/tasks?{search}state={}", s.as_str()),
        label: state_label(s),
        current: state == Some(s),
    }));
    let selected = query.repo();
    let repos = app
        .store
        .list_repositories(&session.user.id)
        .await?
        .into_iter()
        .map(|repo| RepoChoice {
            selected: selected.as_ref() == Some(&repo.id),
            id: repo.id.to_string(),
            name: repo.name,
        })
        .collect();
    let state_query = state.map_or(String::new(), |s| format!("state={}&", s.as_str()));
    let live = query.before.is_none().then(|| {
        format!(
            "/tasks/live?{state_query}{search}shown={}",
            fingerprint(&rows, session.attention)
        )
    });
    let page = ListPage {
        chrome: session.chrome("tasks"),
        filters,
        rows,
        state: state.map(TaskState::as_str),
        text: query.text().unwrap_or_default(),
        repos,
        next,
        live,
    };
    render(&page)
}

/// The list's rows as Server-Sent Events: `rows` (the list, rendered) whenever what it shows
/// changed, and `attention` (how many tasks need the person) whenever that did. A state change
/// in this process wakes it at once; a poll catches tokens, times and other processes.
pub async fn live_list(
    State(app): State<AppState>,
    session: WebSession,
    Query(query): Query<ListQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, WebError> {
    query.state()?;
    let user = session.user.id;
    let changes = app.store.events().queue_changes();
    let watch = ListWatch {
        app,
        user,
        shown: query.shown.clone(),
        query,
        changes,
        rows: None,
        attention: None,
        pending: VecDeque::new(),
    };
    let stream = futures_util::stream::unfold(watch, |mut watch| async move {
        let event = watch.next().await?;
        Some((Ok(event), watch))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// What a list shows, in a word: its rows and the count of tasks waiting.
fn fingerprint(rows: &str, attention: i64) -> String {
    use std::hash::{Hash as _, Hasher as _};
    // Compared only within this process, so any fixed hash does.
    let mut hasher = std::hash::DefaultHasher::new();
    rows.hash(&mut hasher);
    attention.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Longest a live list waits between looks when nothing in this process wakes it.
const LIST_POLL: Duration = Duration::from_secs(3);

struct ListWatch {
    app: AppState,
    user: UserId,
    query: ListQuery,
    changes: deft_store::QueueChanges,
    /// What the page showed as it opened the stream, until the first look.
    shown: Option<String>,
    /// What was last sent, so that only changes are.
    rows: Option<String>,
    attention: Option<i64>,
    pending: VecDeque<SseEvent>,
}

impl ListWatch {
    /// The next change to send; `None` ends the stream (the server stops, or the store failed
    /// and the browser should reconnect).
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.rows.is_some() {
                tokio::select! {
                    _ = self.app.shutdown.cancelled() => return None,
                    () = self.changes.wait(LIST_POLL.max(self.app.stream_poll)) => {}
                }
            }
            self.changes.mark_seen();
            let attention = match self.app.store.count_needing_attention(&self.user).await {
                Ok(count) => count,
                Err(error) => {
                    tracing::warn!(error = %error, "the live task list could not be read");
                    return None;
                }
            };
            let rows = match rows(&self.app, &self.user, &self.query).await {
                Ok((list, _)) => TaskRows { list }.render().ok()?,
                Err(_) => return None,
            };
            // The first look sends only what changed since the page was drawn: rows replaced
            // for nothing would take the focus from the link the person is on.
            if self.shown.take().as_deref() == Some(fingerprint(&rows, attention).as_str()) {
                self.attention = Some(attention);
                self.rows = Some(rows);
                continue;
            }
            if self.attention != Some(attention) {
                self.pending.push_back(
                    SseEvent::default()
                        .event("attention")
                        .data(attention.to_string()),
                );
                self.attention = Some(attention);
            }
            if self.rows.as_deref() != Some(rows.as_str()) {
                self.pending
                    .push_back(SseEvent::default().event("rows").data(rows.clone()));
                self.rows = Some(rows);
            }
        }
    }
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
    /// Its place among the task's pull requests, as the diff page's anchors number them.
    pub index: usize,
    /// The first files it changes, and how many more (`pulls::listed`).
    pub files: Vec<super::diff_view::FileLink>,
    pub more_files: usize,
    pub additions: u32,
    pub deletions: u32,
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
    pub created: Moment,
    /// The question the task waits on, Markdown drawn as sanitized HTML.
    pub why_html: Option<String>,
    pub tokens: String,
    pub plan: Option<PlanView>,
    /// The web pages the task searched up or read, by their `[n]`.
    pub sources: Vec<SourceView>,
    pub pull_requests: Vec<PullRequestView>,
    pub can_answer: bool,
    pub can_approve: bool,
    pub can_feedback: bool,
    pub can_cancel: bool,
    /// Stopped on an error: it may go back to work as it is.
    pub can_retry: bool,
    /// Ended, or stopped by something other than a question or a plan: a new task may start
    /// from its description.
    pub can_rerun: bool,
    /// The plan's steps, one a line, for editing before approval.
    pub plan_steps: String,
    pub chat: Option<String>,
    /// A refused control's message, shown beside its field.
    pub error: Option<String>,
    /// Which field the refusal is about: `message` (an answer or feedback), `steps` (the
    /// plan's), or `controls` (the buttons as a whole).
    pub error_field: &'static str,
}

#[derive(Template)]
#[template(path = "task.html")]
struct TaskPage {
    chrome: Chrome,
    summary: Summary,
    log: LogView,
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
    for (index, pr) in task.pull_requests.iter().enumerate() {
        let repo = app
            .store
            .repository(&session.user.id, pr.repo.as_str())
            .await;
        let ((files, more_files, additions, deletions), error) = match repo {
            Ok(repo) => match crate::routes::tasks::pull_request_diff(app, &repo, pr).await {
                Ok(diff) => {
                    // Kept for the task list, which does not read diffs from GitHub itself.
                    app.store
                        .set_diff_stat(
                            &session.user.id,
                            id,
                            &pr.repo,
                            &pr.head,
                            super::diff::stat(&diff),
                        )
                        .await?;
                    (super::pulls::listed(index, &diff), None)
                }
                Err(error) => (
                    Default::default(),
                    Some(format!("The diff cannot be read: {error}")),
                ),
            },
            Err(_) => (
                Default::default(),
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
            index,
            files,
            more_files,
            additions,
            deletions,
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
        created: Moment::new(task.created_at),
        why_html: task
            .status
            .attention()
            .filter(|a| a.kind == AttentionKind::Question)
            .map(|a| super::markdown::render(&a.message, &[])),
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
        can_retry: task
            .status
            .attention()
            .is_some_and(|a| a.kind == AttentionKind::Error),
        // Not while it waits on a question or a plan: those want the person on this task.
        can_rerun: match &task.status {
            deft_core::TaskStatus::Completed | deft_core::TaskStatus::Cancelled => true,
            deft_core::TaskStatus::NeedsAttention(attention) => !matches!(
                attention.kind,
                AttentionKind::Question | AttentionKind::PlanApproval
            ),
            _ => false,
        },
        plan_steps: task
            .plan
            .as_ref()
            .map(|plan| plan.steps.join("\n"))
            .unwrap_or_default(),
        chat: task.chat_id.as_ref().map(ToString::to_string),
        error: None,
        error_field: "controls",
    })
}

async fn task_page(
    app: &AppState,
    session: &WebSession,
    id: &TaskId,
    error: Option<(&'static str, String)>,
    query: &LogQuery,
) -> Result<Response, WebError> {
    let mut summary = summary_of(app, session, id).await?;
    if let Some((field, message)) = error {
        summary.error = Some(message);
        summary.error_field = field;
    }
    let task = app.store.task(&session.user.id, id).await?;
    let page = TaskPage {
        chrome: session.chrome("tasks"),
        summary,
        log: log_page::view(app, &task, query).await?,
    };
    render(&page)
}

pub async fn page(
    State(app): State<AppState>,
    session: WebSession,
    Path(id): Path<TaskId>,
    Query(query): Query<LogQuery>,
) -> Result<Response, WebError> {
    task_page(&app, &session, &id, None, &query).await
}

pub async fn summary(
    State(app): State<AppState>,
    session: WebSession,
    Path(id): Path<TaskId>,
) -> Result<Response, WebError> {
    let summary = summary_of(&app, &session, &id).await?;
    render(&SummaryFragment { summary })
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
        "rerun" => return rerun(&app, &form, &id).await,
        "cancel" => Ok((Transition::Cancel, None)),
        // An error the owner has seen to (a key set, a limit raised): the task goes back to
        // the queue and picks up where it stopped, as after an answer.
        "retry" => retry_note(&app, &form.session, &id)
            .await?
            .map(|note| (Transition::Answer, Some(note))),
        "answer" => needs_message("answer").map(|note| (Transition::Answer, Some(note))),
        "feedback" => needs_message("feedback").map(|note| (Transition::Feedback, Some(note))),
        "approve" => match edited_plan(&app, &form, &id).await? {
            Ok(plan) => {
                let note = (
                    EventKind::UserMessage,
                    json!({ "kind": "approval", "author": user.name, "plan": plan }),
                );
                let outcome = app
                    .store
                    .approve_plan(&user.id, &id, plan.as_ref(), note)
                    .await
                    .map(|_| ())
                    .map_err(crate::ApiError::from);
                return done(&app, &form, &id, outcome).await;
            }
            Err(message) => Err(message),
        },
        _ => {
            return Err(WebError::page(
                StatusCode::NOT_FOUND,
                "There is no such task action; use the buttons on the task's page.",
            ));
        }
    };
    let outcome = match result {
        Ok((transition, note)) => app
            .store
            .transition(Actor::Owner(&user.id), &id, transition, note)
            .await
            .map(|_| ())
            .map_err(crate::ApiError::from),
        Err(message) => {
            let field = if message.starts_with("Steps:") {
                "steps"
            } else if message.starts_with("Message:") {
                "message"
            } else {
                "controls"
            };
            let mut response = task_page(
                &app,
                &form.session,
                &id,
                Some((field, message)),
                &LogQuery::default(),
            )
            .await?;
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(response);
        }
    };
    done(&app, &form, &id, outcome).await
}

/// Where a control leads: back to the task's page (post/redirect/get), or the page again with
/// the refusal beside the controls.
async fn done(
    app: &AppState,
    form: &WebForm,
    id: &TaskId,
    outcome: Result<(), crate::ApiError>,
) -> Result<Response, WebError> {
    match outcome {
        Ok(()) => Ok(axum::response::Redirect::to(&format!("/tasks/{id}#summary")).into_response()),
        Err(error) if error.status == StatusCode::NOT_FOUND => Err(error.into()),
        Err(error) => {
            let mut response = task_page(
                app,
                &form.session,
                id,
                Some(("controls", error.message)),
                &LogQuery::default(),
            )
            .await?;
            *response.status_mut() = error.status;
            Ok(response.into_response())
        }
    }
}

/// The note of a retry, or why there is nothing to retry: only a task stopped by an error is
/// retried (a question wants an answer, a plan its approval).
async fn retry_note(
    app: &AppState,
    session: &WebSession,
    id: &TaskId,
) -> Result<Result<(EventKind, serde_json::Value), String>, WebError> {
    let task = app.store.task(&session.user.id, id).await?;
    Ok(match task.status.attention() {
        Some(attention) if attention.kind == AttentionKind::Error => Ok((
            EventKind::UserMessage,
            json!({ "kind": "retry", "author": session.user.name, "error": attention.message }),
        )),
        _ => Err(
            "Only a task that stopped on an error can be retried; this one is not waiting on one. Reload the page to see where it stands."
                .into(),
        ),
    })
}

/// The plan as the owner approves it: `None` when they left its steps as they were, else the
/// plan with the steps of the form's `steps` field, one a line.
async fn edited_plan(
    app: &AppState,
    form: &WebForm,
    id: &TaskId,
) -> Result<Result<Option<Plan>, String>, WebError> {
    if form.all("steps").is_empty() {
        return Ok(Ok(None));
    }
    let steps: Vec<String> = form
        .get("steps")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    if steps.is_empty() {
        return Ok(Err(
            "Steps: write at least one step, one a line, then approve again.".into(),
        ));
    }
    let task = app.store.task(&form.session.user.id, id).await?;
    let Some(plan) = task.plan else {
        return Ok(Ok(None));
    };
    if plan.steps == steps {
        return Ok(Ok(None));
    }
    Ok(Ok(Some(Plan { steps, ..plan })))
}

/// Re-run: a new task with the description and repositories of this one, which stays as it
/// is. The person lands on the new task.
async fn rerun(app: &AppState, form: &WebForm, id: &TaskId) -> Result<Response, WebError> {
    let user = &form.session.user;
    let task = app.store.task(&user.id, id).await?;
    let new = deft_store::NewTask {
        description: task.description.clone(),
        repos: task.repos.clone(),
        chat_id: None,
        approve_plan: task.approve_plan,
    };
    match crate::routes::tasks::create_task(app, &user.id, new).await {
        Ok(made) => {
            Ok(axum::response::Redirect::to(&format!("/tasks/{}", made.id)).into_response())
        }
        Err(error) if error.status == StatusCode::NOT_FOUND => Err(error.into()),
        Err(error) => {
            let message = format!(
                "{} Start a new chat to describe the task again.",
                error.message
            );
            let mut response = task_page(
                app,
                &form.session,
                id,
                Some(("controls", message)),
                &LogQuery::default(),
            )
            .await?;
            *response.status_mut() = error.status;
            Ok(response)
        }
    }
}
