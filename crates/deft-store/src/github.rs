//! What the store keeps for GitHub: the link from a GitHub login to a deft user, received
//! webhook deliveries (for idempotence), the lookups from an issue, a pull request or a
//! branch on GitHub back to its tasks, the rounds failing checks started on each pull
//! request, and the App authorizations people start from the settings page.

use deft_core::{ForgeKind, PullRequestStatus, TaskId, TaskState, Timestamp, User, UserId};
use sqlx::Row as _;

use crate::users::{hash_token, user_from_row};
use crate::{Store, StoreError};

/// A task started from a GitHub issue, with its owner and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueTask {
    pub task: TaskId,
    pub owner: UserId,
    pub state: TaskState,
}

/// An authorization of the App a person started: what finishing it needs.
#[derive(Clone)]
pub struct PendingAuthorization {
    pub user: UserId,
    /// The PKCE verifier of the challenge GitHub was given.
    pub verifier: String,
    pub redirect_uri: String,
}

impl std::fmt::Debug for PendingAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAuthorization")
            .field("user", &self.user)
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

/// Refuses feedback on a task whose pull requests were all merged: its work has landed, so
/// it is final (SPEC §5 "GitHub"); more work is a new task. Called inside the transition's
/// write transaction.
pub(crate) async fn refuse_if_merged(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: &TaskId,
) -> Result<(), StoreError> {
    let rows = sqlx::query("SELECT status FROM pull_requests WHERE task_id = $1")
        .bind(id.as_str())
        .fetch_all(&mut **tx)
        .await?;
    let merged = PullRequestStatus::Merged.as_str();
    let statuses = rows
        .iter()
        .map(|row| row.try_get::<String, _>("status"))
        .collect::<Result<Vec<_>, _>>()?;
    if !statuses.is_empty() && statuses.iter().all(|status| status == merged) {
        return Err(StoreError::Conflict {
            message: "this task's pull request was merged, so the task is final; create a new task for more work".into(),
        });
    }
    Ok(())
}

