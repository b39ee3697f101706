//! Tasks: creation (alone or from a chat), listing, reading, and every change of state.
//!
//! A change of state is read, checked by [`TaskStatus::apply`] and written in one write
//! transaction, together with the events that record it, so that the log and the task never
//! disagree and two concurrent changes cannot both succeed from the same state.

use std::collections::HashMap;

use deft_core::{
    ChatId, Event, EventKind, Plan, Progress, PullRequest, PullRequestStatus, RepoId, StepEvent,
    Task, TaskId, TaskState, TaskStatus, Timestamp, Transition, Usage, UserId, ValidationError,
};
use serde_json::json;
use sqlx::Row as _;
use sqlx::any::AnyRow;

use crate::events::{RowChange, append_changing_in, append_in};
use crate::{Store, StoreError, bool_column, from_json};

#[derive(Debug, Clone)]
pub struct NewTask {
    pub description: String,
    pub repos: Vec<RepoId>,
    pub chat_id: Option<ChatId>,
    pub approve_plan: bool,
}

#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub state: Option<TaskState>,
    /// Leaves out the tasks in this state (a list that shows them apart, above the rest).
    pub except: Option<TaskState>,
    /// Only tasks whose description holds this text, case aside (ASCII case on SQLite).
    pub text: Option<String>,
    /// Only tasks that work on this repository.
    pub repo: Option<RepoId>,
    /// Only tasks created before this one (the previous page's `next_before`).
    pub before: Option<TaskId>,
    pub limit: i64,
}

/// One page of tasks, newest first.
#[derive(Debug, Clone)]
pub struct TaskPage {
    pub tasks: Vec<Task>,
    /// Pass as `before` for the next page; `None` on the last page.
    pub next_before: Option<TaskId>,
    /// What a list shows of each task beyond the task, by its id.
    pub listings: HashMap<TaskId, Listing>,
}

/// What a list shows of a task beyond the task itself.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// When the task last entered the queue: where its current round began.
    pub round_started: Option<Timestamp>,
    /// The lines each pull request adds and removes, by repository, where its diff was read.
    pub diff_stats: HashMap<RepoId, DiffStat>,
}

/// The lines a pull request adds and removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiffStat {
    pub additions: i64,
    pub deletions: i64,
}

/// Who changes a task: its owner through the API, or deft itself (the scheduler, the agent).
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    Owner(&'a UserId),
    Deft,
}

const COLUMNS: &str = "id, user_id, state, attention_kind, attention_message, description, repos, \
    chat_id, approve_plan, plan, queued_at, input_tokens, output_tokens, cached_tokens, \
    created_at, updated_at";

fn task_from_row(row: &AnyRow) -> Result<Task, StoreError> {
    let id: String = row.try_get("id")?;
    let state: String = row.try_get("state")?;
    let kind: Option<String> = row.try_get("attention_kind")?;
    let message: Option<String> = row.try_get("attention_message")?;
    let status =
        TaskStatus::from_parts(&state, kind.as_deref(), message.as_deref()).ok_or_else(|| {
            StoreError::Corrupt {
                what: format!("state of task {id}"),
            }
        })?;
    let repos: String = row.try_get("repos")?;
    let plan: Option<String> = row.try_get("plan")?;
    let chat_id: Option<String> = row.try_get("chat_id")?;
    Ok(Task {
        id: TaskId::from_stored(id),
        owner: UserId::from_stored(row.try_get("user_id")?),
        status,
        description: row.try_get("description")?,
        repos: from_json::<Vec<RepoId>>(&repos, "task repositories")?,
        chat_id: chat_id.map(ChatId::from_stored),
        approve_plan: bool_column(row.try_get("approve_plan")?),
        plan: plan
            .as_deref()
            .map(|plan| from_json::<Plan>(plan, "task plan"))
            .transpose()?,
        pull_requests: Vec::new(),
        usage: Usage {
            input_tokens: row.try_get("input_tokens")?,
            output_tokens: row.try_get("output_tokens")?,
            cached_tokens: row.try_get("cached_tokens")?,
        },
        created_at: Timestamp::from_unix_millis(row.try_get("created_at")?),
        updated_at: Timestamp::from_unix_millis(row.try_get("updated_at")?),
        queue_position: None,
    })
}

