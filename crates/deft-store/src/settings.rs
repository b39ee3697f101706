//! A user's environment (network policy, env vars, MCP configuration), secrets and learnings.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use deft_core::{
    EnvVars, Learning, LearningId, McpConfig, NetworkLevel, NetworkPolicy, SecretInfo, Timestamp,
    UserId, ValidationError, validate_env_name,
};
use sqlx::Row as _;

use crate::{Store, StoreError, from_json};

/// Everything a user's sandboxes are set up with, but the secrets, and how their tasks go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    pub network: NetworkPolicy,
    pub env: EnvVars,
    pub mcp: McpConfig,
    /// New tasks wait for plan approval unless they say otherwise.
    pub approve_plan: bool,
    /// A failing check on a pull request's head commit starts a round by itself (off: only
    /// feedback does, and the checks are read then).
    pub fix_failing_checks: bool,
    /// The most rounds failing checks start by themselves on one pull request.
    pub check_fix_rounds: u32,
}

/// Rounds failing checks may start on one pull request unless the owner says otherwise.
pub const DEFAULT_CHECK_FIX_ROUNDS: u32 = 3;
/// The most an owner may allow: past it, a check that keeps failing needs a person.
pub const MAX_CHECK_FIX_ROUNDS: u32 = 10;

impl Default for Environment {
    fn default() -> Environment {
        Environment {
            network: NetworkPolicy::default(),
            env: EnvVars::default(),
            mcp: McpConfig::default(),
            approve_plan: false,
            fix_failing_checks: false,
            check_fix_rounds: DEFAULT_CHECK_FIX_ROUNDS,
        }
    }
}

/// Checks the rounds failing checks may start on one pull request.
pub fn check_fix_rounds(rounds: i64, field: &str) -> Result<u32, ValidationError> {
    u32::try_from(rounds)
        .ok()
        .filter(|rounds| (1..=MAX_CHECK_FIX_ROUNDS).contains(rounds))
        .ok_or_else(|| {
            ValidationError::new(
                field,
                format!("must be between 1 and {MAX_CHECK_FIX_ROUNDS} rounds, not {rounds}"),
            )
        })
}

fn corrupt(what: &str, error: ValidationError) -> StoreError {
    StoreError::Corrupt {
        what: format!("{what}: {error}"),
    }
}

fn environment_from_row(row: &sqlx::any::AnyRow) -> Result<Environment, StoreError> {
    let level: String = row.try_get("network_level")?;
    let allow: String = row.try_get("network_allow")?;
    let env: String = row.try_get("env")?;
    let mcp: String = row.try_get("mcp")?;
    let level =
        NetworkLevel::parse(&level, "network.level").map_err(|e| corrupt("network level", e))?;
    let allow: Vec<String> = from_json(&allow, "allow-list")?;
    Ok(Environment {
        network: NetworkPolicy::new(level, &allow).map_err(|e| corrupt("allow-list", e))?,
        env: EnvVars::new(from_json::<BTreeMap<String, String>>(&env, "env vars")?)
            .map_err(|e| corrupt("env vars", e))?,
        mcp: McpConfig::from_json(&from_json(&mcp, "MCP configuration")?)
            .map_err(|e| corrupt("MCP configuration", e))?,
        approve_plan: row.try_get::<i64, _>("approve_plan")? != 0,
        fix_failing_checks: row.try_get::<i64, _>("fix_failing_checks")? != 0,
        check_fix_rounds: check_fix_rounds(row.try_get("check_fix_rounds")?, "check_fix_rounds")
            .map_err(|e| corrupt("check fix rounds", e))?,
    })
}

/// Secrets are bound to their owner and name: a sealed value moved elsewhere will not open.
fn secret_context(user: &UserId, name: &str) -> String {
    format!("deft-secret\0{user}\0{name}")
}

