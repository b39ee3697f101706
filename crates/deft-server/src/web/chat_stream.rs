//! `POST /chats/{id}/reply`: the person's message stored, then the agent's reply streamed to
//! the page as Server-Sent Events while the model writes it: `delta` events with the text
//! added, `reset` when the model starts again (its text so far in the data), then `done` once
//! the reply is stored (the page then shows it rendered) or `note` saying why there is none.
//! The chat page's plain form does the same without a script, answering when the reply is
//! whole.

use std::convert::Infallible;
use std::sync::Mutex;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use deft_core::ChatId;
use futures_util::StreamExt as _;

use super::{WebError, WebForm};
use crate::routes::chats::{Reply, agent_reply};
use crate::{ApiError, AppState};

pub async fn reply(
    State(app): State<AppState>,
    Path(id): Path<ChatId>,
    form: WebForm,
) -> Result<Response, WebError> {
    let user = form.session.user.clone();
    let text = form.get("message").trim().to_owned();
    if text.is_empty() {
        return Ok((StatusCode::BAD_REQUEST, "Message: write something first.").into_response());
    }
    let chat = app.store.chat(&user.id, &id).await?;
    if chat.task_id.is_some() {
        // Once the task exists, a message steers it: the plain form's way, not this one.
        return Ok((
            StatusCode::CONFLICT,
            "This chat's task exists: a message steers it; send it with the form.",
        )
            .into_response());
    }
    if let Err(error) = app
        .store
        .post_chat_message(&user.id, &id, &user.name, &text)
        .await
    {
        let error = ApiError::from(error);
        return Ok((error.status, error.message).into_response());
    }
    let (events, received) = tokio::sync::mpsc::unbounded_channel::<SseEvent>();
    tokio::spawn(async move {
        let shown = Mutex::new(String::new());
        let sender = events.clone();
        let watch = move |text: &str| {
            let mut shown = shown
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let event = match text.strip_prefix(shown.as_str()) {
                Some("") => return,
                Some(added) => SseEvent::default().event("delta").data(added),
                None => SseEvent::default().event("reset").data(text),
            };
            *shown = text.to_owned();
            let _ = sender.send(event);
        };
        let ended = match agent_reply(&app, &user, &id, &watch).await {
            Ok(Reply::Posted(_)) => SseEvent::default().event("done").data("stored"),
            Ok(Reply::None(why)) => SseEvent::default().event("note").data(why),
            Err(error) => {
                tracing::warn!(error = %error, "the chat reply could not be stored");
                SseEvent::default()
                    .event("note")
                    .data("The reply could not be stored; reload the page and try again.")
            }
        };
        let _ = events.send(ended);
    });
    let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(received)
        .map(Ok::<SseEvent, Infallible>);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
