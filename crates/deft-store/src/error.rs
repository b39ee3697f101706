//! What can go wrong in the store, with variants a caller can act on.

use deft_core::{TransitionError, ValidationError};

use crate::Backend;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist, or belongs to another user: the two are not told apart.
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// The write would break a rule that holds across objects (one task per chat, unique names).
    #[error("{message}")]
    Conflict { message: String },
    /// The task's state does not allow this.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// The input names something that cannot be used (an unknown repository).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A stored row that the domain types refuse: the database was changed behind deft's back.
    #[error("stored data is inconsistent ({what}); restore the database from a backup")]
    Corrupt { what: String },
    #[error("cannot use the database URL: {reason}")]
    BadUrl { reason: String },
    #[error(
        "cannot connect to the {backend:?} database: {source}; check `--database-url` and that the server is running"
    )]
    Connect {
        backend: Backend,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot apply the database migrations: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error(
        "this database's secrets were sealed with another master key; set `DEFT_MASTER_KEY` to that key (every machine sharing one database needs the same one), or restore the data dir's `master-key`"
    )]
    MasterKeyMismatch,
    #[error(
        "a secret cannot be opened with this master key; set `DEFT_MASTER_KEY` to the key it was sealed with"
    )]
    SecretKeyMismatch,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
        match error {
            sqlx::Error::Database(db) => {
                db.kind() == sqlx::error::ErrorKind::UniqueViolation
                    || db.message().contains("UNIQUE constraint failed")
                    || db.code().as_deref() == Some("23505")
            }
            _ => false,
        }
    }
}
