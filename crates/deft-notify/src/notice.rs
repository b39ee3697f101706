//! What a person is told: which of a task's state changes deserve a notification, and the
//! words and bodies for each channel (deft's JSON, a Slack-compatible `{"text"}`, an e-mail).
//!
//! Titles and reasons come from the task's description and the agent's messages, which an
//! attacker may have written: the Slack text escapes `&`, `<` and `>` as Slack asks (so a
//! title cannot mention `<!channel>` or hide a link), and e-mail is plain text with control
//! characters removed from its subject.

use deft_core::{AttentionKind, Event, EventKind, Task, TaskId, Timestamp};
use serde_json::json;

/// The four moments a person is told of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// The agent asked a question.
    Asked,
    /// The plan waits for the person's approval.
    PlanApproval,
    /// The task stopped on an error, a spent budget or the weekly limit.
    Failed,
    /// The pull requests are open.
    Completed,
}

impl NoticeKind {
    pub const ALL: [NoticeKind; 4] = [
        NoticeKind::Asked,
        NoticeKind::PlanApproval,
        NoticeKind::Failed,
        NoticeKind::Completed,
    ];

    /// The event's name in a webhook's body and its `X-Deft-Event` header.
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Asked => "task.asked",
            NoticeKind::PlanApproval => "task.plan_approval",
            NoticeKind::Failed => "task.failed",
            NoticeKind::Completed => "task.completed",
        }
    }

    /// The kind of a `state_changed` event, or `None` when it is not told.
    pub fn of(event: &Event) -> Option<NoticeKind> {
        if event.kind != EventKind::StateChanged {
            return None;
        }
        match event.data["to"].as_str()? {
            "completed" => Some(NoticeKind::Completed),
            "needs_attention" => {
                let kind = AttentionKind::parse(event.data["attention"]["kind"].as_str()?)?;
                Some(match kind {
                    AttentionKind::Question => NoticeKind::Asked,
                    AttentionKind::PlanApproval => NoticeKind::PlanApproval,
                    AttentionKind::Error
                    | AttentionKind::WeeklyLimit
                    | AttentionKind::TokenBudget => NoticeKind::Failed,
                })
            }
            _ => None,
        }
    }

    /// How a line about the task begins.
    fn verb(self) -> &'static str {
        match self {
            NoticeKind::Asked => "Asks",
            NoticeKind::PlanApproval => "Plan waits for approval",
            NoticeKind::Failed => "Failed",
            NoticeKind::Completed => "Completed",
        }
    }
}

/// One notification, ready for any channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub kind: NoticeKind,
    pub task_id: TaskId,
    pub title: String,
    /// The state the task entered (`needs_attention`, `completed`).
    pub status: String,
    /// The question, or what went wrong; `None` for a completed task.
    pub reason: Option<String>,
    /// The task's page, when the operator set `[notifications] public_url`.
    pub url: Option<String>,
    pub at: Timestamp,
}

/// The longest title told; the rest of a description is on the task's page.
const TITLE_CHARS: usize = 120;
/// The longest reason told.
const REASON_CHARS: usize = 1000;

impl Notice {
    /// The notice of `event` (a state change of `kind`) on `task`; `public_url` is the web
    /// app's address as people reach it, without a trailing slash.
    pub fn new(kind: NoticeKind, task: &Task, event: &Event, public_url: Option<&str>) -> Notice {
        let reason = event.data["attention"]["message"]
            .as_str()
            .map(|message| cut(message.trim(), REASON_CHARS));
        Notice {
            kind,
            task_id: task.id.clone(),
            title: title(&task.description),
            status: event.data["to"].as_str().unwrap_or_default().to_owned(),
            reason,
            url: public_url.map(|base| format!("{}/tasks/{}", base.trim_end_matches('/'), task.id)),
            at: event.at,
        }
    }

    /// deft's JSON body; `delivery` is the delivery's id, also in `X-Deft-Delivery`.
    pub fn json(&self, delivery: &str) -> serde_json::Value {
        json!({
            "event": self.kind.as_str(),
            "delivery": delivery,
            "task_id": self.task_id.as_str(),
            "title": self.title,
            "status": self.status,
            "reason": self.reason,
            "url": self.url,
            "time": self.at.to_rfc3339(),
        })
    }

    /// One line for a chat, Slack's markup escaped.
    pub fn slack_text(&self) -> String {
        let mut text = format!(
            "deft: *{}* {}",
            slack_escape(&self.title),
            self.kind.verb().to_lowercase()
        );
        if let Some(reason) = &self.reason {
            text.push_str(": ");
            text.push_str(&slack_escape(reason));
        }
        if let Some(url) = &self.url {
            text.push_str(&format!(" <{}|Open the task>", slack_escape(url)));
        }
        text
    }

    /// The e-mail's subject: one line, no control characters.
    pub fn subject(&self) -> String {
        let title: String = self
            .title
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        format!("[deft] {}: {}", self.kind.verb(), title)
    }

