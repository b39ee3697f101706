//! Web sign-in: passwords, browser sessions and one-time login links.
//!
//! A password is the one secret a person chooses, so it gets a slow, salted hash (argon2id,
//! computed off the async threads). Session and link tokens are 256 random bits, so their
//! SHA-256 is enough, as for API tokens: a copy of the tables yields nothing that signs in.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use deft_core::{Timestamp, User, UserId, ValidationError};
use rand::RngCore as _;
use sqlx::Row as _;

use crate::users::{hash_token, user_from_row};
use crate::{Store, StoreError};

/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longer input is refused rather than hashed: it can only be a mistake or an attack.
const MAX_PASSWORD_BYTES: usize = 1024;

/// A session just started: the only time its token exists in clear.
#[derive(Clone)]
pub struct NewSession {
    pub token: String,
    /// The token every form of this session must carry.
    pub csrf: String,
    pub expires: Timestamp,
}

impl std::fmt::Debug for NewSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSession")
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// A live session, found by its token.
#[derive(Clone, Debug)]
pub struct Session {
    pub user: User,
    pub csrf: String,
    pub expires: Timestamp,
}

fn random_token(prefix: &str) -> String {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(secret))
}

fn hash_password(password: &str) -> Result<String, StoreError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|error| StoreError::Corrupt {
            what: format!("hashing a password: {error}"),
        })
}

/// Whether `password` matches `stored`. Unknown users are checked against a hash made once,
/// so that a wrong name takes as long as a wrong password.
fn verify_password(password: &str, stored: Option<&str>) -> bool {
    static DECOY: OnceLock<String> = OnceLock::new();
    let decoy = DECOY.get_or_init(|| hash_password("not anyone's password").unwrap_or_default());
    let Ok(parsed) = PasswordHash::new(stored.unwrap_or(decoy)) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
        && stored.is_some()
}

impl Store {
    /// Sets the user's password for the web app's sign-in.
    pub async fn set_password(&self, user: &UserId, password: &str) -> Result<(), StoreError> {
        if password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(ValidationError::new(
                "password",
                format!("is too short; use at least {MIN_PASSWORD_CHARS} characters"),
            )
            .into());
        }
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(ValidationError::new(
                "password",
                format!("is too long; use at most {MAX_PASSWORD_BYTES} bytes"),
            )
            .into());
        }
        let password = password.to_owned();
        let hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|error| StoreError::Corrupt {
                what: format!("hashing a password: {error}"),
            })??;
        let updated = sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
            .bind(user.as_str())
            .bind(hash)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if updated == 0 {
            return Err(StoreError::NotFound { what: "user" });
        }
        Ok(())
    }

    /// Whether the user has set a password (a user made by the first start has none until
    /// they sign in with the login link and choose one).
    pub async fn has_password(&self, user: &UserId) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT password_hash FROM users WHERE id = $1")
            .bind(user.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound { what: "user" })?;
        Ok(row.try_get::<Option<String>, _>("password_hash")?.is_some())
    }

    /// The user named `name` when `password` is theirs; `None` for a wrong name or password
    /// alike (and for a user without a password), in the same time.
    pub async fn check_password(
        &self,
        name: &str,
        password: &str,
    ) -> Result<Option<User>, StoreError> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT id, name, is_admin, created_at, password_hash FROM users WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        let (user, stored) = match &row {
            Some(row) => (
                Some(user_from_row(row)?),
                row.try_get::<Option<String>, _>("password_hash")?,
            ),
            None => (None, None),
        };
        let password = password.to_owned();
        let matches =
            tokio::task::spawn_blocking(move || verify_password(&password, stored.as_deref()))
                .await
                .unwrap_or(false);
        Ok(user.filter(|_| matches))
    }

    /// Starts a browser session for `user`, good for `lifetime_ms`.
    pub async fn start_session(
        &self,
        user: &UserId,
        lifetime_ms: i64,
    ) -> Result<NewSession, StoreError> {
        let now = Timestamp::now();
        let session = NewSession {
            token: random_token("deft_s_"),
            csrf: random_token(""),
            expires: now.plus_millis(lifetime_ms),
        };
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, csrf, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hash_token(&session.token))
        .bind(user.as_str())
        .bind(&session.csrf)
        .bind(now.unix_millis())
        .bind(session.expires.unix_millis())
        .execute(&self.pool)
        .await?;
        Ok(session)
    }

    /// The live session a token names; `None` for an unknown, ended or expired one.
    pub async fn session(&self, token: &str) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(
            "SELECT u.id, u.name, u.is_admin, u.created_at, s.csrf, s.expires_at \
             FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = $1 AND s.expires_at > $2",
        )
        .bind(hash_token(token))
        .bind(Timestamp::now().unix_millis())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(Session {
                user: user_from_row(&row)?,
                csrf: row.try_get("csrf")?,
                expires: Timestamp::from_unix_millis(row.try_get("expires_at")?),
            })
        })
        .transpose()
    }

    /// Signs a session out; ending an unknown session is not an error.
    pub async fn end_session(&self, token: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(hash_token(token))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A one-time link token for `user`, good for `lifetime_ms` (the first start prints one).
    pub async fn create_login_link(
        &self,
        user: &UserId,
        lifetime_ms: i64,
    ) -> Result<String, StoreError> {
        let token = random_token("deft_l_");
        sqlx::query(
            "INSERT INTO login_links (token_hash, user_id, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(hash_token(&token))
        .bind(user.as_str())
        .bind(Timestamp::now().plus_millis(lifetime_ms).unix_millis())
        .execute(&self.pool)
        .await?;
        Ok(token)
    }

    /// The user a login link signs in, once: the link is gone after this, used or expired.
    pub async fn redeem_login_link(&self, token: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM login_links WHERE token_hash = $1 RETURNING user_id, expires_at",
        )
        .bind(hash_token(token))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let expires: i64 = row.try_get("expires_at")?;
        if expires <= Timestamp::now().unix_millis() {
            return Ok(None);
        }
        let user = UserId::from_stored(row.try_get("user_id")?);
        Ok(Some(self.user_by_id(&user).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_argon2id_with_their_own_salt() {
        let first = hash_password("correct horse battery").unwrap();
        let second = hash_password("correct horse battery").unwrap();
        assert!(first.starts_with("$argon2id$"), "{first}");
        assert_ne!(first, second, "each hash has its own salt");
        assert!(verify_password("correct horse battery", Some(&first)));
        assert!(!verify_password("correct horse battery!", Some(&first)));
        assert!(
            !verify_password("not anyone's password", None),
            "the decoy never signs anyone in"
        );
    }
}
