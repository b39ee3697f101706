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
    /// forge, whose pull requests live in deft alone. A `previous` one that was closed (new
    /// feedback came after) is opened again rather than replaced.
    pub(crate) async fn publish(
        &self,
        repo: &Repository,
        pull_request: &PullRequest,
        previous: Option<&PullRequest>,
    ) -> Result<Option<Published>, ForgeFailure> {
        match repo.forge {
            ForgeKind::Local => Ok(None),
            ForgeKind::Github => {
                let github = self.github(repo)?;
                let closed = previous
                    .filter(|pr| pr.status == deft_core::PullRequestStatus::Closed)
                    .and_then(|pr| pr.url.as_deref())
                    .and_then(pull_number);
                if let Some(number) = closed {
                    self.retried("reopening the pull request", || github.reopen(number))
                        .await?;
                }
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

/// The number of a pull request from its page's address (`…/pull/12`).
pub(crate) fn pull_number(url: &str) -> Option<u64> {
    url.rsplit_once("/pull/")
        .and_then(|(_, number)| number.parse().ok())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn forges(attempts: u32) -> Forges {
        Forges {
            github: None,
            retry: Retry {
                attempts,
                first_wait: Duration::from_millis(1),
            },
        }
    }

    #[tokio::test]
    async fn a_passing_failure_is_tried_again_until_it_succeeds() {
        let calls = AtomicU32::new(0);
        let result = forges(4)
            .retried("the push", || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err(ForgeFailure::Transient("GitHub answered 502".into())),
                    _ => Ok("pushed"),
                }
            })
            .await;
        assert_eq!(result, Ok("pushed"));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_refusal_is_not_tried_again_and_a_lasting_outage_says_how_often_it_was_tried() {
        let calls = AtomicU32::new(0);
        let refused: Result<(), _> = forges(4)
            .retried("the push", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(ForgeFailure::Refused("protected branch".into()))
            })
            .await;
        assert_eq!(
            refused,
            Err(ForgeFailure::Refused("protected branch".into()))
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let down: Result<(), _> = forges(3)
            .retried("the push", || async {
                Err(ForgeFailure::Transient("GitHub answered 503".into()))
            })
            .await;
        let Err(ForgeFailure::Transient(message)) = down else {
            panic!("{down:?}");
        };
        assert!(message.contains("tried 3 times"), "{message}");
    }

    #[test]
    fn githubs_passing_answers_are_transient_and_its_refusals_are_not() {
        let api = |status: u16, message: &str| deft_github::GithubError::Api {
            call: "POST /repos/o/r/pulls".into(),
            status,
            message: message.into(),
        };
        assert!(ForgeFailure::from(api(502, "Bad Gateway")).is_transient());
        assert!(ForgeFailure::from(api(429, "slow down")).is_transient());
        assert!(
            ForgeFailure::from(api(403, "You have exceeded a secondary rate limit")).is_transient()
        );
        assert!(
            !ForgeFailure::from(api(403, "Resource not accessible by integration")).is_transient()
        );
        assert!(!ForgeFailure::from(api(422, "Validation Failed")).is_transient());
        let git = |message: &str| deft_forge::ForgeError::Git {
            command: "push".into(),
            message: message.into(),
        };
        assert!(
            ForgeFailure::from(git(
                "fatal: unable to access: The requested URL returned error: 502"
            ))
            .is_transient()
        );
        assert!(
            !ForgeFailure::from(git(
                "! [remote rejected] main (protected branch hook declined)"
            ))
            .is_transient()
        );
    }

    #[test]
    fn a_pull_requests_number_comes_from_its_address() {
        assert_eq!(pull_number("https://github.com/o/r/pull/12"), Some(12));
        assert_eq!(pull_number("https://github.com/o/r/issues/12"), None);
    }
}
