//! Identifiers of stored objects.
//!
//! Each is a UUIDv7 in text form: time-ordered, so that listing by id lists by creation, and
//! unguessable enough that an id never reveals how many objects another user has.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// A fresh id, ordered after every id made before it in this process.
            pub fn generate() -> Self {
                Self(uuid::Uuid::now_v7().to_string())
            }

            /// Wraps an id read back from storage or from a request path. It is not checked:
            /// an id that names nothing simply finds nothing.
            pub fn from_stored(value: String) -> Self {
                Self(value)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

id_type!(
    /// A user account.
    UserId
);
id_type!(
    /// An API token (not the token itself: its row).
    TokenId
);
id_type!(
    /// A repository registered by a user.
    RepoId
);
id_type!(
    /// A chat with the agent.
    ChatId
);
id_type!(
    /// A task.
    TaskId
);
id_type!(
    /// A learned convention.
    LearningId
);
