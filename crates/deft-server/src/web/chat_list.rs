//! The person's chats, most recently active first, so that a chat left is found again: what
//! each is about (its first message), its repositories, when it last moved, and its task.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::{Chrome, Moment, WebError, WebSession, render, state_label};
use crate::AppState;

/// How many chats the page lists.
const LISTED: i64 = 100;

/// How much of a chat's first message names it in the list.
const TITLE_CHARS: usize = 120;

pub struct ChatRow {
    pub id: String,
    pub title: String,
    pub repos: String,
    pub messages: i64,
    pub updated: Moment,
    /// The chat's task: its id, state class and label.
    pub task: Option<(String, &'static str, &'static str)>,
}

#[derive(Template)]
#[template(path = "chat_list.html")]
struct ChatListPage {
    chrome: Chrome,
    rows: Vec<ChatRow>,
}

pub async fn list(State(app): State<AppState>, session: WebSession) -> Result<Response, WebError> {
    let user = &session.user;
    let chats = app.store.list_chats(&user.id, LISTED).await?;
    let known = app.store.list_repositories(&user.id).await?;
    let mut rows = Vec::with_capacity(chats.len());
    for summary in chats {
        let chat = &summary.chat;
        let repos = known
            .iter()
            .filter(|repo| chat.repos.contains(&repo.id))
            .map(|repo| repo.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let task = match &chat.task_id {
            Some(id) => {
                let state = app.store.task(&user.id, id).await?.state();
                Some((id.to_string(), state.as_str(), state_label(state)))
            }
            None => None,
        };
        rows.push(ChatRow {
            id: chat.id.to_string(),
            title: summary
                .first_message
                .as_deref()
                .map_or_else(|| "(no message yet)".to_owned(), shortened),
            repos,
            messages: summary.messages,
            updated: Moment::new(chat.updated_at),
            task,
        });
    }
    render(&ChatListPage {
        chrome: session.chrome("chat"),
        rows,
    })
}

/// A message's first line, cut at a word near `TITLE_CHARS` characters.
fn shortened(message: &str) -> String {
    let line = message.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let line = line.trim();
    if line.chars().count() <= TITLE_CHARS {
        return line.to_owned();
    }
    let cut: String = line.chars().take(TITLE_CHARS).collect();
    let cut = cut.rsplit_once(' ').map_or(cut.as_str(), |(head, _)| head);
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_title_is_the_first_line_cut_at_a_word() {
        assert_eq!(
            super::shortened("\n  Why is CI slow?\nmore"),
            "Why is CI slow?"
        );
        let long = "word ".repeat(60);
        let title = super::shortened(&long);
        assert!(
            title.ends_with("word…") && title.chars().count() <= 121,
            "{title}"
        );
    }
}
