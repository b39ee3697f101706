//! What a pull request holds when its owner gives feedback (SPEC §5 "GitHub"): its review
//! threads, resolved or not, with their comments (GraphQL `reviewThreads`), the comments of
//! its conversation, and its head commit and state.

use serde::Deserialize;
use serde_json::json;

use crate::client::{Comment, MAX_PAGES};
use crate::{GitHub, GithubError, RepoName};

/// One review thread of a pull request, as GraphQL's `PullRequestReviewThread`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewThread {
    /// The thread's node id (`PRRT_…`).
    pub id: String,
    pub is_resolved: bool,
    /// The lines it was written on have changed since.
    pub is_outdated: bool,
    pub path: String,
    pub line: Option<u64>,
    /// Oldest first; the first opened the thread.
    pub comments: Vec<ThreadComment>,
}

/// One comment of a review thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadComment {
    /// The comment's node id (`PRRC_…`).
    pub id: String,
    /// The REST id, which replies are posted to (`reply_to_review_comment`).
    pub database_id: Option<u64>,
    /// The author's login; `ghost` for a deleted account.
    pub author: String,
    pub body: String,
    pub path: String,
    pub line: Option<u64>,
    /// RFC 3339, as GitHub writes it.
    pub created_at: String,
}

/// A comment of a pull request's conversation (GitHub keeps them as the issue's comments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationComment {
    pub id: u64,
    pub author: String,
    pub body: String,
    /// RFC 3339, as GitHub writes it.
    pub created_at: String,
}

/// Where a pull request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullState {
    Open,
    Closed,
    Merged,
}

/// A pull request's head commit and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestHead {
    pub sha: String,
    /// The branch the pull request comes from.
    pub branch: String,
    pub state: PullState,
}

/// The query for one page of threads; comments past the first hundred of a thread are left.
const THREADS_QUERY: &str =
    "query($owner: String!, $name: String!, $number: Int!, $cursor: String) {
  repository(owner: $owner, name: $name) {
    pullRequest(number: $number) {
      reviewThreads(first: 100, after: $cursor) {
        pageInfo { hasNextPage endCursor }
        nodes {
          id isResolved isOutdated path line
          comments(first: 100) {
            nodes { id databaseId author { login } body path line createdAt }
          }
        }
      }
    }
  }
}";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ThreadsAnswer {
    data: Option<ThreadsData>,
    #[serde(default)]
    errors: Vec<GraphqlError>,
}

#[derive(Deserialize)]
struct GraphqlError {
    message: String,
}

#[derive(Deserialize)]
struct ThreadsData {
    repository: Option<RepositoryNode>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RepositoryNode {
    pull_request: Option<PullRequestNode>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PullRequestNode {
    review_threads: Connection<ThreadNode>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Connection<T> {
    #[serde(default)]
    page_info: Option<PageInfo>,
    nodes: Vec<T>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageInfo {
    has_next_page: bool,
    end_cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ThreadNode {
    id: String,
    is_resolved: bool,
    #[serde(default)]
    is_outdated: bool,
    #[serde(default)]
    path: String,
    line: Option<u64>,
    comments: Connection<CommentNode>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CommentNode {
    id: String,
    database_id: Option<u64>,
    author: Option<Author>,
    body: String,
    #[serde(default)]
    path: String,
    line: Option<u64>,
    created_at: String,
}

#[derive(Deserialize)]
struct Author {
    login: String,
}

impl From<ThreadNode> for ReviewThread {
    fn from(node: ThreadNode) -> ReviewThread {
        ReviewThread {
            id: node.id,
            is_resolved: node.is_resolved,
            is_outdated: node.is_outdated,
            path: node.path,
            line: node.line,
            comments: node
                .comments
                .nodes
                .into_iter()
                .map(|comment| ThreadComment {
                    id: comment.id,
                    database_id: comment.database_id,
                    author: comment
                        .author
                        .map_or_else(|| "ghost".to_owned(), |author| author.login),
                    body: comment.body,
                    path: comment.path,
                    line: comment.line,
                    created_at: comment.created_at,
                })
                .collect(),
        }
    }
}

impl GitHub {
    /// Every review thread of pull request `pull`, resolved or not, with its comments, in
    /// GitHub's order (up to [`MAX_PAGES`] pages of 100 threads). Keep those with
    /// `!is_resolved` for the threads still open.
    pub async fn review_threads(
        &self,
        repo: &RepoName,
        pull: u64,
    ) -> Result<Vec<ReviewThread>, GithubError> {
        let call = format!("POST /graphql (reviewThreads of {repo}#{pull})");
        let (owner, name) = repo.as_str().split_once('/').unwrap_or_default();
        let token = self.git_token(repo).await?;
        let mut threads = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let variables = json!({"owner": owner, "name": name, "number": pull, "cursor": cursor});
            let request = self
                .http
                .post(crate::http::graphql_url(&self.api_url))
                .bearer_auth(&token)
                .json(&json!({"query": THREADS_QUERY, "variables": variables}));
            let answer: ThreadsAnswer =
                crate::http::json(&call, crate::http::send(&call, request).await?).await?;
            if let Some(error) = answer.errors.first() {
                return Err(GithubError::Api {
                    call,
                    status: 200,
                    message: error.message.clone(),
                });
            }
            let Some(pull_request) = answer
                .data
                .and_then(|data| data.repository)
                .and_then(|repository| repository.pull_request)
            else {
                return Err(GithubError::NoAccess {
                    repo: repo.to_string(),
                });
            };
            let page = pull_request.review_threads;
            threads.extend(page.nodes.into_iter().map(ReviewThread::from));
            match page.page_info {
                Some(PageInfo {
                    has_next_page: true,
                    end_cursor: Some(next),
                }) => cursor = Some(next),
                _ => break,
            }
        }
        Ok(threads)
    }

    /// The comments of pull request `pull`'s conversation, oldest first.
    pub async fn pull_request_comments(
        &self,
        repo: &RepoName,
        pull: u64,
    ) -> Result<Vec<ConversationComment>, GithubError> {
        Ok(self
            .issue_comments(repo, pull)
            .await?
            .into_iter()
            .map(
                |Comment {
                     id,
                     user,
                     body,
                     created_at,
                 }| ConversationComment {
                    id,
                    author: user.login,
                    body: body.unwrap_or_default(),
                    created_at,
                },
            )
            .collect())
    }

    /// Pull request `pull`'s head commit and whether it is open, closed or merged.
    pub async fn pull_request_head(
        &self,
        repo: &RepoName,
        pull: u64,
    ) -> Result<PullRequestHead, GithubError> {
        #[derive(Deserialize)]
        struct Head {
            sha: String,
            #[serde(rename = "ref")]
            branch: String,
        }
        #[derive(Deserialize)]
        struct Pull {
            state: String,
            #[serde(default)]
            merged: bool,
            head: Head,
        }
        let client = self.client(repo).await?;
        let call = format!("GET /repos/{repo}/pulls/{pull}");
        let found: Pull = client
            .get(format!("/repos/{repo}/pulls/{pull}"), None::<&()>)
            .await
            .map_err(|error| crate::client::api_error(&call, error))?;
        let state = match (found.state.as_str(), found.merged) {
            (_, true) => PullState::Merged,
            ("open", false) => PullState::Open,
            _ => PullState::Closed,
        };
        Ok(PullRequestHead {
            sha: found.head.sha,
            branch: found.head.branch,
            state,
        })
    }
}