    /// The e-mail's plain-text body.
    pub fn email_text(&self) -> String {
        let mut text = format!("{}\n\n{}", self.title, self.kind.verb());
        match &self.reason {
            Some(reason) => text.push_str(&format!(":\n{reason}\n")),
            None => text.push_str(".\n"),
        }
        match &self.url {
            Some(url) => text.push_str(&format!("\nOpen the task: {url}\n")),
            None => text.push_str(&format!("\nTask {}\n", self.task_id)),
        }
        text.push_str("\nYou get this because you turned on e-mail in deft's settings.\n");
        text
    }
}

/// The first line of a description with words in it, cut to [`TITLE_CHARS`].
fn title(description: &str) -> String {
    let line = description
        .lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("")
        .trim();
    cut(line, TITLE_CHARS)
}

fn cut(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text.to_owned();
    }
    format!("{}…", text.chars().take(chars).collect::<String>())
}

/// Slack's three control characters, as its formatting reference asks.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use deft_core::{RepoId, TaskStatus, Usage, UserId};

    fn task(description: &str) -> Task {
        Task {
            id: TaskId::generate(),
            owner: UserId::from_stored("u1".into()),
            status: TaskStatus::Completed,
            description: description.to_owned(),
            repos: vec![RepoId::generate()],
            chat_id: None,
            approve_plan: false,
            plan: None,
            pull_requests: Vec::new(),
            usage: Usage::default(),
            created_at: Timestamp::from_unix_millis(0),
            updated_at: Timestamp::from_unix_millis(0),
            queue_position: None,
        }
    }

    fn change(to: &str, attention: Option<(&str, &str)>) -> Event {
        Event {
            seq: 3,
            task_id: TaskId::generate(),
            at: Timestamp::from_unix_millis(1_700_000_000_000),
            kind: EventKind::StateChanged,
            data: json!({
                "from": "in_progress",
                "to": to,
                "attention": attention.map(|(kind, message)| json!({"kind": kind, "message": message})),
            }),
        }
    }

    fn check(to: &str, attention: Option<(&str, &str)>, expect: Option<NoticeKind>) {
        assert_eq!(
            NoticeKind::of(&change(to, attention)),
            expect,
            "{to} {attention:?}"
        );
    }

    #[test]
    fn the_four_moments_are_told_and_nothing_else() {
        check(
            "needs_attention",
            Some(("question", "Which port?")),
            Some(NoticeKind::Asked),
        );
        check(
            "needs_attention",
            Some(("plan_approval", "")),
            Some(NoticeKind::PlanApproval),
        );
        check(
            "needs_attention",
            Some(("error", "no model")),
            Some(NoticeKind::Failed),
        );
        check(
            "needs_attention",
            Some(("token_budget", "spent")),
            Some(NoticeKind::Failed),
        );
        check(
            "needs_attention",
            Some(("weekly_limit", "Monday")),
            Some(NoticeKind::Failed),
        );
        check("completed", None, Some(NoticeKind::Completed));
        check("queued", None, None);
        check("in_progress", None, None);
        check("cancelled", None, None);
        let mut other = change("completed", None);
        other.kind = EventKind::UserMessage;
        assert_eq!(NoticeKind::of(&other), None);
    }

    #[test]
    fn bodies_carry_the_task_and_escape_what_others_wrote() {
        let task = task("\n  Fix <!channel> & <https://evil.example|login>\nmore words");
        let event = change("needs_attention", Some(("question", "Use <b>port</b> 80?")));
        let notice = Notice::new(
            NoticeKind::Asked,
            &task,
            &event,
            Some("https://deft.example/"),
        );
        let url = format!("https://deft.example/tasks/{}", task.id);
        assert_eq!(notice.url.as_deref(), Some(url.as_str()));
        let body = notice.json("d1");
        assert_eq!(body["event"], "task.asked");
        assert_eq!(body["task_id"], task.id.as_str());
        assert_eq!(
            body["title"],
            "Fix <!channel> & <https://evil.example|login>"
        );
        assert_eq!(body["status"], "needs_attention");
        assert_eq!(body["reason"], "Use <b>port</b> 80?");
        assert_eq!(body["time"], "2023-11-14T22:13:20.000Z");
        assert_eq!(
            notice.slack_text(),
            format!(
                "deft: *Fix &lt;!channel&gt; &amp; &lt;https://evil.example|login&gt;* asks: Use &lt;b&gt;port&lt;/b&gt; 80? <{url}|Open the task>"
            )
        );
        assert_eq!(
            notice.subject(),
            "[deft] Asks: Fix <!channel> & <https://evil.example|login>"
        );
        assert!(
            notice
                .email_text()
                .contains(&format!("Open the task: {url}"))
        );
    }

    #[test]
    fn a_long_title_is_cut_and_a_subject_stays_one_line() {
        let task = task(&"x".repeat(500));
        let notice = Notice::new(
            NoticeKind::Completed,
            &task,
            &change("completed", None),
            None,
        );
        assert_eq!(notice.title.chars().count(), TITLE_CHARS + 1);
        assert_eq!(notice.url, None);
        assert_eq!(notice.reason, None);
        let mut odd = notice.clone();
        odd.title = "a\rBcc: x@example.com".into();
        assert_eq!(odd.subject(), "[deft] Completed: a Bcc: x@example.com");
    }
}
