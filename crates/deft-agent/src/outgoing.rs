//! What leaves with a push is searched first: every object the branch would carry (file
//! contents, file names, commit messages, its whole history since the base) against the
//! owner's secrets in every form the redactor knows. A hit refuses the push and names the
//! secret and the file, never the value (SPEC §3: a commit holding a secret is refused).

use std::path::Path;

use deft_core::{Redactor, TaskId};

use crate::Engine;

/// How long the search of one push may take (it reads at most
/// `deft_forge::MAX_SEARCHED_BYTES`).
const SEARCH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(600);

/// Where a secret was found in what a push would send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInPush {
    pub secret: String,
    /// A file's path, or what else held it ("a commit message", "a file name").
    pub place: String,
}

impl SecretInPush {
    /// The owner's instructions, naming the secret and where it is, never its value.
    pub fn message(&self, repo: &str, branch: &str) -> String {
        format!(
            "the push of `{branch}` to {repo} was refused: the value of the secret {} is in {}. Nothing was pushed. Remove it from the branch's history (not only from its last commit), or delete the secret if it is meant to be public, then answer this task",
            self.secret, self.place
        )
    }
}

/// Where in one piece of what a push would carry `redactor` finds a secret, if it does.
pub fn find_secret(redactor: &Redactor, piece: deft_forge::Outgoing<'_>) -> Option<SecretInPush> {
    match piece {
        deft_forge::Outgoing::Path(path) => {
            redactor.find(path.as_bytes()).map(|secret| SecretInPush {
                secret: secret.to_owned(),
                place: format!("a file name (`{}`)", redactor.redact(path)),
            })
        }
        deft_forge::Outgoing::Bytes { path, kind, bytes } => {
            redactor.find(bytes).map(|secret| SecretInPush {
                secret: secret.to_owned(),
                place: match (path, kind) {
                    (Some(path), _) => format!("`{}`", redactor.redact(path)),
                    (None, "commit") => "a commit message".to_owned(),
                    (None, kind) => format!("a {kind}"),
                },
            })
        }
    }
}

impl Engine {
    /// Whether the push of `branch` from the task's private repository (what it has beyond
    /// `base`) would carry a secret of the task's owner. A repository that cannot be read is
    /// an error, never a silent pass.
    pub(crate) async fn secret_in_push(
        &self,
        task: &TaskId,
        owner: &deft_core::UserId,
        private: &Path,
        base: &str,
        branch: &str,
    ) -> Result<Option<SecretInPush>, String> {
        let secrets = self
            .store
            .secret_values(owner)
            .await
            .map_err(|error| error.to_string())?;
        let redactor = Redactor::new(&secrets);
        if redactor.is_empty() {
            return Ok(None);
        }
        let overlap = redactor.longest().saturating_sub(1);
        let head = format!("refs/heads/{branch}");
        let search = deft_forge::each_outgoing(private, base, &head, overlap, |piece| {
            find_secret(&redactor, piece)
        });
        let found = tokio::time::timeout(SEARCH_DEADLINE, search)
            .await
            .map_err(|_| {
                format!(
                    "searching it for secrets took over {} s",
                    SEARCH_DEADLINE.as_secs()
                )
            })?
            .map_err(|error| error.to_string())?;
        if let Some(found) = &found {
            tracing::warn!(task.id = %task, secret = %found.secret, "a push would carry a secret; refused");
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn a_secret_is_found_in_contents_names_and_messages_in_any_known_form() {
        let redactor = Redactor::new(
            &[("API_KEY".to_owned(), "sk-live-9f8e7d6c5b".to_owned())]
                .into_iter()
                .collect(),
        );
        let bytes = |path, kind, bytes| deft_forge::Outgoing::Bytes { path, kind, bytes };
        let clean = bytes(Some("src/lib.rs"), "blob", b"fn main() {}");
        assert_eq!(find_secret(&redactor, clean), None);
        let encoded = base64::engine::general_purpose::STANDARD.encode("key=sk-live-9f8e7d6c5b");
        let found = find_secret(
            &redactor,
            bytes(Some("config/app.env"), "blob", encoded.as_bytes()),
        )
        .unwrap();
        assert_eq!(found.secret, "API_KEY");
        assert_eq!(found.place, "`config/app.env`");
        let named = find_secret(
            &redactor,
            deft_forge::Outgoing::Path("sk-live-9f8e7d6c5b.txt"),
        )
        .unwrap();
        assert_eq!(named.place, "a file name (`[secret:API_KEY].txt`)");
        let message = find_secret(
            &redactor,
            bytes(None, "commit", b"tree 0\n\nuse sk-live-9f8e7d6c5b"),
        )
        .unwrap();
        assert_eq!(message.place, "a commit message");
        assert!(!message.message("widgets", "deft/x").contains("sk-live"));
    }
}
