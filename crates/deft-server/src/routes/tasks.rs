//! Tasks: create, list, show, read events, and the owner's lifecycle actions.

use axum::Json;
use axum::http::StatusCode;
use deft_core::{EventKind, Plan, TaskId, TaskState, Transition, UserId};
use deft_store::{Actor, NewTask, TaskFilter};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::routes::repos;
use crate::views::{self, TaskView};
use crate::{ApiError, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    description: String,
    #[serde(default)]
    repos: Vec<String>,
    chat_id: Option<deft_core::ChatId>,
    /// Absent: the user's default (`approve_plan` in the environment settings).
    approve_plan: Option<bool>,
}

pub async fn create(
    Caller { app, user }: Caller,
    ApiJson(body): ApiJson<CreateTask>,
) -> Result<(StatusCode, Json<TaskView>), ApiError> {
    // Checked before the repositories, which a path registers: a refused task registers nothing.
    if body.description.trim().is_empty() {
        return Err(ApiError::field(
            "description",
            "is empty; describe what the agent should do",
        ));
    }
    let repos = repos::resolve(&app, &user, &body.repos, "repos").await?;
    let new = NewTask {
        description: body.description,
        repos,
        chat_id: body.chat_id,
        approve_plan: plan_approval(&app, &user.id, body.approve_plan).await?,
    };
    let task = create_task(&app, &user.id, new).await?;
    Ok((StatusCode::CREATED, Json(view(&app, &user.id, task).await?)))
}

/// Whether a new task of `user` waits for the plan's approval: as `asked`, else as the user's
/// environment settings say.
pub(crate) async fn plan_approval(
    app: &AppState,
    user: &UserId,
    asked: Option<bool>,
) -> Result<bool, ApiError> {
    match asked {
        Some(approve_plan) => Ok(approve_plan),
        None => Ok(app.store.environment(user).await?.approve_plan),
    }
}

/// Stores `new` as a task of `user`, then tells it at once when it cannot start ([`created`]).
pub(crate) async fn create_task(
    app: &AppState,
    user: &UserId,
    new: NewTask,
) -> Result<deft_core::Task, ApiError> {
    created(app, app.store.create_task(user, new).await?).await
}

/// `task` as the API shows it, with its repositories' names.
pub(crate) async fn view(
    app: &AppState,
    user: &UserId,
    task: deft_core::Task,
) -> Result<TaskView, ApiError> {
    let names = views::repo_names(app.store.list_repositories(user).await?);
    Ok(views::task(task, &names))
}

/// A new task cannot start without a model: say so on the task at once, with what to set,
/// rather than leave it queued for nothing (SPEC §4).
pub async fn created(app: &AppState, task: deft_core::Task) -> Result<deft_core::Task, ApiError> {
    let crate::ModelReadiness::Missing { message } = &app.model else {
        return Ok(task);
    };
    let attention = deft_core::Attention {
        kind: deft_core::AttentionKind::Error,
        message: message.clone(),
    };
    Ok(app
        .store
        .transition(
            Actor::Deft,
            &task.id,
            Transition::NeedAttention(attention),
            None,
        )
        .await?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    limit: Option<i64>,
    before: Option<TaskId>,
    /// Text the description holds, case aside.
    q: Option<String>,
    /// A repository, by name or id.
    repo: Option<String>,
}

/// The longest search text: a description is searched, not matched against a document.
const SEARCH_CHARS: usize = 200;

/// Tasks per page unless `?limit=` says otherwise (at most 500).
const PAGE: i64 = 50;

pub async fn list(
    Caller { app, user }: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let state = query
        .state
        .map(|text| {
            TaskState::parse(&text).ok_or_else(|| {
                ApiError::field(
                    "state",
                    format!("unknown state `{text}`; use queued, in_progress, needs_attention, completed or cancelled"),
                )
            })
        })
        .transpose()?;
    let limit = query.limit.unwrap_or(PAGE);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 500"));
    }
    let text = query
        .q
        .map(|q| q.trim().to_owned())
        .filter(|q| !q.is_empty());
    if text
        .as_ref()
        .is_some_and(|q| q.chars().count() > SEARCH_CHARS)
    {
        return Err(ApiError::field(
            "q",
            format!(
                "at most {SEARCH_CHARS} characters; search for a shorter part of the description"
            ),
        ));
    }
    let repos = app.store.list_repositories(&user.id).await?;
    let repo = match query.repo.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(wanted) => Some(
            repos
                .iter()
                .find(|r| r.id.as_str() == wanted || r.name == wanted)
                .map(|r| r.id.clone())
                .ok_or_else(|| {
                    ApiError::field(
                        "repo",
                        format!("you have no repository `{wanted}`; GET /api/v1/repos lists yours by name and id"),
                    )
                })?,
        ),
    };
    let filter = TaskFilter {
        state,
        before: query.before,
        limit,
        text,
        repo,
        ..Default::default()
    };
    let page = app.store.list_tasks(&user.id, &filter).await?;
    let names = views::repo_names(repos);
    let tasks: Vec<TaskView> = page
        .tasks
        .into_iter()
        .map(|task| views::task(task, &names))
        .collect();
    Ok(Json(
        json!({ "tasks": tasks, "next_before": page.next_before }),
    ))
}

