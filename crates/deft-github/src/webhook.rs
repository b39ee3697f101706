//! Webhook deliveries: the signature check (`X-Hub-Signature-256`, HMAC-SHA256 of the body
//! with the webhook secret, compared in constant time) and the events deft acts on.

use hmac::{Hmac, Mac as _};
use serde_json::Value;
#[cfg(test)]
use serde_json::json;
use sha2::Sha256;

use crate::RepoName;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("the delivery has no `X-Hub-Signature-256` header; set the webhook's secret on GitHub")]
    MissingSignature,
    #[error(
        "the delivery's signature does not match; check that the webhook secret on GitHub is deft's `github.webhook_secret`"
    )]
    BadSignature,
    #[error("the delivery's body is not the JSON GitHub sends: {0}")]
    Malformed(String),
}

/// Checks `X-Hub-Signature-256: sha256=HEX` against the body.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), WebhookError> {
    let header = header.ok_or(WebhookError::MissingSignature)?;
    let hex_digest = header
        .strip_prefix("sha256=")
        .ok_or(WebhookError::BadSignature)?;
    let expected = hex::decode(hex_digest.trim()).map_err(|_| WebhookError::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| WebhookError::BadSignature)?;
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| WebhookError::BadSignature)
}

/// The signature GitHub would send for `body`: for tests and tools that replay deliveries.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A delivery, reduced to what deft acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A label was added to an issue.
    Labeled {
        repo: RepoName,
        number: u64,
        title: String,
        body: String,
        /// Who wrote the issue.
        author: String,
        label: String,
        sender: String,
    },
    /// A new comment on an issue or a pull request.
    Commented {
        repo: RepoName,
        number: u64,
        /// The issue's (or pull request's) page.
        html_url: String,
        is_pull_request: bool,
        title: String,
        issue_body: String,
        /// Who wrote the issue.
        author: String,
        comment_id: u64,
        comment: String,
        sender: String,
    },
    /// A review was submitted on a pull request.
    Reviewed {
        repo: RepoName,
        number: u64,
        html_url: String,
        head_branch: String,
        review_id: u64,
        state: String,
        body: String,
        sender: String,
    },
    /// A pull request was closed, merged or not: its task's branch will not change again.
    PullRequestClosed {
        repo: RepoName,
        html_url: String,
        merged: bool,
    },
    /// A check run, check suite or workflow run on a branch ended in failure.
    CheckFailed {
        repo: RepoName,
        head_branch: String,
        /// The commit it checked.
        head_sha: String,
        name: String,
        conclusion: String,
        details_url: String,
    },
    /// The App was uninstalled, or these repositories were taken out of its installation.
    AccessRemoved {
        repos: Vec<RepoName>,
        all: bool,
        installation: u64,
    },
    /// A person revoked their authorization of the App.
    AuthorizationRevoked { login: String },
    /// Not something deft acts on.
    Ignored { why: String },
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

fn repo_of(payload: &Value) -> Result<RepoName, WebhookError> {
    RepoName::parse(
        payload["repository"]["full_name"]
            .as_str()
            .unwrap_or_default(),
    )
    .map_err(|error| WebhookError::Malformed(error.to_string()))
}

fn number(value: &Value, what: &str) -> Result<u64, WebhookError> {
    value
        .as_u64()
        .ok_or_else(|| WebhookError::Malformed(format!("no {what}")))
}

const FAILED: [&str; 3] = ["failure", "timed_out", "startup_failure"];