impl Store {
    /// The user's environment; the defaults (`connections`, nothing else) until first saved.
    pub async fn environment(&self, user: &UserId) -> Result<Environment, StoreError> {
        let row = sqlx::query(
            "SELECT network_level, network_allow, env, mcp, approve_plan, fix_failing_checks, \
             check_fix_rounds FROM environments WHERE user_id = $1",
        )
        .bind(user.as_str())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => environment_from_row(&row),
            None => Ok(Environment::default()),
        }
    }

    /// Replaces the user's environment.
    pub async fn put_environment(
        &self,
        user: &UserId,
        environment: &Environment,
    ) -> Result<(), StoreError> {
        self.update_environment(user, |current| {
            *current = environment.clone();
            Ok(())
        })
        .await
        .map(drop)
    }

    /// Changes the user's environment with `change`, in one write transaction holding the
    /// row, so that two concurrent partial updates (the network from one client, an env var
    /// from another) both land. An error from `change` stores nothing.
    pub async fn update_environment<F>(
        &self,
        user: &UserId,
        change: F,
    ) -> Result<Environment, StoreError>
    where
        F: FnOnce(&mut Environment) -> Result<(), StoreError>,
    {
        let mut tx = self.begin_write().await?;
        let now = Timestamp::now().unix_millis();
        let defaults = Environment::default();
        sqlx::query(
            "INSERT INTO environments (user_id, network_level, network_allow, env, mcp, updated_at) \
             VALUES ($1, $2, '[]', '{}', $3, $4) ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user.as_str())
        .bind(defaults.network.level.as_str())
        .bind(defaults.mcp.to_json().to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // A no-op UPDATE to read the row under its write lock (PostgreSQL); SQLite's
        // `BEGIN IMMEDIATE` already serialises writers.
        let row = sqlx::query(
            "UPDATE environments SET updated_at = updated_at WHERE user_id = $1 \
             RETURNING network_level, network_allow, env, mcp, approve_plan, fix_failing_checks, \
             check_fix_rounds",
        )
        .bind(user.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let mut environment = environment_from_row(&row)?;
        change(&mut environment)?;
        sqlx::query(
            "UPDATE environments SET network_level = $2, network_allow = $3, env = $4, mcp = $5, \
             updated_at = $6, approve_plan = $7, fix_failing_checks = $8, check_fix_rounds = $9 \
             WHERE user_id = $1",
        )
        .bind(user.as_str())
        .bind(environment.network.level.as_str())
        .bind(
            serde_json::to_string(&environment.network.allow_strings()).expect("strings serialize"),
        )
        .bind(serde_json::to_string(environment.env.as_map()).expect("strings serialize"))
        .bind(environment.mcp.to_json().to_string())
        .bind(now)
        .bind(i64::from(environment.approve_plan))
        .bind(i64::from(environment.fix_failing_checks))
        .bind(i64::from(environment.check_fix_rounds))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(environment)
    }

    /// Seals and stores a secret, replacing any value it had.
    pub async fn put_secret(
        &self,
        user: &UserId,
        name: &str,
        value: &str,
    ) -> Result<SecretInfo, StoreError> {
        validate_env_name(name, "name")?;
        if value.is_empty() {
            return Err(ValidationError::new(
                "value",
                "is empty; give the secret's value, or delete the secret",
            )
            .into());
        }
        if value.contains('\0') {
            return Err(ValidationError::new(
                "value",
                "contains a NUL byte, which no process environment can hold",
            )
            .into());
        }
        let (nonce, sealed) = self.key.seal(&secret_context(user, name), value.as_bytes());
        let now = Timestamp::now().unix_millis();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO secrets (user_id, name, nonce, ciphertext, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (user_id, name) DO UPDATE SET \
             nonce = excluded.nonce, ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
        )
        .bind(user.as_str())
        .bind(name)
        .bind(nonce)
        .bind(sealed)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // In the same transaction: no event is written after the secret without its value
        // being scrubbed.
        secrets_changed_in(&mut tx, user).await?;
        tx.commit().await?;
        self.list_secrets(user)
            .await?
            .into_iter()
            .find(|secret| secret.name == name)
            .ok_or(StoreError::NotFound { what: "secret" })
    }

    /// Names and dates only: values never leave the store except through [`Store::secret_values`].
    pub async fn list_secrets(&self, user: &UserId) -> Result<Vec<SecretInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, created_at, updated_at FROM secrets WHERE user_id = $1 ORDER BY name",
        )
        .bind(user.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SecretInfo {
                    name: row.try_get("name")?,
                    created_at: Timestamp::from_unix_millis(row.try_get("created_at")?),
                    updated_at: Timestamp::from_unix_millis(row.try_get("updated_at")?),
                })
            })
            .collect()
    }

    pub async fn delete_secret(&self, user: &UserId, name: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM secrets WHERE user_id = $1 AND name = $2")
            .bind(user.as_str())
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound { what: "secret" });
        }
        secrets_changed_in(&mut tx, user).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The user's secrets, opened: only for setting up a sandbox, never for a response.
    pub async fn secret_values(
        &self,
        user: &UserId,
    ) -> Result<BTreeMap<String, String>, StoreError> {
        let rows = sqlx::query("SELECT name, nonce, ciphertext FROM secrets WHERE user_id = $1")
            .bind(user.as_str())
            .fetch_all(&self.pool)
            .await?;
        open_secrets(&self.key, user, &rows)
    }

    pub async fn add_learning(
        &self,
        user: &UserId,
        text: &str,
        source: &str,
    ) -> Result<Learning, StoreError> {
        let learning = Learning {
            id: LearningId::generate(),
            text: text.to_owned(),
            source: source.to_owned(),
            created_at: Timestamp::now(),
        };
        sqlx::query("INSERT INTO learnings (id, user_id, text, source, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(learning.id.as_str())
            .bind(user.as_str())
            .bind(&learning.text)
            .bind(&learning.source)
            .bind(learning.created_at.unix_millis())
            .execute(&self.pool)
            .await?;
        Ok(learning)
    }

    pub async fn list_learnings(&self, user: &UserId) -> Result<Vec<Learning>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, text, source, created_at FROM learnings WHERE user_id = $1 ORDER BY id",
        )
        .bind(user.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Learning {
                    id: LearningId::from_stored(row.try_get("id")?),
                    text: row.try_get("text")?,
                    source: row.try_get("source")?,
                    created_at: Timestamp::from_unix_millis(row.try_get("created_at")?),
                })
            })
            .collect()
    }

    pub async fn delete_learning(&self, user: &UserId, id: &str) -> Result<(), StoreError> {
        let delete = "DELETE FROM learnings WHERE user_id = $1 AND id = $2";
        self.delete_owned(delete, user, id, "learning").await
    }
}

