//! A task's pull requests on a page of their own (`/tasks/{id}/diff`): per pull request its
//! description (Markdown, sanitized), the command that checks its branch out, the list of
//! files with their counts, and each file's diff, folded per file, numbered, highlighted,
//! unified or split; and for the local forge, whose pull requests deft keeps, Merge and Close.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use deft_core::{ForgeKind, PullRequest, PullRequestStatus, Repository, Task, TaskId, TaskState};
use serde::Deserialize;

use super::diff_view::{self, Budget, FileLink, FileView, Layout};
use super::{Chrome, ConfirmPage, WebError, WebForm, WebSession, diff, markdown, render};
use crate::AppState;
use crate::views::repo_names;

/// One pull request as the diff page shows it.
pub struct PullView {
    pub index: usize,
    pub repo: String,
    pub repo_id: String,
    pub title: String,
    pub base: String,
    pub head: String,
    pub status: &'static str,
    pub url: Option<String>,
    /// The description, as sanitized HTML.
    pub body: String,
    /// A shell command that fetches the branch and checks it out.
    pub checkout: String,
    /// Where `checkout` runs, in a sentence.
    pub checkout_hint: String,
    pub files: Vec<FileView>,
    pub additions: u32,
    pub deletions: u32,
    pub error: Option<String>,
    /// Why its Merge or Close was just refused.
    pub refusal: Option<String>,
    /// Merge and Close are offered (the local forge, open, the task not at work on it).
    pub can_merge: bool,
    /// Why they are not, when the pull request is open on the local forge.
    pub merge_hint: Option<String>,
    /// The branch's commit the diff shows (the local forge): Merge merges that one only.
    pub tip: String,
}

