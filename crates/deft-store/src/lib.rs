//! deft's persistence: every stored object behind one [`Store`], on SQLite (the embedded
//! default, one file in the data dir, WAL mode) or PostgreSQL (many machines, one database).
//!
//! One schema and one set of statements serve both databases, through sqlx's `Any` driver: the
//! schema uses only TEXT and BIGINT, and statements use `$N` placeholders, which both accept.
//! Every read and write takes the acting user's id and filters by it, so an object of another
//! user is simply not found. Secrets are sealed with AES-256-GCM before they reach the database.

mod chats;
mod cipher;
mod error;
mod events;
mod github;
mod notifications;
mod queue;
mod repos;
mod sessions;
mod settings;
mod tasks;
mod users;

use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor, Row as _};

pub use chats::ChatSummary;
pub use cipher::{MASTER_KEY_FILE, MasterKey, MasterKeyError, write_private_file};
pub use error::StoreError;
pub use events::{EventBus, QueueChanges};
pub use github::{GithubScope, IssueTask, PendingAuthorization};
pub use notifications::{Delivery, NotificationSettings, Webhook, WebhookFormat};
pub use queue::LEASES_LOST_BEFORE_ATTENTION;
pub use repos::NewRepository;
pub use sessions::{MIN_PASSWORD_CHARS, NewSession, Session};
pub use settings::{DEFAULT_CHECK_FIX_ROUNDS, Environment, MAX_CHECK_FIX_ROUNDS, check_fix_rounds};
pub use tasks::{Actor, DiffStat, Listing, NewTask, TaskFilter, TaskPage};
pub use users::validate_user_name;
pub use users::{NewToken, TokenInfo};

/// The database behind a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn of_url(url: &str) -> Result<Backend, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::BadUrl {
                reason: "the URL must start with `sqlite:` or `postgres://`".into(),
            })
        }
    }

    /// How a read-then-write transaction begins. SQLite's `IMMEDIATE` takes the write lock up
    /// front, so two writers wait for each other (busy timeout) instead of one failing when it
    /// upgrades a read lock; PostgreSQL orders writers with row locks instead.
    fn begin_write(self) -> &'static str {
        match self {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }
}

/// The file name of the embedded database inside the data dir.
pub const SQLITE_FILE: &str = "deft.db";

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    key: settings::Keyring,
    events: EventBus,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

static DRIVERS: Once = Once::new();

impl Store {
    /// Opens the embedded SQLite database in `data_dir`, creating it on first use.
    pub async fn open_data_dir(data_dir: &Path, key: MasterKey) -> Result<Store, StoreError> {
        let file = data_dir.join(SQLITE_FILE);
        let url = format!(
            "sqlite://{}?mode=rwc",
            percent_encode_path(&file.to_string_lossy())
        );
        Store::open(&url, key).await
    }

