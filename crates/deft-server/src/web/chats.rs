//! Chats: pick repositories, say what you want, talk it over with the agent, then create the
//! chat's one task; later messages steer that task (SPEC §1).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use deft_core::{ChatId, RepoId, User};
use deft_store::NewTask;

use super::{Chrome, Moment, WebError, WebForm, WebSession, markdown, render};
use crate::{ApiError, AppState};

/// The author name of the agent's messages in a chat.
pub const AGENT: &str = "deft";

pub struct RepoChoice {
    pub id: String,
    pub name: String,
    pub checked: bool,
}

#[derive(Template)]
#[template(path = "chat_new.html")]
struct NewChatPage {
    chrome: Chrome,
    repos: Vec<RepoChoice>,
    message: String,
    error_repos: Option<String>,
    error_message: Option<String>,
}

pub struct MessageView {
    pub author: String,
    pub mine: bool,
    /// The person's own message, drawn as the plain text it is.
    pub text: String,
    /// The agent's message as sanitized HTML ([`markdown::render`]); `None` for the person's.
    pub html: Option<String>,
    pub at: Moment,
}

#[derive(Template)]
#[template(path = "chat.html")]
struct ChatPage {
    chrome: Chrome,
    id: String,
    repos: String,
    messages: Vec<MessageView>,
    task: Option<String>,
    approve_plan: bool,
    /// Why the agent did not reply, when it could not.
    note: Option<String>,
    error: Option<String>,
}

async fn choices(
    app: &AppState,
    user: &User,
    checked: &[String],
) -> Result<Vec<RepoChoice>, WebError> {
    Ok(app
        .store
        .list_repositories(&user.id)
        .await?
        .into_iter()
        .map(|repo| RepoChoice {
            checked: checked.iter().any(|id| id == repo.id.as_str()),
            id: repo.id.to_string(),
            name: repo.name,
        })
        .collect())
}

pub async fn new_page(
    State(app): State<AppState>,
    session: WebSession,
) -> Result<Response, WebError> {
    let repos = choices(&app, &session.user, &[]).await?;
    render(&NewChatPage {
        chrome: session.chrome("chat"),
        repos,
        message: String::new(),
        error_repos: None,
        error_message: None,
    })
}

pub async fn start(State(app): State<AppState>, form: WebForm) -> Result<Response, WebError> {
    let user = &form.session.user;
    let picked = form.all("repo");
    let message = form.get("message").trim().to_owned();
    let known = app.store.list_repositories(&user.id).await?;
    let mut repos: Vec<RepoId> = Vec::new();
    let mut error_repos = None;
    for id in &picked {
        match known.iter().find(|repo| repo.id.as_str() == id) {
            Some(repo) => repos.push(repo.id.clone()),
            None => {
                error_repos = Some(
                    "One of the chosen repositories is no longer registered; choose again."
                        .to_owned(),
                )
            }
        }
    }
    if repos.is_empty() && error_repos.is_none() {
        error_repos = Some("Choose at least one repository for the agent to work in.".to_owned());
    }
    let error_message = message
        .is_empty()
        .then(|| "Write what you want done.".to_owned());
    if error_repos.is_some() || error_message.is_some() {
        let page = NewChatPage {
            chrome: form.session.chrome("chat"),
            repos: choices(&app, user, &picked).await?,
            message,
            error_repos,
            error_message,
        };
        return Ok((StatusCode::BAD_REQUEST, render(&page)?).into_response());
    }
    let chat = app.store.create_chat(&user.id, repos).await?;
    app.store
        .post_chat_message(&user.id, &chat.id, &user.name, &message)
        .await?;
    after_reply(&app, &form.session, &chat.id).await
}

/// After the person wrote: asks for the agent's reply, then shows the chat. When there is no
/// reply, the page says why, once: it is drawn in this response rather than redirected to.
async fn after_reply(
    app: &AppState,
    session: &WebSession,
    id: &ChatId,
) -> Result<Response, WebError> {
    match reply(app, &session.user, id).await? {
        None => Ok(Redirect::to(&format!("/chats/{id}#composer")).into_response()),
        Some(note) => chat_page(app, session, id, Some(note), None).await,
    }
}

