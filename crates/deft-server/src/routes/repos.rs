//! Repositories: local git repositories and GitHub's. A repository in a request is its id, a
//! local path or a GitHub `owner/name` (registered on first use), or a name the user has
//! registered.

use axum::Json;
use axum::http::StatusCode;
use deft_core::{RepoId, User};
use deft_store::NewRepository;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiPath};
use crate::{ApiError, AppState, views};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddRepo {
    path: Option<String>,
    github: Option<String>,
}

pub async fn list(Caller { app, user }: Caller) -> Result<Json<Value>, ApiError> {
    let repos = app.store.list_repositories(&user.id).await?;
    Ok(Json(
        json!({ "repos": repos.iter().map(views::repository).collect::<Vec<_>>() }),
    ))
}

pub async fn add(
    Caller { app, user }: Caller,
    ApiJson(body): ApiJson<AddRepo>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let repo = match (body.path, body.github) {
        (Some(path), None) => register_local(&app, &user, &path, "path").await?,
        (None, Some(full)) => register_github(&app, &user, &full, "github").await?,
        _ => {
            return Err(ApiError::field(
                "path",
                "give exactly one of `path` (a git repository on the server) or `github` (`owner/name`)",
            ));
        }
    };
    let repo = app.store.repository(&user.id, repo.as_str()).await?;
    Ok((StatusCode::CREATED, Json(views::repository(&repo))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutEnvironment {
    environment: String,
}

/// `PUT /repos/{id}/environment {"environment": "auto" | "host" | "dockerfile PATH" | "image
/// NAME"}`: what the repository's tasks run on from their next start.
pub async fn put_environment(
    Caller { app, user }: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PutEnvironment>,
) -> Result<Json<Value>, ApiError> {
    let environment = deft_core::RepoEnvironment::parse(&body.environment, "environment")?;
    let repo = app
        .store
        .set_repository_environment(&user.id, &id, &environment)
        .await?;
    Ok(Json(views::repository(&repo)))
}

/// `GET /repos/github`: the GitHub repositories both the App and the user (through their linked
/// account) can reach, with the user's permission on each; only those marked writable can be
/// given to a task.
pub async fn github_list(Caller { app, user }: Caller) -> Result<Json<Value>, ApiError> {
    let Some(hooks) = &app.github else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_configured",
            "GitHub is not configured on this deft; an administrator sets `[github]`",
        ));
    };
    let Some(login) = app.store.github_login(&user.id).await? else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_linked",
            format!(
                "your deft account is not linked to a GitHub account; an administrator links it with `deft user github {} LOGIN`",
                user.name
            ),
        ));
    };
    let unavailable = |error: deft_github::GithubError| {
        ApiError::new(StatusCode::BAD_GATEWAY, "github", error.to_string())
    };
    let mut repos = Vec::new();
    for repo in hooks
        .client
        .reachable_repositories()
        .await
        .map_err(unavailable)?
    {
        let Ok(name) = deft_github::RepoName::parse(&repo.full_name) else {
            continue;
        };
        let permission = hooks
            .client
            .permission(&name, &login)
            .await
            .map_err(unavailable)?;
        if permission == deft_github::Permission::None {
            continue;
        }
        repos.push(json!({
            "full_name": repo.full_name,
            "default_branch": repo.default_branch,
            "html_url": repo.html_url,
            "writable": permission.can_write(),
        }));
    }
    Ok(Json(json!({ "repos": repos })))
}

