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
