//! The REST calls deft makes, through octocrab (authentication, base URL, retries), with small
//! response types of our own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use octocrab::Octocrab;
use octocrab::models::InstallationId;
use octocrab::secrecy::ExposeSecret as _;
use serde::Deserialize;
use serde_json::json;

use crate::{GithubAuth, GithubConfig, GithubError, RepoName};

/// How long a permission read from GitHub is trusted: long enough to spare a burst of
/// webhooks, short enough that a removed collaborator stops quickly.
const PERMISSION_TTL: Duration = Duration::from_secs(60);

/// A page of a list, as large as GitHub gives.
pub(crate) const PER_PAGE: usize = 100;
/// The most pages of one list deft reads: a thousand comments is past what a task can use.
pub(crate) const MAX_PAGES: usize = 10;

/// What deft needs of a repository.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RepoInfo {
    pub full_name: String,
    pub default_branch: String,
    pub clone_url: String,
    pub html_url: String,
}

/// A person's permission on a repository, as GitHub names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Admin,
    Maintain,
    Write,
    Triage,
    Read,
    None,
}

impl Permission {
    fn parse(text: &str) -> Permission {
        match text {
            "admin" => Permission::Admin,
            "maintain" => Permission::Maintain,
            "write" => Permission::Write,
            "triage" => Permission::Triage,
            "read" => Permission::Read,
            _ => Permission::None,
        }
    }