/// The chat page again with a refusal beside the message field.
async fn refused(
    app: &AppState,
    session: &WebSession,
    id: &ChatId,
    status: StatusCode,
    error: String,
) -> Result<Response, WebError> {
    let mut response = chat_page(app, session, id, None, Some(error)).await?;
    *response.status_mut() = status;
    Ok(response)
}

/// The agent's reply to the conversation so far, stored in the chat. `Some(reason)` when
/// there is none.
async fn reply(app: &AppState, user: &User, id: &ChatId) -> Result<Option<String>, WebError> {
    Ok(
        match crate::routes::chats::agent_reply(app, user, id, &|_| {}).await? {
            crate::routes::chats::Reply::Posted(_) => None,
            crate::routes::chats::Reply::None(why) => Some(why),
        },
    )
}

async fn chat_page(
    app: &AppState,
    session: &WebSession,
    id: &ChatId,
    note: Option<String>,
    error: Option<String>,
) -> Result<Response, WebError> {
    let user = &session.user;
    let chat = app.store.chat(&user.id, id).await?;
    let known = app.store.list_repositories(&user.id).await?;
    let repos = known
        .iter()
        .filter(|repo| chat.repos.contains(&repo.id))
        .map(|repo| repo.name.clone())
        .collect::<Vec<_>>()
        .join(", ");
    let page = ChatPage {
        chrome: session.chrome("chat"),
        id: chat.id.to_string(),
        repos,
        messages: chat
            .messages
            .iter()
            .map(|m| {
                let mine = m.author != AGENT;
                MessageView {
                    mine,
                    author: m.author.clone(),
                    text: m.message.clone(),
                    // A reply's `[n]` links to the source its Sources section lists.
                    html: (!mine).then(|| {
                        markdown::render(&m.message, &markdown::listed_sources(&m.message))
                    }),
                    at: Moment::new(m.at),
                }
            })
            .collect(),
        task: chat.task_id.as_ref().map(ToString::to_string),
        approve_plan: app.store.environment(&user.id).await?.approve_plan,
        note,
        error,
    };
    render(&page)
}

pub async fn page(
    State(app): State<AppState>,
    session: WebSession,
    Path(id): Path<ChatId>,
) -> Result<Response, WebError> {
    chat_page(&app, &session, &id, None, None).await
}

pub async fn message(
    State(app): State<AppState>,
    Path(id): Path<ChatId>,
    form: WebForm,
) -> Result<Response, WebError> {
    let user = &form.session.user;
    let text = form.get("message").trim().to_owned();
    if text.is_empty() {
        let error = "Message: write something first.".to_owned();
        return refused(&app, &form.session, &id, StatusCode::BAD_REQUEST, error).await;
    }
    let chat = app.store.chat(&user.id, &id).await?;
    if let Err(error) = app
        .store
        .post_chat_message(&user.id, &id, &user.name, &text)
        .await
    {
        let error = ApiError::from(error);
        return refused(&app, &form.session, &id, error.status, error.message).await;
    }
    // Once the task exists, a message steers it: the agent answers in the task, not here.
    if let Some(task) = chat.task_id {
        return Ok(Redirect::to(&format!("/tasks/{task}")).into_response());
    }
    after_reply(&app, &form.session, &id).await
}

pub async fn create_task(
    State(app): State<AppState>,
    Path(id): Path<ChatId>,
    form: WebForm,
) -> Result<Response, WebError> {
    let user = &form.session.user;
    let chat = app.store.chat(&user.id, &id).await?;
    if let Some(task) = &chat.task_id {
        let message =
            format!("This chat already created task {task}; start a new chat for another task.");
        return refused(&app, &form.session, &id, StatusCode::CONFLICT, message).await;
    }
    let new = NewTask {
        description: crate::routes::chats::description(&chat, &user.name),
        repos: chat.repos.clone(),
        chat_id: Some(chat.id.clone()),
        approve_plan: form.checked("approve_plan"),
    };
    let task = crate::routes::tasks::create_task(&app, &user.id, new).await?;
    Ok(Redirect::to(&format!("/tasks/{}", task.id)).into_response())
}
