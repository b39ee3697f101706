//! Chats: a conversation with the agent that creates at most one task. A message to a chat
//! that has its task steers that task, in the same transaction that stores the message.

use deft_core::{
    Chat, ChatId, ChatMessage, EventKind, RepoId, Timestamp, Transition, UserId, ValidationError,
};
use serde_json::json;
use sqlx::Row as _;
use sqlx::any::AnyRow;

use crate::tasks::{Actor, transition_in};
use crate::{Store, StoreError, from_json};

/// A chat as a list shows it: its messages left out but the first.
#[derive(Debug, Clone)]
pub struct ChatSummary {
    /// The chat, without its messages.
    pub chat: Chat,
    pub first_message: Option<String>,
    pub messages: i64,
}

impl Store {
    pub async fn create_chat(&self, user: &UserId, repos: Vec<RepoId>) -> Result<Chat, StoreError> {
        self.check_repositories(user, &repos).await?;
        let id = ChatId::generate();
        let now = Timestamp::now();
        sqlx::query(
            "INSERT INTO chats (id, user_id, repos, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(id.as_str())
        .bind(user.as_str())
        .bind(serde_json::to_string(&repos).expect("ids serialize"))
        .bind(now.unix_millis())
        .execute(&self.pool)
        .await?;
        self.chat(user, &id).await
    }

    pub async fn chat(&self, user: &UserId, id: &ChatId) -> Result<Chat, StoreError> {
        let row = sqlx::query(
            "SELECT id, repos, task_id, created_at, updated_at FROM chats WHERE id = $1 AND user_id = $2",
        )
        .bind(id.as_str())
        .bind(user.as_str())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound { what: "chat" })?;
        let messages = sqlx::query(
            "SELECT author, message, at FROM chat_messages WHERE chat_id = $1 ORDER BY seq",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        chat_from_rows(&row, &messages)
    }

    /// The user's chats, the most recently active first, at most `limit`: each with its first
    /// message (what it is about), how many messages it holds, and its task, if any.
    pub async fn list_chats(
        &self,
        user: &UserId,
        limit: i64,
    ) -> Result<Vec<ChatSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.id, c.repos, c.task_id, c.created_at, c.updated_at, \
             (SELECT m.message FROM chat_messages m WHERE m.chat_id = c.id ORDER BY m.seq LIMIT 1) AS first_message, \
             (SELECT COUNT(*) FROM chat_messages m WHERE m.chat_id = c.id) AS messages \
             FROM chats c WHERE c.user_id = $1 ORDER BY c.updated_at DESC, c.id DESC LIMIT $2",
        )
        .bind(user.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ChatSummary {
                    chat: chat_from_rows(row, &[])?,
                    first_message: row.try_get("first_message")?,
                    messages: row.try_get("messages")?,
                })
            })
            .collect()
    }

    /// Stores a message. When the chat has created its task, the message also steers the task
    /// (SPEC §2): it wakes a task that waits or is done, and is refused, storing nothing, when
    /// the task is cancelled.
    pub async fn post_chat_message(
        &self,
        user: &UserId,
        chat: &ChatId,
        author: &str,
        message: &str,
    ) -> Result<ChatMessage, StoreError> {
        self.post(user, chat, author, message, true).await
    }

    /// The agent's reply in a chat, stored only while the chat has no task: a reply that comes
    /// after the task was made is the agent's words, and never reaches the task as the
    /// owner's steering (it is refused, storing nothing).
    pub async fn post_chat_reply(
        &self,
        user: &UserId,
        chat: &ChatId,
        author: &str,
        message: &str,
    ) -> Result<ChatMessage, StoreError> {
        self.post(user, chat, author, message, false).await
    }

    async fn post(
        &self,
        user: &UserId,
        chat: &ChatId,
        author: &str,
        message: &str,
        steers: bool,
    ) -> Result<ChatMessage, StoreError> {
        if message.trim().is_empty() {
            return Err(
                ValidationError::new("message", "is empty; write what you want to say").into(),
            );
        }
        let mut tx = self.begin_write().await?;
        let now = Timestamp::now();
        let row = sqlx::query(
            "UPDATE chats SET last_seq = last_seq + 1, updated_at = $3 WHERE id = $1 AND user_id = $2 \
             RETURNING last_seq, task_id",
        )
        .bind(chat.as_str())
        .bind(user.as_str())
        .bind(now.unix_millis())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound { what: "chat" })?;
        let seq: i64 = row.try_get("last_seq")?;
        let task: Option<String> = row.try_get("task_id")?;
        if task.is_some() && !steers {
            return Err(StoreError::Conflict {
                message: "the chat's task exists, so the agent's reply was not kept".into(),
            });
        }
        sqlx::query(
            "INSERT INTO chat_messages (chat_id, seq, author, message, at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(chat.as_str())
        .bind(seq)
        .bind(author)
        .bind(message)
        .bind(now.unix_millis())
        .execute(&mut *tx)
        .await?;
        let mut events = Vec::new();
        if let Some(task) = task {
            let task = deft_core::TaskId::from_stored(task);
            let note = json!({ "kind": "steering", "author": author, "message": message });
            let (_, written) = transition_in(
                &mut tx,
                &self.key,
                Actor::Owner(user),
                &task,
                Transition::Steer,
                Some((EventKind::UserMessage, note)),
            )
            .await?;
            events = written;
        }
        tx.commit().await?;
        for event in &events {
            self.published(event);
        }
        Ok(ChatMessage {
            author: author.to_owned(),
            message: message.to_owned(),
            at: now,
        })
    }

    /// Checks that every repository is the user's, naming the first that is not.
    pub(crate) async fn check_repositories(
        &self,
        user: &UserId,
        repos: &[RepoId],
    ) -> Result<(), StoreError> {
        for (index, repo) in repos.iter().enumerate() {
            let found = sqlx::query("SELECT id FROM repositories WHERE id = $1 AND user_id = $2")
                .bind(repo.as_str())
                .bind(user.as_str())
                .fetch_optional(&self.pool)
                .await?;
            if found.is_none() {
                return Err(ValidationError::new(
                    format!("repos[{index}]"),
                    format!("unknown repository `{repo}`; list yours with `GET /api/v1/repos`"),
                )
                .into());
            }
        }
        Ok(())
    }
}

fn chat_from_rows(row: &AnyRow, messages: &[AnyRow]) -> Result<Chat, StoreError> {
    let repos: String = row.try_get("repos")?;
    let task: Option<String> = row.try_get("task_id")?;
    Ok(Chat {
        id: ChatId::from_stored(row.try_get("id")?),
        repos: from_json(&repos, "chat repositories")?,
        messages: messages
            .iter()
            .map(|m| {
                Ok(ChatMessage {
                    author: m.try_get("author")?,
                    message: m.try_get("message")?,
                    at: Timestamp::from_unix_millis(m.try_get("at")?),
                })
            })
            .collect::<Result<_, StoreError>>()?,
        task_id: task.map(deft_core::TaskId::from_stored),
        created_at: Timestamp::from_unix_millis(row.try_get("created_at")?),
        updated_at: Timestamp::from_unix_millis(row.try_get("updated_at")?),
    })
}