fn pull_request_from_row(row: &AnyRow) -> Result<(TaskId, PullRequest), StoreError> {
    let status: String = row.try_get("status")?;
    Ok((
        TaskId::from_stored(row.try_get("task_id")?),
        PullRequest {
            repo: RepoId::from_stored(row.try_get("repo_id")?),
            base: row.try_get("base")?,
            head: row.try_get("head")?,
            title: row.try_get("title")?,
            body: row.try_get("body")?,
            status: PullRequestStatus::parse(&status).ok_or_else(|| StoreError::Corrupt {
                what: format!("pull request status `{status}`"),
            })?,
            url: row.try_get("url")?,
        },
    ))
}

const PR_COLUMNS: &str = "task_id, repo_id, base, head, title, body, status, url";

impl Store {
    /// Creates a `queued` task and its first event. With a chat, the chat must be the user's
    /// and have no task yet.
    pub async fn create_task(&self, user: &UserId, new: NewTask) -> Result<Task, StoreError> {
        if new.description.trim().is_empty() {
            return Err(ValidationError::new(
                "description",
                "is empty; describe what the agent should do",
            )
            .into());
        }
        if new.repos.is_empty() {
            return Err(ValidationError::new(
                "repos",
                "is empty; name at least one repository (its id, or a path for the local forge)",
            )
            .into());
        }
        self.check_repositories(user, &new.repos).await?;
        let mut tx = self.begin_write().await?;
        let id = TaskId::generate();
        let now = Timestamp::now();
        if let Some(chat) = &new.chat_id {
            claim_chat(&mut tx, user, chat, &id, now).await?;
        }
        sqlx::query(
            "INSERT INTO tasks (id, user_id, state, description, repos, chat_id, approve_plan, \
             queued_at, created_at, updated_at) VALUES ($1, $2, 'queued', $3, $4, $5, $6, $7, $7, $7)",
        )
        .bind(id.as_str())
        .bind(user.as_str())
        .bind(&new.description)
        .bind(serde_json::to_string(&new.repos).expect("ids serialize"))
        .bind(new.chat_id.as_ref().map(ChatId::as_str))
        .bind(i64::from(new.approve_plan))
        .bind(now.unix_millis())
        .execute(&mut *tx)
        .await?;
        let data = json!({
            "description": new.description,
            "repos": new.repos,
            "chat_id": new.chat_id,
            "approve_plan": new.approve_plan,
            "state": TaskState::Queued,
        });
        let event = append_in(&mut tx, &self.key, &id, EventKind::TaskCreated, data, now).await?;
        tx.commit().await?;
        self.published(&event);
        self.task(user, &id).await
    }