/// Which GitHub repositories a lookup covers.
#[derive(Debug, Clone, Copy)]
pub enum GithubScope<'a> {
    /// These, by `owner/name`, whoever registered them.
    Repos(&'a [String]),
    /// Every GitHub repository this user registered.
    User(&'a UserId),
    /// Every GitHub repository.
    All,
}

/// The `task_id` column of a row that may not be there.
fn task_id(row: Option<sqlx::any::AnyRow>) -> Result<Option<TaskId>, StoreError> {
    Ok(row
        .map(|row| row.try_get::<String, _>("task_id"))
        .transpose()?
        .map(TaskId::from_stored))
}

impl Store {
    /// Links `user` to the GitHub account `login` (an administrator vouches for it): that
    /// login's triggers and reviews act as this user.
    pub async fn link_github(&self, user: &UserId, login: &str) -> Result<(), StoreError> {
        let login = login.trim().to_lowercase();
        if login.is_empty() || !login.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(deft_core::ValidationError::new(
                "login",
                "is not a GitHub login; use letters, digits and hyphens, as in `octocat`",
            )
            .into());
        }
        let taken = sqlx::query("SELECT user_id FROM github_accounts WHERE login = $1")
            .bind(&login)
            .fetch_optional(&self.pool)
            .await?;
        if let Some(row) = taken {
            let owner: String = row.try_get("user_id")?;
            if owner != user.as_str() {
                return Err(StoreError::Conflict {
                    message: format!(
                        "the GitHub login `{login}` is linked to another deft user; unlink it there first"
                    ),
                });
            }
        }
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM github_accounts WHERE user_id = $1")
            .bind(user.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO github_accounts (user_id, login) VALUES ($1, $2)")
            .bind(user.as_str())
            .bind(&login)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The deft user a GitHub login is linked to.
    pub async fn github_user(&self, login: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(
            "SELECT u.id, u.name, u.is_admin, u.created_at FROM github_accounts g \
             JOIN users u ON u.id = g.user_id WHERE g.login = $1",
        )
        .bind(login.to_lowercase())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// The GitHub login linked to `user`.
    pub async fn github_login(&self, user: &UserId) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT login FROM github_accounts WHERE user_id = $1")
            .bind(user.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.try_get("login")).transpose()?)
    }

    /// Removes the link of `login` (the person revoked the App); returns whose it was.
    pub async fn unlink_github(&self, login: &str) -> Result<Option<UserId>, StoreError> {
        let row = sqlx::query("DELETE FROM github_accounts WHERE login = $1 RETURNING user_id")
            .bind(login.to_lowercase())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|row| row.try_get::<String, _>("user_id"))
            .transpose()?
            .map(UserId::from_stored))
    }

    /// Records a webhook delivery with its body; `false` when it was received before (GitHub
    /// redelivers).
    pub async fn record_delivery(
        &self,
        id: &str,
        event: &str,
        payload: &[u8],
    ) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO github_deliveries (id, event, received_at, payload) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(event)
        .bind(Timestamp::now().unix_millis())
        .bind(String::from_utf8_lossy(payload).into_owned())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// The delivery was acted on: its body is no longer kept.
    pub async fn delivery_done(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE github_deliveries SET processed_at = $2, payload = NULL WHERE id = $1")
            .bind(id)
            .bind(Timestamp::now().unix_millis())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deliveries received but not acted on (deft stopped in between), oldest first:
    /// `(id, event, body)`.
    pub async fn pending_deliveries(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, event, payload FROM github_deliveries \
             WHERE processed_at IS NULL AND payload IS NOT NULL ORDER BY received_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("id")?,
                    row.try_get("event")?,
                    row.try_get("payload")?,
                ))
            })
            .collect()
    }

    /// Forgets the ids of deliveries acted on before `cutoff`: GitHub redelivers for days, not
    /// months.
    pub async fn prune_deliveries(&self, cutoff: Timestamp) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "DELETE FROM github_deliveries WHERE processed_at IS NOT NULL AND received_at < $1",
        )
        .bind(cutoff.unix_millis())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Remembers that `task` was started from issue `number` of the GitHub repository `repo`.
    pub async fn link_issue(
        &self,
        task: &TaskId,
        repo: &str,
        number: u64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO github_issue_tasks (task_id, repo, number) VALUES ($1, $2, $3)")
            .bind(task.as_str())
            .bind(repo)
            .bind(i64::try_from(number).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The GitHub issue `(repo, number)` a task was started from.
    pub async fn issue_of(&self, task: &TaskId) -> Result<Option<(String, u64)>, StoreError> {
        let row = sqlx::query("SELECT repo, number FROM github_issue_tasks WHERE task_id = $1")
            .bind(task.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            let number: i64 = row.try_get("number")?;
            Ok((
                row.try_get("repo")?,
                u64::try_from(number).unwrap_or_default(),
            ))
        })
        .transpose()
    }

    /// The task whose pull request on GitHub is at `url` (its page).
    pub async fn task_by_pull_request_url(&self, url: &str) -> Result<Option<TaskId>, StoreError> {
        let row = sqlx::query("SELECT task_id FROM pull_requests WHERE url = $1")
            .bind(url)
            .fetch_optional(&self.pool)
            .await?;
        task_id(row)
    }

    /// The task whose pull request on the GitHub repository `full_name` comes from `branch`.
    pub async fn task_by_branch(
        &self,
        full_name: &str,
        branch: &str,
    ) -> Result<Option<TaskId>, StoreError> {
        let row = sqlx::query(
            "SELECT p.task_id FROM pull_requests p JOIN repositories r ON r.id = p.repo_id \
             WHERE r.forge = $1 AND r.location = $2 AND p.head = $3",
        )
        .bind(ForgeKind::Github.as_str())
        .bind(full_name)
        .bind(branch)
        .fetch_optional(&self.pool)
        .await?;
        task_id(row)
    }

    /// Tasks not yet finished that work on GitHub repositories of `scope`.
    pub async fn open_github_tasks(
        &self,
        scope: GithubScope<'_>,
    ) -> Result<Vec<TaskId>, StoreError> {
        let rows = sqlx::query("SELECT id, user_id, location FROM repositories WHERE forge = $1")
            .bind(ForgeKind::Github.as_str())
            .fetch_all(&self.pool)
            .await?;
        let mut repo_ids = Vec::new();
        for row in &rows {
            let location: String = row.try_get("location")?;
            let owner: String = row.try_get("user_id")?;
            let within = match scope {
                GithubScope::Repos(names) => names.contains(&location),
                GithubScope::User(user) => user.as_str() == owner,
                GithubScope::All => true,
            };
            if within {
                repo_ids.push(row.try_get::<String, _>("id")?);
            }
        }
        if repo_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query("SELECT id, repos FROM tasks WHERE state IN ($1, $2, $3)")
            .bind(TaskState::Queued.as_str())
            .bind(TaskState::InProgress.as_str())
            .bind(TaskState::NeedsAttention.as_str())
            .fetch_all(&self.pool)
            .await?;
        let mut tasks = Vec::new();
        for row in &rows {
            let repos: String = row.try_get("repos")?;
            let repos: Vec<String> = crate::from_json(&repos, "task repositories")?;
            if repos.iter().any(|repo| repo_ids.contains(repo)) {
                tasks.push(TaskId::from_stored(row.try_get("id")?));
            }
        }
        Ok(tasks)
    }

    /// The tasks started from issue `number` of `repo`, newest first.
    pub async fn issue_tasks(&self, repo: &str, number: u64) -> Result<Vec<IssueTask>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.id, t.user_id, t.state FROM github_issue_tasks g JOIN tasks t ON t.id = g.task_id \
             WHERE g.repo = $1 AND g.number = $2 ORDER BY t.created_at DESC, t.id DESC",
        )
        .bind(repo)
        .bind(i64::try_from(number).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let state: String = row.try_get("state")?;
                Ok(IssueTask {
                    task: TaskId::from_stored(row.try_get("id")?),
                    owner: UserId::from_stored(row.try_get("user_id")?),
                    state: TaskState::parse(&state).ok_or_else(|| StoreError::Corrupt {
                        what: format!("state `{state}` of a task"),
                    })?,
                })
            })
            .collect()
    }

    /// Counts a round failing checks start on the pull request at `url` for its head commit
    /// `sha`: `false`, counting nothing, when one was already started for that commit or
    /// `cap` rounds were.
    pub async fn take_check_fix_round(
        &self,
        url: &str,
        sha: &str,
        cap: u32,
    ) -> Result<bool, StoreError> {
        let taken = sqlx::query(
            "UPDATE pull_requests SET check_fix_rounds = check_fix_rounds + 1, check_fix_sha = $2 \
             WHERE url = $1 AND check_fix_rounds < $3 AND (check_fix_sha IS NULL OR check_fix_sha <> $2)",
        )
        .bind(url)
        .bind(sha)
        .bind(i64::from(cap))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(taken > 0)
    }

    /// Remembers an authorization of the App that `user` starts in the browser session
    /// `session` (its token): `state` and the PKCE `verifier`, for `ttl_ms`.
    pub async fn begin_github_authorization(
        &self,
        user: &UserId,
        session: &str,
        state: &str,
        verifier: &str,
        redirect_uri: &str,
        ttl_ms: i64,
    ) -> Result<(), StoreError> {
        let now = Timestamp::now();
        sqlx::query("DELETE FROM github_authorizations WHERE expires_at < $1")
            .bind(now.unix_millis())
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO github_authorizations (state_hash, session_hash, user_id, verifier, redirect_uri, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(hash_token(state))
        .bind(hash_token(session))
        .bind(user.as_str())
        .bind(verifier)
        .bind(redirect_uri)
        .bind(now.plus_millis(ttl_ms).unix_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Takes the authorization started with `state`: `None` when there is none, it expired,
    /// or it was started in another browser session. Taken once, whatever the answer.
    pub async fn take_github_authorization(
        &self,
        state: &str,
        session: &str,
    ) -> Result<Option<PendingAuthorization>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM github_authorizations WHERE state_hash = $1 \
             RETURNING session_hash, user_id, verifier, redirect_uri, expires_at",
        )
        .bind(hash_token(state))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let session_hash: String = row.try_get("session_hash")?;
        let expires: i64 = row.try_get("expires_at")?;
        if session_hash != hash_token(session) || expires < Timestamp::now().unix_millis() {
            return Ok(None);
        }
        Ok(Some(PendingAuthorization {
            user: UserId::from_stored(row.try_get("user_id")?),
            verifier: row.try_get("verifier")?,
            redirect_uri: row.try_get("redirect_uri")?,
        }))
    }
}