/// Reads a delivery of `event` (`X-GitHub-Event`).
pub fn parse(event: &str, body: &[u8]) -> Result<Delivery, WebhookError> {
    let payload: Value =
        serde_json::from_slice(body).map_err(|error| WebhookError::Malformed(error.to_string()))?;
    let action = text(&payload["action"]);
    let sender = text(&payload["sender"]["login"]);
    let ignored = || {
        Ok(Delivery::Ignored {
            why: format!("`{event}` with action `{action}`"),
        })
    };
    match (event, action.as_str()) {
        ("issues", "labeled") => Ok(Delivery::Labeled {
            repo: repo_of(&payload)?,
            number: number(&payload["issue"]["number"], "issue number")?,
            title: text(&payload["issue"]["title"]),
            body: text(&payload["issue"]["body"]),
            author: text(&payload["issue"]["user"]["login"]),
            label: text(&payload["label"]["name"]),
            sender,
        }),
        ("issue_comment", "created") => Ok(Delivery::Commented {
            repo: repo_of(&payload)?,
            number: number(&payload["issue"]["number"], "issue number")?,
            html_url: text(&payload["issue"]["html_url"]),
            is_pull_request: payload["issue"]["pull_request"].is_object(),
            title: text(&payload["issue"]["title"]),
            issue_body: text(&payload["issue"]["body"]),
            author: text(&payload["issue"]["user"]["login"]),
            comment_id: number(&payload["comment"]["id"], "comment id")?,
            comment: text(&payload["comment"]["body"]),
            sender,
        }),
        ("pull_request_review", "submitted") => Ok(Delivery::Reviewed {
            repo: repo_of(&payload)?,
            number: number(&payload["pull_request"]["number"], "pull request number")?,
            html_url: text(&payload["pull_request"]["html_url"]),
            head_branch: text(&payload["pull_request"]["head"]["ref"]),
            review_id: number(&payload["review"]["id"], "review id")?,
            state: text(&payload["review"]["state"]),
            body: text(&payload["review"]["body"]),
            sender,
        }),
        ("pull_request", "closed") => Ok(Delivery::PullRequestClosed {
            repo: repo_of(&payload)?,
            html_url: text(&payload["pull_request"]["html_url"]),
            merged: payload["pull_request"]["merged"].as_bool().unwrap_or(false),
        }),
        ("check_run", "completed")
            if FAILED.contains(&payload["check_run"]["conclusion"].as_str().unwrap_or("")) =>
        {
            let run = &payload["check_run"];
            Ok(Delivery::CheckFailed {
                repo: repo_of(&payload)?,
                head_branch: text(&run["check_suite"]["head_branch"]),
                head_sha: text(&run["head_sha"]),
                name: text(&run["name"]),
                conclusion: text(&run["conclusion"]),
                details_url: text(&run["html_url"]),
            })
        }
        ("check_suite", "completed")
            if FAILED.contains(&payload["check_suite"]["conclusion"].as_str().unwrap_or("")) =>
        {
            let suite = &payload["check_suite"];
            Ok(Delivery::CheckFailed {
                repo: repo_of(&payload)?,
                head_branch: text(&suite["head_branch"]),
                head_sha: text(&suite["head_sha"]),
                name: format!("check suite of {}", text(&suite["app"]["name"])),
                conclusion: text(&suite["conclusion"]),
                details_url: text(&suite["url"]),
            })
        }
        ("workflow_run", "completed")
            if FAILED.contains(&payload["workflow_run"]["conclusion"].as_str().unwrap_or("")) =>
        {
            let run = &payload["workflow_run"];
            Ok(Delivery::CheckFailed {
                repo: repo_of(&payload)?,
                head_branch: text(&run["head_branch"]),
                head_sha: text(&run["head_sha"]),
                name: text(&run["name"]),
                conclusion: text(&run["conclusion"]),
                details_url: text(&run["html_url"]),
            })
        }
        ("installation", "deleted" | "suspend") => Ok(Delivery::AccessRemoved {
            repos: repos_in(&payload["repositories"]),
            all: true,
            installation: payload["installation"]["id"].as_u64().unwrap_or_default(),
        }),
        ("installation_repositories", "removed") => Ok(Delivery::AccessRemoved {
            repos: repos_in(&payload["repositories_removed"]),
            all: false,
            installation: payload["installation"]["id"].as_u64().unwrap_or_default(),
        }),
        ("github_app_authorization", "revoked") => {
            Ok(Delivery::AuthorizationRevoked { login: sender })
        }
        _ => ignored(),
    }
}

