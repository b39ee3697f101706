//! Accounts and API tokens.
//!
//! A token is shown once, when it is made, and stored as its SHA-256: 256 random bits need no
//! slow hash, and a copy of the table yields nothing that authenticates.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use deft_core::{Timestamp, TokenId, User, UserId, ValidationError};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use crate::{Store, StoreError, bool_column};

/// Every token starts with this, so that secret scanners and people can recognise one.
const TOKEN_PREFIX: &str = "deft_";

/// A token as its owner sees it later: never its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: TokenId,
    pub label: String,
    pub created_at: Timestamp,
}

/// A token just made: the only time its plaintext exists.
#[derive(Clone)]
pub struct NewToken {
    pub id: TokenId,
    pub user: User,
    pub token: String,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("id", &self.id)
            .field("user", &self.user)
            .finish()
    }
}

pub(crate) fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub(crate) fn user_from_row(row: &AnyRow) -> Result<User, StoreError> {
    Ok(User {
        id: UserId::from_stored(row.try_get("id")?),
        name: row.try_get("name")?,
        is_admin: bool_column(row.try_get("is_admin")?),
        created_at: Timestamp::from_unix_millis(row.try_get("created_at")?),
    })
}

/// User names appear in URLs, commit trailers and logs: keep them plain.
pub fn validate_user_name(name: &str) -> Result<(), ValidationError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(ValidationError::new(
            "name",
            format!("`{name}` is not a valid user name; use 1-64 letters, digits, `-`, `_` or `.`"),
        ))
    }
}

impl Store {
    pub async fn create_user(&self, name: &str, is_admin: bool) -> Result<User, StoreError> {
        let mut tx = self.begin_write().await?;
        let user = insert_user(&mut tx, name, is_admin).await?;
        tx.commit().await?;
        Ok(user)
    }

    pub async fn user_by_name(&self, name: &str) -> Result<User, StoreError> {
        let row = sqlx::query("SELECT id, name, is_admin, created_at FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound { what: "user" })?;
        user_from_row(&row)
    }

    pub async fn user_by_id(&self, id: &UserId) -> Result<User, StoreError> {
        let row = sqlx::query("SELECT id, name, is_admin, created_at FROM users WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound { what: "user" })?;
        user_from_row(&row)
    }

    pub async fn user_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }

    /// On an empty database, creates the `admin` user and a token for it. Returns the token
    /// only when it made one: a later start leaves the existing accounts alone.
    pub async fn bootstrap_admin(&self) -> Result<Option<NewToken>, StoreError> {
        // One transaction: an admin without its token would lock the owner out, since later
        // starts see users and make no new admin.
        let mut tx = self.begin_write().await?;
        let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if count > 0 {
            return Ok(None);
        }
        let admin = match insert_user(&mut tx, "admin", true).await {
            Ok(admin) => admin,
            // Another process bootstrapped the same database a moment ago.
            Err(StoreError::Conflict { .. }) => return Ok(None),
            Err(error) => return Err(error),
        };
        let token = insert_token(&mut tx, &admin, "first start").await?;
        tx.commit().await?;
        Ok(Some(token))
    }

    pub async fn create_token(&self, user: &User, label: &str) -> Result<NewToken, StoreError> {
        let mut tx = self.begin_write().await?;
        let token = insert_token(&mut tx, user, label).await?;
        tx.commit().await?;
        Ok(token)
    }

    /// The user's API tokens, newest first.
    pub async fn list_tokens(&self, user: &UserId) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, label, created_at FROM api_tokens WHERE user_id = $1 \
             ORDER BY created_at DESC, id DESC",
        )
        .bind(user.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(TokenInfo {
                    id: TokenId::from_stored(row.try_get("id")?),
                    label: row.try_get("label")?,
                    created_at: Timestamp::from_unix_millis(row.try_get("created_at")?),
                })
            })
            .collect()
    }

    /// Revokes one of the user's tokens: it stops working at once.
    pub async fn revoke_token(&self, user: &UserId, id: &str) -> Result<(), StoreError> {
        let delete = "DELETE FROM api_tokens WHERE user_id = $1 AND id = $2";
        self.delete_owned(delete, user, id, "token").await
    }

    /// The user a bearer token belongs to, or `None` for an unknown token.
    pub async fn user_for_token(&self, token: &str) -> Result<Option<User>, StoreError> {
        if !token.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT u.id, u.name, u.is_admin, u.created_at FROM api_tokens t \
             JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1",
        )
        .bind(hash_token(token))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }
}

async fn insert_user(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    name: &str,
    is_admin: bool,
) -> Result<User, StoreError> {
    validate_user_name(name)?;
    let user = User {
        id: UserId::generate(),
        name: name.to_owned(),
        is_admin,
        created_at: Timestamp::now(),
    };
    let result =
        sqlx::query("INSERT INTO users (id, name, is_admin, created_at) VALUES ($1, $2, $3, $4)")
            .bind(user.id.as_str())
            .bind(&user.name)
            .bind(i64::from(is_admin))
            .bind(user.created_at.unix_millis())
            .execute(&mut **tx)
            .await;
    match result {
        Ok(_) => Ok(user),
        Err(error) if StoreError::is_unique_violation(&error) => Err(StoreError::Conflict {
            message: format!("a user named `{name}` already exists; pick another name"),
        }),
        Err(error) => Err(error.into()),
    }
}

async fn insert_token(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    user: &User,
    label: &str,
) -> Result<NewToken, StoreError> {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
    let id = TokenId::generate();
    sqlx::query(
        "INSERT INTO api_tokens (id, user_id, token_hash, label, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id.as_str())
    .bind(user.id.as_str())
    .bind(hash_token(&token))
    .bind(label)
    .bind(Timestamp::now().unix_millis())
    .execute(&mut **tx)
    .await?;
    Ok(NewToken {
        id,
        user: user.clone(),
        token,
    })
}
