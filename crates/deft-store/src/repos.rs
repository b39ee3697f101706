//! Repositories a user registered. The forge adapter checks a repository before it is added;
//! the store only remembers it, once per user and location.

use deft_core::{ForgeKind, RepoEnvironment, RepoId, Repository, Timestamp, UserId};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use crate::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct NewRepository {
    pub name: String,
    pub forge: ForgeKind,
    pub location: String,
    pub default_branch: String,
}

impl NewRepository {
    /// A repository of the local forge: the git directory at `path` on this machine.
    pub fn local(name: String, path: &std::path::Path, default_branch: String) -> NewRepository {
        NewRepository {
            name,
            forge: ForgeKind::Local,
            location: path.to_string_lossy().into_owned(),
            default_branch,
        }
    }
}

const COLUMNS: &str = "id, name, forge, location, default_branch, environment, created_at";

fn repo_from_row(row: &AnyRow) -> Result<Repository, StoreError> {
    let forge: String = row.try_get("forge")?;
    Ok(Repository {
        id: RepoId::from_stored(row.try_get("id")?),
        name: row.try_get("name")?,
        forge: ForgeKind::parse(&forge).ok_or_else(|| StoreError::Corrupt {
            what: format!("forge `{forge}`"),
        })?,
        location: row.try_get("location")?,
        default_branch: row.try_get("default_branch")?,
        environment: {
            let text: String = row.try_get("environment")?;
            RepoEnvironment::parse(&text, "environment").map_err(|_| StoreError::Corrupt {
                what: format!("repository environment `{text}`"),
            })?
        },
        created_at: Timestamp::from_unix_millis(row.try_get("created_at")?),
    })
}

impl Store {
    /// Registers a repository, or returns the one this user already registered at that location.
    pub async fn add_repository(
        &self,
        user: &UserId,
        repo: NewRepository,
    ) -> Result<Repository, StoreError> {
        sqlx::query(
            "INSERT INTO repositories (id, user_id, name, forge, location, default_branch, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (user_id, forge, location) DO NOTHING",
        )
        .bind(RepoId::generate().as_str())
        .bind(user.as_str())
        .bind(&repo.name)
        .bind(repo.forge.as_str())
        .bind(&repo.location)
        .bind(&repo.default_branch)
        .bind(Timestamp::now().unix_millis())
        .execute(&self.pool)
        .await?;
        self.repository_at(user, repo.forge, &repo.location)
            .await?
            .ok_or(StoreError::NotFound { what: "repository" })
    }

    pub async fn repository_at(
        &self,
        user: &UserId,
        forge: ForgeKind,
        location: &str,
    ) -> Result<Option<Repository>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM repositories WHERE user_id = $1 AND forge = $2 AND location = $3"
        )))
        .bind(user.as_str())
        .bind(forge.as_str())
        .bind(location)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(repo_from_row).transpose()
    }

    pub async fn repository(&self, user: &UserId, id: &str) -> Result<Repository, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM repositories WHERE user_id = $1 AND id = $2"
        )))
        .bind(user.as_str())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound { what: "repository" })?;
        repo_from_row(&row)
    }

    /// A repository by its id, whoever registered it: for the operator's local commands.
    pub async fn repository_by_id(&self, id: &str) -> Result<Repository, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM repositories WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound { what: "repository" })?;
        repo_from_row(&row)
    }

    pub async fn list_repositories(&self, user: &UserId) -> Result<Vec<Repository>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM repositories WHERE user_id = $1 ORDER BY name, id"
        )))
        .bind(user.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(repo_from_row).collect()
    }

    /// Sets what a repository's tasks run on; tasks already running keep what they have.
    pub async fn set_repository_environment(
        &self,
        user: &UserId,
        id: &str,
        environment: &RepoEnvironment,
    ) -> Result<Repository, StoreError> {
        let changed =
            sqlx::query("UPDATE repositories SET environment = $1 WHERE user_id = $2 AND id = $3")
                .bind(environment.to_string())
                .bind(user.as_str())
                .bind(id)
                .execute(&self.pool)
                .await?;
        if changed.rows_affected() == 0 {
            return Err(StoreError::NotFound { what: "repository" });
        }
        self.repository(user, id).await
    }
}