    /// Whether the person may push: only they may give deft work on the repository.
    pub fn can_write(self) -> bool {
        matches!(
            self,
            Permission::Admin | Permission::Maintain | Permission::Write
        )
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct PullRequestInfo {
    pub number: u64,
    pub html_url: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Login {
    pub login: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Comment {
    pub id: u64,
    pub user: Login,
    #[serde(default)]
    pub body: Option<String>,
    /// When it was written (RFC 3339, as GitHub writes it).
    #[serde(default)]
    pub created_at: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ReviewComment {
    pub id: u64,
    pub user: Login,
    pub body: String,
    pub path: String,
    #[serde(default)]
    pub line: Option<u64>,
    #[serde(default)]
    pub in_reply_to_id: Option<u64>,
}

#[derive(Deserialize)]
struct InstallationRef {
    id: u64,
}

#[derive(Deserialize)]
struct PermissionAnswer {
    permission: String,
}

#[derive(Deserialize)]
struct Branch {
    protected: bool,
}

/// One GitHub connection: an App (tokens per installation) or a personal token.
pub struct GitHub {
    /// Authenticated as the App (JWT) or with the token.
    root: Arc<Octocrab>,
    token: Option<String>,
    /// One client per installation, shared: octocrab caches the installation's token inside
    /// a client, and a copy of a client starts with a copy of the cache.
    installations: Mutex<HashMap<u64, Arc<Octocrab>>>,
    /// Which installation serves each repository.
    repo_installations: Mutex<HashMap<String, u64>>,
    permissions: Mutex<HashMap<(String, String), (Instant, Permission)>>,
    /// `github.api_url`, for the calls made without octocrab (`http.rs`).
    pub(crate) api_url: String,
    pub(crate) http: reqwest::Client,
    /// The App's user authorization (`github.client_id`, `github.client_secret`), if set.
    pub(crate) oauth: Option<crate::OAuthApp>,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub").finish_non_exhaustive()
    }
}

pub(crate) fn api_error(call: &str, error: octocrab::Error) -> GithubError {
    match error {
        octocrab::Error::GitHub { source, .. } => GithubError::Api {
            call: call.to_owned(),
            status: source.status_code.as_u16(),
            message: source.message,
        },
        other => GithubError::Transport {
            call: call.to_owned(),
            message: other.to_string(),
        },
    }
}

fn is_not_found(error: &GithubError) -> bool {
    matches!(error, GithubError::Api { status: 404, .. })
}

impl GitHub {
    pub fn new(config: &GithubConfig) -> Result<GitHub, GithubError> {
        let builder = Octocrab::builder()
            .base_uri(config.api_url.as_str())
            .map_err(|error| GithubError::Config {
                what: format!("api_url `{}`: {error}", config.api_url),
            })?;
        let (builder, token) = match &config.auth {
            GithubAuth::App {
                app_id,
                private_key_pem,
            } => (
                builder
                    .app_from_rsa_pem((*app_id).into(), private_key_pem)
                    .map_err(|error| GithubError::Config {
                        what: format!(
                            "private_key_path: not an RSA private key in PEM ({error}); download the App's key again"
                        ),
                    })?,
                None,
            ),
            GithubAuth::Token(token) => (builder.personal_token(token.clone()), Some(token.clone())),
        };
        let root = builder.build().map_err(|error| GithubError::Config {
            what: error.to_string(),
        })?;
        Ok(GitHub {
            api_url: config.api_url.trim_end_matches('/').to_owned(),
            http: crate::http::client(&config.api_url)?,
            oauth: config.oauth.clone(),
            root: Arc::new(root),
            token,
            installations: Mutex::new(HashMap::new()),
            repo_installations: Mutex::new(HashMap::new()),
            permissions: Mutex::new(HashMap::new()),
        })
    }

    /// The client that acts on `repo`: the App's installation on it, or the token.
    pub(crate) async fn client(&self, repo: &RepoName) -> Result<Arc<Octocrab>, GithubError> {
        if self.token.is_some() {
            return Ok(self.root.clone());
        }
        let known = self
            .repo_installations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(repo.as_str())
            .copied();
        if let Some(client) = known.and_then(|id| self.lock_installations().get(&id).cloned()) {
            return Ok(client);
        }
        let call = format!("GET /repos/{repo}/installation");
        let installation: InstallationRef = self
            .root
            .get(format!("/repos/{repo}/installation"), None::<&()>)
            .await
            .map_err(|error| api_error(&call, error))
            .map_err(|error| {
                if is_not_found(&error) {
                    GithubError::NoAccess {
                        repo: repo.to_string(),
                    }
                } else {
                    error
                }
            })?;
        self.repo_installations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(repo.as_str().to_owned(), installation.id);
        let mut installations = self.lock_installations();
        if let Some(client) = installations.get(&installation.id) {
            return Ok(client.clone());
        }
        let client = Arc::new(
            self.root
                .installation(InstallationId(installation.id))
                .map_err(|error| api_error("installation", error))?,
        );
        installations.insert(installation.id, client.clone());
        Ok(client)
    }

    fn lock_installations(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Octocrab>>> {
        self.installations.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets what was cached for `repo`: after an uninstall, nothing acts on it.
    pub fn forget(&self, repo: &RepoName) {
        let installation = self
            .repo_installations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(repo.as_str());
        if let Some(installation) = installation {
            self.lock_installations().remove(&installation);
        }
        self.permissions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(name, _), _| name != repo.as_str());
    }

    /// Every repository the App's installations (or the token) can reach.
    pub async fn reachable_repositories(&self) -> Result<Vec<RepoInfo>, GithubError> {
        #[derive(Deserialize)]
        struct Page {
            repositories: Vec<RepoInfo>,
        }
        if self.token.is_some() {
            let call = "GET /user/repos";
            return self
                .root
                .get("/user/repos", Some(&json!({"per_page": 100})))
                .await
                .map_err(|error| api_error(call, error));
        }
        let call = "GET /app/installations";
        let installations: Vec<InstallationRef> = self
            .root
            .get("/app/installations", Some(&json!({"per_page": 100})))
            .await
            .map_err(|error| api_error(call, error))?;
        let mut found = Vec::new();
        for installation in installations {
            let client = {
                let mut installations = self.lock_installations();
                match installations.get(&installation.id) {
                    Some(client) => client.clone(),
                    None => {
                        let client = Arc::new(
                            self.root
                                .installation(InstallationId(installation.id))
                                .map_err(|error| api_error("installation", error))?,
                        );
                        installations.insert(installation.id, client.clone());
                        client
                    }
                }
            };
            let call = "GET /installation/repositories";
            let page: Page = client
                .get(
                    "/installation/repositories",
                    Some(&json!({"per_page": 100})),
                )
                .await
                .map_err(|error| api_error(call, error))?;
            for repo in &page.repositories {
                self.repo_installations
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(repo.full_name.clone(), installation.id);
            }
            found.extend(page.repositories);
        }
        Ok(found)
    }

    pub async fn repository(&self, repo: &RepoName) -> Result<RepoInfo, GithubError> {
        let client = self.client(repo).await?;
        let call = format!("GET /repos/{repo}");
        client
            .get(format!("/repos/{repo}"), None::<&()>)
            .await
            .map_err(|error| api_error(&call, error))
    }

    /// `login`'s permission on `repo`, cached for a minute.
    pub async fn permission(
        &self,
        repo: &RepoName,
        login: &str,
    ) -> Result<Permission, GithubError> {
        if !login
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '[' || c == ']')
            || login.is_empty()
        {
            return Ok(Permission::None);
        }
        let key = (repo.as_str().to_owned(), login.to_lowercase());
        if let Some((at, permission)) = self
            .permissions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            && at.elapsed() < PERMISSION_TTL
        {
            return Ok(*permission);
        }
        let client = self.client(repo).await?;
        let call = format!("GET /repos/{repo}/collaborators/{login}/permission");
        let permission = match client
            .get::<PermissionAnswer, _, _>(
                format!("/repos/{repo}/collaborators/{login}/permission"),
                None::<&()>,
            )
            .await
            .map_err(|error| api_error(&call, error))
        {
            Ok(answer) => Permission::parse(&answer.permission),
            // Not a collaborator at all.
            Err(error) if is_not_found(&error) => Permission::None,
            Err(error) => return Err(error),
        };
        self.permissions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (Instant::now(), permission));
        Ok(permission)
    }

    /// A short-lived token for git over HTTPS on `repo` (the installation's, or the personal
    /// token), to be sent as `x-access-token:TOKEN`.
    pub async fn git_token(&self, repo: &RepoName) -> Result<String, GithubError> {
        if let Some(token) = &self.token {
            return Ok(token.clone());
        }
        let client = self.client(repo).await?;
        let token = client
            .installation_token()
            .await
            .map_err(|error| api_error("POST /app/installations/{id}/access_tokens", error))?;
        Ok(token.expose_secret().to_owned())
    }

    pub async fn branch_protected(
        &self,
        repo: &RepoName,
        branch: &str,
    ) -> Result<bool, GithubError> {
        let client = self.client(repo).await?;
        let call = format!("GET /repos/{repo}/branches/{branch}");
        match client
            .get::<Branch, _, _>(format!("/repos/{repo}/branches/{branch}"), None::<&()>)
            .await
            .map_err(|error| api_error(&call, error))
        {
            Ok(found) => Ok(found.protected),
            // A branch not pushed yet is not protected by a rule on itself; rules by pattern
            // still refuse the push, and that error says so.
            Err(error) if is_not_found(&error) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Opens the pull request of `head` into `base`, or updates the open one.
    pub async fn open_pull_request(
        &self,
        repo: &RepoName,
        head: &str,
        base: &str,
        title: &str,
        body: &str,
    ) -> Result<PullRequestInfo, GithubError> {
        let client = self.client(repo).await?;
        let owner = repo.as_str().split('/').next().unwrap_or_default();
        let call = format!("GET /repos/{repo}/pulls");
        let open: Vec<PullRequestInfo> = client
            .get(
                format!("/repos/{repo}/pulls"),
                Some(&json!({"head": format!("{owner}:{head}"), "state": "open"})),
            )
            .await
            .map_err(|error| api_error(&call, error))?;
        if let Some(existing) = open.into_iter().next() {
            let call = format!("PATCH /repos/{repo}/pulls/{}", existing.number);
            return client
                .patch(
                    format!("/repos/{repo}/pulls/{}", existing.number),
                    Some(&json!({"title": title, "body": body})),
                )
                .await
                .map_err(|error| api_error(&call, error));
        }
        let call = format!("POST /repos/{repo}/pulls");
        client
            .post(
                format!("/repos/{repo}/pulls"),
                Some(&json!({"title": title, "head": head, "base": base, "body": body})),
            )
            .await
            .map_err(|error| api_error(&call, error))
    }

    /// The changes of `head` against `base` as a unified diff, from the compare API.
    pub async fn compare(
        &self,
        repo: &RepoName,
        base: &str,
        head: &str,
    ) -> Result<String, GithubError> {
        #[derive(Deserialize)]
        struct File {
            filename: String,
            status: String,
            #[serde(default)]
            previous_filename: Option<String>,
            #[serde(default)]
            patch: Option<String>,
        }
        #[derive(Deserialize)]
        struct Comparison {
            #[serde(default)]
            files: Vec<File>,
        }
        let client = self.client(repo).await?;
        let call = format!("GET /repos/{repo}/compare/{base}...{head}");
        let comparison: Comparison = client
            .get(
                format!("/repos/{repo}/compare/{base}...{head}"),
                None::<&()>,
            )
            .await
            .map_err(|error| api_error(&call, error))?;
        let mut diff = String::new();
        for file in comparison.files {
            let old = file.previous_filename.as_deref().unwrap_or(&file.filename);
            diff.push_str(&format!("diff --git a/{old} b/{}\n", file.filename));
            let from = if file.status == "added" {
                "/dev/null".to_owned()
            } else {
                format!("a/{old}")
            };
            let to = if file.status == "removed" {
                "/dev/null".to_owned()
            } else {
                format!("b/{}", file.filename)
            };
            diff.push_str(&format!("--- {from}\n+++ {to}\n"));
            match file.patch {
                Some(patch) => {
                    diff.push_str(&patch);
                    if !patch.ends_with('\n') {
                        diff.push('\n');
                    }
                }
                None => diff.push_str("(binary or too large to show)\n"),
            }
        }
        Ok(diff)
    }

    /// Comments on an issue or a pull request.
    pub async fn comment(
        &self,
        repo: &RepoName,
        number: u64,
        body: &str,
    ) -> Result<(), GithubError> {
        let client = self.client(repo).await?;
        let call = format!("POST /repos/{repo}/issues/{number}/comments");
        let _: Comment = client
            .post(
                format!("/repos/{repo}/issues/{number}/comments"),
                Some(&json!({"body": body})),
            )
            .await
            .map_err(|error| api_error(&call, error))?;
        Ok(())
    }

    /// The comments of an issue (or of a pull request's conversation), oldest first: up to
    /// [`MAX_PAGES`] pages of 100.
    pub async fn issue_comments(
        &self,
        repo: &RepoName,
        number: u64,
    ) -> Result<Vec<Comment>, GithubError> {
        let client = self.client(repo).await?;
        let call = format!("GET /repos/{repo}/issues/{number}/comments");
        let mut comments = Vec::new();
        for page in 1..=MAX_PAGES {
            let batch: Vec<Comment> = client
                .get(
                    format!("/repos/{repo}/issues/{number}/comments"),
                    Some(&json!({"per_page": PER_PAGE, "page": page})),
                )
                .await
                .map_err(|error| api_error(&call, error))?;
            let last = batch.len() < PER_PAGE;
            comments.extend(batch);
            if last {
                break;
            }
        }
        Ok(comments)
    }

    /// The comments of one submitted review.
    pub async fn review_comments(
        &self,
        repo: &RepoName,
        pull: u64,
        review: u64,
    ) -> Result<Vec<ReviewComment>, GithubError> {
        let client = self.client(repo).await?;
        let call = format!("GET /repos/{repo}/pulls/{pull}/reviews/{review}/comments");
        client
            .get(
                format!("/repos/{repo}/pulls/{pull}/reviews/{review}/comments"),
                Some(&json!({"per_page": 100})),
            )
            .await
            .map_err(|error| api_error(&call, error))
    }

    /// Every review comment of a pull request: the threads a review comment belongs to.
    pub async fn pull_comments(
        &self,
        repo: &RepoName,
        pull: u64,
    ) -> Result<Vec<ReviewComment>, GithubError> {
        let client = self.client(repo).await?;
        let call = format!("GET /repos/{repo}/pulls/{pull}/comments");
        client
            .get(
                format!("/repos/{repo}/pulls/{pull}/comments"),
                Some(&json!({"per_page": 100})),
            )
            .await
            .map_err(|error| api_error(&call, error))
    }

    /// Answers in a review comment's thread.
    pub async fn reply_to_review_comment(
        &self,
        repo: &RepoName,
        pull: u64,
        comment: u64,
        body: &str,
    ) -> Result<(), GithubError> {
        let client = self.client(repo).await?;
        let call = format!("POST /repos/{repo}/pulls/{pull}/comments/{comment}/replies");
        let _: ReviewComment = client
            .post(
                format!("/repos/{repo}/pulls/{pull}/comments/{comment}/replies"),
                Some(&json!({"body": body})),
            )
            .await
            .map_err(|error| api_error(&call, error))?;
        Ok(())
    }
}
