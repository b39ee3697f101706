//! The failing checks of a commit, with what they said: each check run's output, and for a
//! GitHub Actions job the tail of its log, cleaned of colour codes and timestamps and trimmed,
//! so that the agent reads why a check failed rather than a link to it.

use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::json;

use crate::{GitHub, GithubError, RepoName};

/// The conclusions that mean a check wants something changed.
pub const FAILING: [&str; 4] = ["failure", "timed_out", "cancelled", "action_required"];
/// The most failing checks read for one commit.
const MAX_CHECKS: usize = 10;
/// The most characters kept of each part of a check's output (title, summary, text).
const OUTPUT_CHARS: usize = 4_000;
/// The most characters kept of a job's log, from its end.
const LOG_CHARS: usize = 12_000;
/// What is asked of a log's download: its last bytes (a `Range` request).
const LOG_TAIL_BYTES: usize = 64 * 1024;
/// The most read of a download that ignores the `Range` request.
const LOG_READ_CAP: usize = 8 * 1024 * 1024;

/// A check run of a commit that failed, with what it reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailingCheck {
    pub id: u64,
    pub name: String,
    /// One of [`FAILING`].
    pub conclusion: String,
    /// Its page on GitHub.
    pub details_url: String,
    pub title: Option<String>,
    pub summary: Option<String>,
    pub text: Option<String>,
    /// The end of its GitHub Actions job's log, cleaned; `None` for other Apps' checks, or
    /// when the log cannot be read (expired, or no Actions read permission).
    pub log: Option<String>,
}

#[derive(Deserialize)]
struct CheckRuns {
    check_runs: Vec<CheckRun>,
}

#[derive(Deserialize)]
struct CheckRun {
    id: u64,
    name: String,
    conclusion: Option<String>,
    #[serde(default)]
    details_url: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    output: Output,
    #[serde(default)]
    app: Option<App>,
}

#[derive(Deserialize, Default)]
struct Output {
    title: Option<String>,
    summary: Option<String>,
    text: Option<String>,
}

#[derive(Deserialize)]
struct App {
    #[serde(default)]
    slug: String,
}

impl CheckRun {
    /// The Actions job behind the run: named in its details URL (`…/job/ID`), and otherwise
    /// the run's own id, which Actions gives its jobs.
    fn actions_job(&self) -> Option<u64> {
        if self
            .app
            .as_ref()
            .is_none_or(|app| app.slug != "github-actions")
        {
            return None;
        }
        let from_url = self
            .details_url
            .as_deref()
            .and_then(|url| url.split("/job/").nth(1))
            .and_then(|rest| rest.split(['/', '?', '#']).next())
            .and_then(|id| id.parse().ok());
        Some(from_url.unwrap_or(self.id))
    }
}

impl GitHub {
    /// The check runs of commit `sha` whose conclusion is one of [`FAILING`] (at most ten),
    /// each with its output and, for GitHub Actions, the cleaned end of its job's log.
    pub async fn failing_checks(
        &self,
        repo: &RepoName,
        sha: &str,
    ) -> Result<Vec<FailingCheck>, GithubError> {
        if sha.is_empty() || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(GithubError::Invalid {
                what: format!("`{sha}` is not a commit id"),
            });
        }
        let client = self.client(repo).await?;
        let call = format!("GET /repos/{repo}/commits/{sha}/check-runs");
        let runs: CheckRuns = client
            .get(
                format!("/repos/{repo}/commits/{sha}/check-runs"),
                Some(&json!({"per_page": 100, "filter": "latest"})),
            )
            .await
            .map_err(|error| crate::client::api_error(&call, error))?;
        let mut failing = Vec::new();
        for run in runs.check_runs.into_iter().filter(|run| {
            run.conclusion
                .as_deref()
                .is_some_and(|c| FAILING.contains(&c))
        }) {
            if failing.len() == MAX_CHECKS {
                break;
            }
            let log = match run.actions_job() {
                Some(job) => match self.job_log(repo, job).await {
                    Ok(log) => Some(log),
                    Err(error) => {
                        tracing::debug!(repo = %repo, job, error = %error, "a job's log cannot be read");
                        None
                    }
                },
                None => None,
            };
            failing.push(FailingCheck {
                id: run.id,
                conclusion: run.conclusion.unwrap_or_default(),
                details_url: run.html_url.or(run.details_url).unwrap_or_default(),
                title: run.output.title.map(|t| clip(&t, OUTPUT_CHARS)),
                summary: run.output.summary.map(|t| clip(&t, OUTPUT_CHARS)),
                text: run.output.text.map(|t| clip(&t, OUTPUT_CHARS)),
                name: run.name,
                log,
            });
        }
        Ok(failing)
    }

    /// The end of GitHub Actions job `job`'s log, cleaned. GitHub answers with a redirect to
    /// a short-lived download address, which is asked for its last bytes without the token.
    pub async fn job_log(&self, repo: &RepoName, job: u64) -> Result<String, GithubError> {
        let call = format!("GET /repos/{repo}/actions/jobs/{job}/logs");
        let token = self.git_token(repo).await?;
        let request = self
            .http
            .get(format!(
                "{}/repos/{repo}/actions/jobs/{job}/logs",
                self.api_url
            ))
            .bearer_auth(token)
            .header("accept", "application/vnd.github+json");
        let answer = crate::http::send(&call, request).await?;
        let answer = match answer.headers().get("location") {
            Some(location) if answer.status().is_redirection() => {
                let location = location.to_str().unwrap_or_default().to_owned();
                let request = self
                    .http
                    .get(&location)
                    .header("range", format!("bytes=-{LOG_TAIL_BYTES}"));
                crate::http::send(&format!("download of {call}"), request).await?
            }
            _ => answer,
        };
        let partial = answer.status() == reqwest::StatusCode::PARTIAL_CONTENT;
        let tail = read_tail(&call, answer).await?;
        Ok(keep_end(&clean_log(&tail, partial), LOG_CHARS))
    }
}