    /// One task of the user's, with its pull requests and, while queued, its queue position.
    pub async fn task(&self, user: &UserId, id: &TaskId) -> Result<Task, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM tasks WHERE id = $1 AND user_id = $2"
        )))
        .bind(id.as_str())
        .bind(user.as_str())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound { what: "task" })?;
        let mut task = task_from_row(&row)?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PR_COLUMNS} FROM pull_requests WHERE task_id = $1 ORDER BY created_at, repo_id"
        )))
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        for row in &rows {
            task.pull_requests.push(pull_request_from_row(row)?.1);
        }
        if task.state() == TaskState::Queued {
            let queued_at: i64 = row.try_get::<Option<i64>, _>("queued_at")?.unwrap_or(0);
            let ahead: i64 = sqlx::query(
                "SELECT COUNT(*) AS n FROM tasks WHERE user_id = $1 AND state = 'queued' \
                 AND (queued_at < $2 OR (queued_at = $2 AND id < $3))",
            )
            .bind(user.as_str())
            .bind(queued_at)
            .bind(id.as_str())
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
            task.queue_position = Some(ahead + 1);
        }
        Ok(task)
    }

    /// A page of the user's tasks, newest first.
    pub async fn list_tasks(
        &self,
        user: &UserId,
        filter: &TaskFilter,
    ) -> Result<TaskPage, StoreError> {
        let limit = filter.limit.clamp(1, 500);
        let mut sql = format!("SELECT {COLUMNS}, queued_at FROM tasks WHERE user_id = $1");
        let mut binds = vec![user.as_str().to_owned()];
        if let Some(state) = filter.state {
            binds.push(state.as_str().to_owned());
            sql.push_str(&format!(" AND state = ${}", binds.len()));
        }
        if let Some(state) = filter.except {
            binds.push(state.as_str().to_owned());
            sql.push_str(&format!(" AND state <> ${}", binds.len()));
        }
        if let Some(text) = filter
            .text
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            binds.push(format!("%{}%", like_escaped(&text.to_lowercase())));
            sql.push_str(&format!(
                " AND LOWER(description) LIKE ${} ESCAPE '\\'",
                binds.len()
            ));
        }
        if let Some(repo) = &filter.repo {
            // `repos` is a JSON array of ids, each quoted.
            binds.push(format!("%\"{}\"%", like_escaped(repo.as_str())));
            sql.push_str(&format!(" AND repos LIKE ${} ESCAPE '\\'", binds.len()));
        }
        if let Some(before) = &filter.before {
            binds.push(before.as_str().to_owned());
            sql.push_str(&format!(" AND id < ${}", binds.len()));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", binds.len() + 1));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for bind in binds {
            query = query.bind(bind);
        }
        let rows = query.bind(limit + 1).fetch_all(&self.pool).await?;
        let mut tasks = Vec::new();
        let mut listings = HashMap::new();
        for row in rows.iter().take(limit as usize) {
            let task = task_from_row(row)?;
            let queued_at: Option<i64> = row.try_get("queued_at")?;
            listings.insert(
                task.id.clone(),
                Listing {
                    round_started: queued_at.map(Timestamp::from_unix_millis),
                    diff_stats: HashMap::new(),
                },
            );
            tasks.push(task);
        }
        let next_before = (rows.len() as i64 > limit)
            .then(|| tasks.last().map(|t| t.id.clone()))
            .flatten();
        if let (Some(newest), Some(oldest)) = (tasks.first(), tasks.last()) {
            // Ids are ordered, so one range read fetches every pull request of the page.
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {PR_COLUMNS}, additions, deletions FROM pull_requests WHERE user_id = $1 \
                 AND task_id >= $2 AND task_id <= $3 ORDER BY created_at, repo_id"
            )))
            .bind(user.as_str())
            .bind(oldest.id.as_str())
            .bind(newest.id.as_str())
            .fetch_all(&self.pool)
            .await?;
            for row in &rows {
                let (task_id, pull_request) = pull_request_from_row(row)?;
                let additions: Option<i64> = row.try_get("additions")?;
                let deletions: Option<i64> = row.try_get("deletions")?;
                if let (Some(additions), Some(deletions), Some(listing)) =
                    (additions, deletions, listings.get_mut(&task_id))
                {
                    listing.diff_stats.insert(
                        pull_request.repo.clone(),
                        DiffStat {
                            additions,
                            deletions,
                        },
                    );
                }
                if let Some(task) = tasks.iter_mut().find(|task| task.id == task_id) {
                    task.pull_requests.push(pull_request);
                }
            }
        }
        Ok(TaskPage {
            tasks,
            next_before,
            listings,
        })
    }

    /// How many of the user's tasks wait for them (`needs_attention`), for the navigation.
    pub async fn count_needing_attention(&self, user: &UserId) -> Result<i64, StoreError> {
        Ok(sqlx::query(
            "SELECT COUNT(*) AS n FROM tasks WHERE user_id = $1 AND state = 'needs_attention'",
        )
        .bind(user.as_str())
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?)
    }

    /// Keeps what a pull request's diff was read to add and remove, for lists to show. The
    /// head names the branch as it was read, so counts of a diff read before a later push
    /// (which clears them) are not kept for it.
    pub async fn set_diff_stat(
        &self,
        user: &UserId,
        id: &TaskId,
        repo: &RepoId,
        head: &str,
        stat: DiffStat,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE pull_requests SET additions = $1, deletions = $2 \
             WHERE task_id = $3 AND repo_id = $4 AND user_id = $5 AND head = $6",
        )
        .bind(stat.additions)
        .bind(stat.deletions)
        .bind(id.as_str())
        .bind(repo.as_str())
        .bind(user.as_str())
        .bind(head)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Applies `transition` to the task and records it. `note` is an event written first (the
    /// owner's answer or feedback), so that the log reads as cause, then effect. A transition
    /// that leaves the state as it is writes only the note.
    pub async fn transition(
        &self,
        actor: Actor<'_>,
        id: &TaskId,
        transition: Transition,
        note: Option<(EventKind, serde_json::Value)>,
    ) -> Result<Task, StoreError> {
        let mut tx = self.begin_write().await?;
        let (owner, events) =
            transition_in(&mut tx, &self.key, actor, id, transition, note).await?;
        tx.commit().await?;
        for event in &events {
            self.published(event);
        }
        self.task(&owner, id).await
    }

    /// Retention (SPEC §2): deletes the chats and tasks, with their messages and events, whose
    /// last activity is before `cutoff`. Tasks still running or queued are kept whatever their
    /// age; nothing on a forge is touched. Returns how many tasks and chats went.
    pub async fn sweep_inactive(&self, cutoff: Timestamp) -> Result<(u64, u64), StoreError> {
        let mut tx = self.begin_write().await?;
        let tasks = sqlx::query(
            "DELETE FROM tasks WHERE updated_at < $1 AND state IN ('completed', 'cancelled', 'needs_attention')",
        )
        .bind(cutoff.unix_millis())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // A chat goes with its task, or alone when it never made one.
        let chats = sqlx::query(
            "DELETE FROM chats WHERE updated_at < $1 AND (task_id IS NULL OR task_id NOT IN (SELECT id FROM tasks))",
        )
        .bind(cutoff.unix_millis())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok((tasks, chats))
    }

    /// How many tasks are in each state, across every user (for `/metrics`).
    pub async fn count_by_state(&self) -> Result<Vec<(TaskState, i64)>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM tasks GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        let mut counts: Vec<(TaskState, i64)> =
            TaskState::ALL.iter().map(|state| (*state, 0)).collect();
        for row in rows {
            let state: String = row.try_get("state")?;
            let n: i64 = row.try_get("n")?;
            if let Some(slot) = counts.iter_mut().find(|(s, _)| s.as_str() == state) {
                slot.1 = n;
            }
        }
        Ok(counts)
    }

    /// Tasks left `in_progress` (by a process that died), to run again from their last step.
    pub async fn in_progress(&self) -> Result<Vec<TaskId>, StoreError> {
        let rows = sqlx::query("SELECT id FROM tasks WHERE state = 'in_progress' ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok(TaskId::from_stored(row.try_get("id")?)))
            .collect()
    }

    /// A task read by deft itself (the engine, the scheduler), whoever owns it.
    pub async fn task_by_id(&self, id: &TaskId) -> Result<Task, StoreError> {
        let owner: String = sqlx::query("SELECT user_id FROM tasks WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound { what: "task" })?
            .try_get("user_id")?;
        self.task(&UserId::from_stored(owner), id).await
    }

    /// Where the task's run stands, as the engine last wrote it.
    pub async fn progress(&self, id: &TaskId) -> Result<Option<Progress>, StoreError> {
        let text: Option<String> = sqlx::query("SELECT progress FROM tasks WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound { what: "task" })?
            .try_get("progress")?;
        text.map(|text| from_json(&text, "task progress"))
            .transpose()
    }

    pub async fn set_progress(&self, id: &TaskId, progress: &Progress) -> Result<(), StoreError> {
        sqlx::query("UPDATE tasks SET progress = $2 WHERE id = $1")
            .bind(id.as_str())
            .bind(progress_json(progress))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records the plan and shows it in the log.
    pub async fn set_plan(&self, id: &TaskId, plan: &Plan) -> Result<Event, StoreError> {
        let mut tx = self.begin_write().await?;
        let event = set_plan_in(&mut tx, &self.key, id, plan).await?;
        tx.commit().await?;
        self.published(&event);
        Ok(event)
    }

    /// The owner approves the plan waiting for approval, edited or not, in one transaction:
    /// no worker can pick the task up between the approval and the edited plan.
    pub async fn approve_plan(
        &self,
        user: &UserId,
        id: &TaskId,
        edited: Option<&Plan>,
        note: (EventKind, serde_json::Value),
    ) -> Result<Task, StoreError> {
        let mut tx = self.begin_write().await?;
        let (owner, mut events) = transition_in(
            &mut tx,
            &self.key,
            Actor::Owner(user),
            id,
            Transition::Approve,
            Some(note),
        )
        .await?;
        if let Some(plan) = edited {
            events.push(set_plan_in(&mut tx, &self.key, id, plan).await?);
        }
        tx.commit().await?;
        for event in &events {
            self.published(event);
        }
        self.task(&owner, id).await
    }

    /// Opens or updates the task's pull request for one repository (one per repository).
    pub async fn upsert_pull_request(
        &self,
        id: &TaskId,
        pull_request: &PullRequest,
    ) -> Result<Event, StoreError> {
        let mut tx = self.begin_write().await?;
        let now = Timestamp::now().unix_millis();
        sqlx::query(
            "INSERT INTO pull_requests (task_id, repo_id, user_id, base, head, title, body, status, url, created_at, updated_at) \
             SELECT id, $2, user_id, $3, $4, $5, $6, $7, $8, $9, $9 FROM tasks WHERE id = $1 \
             ON CONFLICT (task_id, repo_id) DO UPDATE SET base = excluded.base, head = excluded.head, \
             title = excluded.title, body = excluded.body, status = excluded.status, url = excluded.url, \
             updated_at = excluded.updated_at, additions = NULL, deletions = NULL",
        )
        .bind(id.as_str())
        .bind(pull_request.repo.as_str())
        .bind(&pull_request.base)
        .bind(&pull_request.head)
        .bind(&pull_request.title)
        .bind(&pull_request.body)
        .bind(pull_request.status.as_str())
        .bind(pull_request.url.as_deref())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let data = serde_json::to_value(pull_request).expect("pull requests serialize");
        self.commit_with_event(tx, id, EventKind::PullRequest, data)
            .await
    }

    /// Records that a task's pull request for `repo` was merged or closed on its forge (a
    /// `pull_request` webhook, or the local repository's branches). `false` when the task has
    /// no pull request there.
    pub async fn set_pull_request_status(
        &self,
        id: &TaskId,
        repo: &RepoId,
        status: PullRequestStatus,
    ) -> Result<bool, StoreError> {
        let update = "UPDATE pull_requests SET status = $1, updated_at = $2 \
                      WHERE task_id = $3 AND repo_id = $4";
        self.update_pull_request_status(update, status, &[id.as_str(), repo.as_str()])
            .await
    }

    /// The same for the pull request whose page is `url` (a GitHub webhook names it so).
    pub async fn set_pull_request_status_at(
        &self,
        url: &str,
        status: PullRequestStatus,
    ) -> Result<bool, StoreError> {
        let update = "UPDATE pull_requests SET status = $1, updated_at = $2 WHERE url = $3";
        self.update_pull_request_status(update, status, &[url])
            .await
    }

    /// Runs `update`, which sets the status (`$1`) and the time of change (`$2`) of the pull
    /// requests `keys` (`$3`…) name; `false` when it names none.
    async fn update_pull_request_status(
        &self,
        update: &'static str,
        status: PullRequestStatus,
        keys: &[&str],
    ) -> Result<bool, StoreError> {
        let mut query = sqlx::query(update)
            .bind(status.as_str())
            .bind(Timestamp::now().unix_millis());
        for key in keys {
            query = query.bind(*key);
        }
        Ok(query.execute(&self.pool).await?.rows_affected() > 0)
    }

    /// Adds the tokens of one model call to the task and to its owner's usage.
    pub async fn record_usage(
        &self,
        id: &TaskId,
        model: &str,
        usage: Usage,
    ) -> Result<(), StoreError> {
        self.record_model_call(id, model, usage, None, &[])
            .await
            .map(drop)
    }

    /// Adds the tokens of one model call and, in the same transaction, the event that tells
    /// of it and a `tool_call` event for each of `calls` (the data of each) that the answer
    /// asked for: one write instead of several on the agent's hot path.
    pub async fn record_model_call(
        &self,
        id: &TaskId,
        model: &str,
        usage: Usage,
        event: Option<serde_json::Value>,
        calls: &[serde_json::Value],
    ) -> Result<Option<Event>, StoreError> {
        let mut tx = self.begin_write().await?;
        let event = match event {
            // The tokens are added by the event's own update of the task.
            Some(data) => {
                let change = RowChange {
                    progress: None,
                    usage,
                };
                let event = (EventKind::ModelCall, data, Timestamp::now());
                let (event, owner) =
                    append_changing_in(&mut tx, &self.key, id, event, change).await?;
                insert_usage(&mut *tx, owner.as_str(), Some(id), model, usage).await?;
                Some(event)
            }
            None => {
                let owner: String = sqlx::query(
                    "UPDATE tasks SET input_tokens = input_tokens + $2, output_tokens = output_tokens + $3, \
                     cached_tokens = cached_tokens + $4 WHERE id = $1 RETURNING user_id",
                )
                .bind(id.as_str())
                .bind(usage.input_tokens)
                .bind(usage.output_tokens)
                .bind(usage.cached_tokens)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NotFound { what: "task" })?
                .try_get("user_id")?;
                insert_usage(&mut *tx, &owner, Some(id), model, usage).await?;
                None
            }
        };
        let mut asked = Vec::with_capacity(calls.len());
        for call in calls {
            let now = Timestamp::now();
            asked.push(
                append_in(
                    &mut tx,
                    &self.key,
                    id,
                    EventKind::ToolCall,
                    call.clone(),
                    now,
                )
                .await?,
            );
        }
        tx.commit().await?;
        for (kind, tokens) in [
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cached", usage.cached_tokens),
        ] {
            metrics::counter!("deft_model_tokens_total", "kind" => kind)
                .increment(u64::try_from(tokens).unwrap_or(0));
        }
        metrics::counter!("deft_model_calls_total").increment(1);
        for event in event.iter().chain(&asked) {
            self.published(event);
        }
        Ok(event)
    }

    /// Saves where the run stands and logs the steps that moved it, in one transaction.
    pub async fn set_progress_with(
        &self,
        id: &TaskId,
        progress: &Progress,
        steps: &[StepEvent],
    ) -> Result<Vec<Event>, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut events = Vec::with_capacity(steps.len());
        // The progress is saved by the first event's own update of the task.
        let mut progress = Some(progress_json(progress));
        for step in steps {
            let change = RowChange {
                progress: progress.take(),
                usage: Usage::default(),
            };
            let event = (EventKind::Step, step.to_data(), Timestamp::now());
            events.push(
                append_changing_in(&mut tx, &self.key, id, event, change)
                    .await?
                    .0,
            );
        }
        if let Some(progress) = progress {
            sqlx::query("UPDATE tasks SET progress = $2 WHERE id = $1")
                .bind(id.as_str())
                .bind(progress)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        for event in &events {
            self.published(event);
        }
        Ok(events)
    }

    /// The user's tokens spent since `since` (for weekly limits).
    /// Adds the tokens of a model call made for the user outside any task (the agent's replies
    /// in a chat): they count towards the weekly limit like any other.
    pub async fn record_user_usage(
        &self,
        user: &UserId,
        model: &str,
        usage: Usage,
    ) -> Result<(), StoreError> {
        insert_usage(&self.pool, user.as_str(), None, model, usage).await
    }

    pub async fn usage_since(&self, user: &UserId, since: Timestamp) -> Result<Usage, StoreError> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS i, \
             CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS o, \
             CAST(COALESCE(SUM(cached_tokens), 0) AS BIGINT) AS c \
             FROM usage_records WHERE user_id = $1 AND at >= $2",
        )
        .bind(user.as_str())
        .bind(since.unix_millis())
        .fetch_one(&self.pool)
        .await?;
        Ok(Usage {
            input_tokens: row.try_get("i")?,
            output_tokens: row.try_get("o")?,
            cached_tokens: row.try_get("c")?,
        })
    }
}