pub async fn show(
    Caller { app, user }: Caller,
    ApiPath(id): ApiPath<TaskId>,
) -> Result<Json<TaskView>, ApiError> {
    let task = app.store.task(&user.id, &id).await?;
    Ok(Json(view(&app, &user.id, task).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    after: Option<i64>,
    limit: Option<i64>,
}

pub async fn events(
    Caller { app, user }: Caller,
    ApiPath(id): ApiPath<TaskId>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    // Tells "no events yet" from "no such task".
    app.store.task(&user.id, &id).await?;
    let limit = query.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 10000"));
    }
    let events = app
        .store
        .events_after(&user.id, &id, query.after.unwrap_or(0), limit)
        .await?;
    Ok(Json(
        json!({ "events": events.iter().map(views::event).collect::<Vec<_>>() }),
    ))
}

async fn act(
    app: &AppState,
    user: &deft_core::User,
    id: TaskId,
    transition: Transition,
    note: Option<(EventKind, Value)>,
) -> Result<Json<TaskView>, ApiError> {
    let task = app
        .store
        .transition(Actor::Owner(&user.id), &id, transition, note)
        .await?;
    Ok(Json(view(app, &user.id, task).await?))
}

pub async fn cancel(
    Caller { app, user }: Caller,
    ApiPath(id): ApiPath<TaskId>,
) -> Result<Json<TaskView>, ApiError> {
    act(&app, &user, id, Transition::Cancel, None).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageBody {
    message: String,
}

fn owner_message(
    user: &deft_core::User,
    kind: &str,
    message: &str,
) -> Result<(EventKind, Value), ApiError> {
    if message.trim().is_empty() {
        return Err(ApiError::field(
            "message",
            "is empty; write your answer or feedback",
        ));
    }
    Ok((
        EventKind::UserMessage,
        json!({ "kind": kind, "author": user.name, "message": message }),
    ))
}

pub async fn answer(
    Caller { app, user }: Caller,
    ApiPath(id): ApiPath<TaskId>,
    ApiJson(body): ApiJson<MessageBody>,
) -> Result<Json<TaskView>, ApiError> {
    let note = owner_message(&user, "answer", &body.message)?;
    act(&app, &user, id, Transition::Answer, Some(note)).await
}

pub async fn feedback(
    Caller { app, user }: Caller,
    ApiPath(id): ApiPath<TaskId>,
    ApiJson(body): ApiJson<MessageBody>,
) -> Result<Json<TaskView>, ApiError> {
    let note = owner_message(&user, "feedback", &body.message)?;
    act(&app, &user, id, Transition::Feedback, Some(note)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    plan: Option<Plan>,
}

pub async fn approve(
    Caller { app, user }: Caller,
    ApiPath(id): ApiPath<TaskId>,
    body: axum::body::Bytes,
) -> Result<Json<TaskView>, ApiError> {
    // The body is optional: an empty one approves the plan as it stands.
    let plan = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<ApproveBody>(&body)
            .map_err(|error| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    if error.is_data() {
                        "invalid_input"
                    } else {
                        "malformed_json"
                    },
                    format!(
                        "the body is not an approval (`{{\"plan\": {{...}}}}` or empty): {error}"
                    ),
                )
            })?
            .plan
    };
    if let Some(plan) = &plan
        && plan.steps.is_empty()
    {
        return Err(ApiError::field(
            "plan.steps",
            "is empty; an edited plan needs at least one step",
        ));
    }
    let note = (
        EventKind::UserMessage,
        json!({ "kind": "approval", "author": user.name, "plan": plan }),
    );
    let task = app
        .store
        .approve_plan(&user.id, &id, plan.as_ref(), note)
        .await?;
    Ok(Json(view(&app, &user.id, task).await?))
}

/// The diff of each of the task's pull requests (the local forge keeps them, so deft serves
/// them): `{"diffs": [{repo, base, head, diff}]}`.
pub async fn diff(
    Caller { app, user }: Caller,
    ApiPath(id): ApiPath<TaskId>,
) -> Result<Json<Value>, ApiError> {
    let task = app.store.task(&user.id, &id).await?;
    let mut diffs = Vec::new();
    for pull_request in &task.pull_requests {
        let repo = app
            .store
            .repository(&user.id, pull_request.repo.as_str())
            .await?;
        let diff = pull_request_diff(&app, &repo, pull_request)
            .await
            .map_err(|error| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "diff_unavailable",
                    format!("cannot read the diff of {}: {error}", repo.name),
                )
            })?;
        diffs.push(json!({"repo": pull_request.repo, "base": pull_request.base, "head": pull_request.head, "diff": diff}));
    }
    Ok(Json(json!({ "diffs": diffs })))
}

/// A pull request's changes as a unified diff: from the repository on disk for the local
/// forge, from GitHub's compare API for GitHub.
pub(crate) async fn pull_request_diff(
    app: &AppState,
    repo: &deft_core::Repository,
    pull_request: &deft_core::PullRequest,
) -> Result<String, String> {
    match repo.forge {
        deft_core::ForgeKind::Local => deft_forge::diff(
            std::path::Path::new(&repo.location),
            &pull_request.base,
            &pull_request.head,
        )
        .await
        .map_err(|error| error.to_string()),
        deft_core::ForgeKind::Github => {
            let Some(hooks) = &app.github else {
                return Err("GitHub is not configured on this deft".into());
            };
            let name = deft_github::RepoName::parse(&repo.location).map_err(|e| e.to_string())?;
            hooks
                .client
                .compare(&name, &pull_request.base, &pull_request.head)
                .await
                .map_err(|error| error.to_string())
        }
    }
}