/// The last [`LOG_TAIL_BYTES`] of a body, reading at most [`LOG_READ_CAP`].
async fn read_tail(call: &str, answer: reqwest::Response) -> Result<Vec<u8>, GithubError> {
    let mut stream = answer.bytes_stream();
    let mut tail: Vec<u8> = Vec::new();
    let mut read = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| GithubError::Transport {
            call: call.to_owned(),
            message: error.to_string(),
        })?;
        read += chunk.len();
        tail.extend_from_slice(&chunk);
        if tail.len() > 2 * LOG_TAIL_BYTES {
            tail.drain(..tail.len() - LOG_TAIL_BYTES);
        }
        if read >= LOG_READ_CAP {
            break;
        }
    }
    if tail.len() > LOG_TAIL_BYTES {
        tail.drain(..tail.len() - LOG_TAIL_BYTES);
    }
    Ok(tail)
}

/// A job's log as a person reads it: no byte-order mark, colour codes, timestamps, progress
/// redraws or group markers. `partial` drops the first line, which a tail cuts anywhere.
pub fn clean_log(raw: &[u8], partial: bool) -> String {
    let text = String::from_utf8_lossy(raw);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut lines = text.lines();
    if partial {
        lines.next();
    }
    let mut out = String::new();
    for line in lines {
        // A progress bar redraws itself after `\r`; what stays on screen is the last drawing.
        let line = line
            .rsplit('\r')
            .find(|part| !part.is_empty())
            .unwrap_or("");
        let line = strip_ansi(line);
        let line = strip_timestamp(&line);
        if line.starts_with("##[endgroup]") {
            continue;
        }
        let line = line.strip_prefix("##[group]").unwrap_or(line);
        let line = match line.strip_prefix("##[error]") {
            Some(rest) => format!("error: {rest}"),
            None => line.to_owned(),
        };
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Removes terminal escape sequences: CSI (`ESC [ … final`), OSC (`ESC ] … BEL` or `ESC \`)
/// and two-character escapes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Removes the timestamp Actions puts before each line (`2024-05-01T12:00:00.1234567Z `).
fn strip_timestamp(line: &str) -> &str {
    let Some((stamp, rest)) = line.split_once(' ') else {
        return line;
    };
    let bytes = stamp.as_bytes();
    let looks_like_one = stamp.len() >= 20
        && stamp.ends_with('Z')
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'-'
        && bytes[10] == b'T';
    if looks_like_one { rest } else { line }
}

/// `text` cut to `max` characters, its start and end kept around a marker saying how much
/// went.
pub fn clip(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_owned();
    }
    let half = max / 2;
    let head: String = text.chars().take(half).collect();
    let tail: String = text.chars().skip(count - half).collect();
    format!("{head}\n[… {} characters cut …]\n{tail}", count - 2 * half)
}

/// The last `max` characters of `text`, from a line's start, marked when lines went.
fn keep_end(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_owned();
    }
    let end: String = text.chars().skip(count - max).collect();
    let end = end.split_once('\n').map_or(end.as_str(), |(_, rest)| rest);
    format!("[… the log's earlier lines are cut …]\n{end}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, partial: bool, expect: &str) {
        assert_eq!(clean_log(raw.as_bytes(), partial), expect);
    }

    #[test]
    fn logs_lose_colour_timestamps_and_markers() {
        check(
            "\u{feff}2024-05-01T12:00:00.1234567Z ##[group]Run cargo test\n2024-05-01T12:00:00.2Z \u{1b}[1m\u{1b}[31merror[E0308]\u{1b}[0m: mismatched types\n2024-05-01T12:00:01.0000000Z ##[endgroup]\n",
            false,
            "Run cargo test\nerror[E0308]: mismatched types\n",
        );
        check(
            "2024-05-01T12:00:02.0000000Z ##[error]Process completed with exit code 101.\n",
            false,
            "error: Process completed with exit code 101.\n",
        );
        // A tail starts mid-line; progress bars keep their last drawing; OSC links go.
        check(
            "ded line\n  10%\r  55%\r 100%\n\u{1b}]8;;https://x\u{7}link\u{1b}]8;;\u{1b}\\ text\n",
            true,
            " 100%\nlink text\n",
        );
        // A line that only starts with a date keeps it.
        check(
            "2024-05-01 was a Wednesday\n",
            false,
            "2024-05-01 was a Wednesday\n",
        );
    }

    #[test]
    fn long_text_keeps_its_ends() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(
            clip("abcdefghijklmnop", 6),
            "abc\n[… 10 characters cut …]\nnop"
        );
        let log = "one\ntwo\nthree\nfour\n";
        assert_eq!(keep_end(log, 100), log);
        assert_eq!(
            keep_end(log, 8),
            "[… the log's earlier lines are cut …]\nfour\n"
        );
    }
}