/// Links a chat to its one task, or says why it cannot be.
async fn claim_chat(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    user: &UserId,
    chat: &ChatId,
    task: &TaskId,
    now: Timestamp,
) -> Result<(), StoreError> {
    let claimed = sqlx::query(
        "UPDATE chats SET task_id = $1, updated_at = $2 WHERE id = $3 AND user_id = $4 AND task_id IS NULL",
    )
    .bind(task.as_str())
    .bind(now.unix_millis())
    .bind(chat.as_str())
    .bind(user.as_str())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if claimed == 1 {
        return Ok(());
    }
    let existing = sqlx::query("SELECT task_id FROM chats WHERE id = $1 AND user_id = $2")
        .bind(chat.as_str())
        .bind(user.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    match existing {
        None => Err(StoreError::NotFound { what: "chat" }),
        Some(row) => {
            let task: Option<String> = row.try_get("task_id")?;
            Err(StoreError::Conflict {
                message: format!(
                    "this chat already created task {}; a chat creates one task, so start a new chat for another",
                    task.unwrap_or_default()
                ),
            })
        }
    }
}

/// The body of [`Store::transition`], inside the caller's write transaction. Returns the task's
/// owner and the events written, for the caller to publish after commit.
pub(crate) async fn transition_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    key: &crate::settings::Keyring,
    actor: Actor<'_>,
    id: &TaskId,
    transition: Transition,
    note: Option<(EventKind, serde_json::Value)>,
) -> Result<(UserId, Vec<Event>), StoreError> {
    // A no-op UPDATE rather than a SELECT: it takes the row's write lock on PostgreSQL (and
    // re-reads the row if another transaction changed it meanwhile), so two transitions of one
    // task never both start from the same state. SQLite's `BEGIN IMMEDIATE` already serialises.
    let row = match actor {
        Actor::Owner(user) => sqlx::query(
            "UPDATE tasks SET last_seq = last_seq WHERE id = $1 AND user_id = $2 \
             RETURNING user_id, state, attention_kind, attention_message",
        )
        .bind(id.as_str())
        .bind(user.as_str()),
        Actor::Deft => sqlx::query(
            "UPDATE tasks SET last_seq = last_seq WHERE id = $1 \
             RETURNING user_id, state, attention_kind, attention_message",
        )
        .bind(id.as_str()),
    }
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound { what: "task" })?;
    let owner = UserId::from_stored(row.try_get("user_id")?);
    let state: String = row.try_get("state")?;
    let kind: Option<String> = row.try_get("attention_kind")?;
    let message: Option<String> = row.try_get("attention_message")?;
    let before =
        TaskStatus::from_parts(&state, kind.as_deref(), message.as_deref()).ok_or_else(|| {
            StoreError::Corrupt {
                what: format!("state of task {id}"),
            }
        })?;
    if before == TaskStatus::Completed
        && matches!(transition, Transition::Feedback | Transition::Steer)
    {
        crate::github::refuse_if_merged(tx, id).await?;
    }
    // A task put back after its worker stopped keeps its place in its owner's queue; new
    // input (an answer, feedback) queues it behind what is already waiting.
    let keeps_place = i64::from(matches!(transition, Transition::Requeue));
    let after = before.apply(transition)?;
    let now = Timestamp::now();
    let mut events = Vec::new();
    if let Some((kind, data)) = note {
        events.push(append_in(tx, key, id, kind, data, now).await?);
    }
    if after != before {
        let attention = after.attention();
        sqlx::query(
            "UPDATE tasks SET state = $2, attention_kind = $3, attention_message = $4, \
             queued_at = CASE WHEN $2 = 'queued' AND $6 = 0 THEN $5 ELSE queued_at END, \
             updated_at = $5 WHERE id = $1",
        )
        .bind(id.as_str())
        .bind(after.state().as_str())
        .bind(attention.map(|a| a.kind.as_str()))
        .bind(attention.map(|a| a.message.clone()))
        .bind(now.unix_millis())
        .bind(keeps_place)
        .execute(&mut **tx)
        .await?;
        let data = json!({ "from": before.state(), "to": after.state(), "attention": attention });
        events.push(append_in(tx, key, id, EventKind::StateChanged, data, now).await?);
    }
    Ok((owner, events))
}