fn repos_in(list: &Value) -> Vec<RepoName> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|repo| RepoName::parse(repo["full_name"].as_str()?).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_checked_against_the_body_and_the_secret() {
        let body = br#"{"zen": "Keep it logically awesome."}"#;
        let signature = sign(b"s3cret", body);
        assert_eq!(verify(b"s3cret", body, Some(&signature)), Ok(()));
        assert_eq!(
            verify(b"other", body, Some(&signature)),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify(b"s3cret", b"{}", Some(&signature)),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify(b"s3cret", body, None),
            Err(WebhookError::MissingSignature)
        );
        assert_eq!(
            verify(b"s3cret", body, Some("sha1=abc")),
            Err(WebhookError::BadSignature)
        );
        // GitHub's documented example.
        assert_eq!(
            sign(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}

#[cfg(test)]
mod fixtures {
    //! The real payload examples kept in `deft-testkit/fixtures/github-webhooks`, read as deft
    //! reads them.

    use super::*;

    fn example(event: &str, file: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deft-testkit/fixtures/github-webhooks")
            .join(event)
            .join(file);
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn read(event: &str, payload: &Value) -> Delivery {
        parse(event, payload.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn the_events_deft_acts_on_are_read_from_real_payloads() {
        let Delivery::Labeled {
            repo,
            number,
            label,
            sender,
            author,
            ..
        } = read("issues", &example("issues", "labeled.payload.json"))
        else {
            panic!("a labelled issue");
        };
        assert_eq!(
            (
                repo.as_str(),
                number,
                label.as_str(),
                sender.as_str(),
                author.as_str()
            ),
            (
                "Codertocat/Hello-World",
                1,
                "bug",
                "Codertocat",
                "Codertocat"
            )
        );
        let Delivery::Commented {
            is_pull_request,
            comment_id,
            comment,
            ..
        } = read(
            "issue_comment",
            &example("issue_comment", "created.payload.json"),
        )
        else {
            panic!("a comment");
        };
        assert!(!is_pull_request);
        assert_eq!(comment_id, 492_700_400);
        assert!(comment.starts_with("You are totally right!"));
        let Delivery::Reviewed {
            number,
            review_id,
            head_branch,
            state,
            ..
        } = read(
            "pull_request_review",
            &example("pull_request_review", "submitted.payload.json"),
        )
        else {
            panic!("a review");
        };
        assert_eq!(
            (number, review_id, head_branch.as_str(), state.as_str()),
            (2, 237_895_671, "changes", "commented")
        );
    }

    #[test]
    fn only_failed_checks_are_feedback() {
        let passed = example("check_run", "completed.payload.json");
        assert!(matches!(
            read("check_run", &passed),
            Delivery::Ignored { .. }
        ));
        let mut failed = passed.clone();
        failed["check_run"]["conclusion"] = json!("failure");
        let Delivery::CheckFailed {
            head_branch,
            head_sha,
            name,
            ..
        } = read("check_run", &failed)
        else {
            panic!("a failed check run");
        };
        assert_eq!(
            (head_branch.as_str(), head_sha.as_str(), name.as_str()),
            (
                "changes",
                "ec26c3e57ca3a959ca5aad62de7213c562f8c821",
                "Octocoders-linter"
            )
        );
        let mut workflow = example("workflow_run", "completed.payload.json");
        workflow["workflow_run"]["conclusion"] = json!("failure");
        assert!(matches!(
            read("workflow_run", &workflow),
            Delivery::CheckFailed { .. }
        ));
        let mut suite = example("check_suite", "completed.payload.json");
        suite["check_suite"]["conclusion"] = json!("timed_out");
        assert!(matches!(
            read("check_suite", &suite),
            Delivery::CheckFailed { .. }
        ));
    }

    #[test]
    fn lost_access_names_its_repositories() {
        let Delivery::AccessRemoved {
            repos,
            all,
            installation,
        } = read(
            "installation",
            &example("installation", "deleted.payload.json"),
        )
        else {
            panic!("an uninstall");
        };
        assert!(all);
        assert_eq!(installation, 2);
        assert_eq!(
            repos.iter().map(RepoName::as_str).collect::<Vec<_>>(),
            ["octocat/Hello-World"]
        );
        assert!(matches!(
            read(
                "github_app_authorization",
                &example("github_app_authorization", "revoked.payload.json")
            ),
            Delivery::AuthorizationRevoked { .. }
        ));
        assert!(matches!(
            read("ping", &example("ping", "payload.json")),
            Delivery::Ignored { .. }
        ));
        let Delivery::PullRequestClosed {
            repo,
            html_url,
            merged,
        } = read(
            "pull_request",
            &example("pull_request", "closed.payload.json"),
        )
        else {
            panic!("a closed pull request");
        };
        assert_eq!(repo.as_str(), "Codertocat/Hello-World");
        assert_eq!(html_url, "https://github.com/Codertocat/Hello-World/pull/2");
        assert!(!merged);
    }
}