#[derive(Template)]
#[template(path = "task_diff.html")]
struct DiffPage {
    chrome: Chrome,
    id: String,
    title: String,
    split: bool,
    pulls: Vec<PullView>,
    /// What the last action did.
    notice: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct DiffQuery {
    view: Option<String>,
    /// `merged` or `closed`: the action that just succeeded.
    done: Option<String>,
}

pub async fn page(
    State(app): State<AppState>,
    session: WebSession,
    Path(id): Path<TaskId>,
    Query(query): Query<DiffQuery>,
) -> Result<Response, WebError> {
    let notice = match query.done.as_deref() {
        Some("merged") => Some("Merged: the base branch now has the pull request's changes."),
        Some("closed") => Some("Closed without merging; the branch stays in the repository."),
        _ => None,
    };
    let layout = Layout::parse(query.view.as_deref());
    draw(&app, &session, &id, layout, notice.map(str::to_owned), None).await
}

async fn draw(
    app: &AppState,
    session: &WebSession,
    id: &TaskId,
    layout: Layout,
    notice: Option<String>,
    refusal: Option<(usize, String)>,
) -> Result<Response, WebError> {
    let task = app.store.task(&session.user.id, id).await?;
    let repos = app.store.list_repositories(&session.user.id).await?;
    let names = repo_names(repos.clone());
    let mut pulls = Vec::new();
    let mut budget = Budget::default();
    for (index, pr) in task.pull_requests.iter().enumerate() {
        let repo = repos.iter().find(|r| r.id == pr.repo);
        let (text, tip) = match repo {
            Some(repo) => match diff_at_tip(app, repo, pr).await {
                Ok((text, tip)) => (Ok(text), tip),
                Err(error) => (Err(format!("The diff cannot be read: {error}")), None),
            },
            None => (
                Err("The repository is no longer registered.".to_owned()),
                None,
            ),
        };
        let (files, error) = match text {
            Ok(text) => {
                app.store
                    .set_diff_stat(&session.user.id, id, &pr.repo, &pr.head, diff::stat(&text))
                    .await?;
                // Highlighting is CPU work of a size the task chose: off the async threads.
                let (files, left) = tokio::task::spawn_blocking(move || {
                    let parsed = diff::parse(&text);
                    let drawn = diff_view::files(index, &parsed, layout, &mut budget);
                    (drawn, budget)
                })
                .await
                .map_err(|_| {
                    WebError::page(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "The diff could not be drawn; see the server log.",
                    )
                })?;
                budget = left;
                (files, None)
            }
            Err(error) => (Vec::new(), Some(error)),
        };
        let additions = files.iter().map(|f| f.link.additions).sum();
        let deletions = files.iter().map(|f| f.link.deletions).sum();
        let (checkout, checkout_hint) = checkout(repo, pr);
        let (can_merge, merge_hint) = mergeable(&task, repo, pr);
        pulls.push(PullView {
            index,
            repo: names
                .get(&pr.repo)
                .cloned()
                .unwrap_or_else(|| pr.repo.to_string()),
            repo_id: pr.repo.to_string(),
            title: pr.title.clone(),
            base: pr.base.clone(),
            head: pr.head.clone(),
            status: pr.status.as_str(),
            url: pr.url.clone(),
            body: markdown::render(&pr.body, &markdown::listed_sources(&pr.body)),
            checkout,
            checkout_hint,
            files,
            additions,
            deletions,
            error,
            refusal: refusal
                .as_ref()
                .filter(|(at, _)| *at == index)
                .map(|(_, why)| why.clone()),
            can_merge: can_merge && tip.is_some(),
            merge_hint,
            tip: tip.unwrap_or_default(),
        });
    }
    let page = DiffPage {
        chrome: session.chrome("tasks"),
        id: id.to_string(),
        title: super::tasks::title(&task.description),
        split: layout == Layout::Split,
        pulls,
        notice,
    };
    let mut response = render(&page)?;
    if refusal.is_some() {
        *response.status_mut() = StatusCode::CONFLICT;
    }
    Ok(response)
}

/// The pull request's diff and, on the local forge, the commit of its branch it was made
/// from, which Merge is then pinned to: never one pushed after the page was read.
async fn diff_at_tip(
    app: &AppState,
    repo: &Repository,
    pr: &PullRequest,
) -> Result<(String, Option<String>), String> {
    if repo.forge != ForgeKind::Local {
        let text = crate::routes::tasks::pull_request_diff(app, repo, pr).await?;
        return Ok((text, None));
    }
    let location = std::path::Path::new(&repo.location);
    let tip = deft_forge::local_branch_tip(location, &pr.head)
        .await
        .map_err(|error| error.to_string())?
        .ok_or_else(|| format!("the branch `{}` is no longer in the repository", pr.head))?;
    let text = deft_forge::diff(location, &pr.base, &tip)
        .await
        .map_err(|error| error.to_string())?;
    Ok((text, Some(tip)))
}

/// The most files a task's page lists per pull request (the diff page lists them all).
const LISTED_FILES: usize = 100;

/// A pull request's files as the task's page lists them: the first [`LISTED_FILES`], how many
/// more there are, and the lines added and removed in all.
pub fn listed(index: usize, text: &str) -> (Vec<FileLink>, usize, u32, u32) {
    let files = diff::parse(text);
    let (additions, deletions) = diff::totals(&files);
    let mut links = diff_view::links(index, &files);
    let more = links.len().saturating_sub(LISTED_FILES);
    links.truncate(LISTED_FILES);
    (links, more, additions, deletions)
}

/// Whether Merge and Close are offered, and if not on the local forge, why.
fn mergeable(task: &Task, repo: Option<&Repository>, pr: &PullRequest) -> (bool, Option<String>) {
    let local = repo.is_some_and(|r| r.forge == ForgeKind::Local);
    if !local || pr.status != PullRequestStatus::Open {
        return (false, None);
    }
    match task.state() {
        TaskState::Queued | TaskState::InProgress => (
            false,
            Some("The task is at work on this branch; merge it once the task is done.".into()),
        ),
        _ => (true, None),
    }
}

/// The command that brings the pull request's branch into a clone, and where to run it. A
/// local repository is reached by its path on the server (the branch is in the repository
/// itself); a GitHub one through the clone's `origin`.
pub fn checkout(repo: Option<&Repository>, pr: &PullRequest) -> (String, String) {
    let branch = shell_word(&pr.head);
    match repo {
        Some(repo) if repo.forge == ForgeKind::Local => (
            format!(
                "git fetch {} {branch}:{branch} && git checkout {branch}",
                shell_word(&repo.location)
            ),
            "Run it in any clone of the repository on the server's machine; from another machine, put HOST: before the path (git over SSH).".into(),
        ),
        _ => {
            let hint = match pr.url.as_deref().and_then(pull_number) {
                Some(number) => format!(
                    "Run it in a clone of the repository whose origin is GitHub, or use gh pr checkout {number}."
                ),
                None => "Run it in a clone of the repository whose origin is GitHub.".into(),
            };
            (
                format!("git fetch origin {branch} && git checkout {branch}"),
                hint,
            )
        }
    }
}

/// The number of a pull request from its page's address (`…/pull/12`).
fn pull_number(url: &str) -> Option<u64> {
    url.trim_end_matches('/')
        .rsplit_once("/pull/")?
        .1
        .parse()
        .ok()
}

/// `text` as one word of a POSIX shell: as it is when it holds nothing the shell reads,
/// else in single quotes.
fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@,=%".contains(c));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// Merge or Close a pull request of the local forge. Both ask first (a page without the
/// script, a dialog with it).
pub async fn act(
    State(app): State<AppState>,
    Path((id, repo_id, action)): Path<(TaskId, String, String)>,
    form: WebForm,
) -> Result<Response, WebError> {
    let session = &form.session;
    let task = app.store.task(&session.user.id, &id).await?;
    let Some((index, pr)) = task
        .pull_requests
        .iter()
        .enumerate()
        .find(|(_, pr)| pr.repo.as_str() == repo_id)
    else {
        return Err(WebError::page(
            StatusCode::NOT_FOUND,
            "This task has no pull request in that repository; go back to the task's page.",
        ));
    };
    let verb = match action.as_str() {
        "merge" => "Merge",
        "close" => "Close",
        _ => {
            return Err(WebError::page(
                StatusCode::NOT_FOUND,
                "There is no such pull request action; use the buttons on the diff page.",
            ));
        }
    };
    let back = format!("/tasks/{id}/diff");
    if form.get("confirm") != "yes" {
        return render(&ConfirmPage {
            chrome: session.chrome("tasks"),
            question: format!("{verb} the pull request `{}`?", pr.head),
            consequence: if action == "merge" {
                format!(
                    "Its changes go into `{}` of the repository on the server.",
                    pr.base
                )
            } else {
                "It is marked closed without merging; its branch stays in the repository.".into()
            },
            action: format!("{back}/{repo_id}/{action}"),
            verb,
            back,
            carry: vec![("tip", form.get("tip").to_owned())],
        });
    }
    let repo = app.store.repository(&session.user.id, &repo_id).await.ok();
    let reviewed = form.get("tip");
    if let Err(why) = apply(&task, repo.as_ref(), (pr, reviewed), &action, session).await {
        return draw(
            &app,
            session,
            &id,
            Layout::Unified,
            None,
            Some((index, why)),
        )
        .await;
    }
    let status = if action == "merge" {
        PullRequestStatus::Merged
    } else {
        PullRequestStatus::Closed
    };
    app.store
        .set_pull_request_status(&id, &pr.repo, status)
        .await?;
    let done = if action == "merge" {
        "merged"
    } else {
        "closed"
    };
    Ok(Redirect::to(&format!("/tasks/{id}/diff?done={done}#pr{index}")).into_response())
}

/// A Merge or Close address opened as a page (a reload, the address bar): the diff page,
/// where the buttons are.
pub async fn back(Path((id, _, _)): Path<(TaskId, String, String)>) -> Redirect {
    Redirect::to(&format!("/tasks/{id}/diff"))
}

/// Merges (in the repository) when `action` says so, after checking that the pull request
/// may be merged or closed here; why not, as the page says it.
async fn apply(
    task: &Task,
    repo: Option<&Repository>,
    (pr, reviewed): (&PullRequest, &str),
    action: &str,
    session: &WebSession,
) -> Result<(), String> {
    let (allowed, hint) = mergeable(task, repo, pr);
    let Some(repo) = repo.filter(|_| allowed) else {
        return Err(hint.unwrap_or_else(|| match pr.status {
            PullRequestStatus::Open => {
                "Only the local forge's pull requests are merged or closed here; use the forge's own page.".into()
            }
            status => format!("This pull request is already {}.", status.as_str()),
        }));
    };
    if action != "merge" {
        return Ok(());
    }
    if reviewed.is_empty() {
        return Err("Not merged: the form did not say which commit you looked at; look at the diff again, then merge.".into());
    }
    let by = deft_forge::Identity {
        name: session.user.name.clone(),
        email: format!("{}@deft.invalid", session.user.name),
    };
    let message = format!(
        "Merge branch '{}' into {}\n\n{}",
        pr.head, pr.base, pr.title
    );
    deft_forge::merge_local(
        std::path::Path::new(&repo.location),
        (&pr.head, reviewed),
        &pr.base,
        &message,
        &by,
    )
    .await
    .map(drop)
    .map_err(|error| {
        tracing::info!(task.id = %task.id, %error, "a local pull request was not merged");
        format!("Not merged: {error}.")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pr(head: &str, url: Option<&str>) -> PullRequest {
        PullRequest {
            repo: deft_core::RepoId::from_stored("r".into()),
            base: "main".into(),
            head: head.into(),
            title: "t".into(),
            body: String::new(),
            status: PullRequestStatus::Open,
            url: url.map(str::to_owned),
        }
    }

    fn repo(forge: ForgeKind, location: &str) -> Repository {
        Repository {
            id: deft_core::RepoId::from_stored("r".into()),
            name: "widgets".into(),
            forge,
            location: location.into(),
            default_branch: "main".into(),
            environment: Default::default(),
            created_at: deft_core::Timestamp::from_unix_millis(0),
        }
    }

    #[test]
    fn the_local_forge_checks_out_from_the_repositorys_path() {
        let local = repo(ForgeKind::Local, "/srv/git/widgets");
        let (command, hint) = checkout(Some(&local), &pr("deft/abc-fix", None));
        assert_eq!(
            command,
            "git fetch /srv/git/widgets deft/abc-fix:deft/abc-fix && git checkout deft/abc-fix"
        );
        assert!(hint.contains("server's machine"));
        let odd = repo(ForgeKind::Local, "/srv/my repo/it's");
        assert_eq!(
            checkout(Some(&odd), &pr("deft/x", None)).0,
            "git fetch '/srv/my repo/it'\\''s' deft/x:deft/x && git checkout deft/x"
        );
    }

    #[test]
    fn github_checks_out_from_origin_or_with_gh() {
        let hub = repo(ForgeKind::Github, "octo/widgets");
        let (command, hint) = checkout(
            Some(&hub),
            &pr("deft/x", Some("https://github.com/octo/widgets/pull/12")),
        );
        assert_eq!(command, "git fetch origin deft/x && git checkout deft/x");
        assert!(hint.contains("gh pr checkout 12"), "{hint}");
    }

    /// A diff an attacker wrote (file names, code, the function context of a hunk) and a
    /// description with a script: the page shows them all as text.
    #[test]
    fn a_hostile_diff_and_description_draw_as_text() {
        let text = "diff --git a/<img src=x onerror=alert(1)>.py b/<img src=x onerror=alert(1)>.py\nnew file mode 100644\n--- /dev/null\n+++ b/<img src=x onerror=alert(1)>.py\n@@ -0,0 +1,2 @@ <script>alert(2)</script>\n+x = '</td></tr></table><script>alert(3)</script>'\n+\"<b>\"\n";
        for layout in [Layout::Unified, Layout::Split] {
            let files = diff_view::files(0, &diff::parse(text), layout, &mut Budget::default());
            let body = "**ok** <script>alert(4)</script> [x](javascript:alert(5))";
            let page = DiffPage {
                chrome: Chrome {
                    user: "<u>".into(),
                    csrf: "t".into(),
                    nav: "tasks",
                    attention: 0,
                },
                id: "t1".into(),
                title: "<script>alert(6)</script>".into(),
                split: layout == Layout::Split,
                pulls: vec![PullView {
                    index: 0,
                    repo: "shop".into(),
                    repo_id: "r1".into(),
                    title: "<script>alert(7)</script>".into(),
                    base: "main".into(),
                    head: "deft/\"><script>".into(),
                    status: "open",
                    url: None,
                    body: markdown::render(body, &[]),
                    checkout: "git fetch x <script>".into(),
                    checkout_hint: String::new(),
                    files,
                    additions: 2,
                    deletions: 0,
                    error: None,
                    refusal: None,
                    can_merge: true,
                    merge_hint: None,
                    tip: String::new(),
                }],
                notice: None,
            };
            let html = page.render().unwrap();
            assert!(
                html.match_indices("<script")
                    .all(|(at, _)| html[at..].starts_with("<script src=\"/assets/")),
                "only the app's own scripts: {html}"
            );
            assert!(!html.contains("<img"), "{html}");
            assert!(!html.contains("javascript:"), "{html}");
            assert!(
                html.contains("&#60;img src=x onerror=alert(1)&#62;.py"),
                "{html}"
            );
            assert!(html.contains("<strong>ok</strong>"), "{html}");
        }
    }

    #[test]
    fn shell_words_quote_what_the_shell_would_read() {
        assert_eq!(shell_word("deft/a-b_c.d"), "deft/a-b_c.d");
        assert_eq!(shell_word("$(rm -rf x)"), "'$(rm -rf x)'");
        assert_eq!(shell_word("a;b"), "'a;b'");
        assert_eq!(shell_word(""), "''");
    }
}