async fn set_plan_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    key: &crate::settings::Keyring,
    id: &TaskId,
    plan: &Plan,
) -> Result<Event, StoreError> {
    sqlx::query("UPDATE tasks SET plan = $2 WHERE id = $1")
        .bind(id.as_str())
        .bind(serde_json::to_string(plan).expect("plans serialize"))
        .execute(&mut **tx)
        .await?;
    let data = serde_json::to_value(plan).expect("plans serialize");
    append_in(tx, key, id, EventKind::Plan, data, Timestamp::now()).await
}

/// `text`, matched literally by `LIKE … ESCAPE '\'`.
fn like_escaped(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

fn progress_json(progress: &Progress) -> String {
    serde_json::to_string(progress).expect("progress serializes")
}

/// Records the tokens of one model call for `owner`: for a task, or (`None`) for the user
/// outside any task.
async fn insert_usage<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    owner: &str,
    task: Option<&TaskId>,
    model: &str,
    usage: Usage,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO usage_records (id, user_id, task_id, model, input_tokens, output_tokens, cached_tokens, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(TaskId::generate().as_str())
    .bind(owner)
    .bind(task.map(TaskId::as_str))
    .bind(model)
    .bind(usage.input_tokens)
    .bind(usage.output_tokens)
    .bind(usage.cached_tokens)
    .bind(Timestamp::now().unix_millis())
    .execute(executor)
    .await?;
    Ok(())
}