    /// Opens the database at `url` (`sqlite:` or `postgres://`) and applies pending migrations.
    pub async fn open(url: &str, key: MasterKey) -> Result<Store, StoreError> {
        DRIVERS.call_once(install_default_drivers);
        let backend = Backend::of_url(url)?;
        let options = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(10));
        let options = match backend {
            // An embedded database has no link to go stale: asking it whether it is alive
            // before each use cost a round trip to its thread for every statement and
            // transaction.
            Backend::Sqlite => options
                .test_before_acquire(false)
                .after_connect(|connection, _| {
                    Box::pin(async move {
                        // WAL lets readers run while one writer writes; NORMAL sync is durable
                        // across application crashes, which is what WAL mode needs.
                        connection
                            .execute(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                            )
                            .await?;
                        Ok(())
                    })
                }),
            Backend::Postgres => options,
        };
        let pool = options
            .connect(url)
            .await
            .map_err(|source| StoreError::Connect { backend, source })?;
        let store = Store {
            pool,
            backend,
            key: settings::Keyring::new(key),
            events: EventBus::default(),
        };
        store.migrate().await?;
        store.check_master_key().await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Wakes live event streams when this process writes events.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// Answers whether the database is reachable, for `/healthz` and `deft doctor`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.pool.execute("SELECT 1").await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        use sqlx::migrate::{Migration, MigrationType, Migrator};
        let migrations = [
            (1, "initial", include_str!("../migrations/0001_initial.sql")),
            (
                2,
                "settings",
                include_str!("../migrations/0002_settings.sql"),
            ),
            (
                3,
                "progress",
                include_str!("../migrations/0003_progress.sql"),
            ),
            (
                4,
                "approve_plan",
                include_str!("../migrations/0004_approve_plan.sql"),
            ),
            (5, "leases", include_str!("../migrations/0005_leases.sql")),
            (
                6,
                "sessions",
                include_str!("../migrations/0006_sessions.sql"),
            ),
            (7, "github", include_str!("../migrations/0007_github.sql")),
            (
                8,
                "delivery_payloads",
                include_str!("../migrations/0008_delivery_payloads.sql"),
            ),
            (
                9,
                "issue_tasks",
                include_str!("../migrations/0009_issue_tasks.sql"),
            ),
            (
                10,
                "repo_environment",
                include_str!("../migrations/0010_repo_environment.sql"),
            ),
            (
                11,
                "leases_lost",
                include_str!("../migrations/0011_leases_lost.sql"),
            ),
            (
                12,
                "github_loop",
                include_str!("../migrations/0012_github_loop.sql"),
            ),
            (
                13,
                "secrets_rev",
                include_str!("../migrations/0013_secrets_rev.sql"),
            ),
            (
                14,
                "pull_request_lines",
                include_str!("../migrations/0014_pull_request_lines.sql"),
            ),
            (
                15,
                "notifications",
                include_str!("../migrations/0015_notifications.sql"),
            ),
        ]
        .into_iter()
        .map(|(version, description, sql)| {
            Migration::new(
                version,
                description.into(),
                MigrationType::Simple,
                sqlx::AssertSqlSafe(sql).into_sql_str(),
                false,
            )
        })
        .collect::<Vec<_>>();
        let migrator = Migrator {
            migrations: std::borrow::Cow::Owned(migrations),
            ..Migrator::DEFAULT
        };
        migrator.run(&self.pool).await.map_err(StoreError::Migrate)
    }

    /// Records the master key's fingerprint on first use and refuses any other key after.
    async fn check_master_key(&self) -> Result<(), StoreError> {
        let fingerprint = self.key.fingerprint();
        sqlx::query(
            "INSERT INTO deft_settings (name, value) VALUES ('master_key_fingerprint', $1) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&fingerprint)
        .execute(&self.pool)
        .await?;
        let stored: String =
            sqlx::query("SELECT value FROM deft_settings WHERE name = 'master_key_fingerprint'")
                .fetch_one(&self.pool)
                .await?
                .try_get("value")?;
        if stored != fingerprint {
            return Err(StoreError::MasterKeyMismatch);
        }
        Ok(())
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(self.pool.begin_with(self.backend.begin_write()).await?)
    }

    /// Runs `delete`, which removes `user`'s (`$1`) row named `key` (`$2`); none is
    /// `NotFound { what }`, whether the row is missing or another user's.
    async fn delete_owned(
        &self,
        delete: &'static str,
        user: &deft_core::UserId,
        key: &str,
        what: &'static str,
    ) -> Result<(), StoreError> {
        let deleted = sqlx::query(delete)
            .bind(user.as_str())
            .bind(key)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound { what });
        }
        Ok(())
    }
}

use sqlx::SqlSafeStr as _;

/// SQLite URLs are URLs: a `?` or `#` or `%` in a directory name must not end the path.
fn percent_encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3F"),
            '#' => out.push_str("%23"),
            ' ' => out.push_str("%20"),
            _ => out.push(c),
        }
    }
    out
}

/// Reads a JSON column written by this crate.
fn from_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|error| StoreError::Corrupt {
        what: format!("{what}: {error}"),
    })
}

fn bool_column(value: i64) -> bool {
    value != 0
}