/// Registers a GitHub repository for `user`: one the App can reach and the user, through
/// their linked GitHub account, can push to (checked with GitHub, cached briefly).
pub(crate) async fn register_github(
    app: &AppState,
    user: &User,
    full: &str,
    field: &str,
) -> Result<RepoId, ApiError> {
    let Some(hooks) = &app.github else {
        return Err(ApiError::field(
            field,
            "GitHub is not configured on this deft; an administrator sets `[github]` (an App or a token), or register a local repository with `path`",
        ));
    };
    let name = deft_github::RepoName::parse(full.trim())
        .map_err(|e| ApiError::field(field, e.to_string()))?;
    if let Some(found) = app
        .store
        .repository_at(&user.id, deft_core::ForgeKind::Github, name.as_str())
        .await?
    {
        return Ok(found.id);
    }
    let Some(login) = app.store.github_login(&user.id).await? else {
        return Err(ApiError::field(
            field,
            format!(
                "your deft account is not linked to a GitHub account, so deft cannot tell whether you may push to {name}; an administrator links it with `deft user github {} LOGIN`",
                user.name
            ),
        ));
    };
    let github_error = |error: deft_github::GithubError| ApiError::field(field, error.to_string());
    let permission = hooks
        .client
        .permission(&name, &login)
        .await
        .map_err(github_error)?;
    if !permission.can_write() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "@{login} cannot push to {name}, and deft takes only repositories you can push to"
            ),
        ));
    }
    let info = hooks.client.repository(&name).await.map_err(github_error)?;
    let new = NewRepository {
        name: name.name().to_owned(),
        forge: deft_core::ForgeKind::Github,
        location: name.as_str().to_owned(),
        default_branch: info.default_branch,
    };
    Ok(app.store.add_repository(&user.id, new).await?.id)
}

/// Registers a local repository for `user`. Without configured roots, only an administrator
/// may: otherwise anyone could register, and later push to, any repository on the machine.
pub(crate) async fn register_local(
    app: &AppState,
    user: &User,
    path: &str,
    field: &str,
) -> Result<RepoId, ApiError> {
    if !app.local_roots.is_restricted() && !user.is_admin {
        let mut error = ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only an administrator may register local repositories until the server names where they live (`[forge] local_roots` or DEFT_LOCAL_ROOTS)",
        );
        error.field = Some(field.to_owned());
        return Err(error);
    }
    let local = deft_forge::inspect_local_within(path, &app.local_roots)
        .await
        .map_err(|error| ApiError::field(field, error.to_string()))?;
    let repo = app
        .store
        .add_repository(
            &user.id,
            NewRepository::local(local.name, &local.path, local.default_branch),
        )
        .await?;
    Ok(repo.id)
}

/// The user's local repository registered at `path` already: a task started again on the same
/// path (as `deft run` does) is not inspected with git again.
async fn registered_at(known: &[deft_core::Repository], path: &str) -> Option<RepoId> {
    let canonical = tokio::fs::canonicalize(path).await.ok()?;
    known
        .iter()
        .find(|repo| {
            repo.forge == deft_core::ForgeKind::Local
                && std::path::Path::new(&repo.location) == canonical
        })
        .map(|repo| repo.id.clone())
}

/// Turns what the user wrote for each repository into the ids of their repositories.
pub async fn resolve(
    app: &AppState,
    user: &User,
    items: &[String],
    field: &str,
) -> Result<Vec<RepoId>, ApiError> {
    let known = app.store.list_repositories(&user.id).await?;
    let mut ids: Vec<RepoId> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let field = format!("{field}[{index}]");
        let item = item.trim();
        let id = if let Some(repo) = known.iter().find(|repo| repo.id.as_str() == item) {
            repo.id.clone()
        } else if item.starts_with('/') {
            match registered_at(&known, item).await {
                Some(id) => id,
                None => register_local(app, user, item, &field).await?,
            }
        } else {
            let named: Vec<_> = known.iter().filter(|repo| repo.name == item).collect();
            match named.as_slice() {
                [repo] => repo.id.clone(),
                [] if item.contains('/') => register_github(app, user, item, &field).await?,
                [] => {
                    return Err(ApiError::field(
                        &field,
                        format!(
                            "unknown repository `{item}`; give its id, a name from `GET /api/v1/repos`, or an absolute path"
                        ),
                    ));
                }
                _ => {
                    return Err(ApiError::field(
                        &field,
                        format!("`{item}` names several of your repositories; give its id instead"),
                    ));
                }
            }
        };
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}
