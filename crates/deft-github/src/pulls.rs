//! A pull request closed on GitHub and opened again, for feedback given after it was closed.

use serde_json::json;

use crate::client::api_error;
use crate::{GitHub, GithubError, PullRequestInfo, RepoName};

impl GitHub {
    /// Opens closed pull request `number` again. A merged one cannot be, and GitHub says so.
    pub async fn reopen_pull_request(
        &self,
        repo: &RepoName,
        number: u64,
    ) -> Result<PullRequestInfo, GithubError> {
        let client = self.client(repo).await?;
        let call = format!("PATCH /repos/{repo}/pulls/{number}");
        client
            .patch(
                format!("/repos/{repo}/pulls/{number}"),
                Some(&json!({"state": "open"})),
            )
            .await
            .map_err(|error| api_error(&call, error))
    }
}