/// The master key, with each owner's secrets opened as a redactor while they stay as they
/// were: every event is scrubbed with its owner's secrets, and opening them for each event
/// cost a query of its own. Clones of a store share what is kept.
#[derive(Clone)]
pub(crate) struct Keyring {
    key: crate::MasterKey,
    /// By user id: the `secrets_rev` the redactor was made at, and the redactor.
    redactors: Arc<std::sync::Mutex<Redactors>>,
}

type Redactors = HashMap<String, (i64, Arc<deft_core::Redactor>)>;

impl Keyring {
    pub(crate) fn new(key: crate::MasterKey) -> Keyring {
        Keyring {
            key,
            redactors: Arc::new(std::sync::Mutex::new(HashMap::new())),
        }
    }

    /// The owner's secrets as a redactor, as they stand at `rev` (read by the caller in its
    /// transaction): kept from an earlier event while the number has not moved.
    pub(crate) async fn redactor_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        user: &UserId,
        rev: i64,
    ) -> Result<Arc<deft_core::Redactor>, StoreError> {
        let kept = self
            .redactors
            .lock()
            .expect("no panic while the redactors are held")
            .get(user.as_str())
            .filter(|(at, _)| *at == rev)
            .map(|(_, redactor)| redactor.clone());
        if let Some(redactor) = kept {
            return Ok(redactor);
        }
        let rows = sqlx::query("SELECT name, nonce, ciphertext FROM secrets WHERE user_id = $1")
            .bind(user.as_str())
            .fetch_all(&mut **tx)
            .await?;
        let redactor = Arc::new(deft_core::Redactor::new(&open_secrets(
            &self.key, user, &rows,
        )?));
        self.redactors
            .lock()
            .expect("no panic while the redactors are held")
            .insert(user.as_str().to_owned(), (rev, redactor.clone()));
        Ok(redactor)
    }
}

impl std::ops::Deref for Keyring {
    type Target = crate::MasterKey;

    fn deref(&self) -> &crate::MasterKey {
        &self.key
    }
}

/// Counts a change to `user`'s secrets, inside the transaction that makes it.
async fn secrets_changed_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    user: &UserId,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE users SET secrets_rev = secrets_rev + 1 WHERE id = $1")
        .bind(user.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Opens sealed secret rows (`name`, `nonce`, `ciphertext`) of `user`.
fn open_secrets(
    key: &crate::MasterKey,
    user: &UserId,
    rows: &[sqlx::any::AnyRow],
) -> Result<BTreeMap<String, String>, StoreError> {
    let mut values = BTreeMap::new();
    for row in rows {
        let name: String = row.try_get("name")?;
        let nonce: String = row.try_get("nonce")?;
        let sealed: String = row.try_get("ciphertext")?;
        let plain = key.open(&secret_context(user, &name), &nonce, &sealed)?;
        let value = String::from_utf8(plain).map_err(|_| StoreError::Corrupt {
            what: format!("secret {name} is not UTF-8"),
        })?;
        values.insert(name, value);
    }
    Ok(values)
}
