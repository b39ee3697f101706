//! The forge seam: where a task's repositories come from and where its work goes. A forge
//! clones a repository into the task's private repository, pushes the task's branch, publishes
//! the pull request (opens it or updates it), and tells the forge what follows (the issue the
//! task came from, replies in review threads, a question). The local forge keeps its pull
//! requests in deft alone; GitHub is the second case (`forge/github.rs`). A third forge is a
//! third case here, and nothing else in the engine changes.
//!
//! Failures are typed: a forge that is not configured, one that refuses (no access, a
//! protected branch), and a transient one (unreachable, a 5xx, rate limited), which is tried
//! again with backoff before the task is parked.

mod github;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use deft_core::{ForgeKind, PullRequest, Repository};

/// Why a forge call failed, and so what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForgeFailure {
    /// The repository's forge is not set up on this deft; the message says how to set it up.
    #[error("{0}")]
    NotConfigured(String),
    /// The forge said no, and will say no again until someone changes something.
    #[error("{0}")]
    Refused(String),
    /// The forge could not be reached or failed for a moment; tried again before giving up.
    #[error("{0}")]
    Transient(String),
}

impl ForgeFailure {
    pub fn is_transient(&self) -> bool {
        matches!(self, ForgeFailure::Transient(_))
    }
}

impl From<deft_forge::ForgeError> for ForgeFailure {
    fn from(error: deft_forge::ForgeError) -> Self {
        if error.is_transient() {
            ForgeFailure::Transient(error.to_string())
        } else {
            ForgeFailure::Refused(error.to_string())
        }
    }
}

/// How often, and how patiently, a transient failure is tried again.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The wait before the second attempt; each later wait doubles.
    pub first_wait: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 4,
            first_wait: Duration::from_secs(2),
        }
    }
}

/// A pull request as the forge published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Its page.
    pub url: String,
    /// Its number on the forge.
    pub number: u64,
}

/// The forges a deft knows.
#[derive(Debug, Clone, Default)]
pub struct Forges {
    github: Option<Arc<deft_github::GitHub>>,
    pub retry: Retry,
}

impl Forges {
    /// The local forge, and GitHub when it is configured.
    pub fn new(github: Option<Arc<deft_github::GitHub>>) -> Forges {
        Forges {
            github,
            retry: Retry::default(),
        }
    }

    /// Runs `call` until it succeeds, fails for good, or has failed transiently
    /// `retry.attempts` times.
    pub(crate) async fn retried<T, F, Fut>(
        &self,
        what: &str,
        mut call: F,
    ) -> Result<T, ForgeFailure>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ForgeFailure>>,
    {
        let mut wait = self.retry.first_wait;
        let mut attempt = 1;
        loop {
            match call().await {
                Err(failure) if failure.is_transient() && attempt < self.retry.attempts => {
                    tracing::warn!(%failure, attempt, "{what} failed for a moment; trying again");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                    attempt += 1;
                }
                Err(ForgeFailure::Transient(message)) => {
                    return Err(ForgeFailure::Transient(format!(
                        "{message} (tried {attempt} times; answer the task to try again)"
                    )));
                }
                other => return other,
            }
        }
    }

    /// Copies the repository into the task's private repository (outside every sandbox).
    pub(crate) async fn mirror(
        &self,
        repo: &Repository,
        private: &Path,
    ) -> Result<(), ForgeFailure> {
        match repo.forge {
            ForgeKind::Local => {
                self.retried("the copy", || async {
                    deft_forge::private::mirror_local(Path::new(&repo.location), private)
                        .await
                        .map_err(ForgeFailure::from)
                })
                .await
            }
            ForgeKind::Github => {
                let github = self.github(repo)?;
                self.retried("the clone", || github.mirror(private)).await
            }
        }
    }

    /// Pushes the task's branch from its private repository.
    pub(crate) async fn push(
        &self,
        repo: &Repository,
        private: &Path,
        dir: &Path,
        branch: &str,
    ) -> Result<(), ForgeFailure> {
        match repo.forge {
            ForgeKind::Local => {
                self.retried("the push", || async {
                    deft_forge::private::push(
                        private,
                        dir,
                        &repo.location,
                        branch,
                        &repo.default_branch,
                        None,
                    )
                    .await
                    .map_err(ForgeFailure::from)
                })
                .await
            }
            ForgeKind::Github => {
                let github = self.github(repo)?;
                self.retried("the push", || github.push(private, dir, branch))
                    .await
            }
        }
    }

    /// Opens (or updates) the pull request where the forge keeps them; `None` for the local
    /// forge, whose pull requests live in deft alone.
    pub(crate) async fn publish(
        &self,
        repo: &Repository,
        pull_request: &PullRequest,
    ) -> Result<Option<Published>, ForgeFailure> {
        match repo.forge {
            ForgeKind::Local => Ok(None),
            ForgeKind::Github => {
                let github = self.github(repo)?;
                self.retried("opening the pull request", || github.publish(pull_request))
                    .await
                    .map(Some)
            }
        }
    }

    /// The forge's side of a repository, when it has one beyond git.
    pub(crate) fn github<'a>(
        &'a self,
        repo: &'a Repository,
    ) -> Result<github::GithubRepo<'a>, ForgeFailure> {
        github::GithubRepo::new(self.github.as_deref(), repo)
    }
}
