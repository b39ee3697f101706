//! The agent's side of a chat before its task exists (SPEC §1: a chat talks first, then
//! creates its one task): `deft_agent::chat`, which reads the chat's local repositories
//! before it answers, with the conversation the chat holds.

use deft_core::{ChatMessage, Repository, User};
use deft_llm::{Content, Message, ModelClient, Role};
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

/// The name the web app gives the agent's chat messages.
const AGENT: &str = "deft";

/// How long one chat reply may take, reading and writing.
const REPLY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);

#[derive(Debug)]
pub struct ModelChat {
    pub client: ModelClient,
    pub stop: CancellationToken,
    /// The search provider the operator configured; with one, the chat may search and read
    /// the web under the person's network level.
    pub web: Option<std::sync::Arc<deft_web::SearchClient>>,
    pub store: deft_store::Store,
}

/// Chat messages as a model conversation: the person's turns and the agent's, consecutive
/// turns of one side joined (providers refuse two user turns in a row).
fn conversation(messages: &[ChatMessage]) -> Vec<Message> {
    let mut turns: Vec<Message> = Vec::new();
    for message in messages {
        let role = if message.author == AGENT {
            Role::Assistant
        } else {
            Role::User
        };
        match turns.last_mut() {
            Some(last) if last.role == role => {
                last.content.push(Content::Text(message.message.clone()));
            }
            _ => turns.push(Message {
                role,
                content: vec![Content::Text(message.message.clone())],
            }),
        }
    }
    turns
}

impl deft_server::ChatReplier for ModelChat {
    fn reply<'a>(
        &'a self,
        user: &'a User,
        repos: &'a [Repository],
        messages: &'a [ChatMessage],
        watch: &'a (dyn Fn(&str) + Send + Sync),
    ) -> BoxFuture<'a, Result<deft_server::ChatReply, String>> {
        Box::pin(async move {
            let readable: Vec<deft_agent::chat::ChatRepo> = repos
                .iter()
                .map(|repo| deft_agent::chat::ChatRepo {
                    name: repo.name.clone(),
                    location: (repo.forge == deft_core::ForgeKind::Local)
                        .then(|| std::path::PathBuf::from(&repo.location)),
                    default_branch: repo.default_branch.clone(),
                })
                .collect();
            let web = match &self.web {
                Some(search) => {
                    let environment = self
                        .store
                        .environment(&user.id)
                        .await
                        .map_err(|error| error.to_string())?;
                    let policy = deft_agent::engine::egress_policy(&environment.network);
                    Some(deft_agent::web::Web::new(
                        search.clone(),
                        deft_web::FetchPolicy::new(policy),
                        &[],
                    ))
                }
                None => None,
            };
            let learnings: Vec<String> = self
                .store
                .list_learnings(&user.id)
                .await
                .map_err(|error| error.to_string())?
                .into_iter()
                .map(|learning| learning.text)
                .collect();
            // A reply has a deadline: its reads and its model calls stop with it.
            let answer = tokio::time::timeout(
                REPLY_DEADLINE,
                deft_agent::chat::reply(
                    deft_agent::chat::ChatSetting {
                        client: &self.client,
                        person: &user.name,
                        repos: &readable,
                        learnings: &learnings,
                        web: web.as_ref(),
                        watch: Some(watch),
                    },
                    conversation(messages),
                    &self.stop,
                ),
            )
            .await
            .map_err(|_| {
                format!(
                    "the reply took over {} s and was given up; ask a narrower question",
                    REPLY_DEADLINE.as_secs()
                )
            })?
            .map_err(|error| error.to_string())?;
            Ok(deft_server::ChatReply {
                text: answer.text,
                model: self.client.config().label(),
                usage: answer.usage,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deft_core::Timestamp;

    fn said(author: &str, message: &str) -> ChatMessage {
        ChatMessage {
            author: author.into(),
            message: message.into(),
            at: Timestamp::now(),
        }
    }

    #[test]
    fn turns_alternate_and_the_agents_messages_are_the_assistants() {
        let turns = conversation(&[
            said("ada", "add a health check"),
            said("ada", "on /healthz"),
            said(AGENT, "Should it check the database?"),
            said("ada", "yes"),
        ]);
        let roles: Vec<Role> = turns.iter().map(|turn| turn.role).collect();
        assert_eq!(roles, [Role::User, Role::Assistant, Role::User]);
        assert_eq!(turns[0].content.len(), 2, "two user messages in one turn");
    }
}
