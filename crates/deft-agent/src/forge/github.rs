//! GitHub as a forge: the App's (or a token's) access to one repository.

use std::path::Path;

use deft_core::{PullRequest, Repository};
use deft_github::{GitHub, GithubError, RepoName};

use super::{ForgeFailure, Published};

impl From<GithubError> for ForgeFailure {
    fn from(error: GithubError) -> Self {
        let transient = match &error {
            GithubError::Transport { .. } => true,
            GithubError::Api {
                status, message, ..
            } => {
                *status >= 500
                    || *status == 429
                    || (*status == 403 && message.to_ascii_lowercase().contains("rate limit"))
            }
            GithubError::Config { .. } => {
                return ForgeFailure::NotConfigured(error.to_string());
            }
            GithubError::Invalid { .. } | GithubError::NoAccess { .. } => false,
        };
        if transient {
            ForgeFailure::Transient(error.to_string())
        } else {
            ForgeFailure::Refused(error.to_string())
        }
    }
}

/// One GitHub repository of a task.
pub(crate) struct GithubRepo<'a> {
    github: &'a GitHub,
    pub(crate) name: RepoName,
    repo: &'a Repository,
}

impl<'a> GithubRepo<'a> {
    pub(super) fn new(
        github: Option<&'a GitHub>,
        repo: &'a Repository,
    ) -> Result<GithubRepo<'a>, ForgeFailure> {
        let github = github.ok_or_else(|| {
            ForgeFailure::NotConfigured(format!(
                "{} is on GitHub, but GitHub is not configured on this deft; set `[github]` (app_id and private_key_path, or token), restart, then answer this task",
                repo.location
            ))
        })?;
        let name = RepoName::parse(&repo.location)
            .map_err(|error| ForgeFailure::Refused(error.to_string()))?;
        Ok(GithubRepo { github, name, repo })
    }

    async fn auth(&self) -> Result<(String, deft_forge::GitAuth), ForgeFailure> {
        let info = self.github.repository(&self.name).await?;
        let token = self.github.git_token(&self.name).await?;
        Ok((
            info.clone_url,
            deft_forge::GitAuth::basic("x-access-token", &token),
        ))
    }

    pub(super) async fn mirror(&self, private: &Path) -> Result<(), ForgeFailure> {
        let (url, auth) = self.auth().await?;
        Ok(deft_forge::private::mirror_remote(&url, private, &auth).await?)
    }

    /// Pushes the branch; never to a protected one.
    pub(super) async fn push(
        &self,
        private: &Path,
        dir: &Path,
        branch: &str,
    ) -> Result<(), ForgeFailure> {
        if self.github.branch_protected(&self.name, branch).await? {
            return Err(ForgeFailure::Refused(format!(
                "`{branch}` is a protected branch on GitHub; deft does not push to protected branches"
            )));
        }
        let (url, auth) = self.auth().await?;
        Ok(deft_forge::private::push(
            private,
            dir,
            &url,
            branch,
            &self.repo.default_branch,
            Some(&auth),
        )
        .await?)
    }

    pub(super) async fn publish(&self, pull: &PullRequest) -> Result<Published, ForgeFailure> {
        let opened = self
            .github
            .open_pull_request(&self.name, &pull.head, &pull.base, &pull.title, &pull.body)
            .await?;
        Ok(Published {
            url: opened.html_url,
            number: opened.number,
        })
    }

    /// Opens a closed pull request again.
    pub(super) async fn reopen(&self, number: u64) -> Result<(), ForgeFailure> {
        self.github.reopen_pull_request(&self.name, number).await?;
        Ok(())
    }

    /// A comment on an issue or a pull request's conversation.
    pub(crate) async fn comment(&self, number: u64, text: &str) -> Result<(), ForgeFailure> {
        Ok(self.github.comment(&self.name, number, text).await?)
    }

    /// A reply in the review thread of `comment`.
    pub(crate) async fn reply_in_thread(
        &self,
        pull: u64,
        comment: u64,
        text: &str,
    ) -> Result<(), ForgeFailure> {
        Ok(self
            .github
            .reply_to_review_comment(&self.name, pull, comment, text)
            .await?)
    }
}

/// The most of a pull request's gathered feedback the agent reads, in characters: two thirds
/// for threads and comments, one for checks, each cut in its middle when it passes its share.
const GATHERED_CHARS: usize = 60_000;

impl GithubRepo<'_> {
    /// Pull request `pull` as it stands: its unresolved review threads with every reply, its
    /// conversation, and the failing checks of its head commit with their output and the end
    /// of their Actions logs. Only `owner`'s words (their GitHub login) are instructions;
    /// everyone else's, and every check's, are fenced as data.
    pub(crate) async fn gather(
        &self,
        pull: u64,
        owner: Option<&str>,
    ) -> Result<deft_core::Gathered, ForgeFailure> {
        let said = |author: &str, body: &str| match owner {
            Some(login) if login.eq_ignore_ascii_case(author) => format!(
                "The owner (@{author}) wrote:\n{}",
                deft_github::untrusted::visible(body).trim()
            ),
            _ => deft_github::untrusted::fenced(author, body),
        };
        let mut text = format!(
            "Pull request #{pull} of {} as it stood when the owner gave feedback. Address every unresolved thread and comment below, and the failing checks, unless the owner says otherwise.",
            self.name
        );
        let mut threads = Vec::new();
        let mut part = String::new();
        for thread in self.github.review_threads(&self.name, pull).await? {
            if thread.is_resolved || thread.comments.is_empty() {
                continue;
            }
            let place = match thread.line {
                Some(line) => format!("{}:{line}", thread.path),
                None => thread.path.clone(),
            };
            part.push_str(&format!("\n\n### Unresolved review thread on `{place}`"));
            if thread.is_outdated {
                part.push_str(" (the lines have changed since)");
            }
            for comment in &thread.comments {
                part.push('\n');
                part.push_str(&said(&comment.author, &comment.body));
            }
            if let Some(first) = thread.comments.first().and_then(|c| c.database_id) {
                threads.push(first);
            }
        }
        for comment in self.github.pull_request_comments(&self.name, pull).await? {
            part.push_str("\n\n### Comment on the pull request\n");
            part.push_str(&said(&comment.author, &comment.body));
        }
        text.push_str(&deft_github::clip(&part, GATHERED_CHARS * 2 / 3));
        let head = self.github.pull_request_head(&self.name, pull).await?;
        let mut checks = String::new();
        for check in self.github.failing_checks(&self.name, &head.sha).await? {
            let mut report = format!(
                "Check `{}` ended in `{}` ({})",
                check.name, check.conclusion, check.details_url
            );
            for piece in [&check.title, &check.summary, &check.text]
                .into_iter()
                .flatten()
            {
                report.push('\n');
                report.push_str(piece);
            }
            if let Some(log) = &check.log {
                report.push_str("\nThe end of its log:\n");
                report.push_str(log);
            }
            checks.push_str(&format!(
                "\n\n### Failing check on the head commit {}\n",
                &head.sha[..head.sha.len().min(12)]
            ));
            checks.push_str(&deft_github::untrusted::fenced(
                &format!("check {}", check.name),
                &report,
            ));
        }
        text.push_str(&deft_github::clip(&checks, GATHERED_CHARS / 3));
        Ok(deft_core::Gathered {
            repo: self.name.to_string(),
            pull,
            text,
            threads,
        })
    }
}
