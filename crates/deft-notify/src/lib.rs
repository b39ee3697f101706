//! Tells a task's owner that it asks, waits for plan approval, failed or completed: on their
//! outgoing webhook (deft's JSON or a Slack-compatible body, HMAC-signed) and by e-mail through
//! the operator's SMTP server. Browser notifications are the web app's (`notify.js`).
//!
//! The [`Notifier`] listens to the store's bus of state changes (`EventBus::state_changes`),
//! which carries every change this process commits, so each change is told once by the process
//! that made it (`deft serve`, each `deft worker`). A delivery never holds up or fails its task:
//! it runs detached, each attempt with a timeout, a transient failure is tried again a few
//! times with a growing pause, and how it went is recorded per channel
//! (`Store::record_notification`) for the settings page. A change made while the process stops,
//! or one a slow notifier falls [`deft_store`]'s buffer behind on, is not told.

mod email;
mod notice;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use deft_core::{Event, Timestamp, UserId};
use deft_store::{Delivery, Store, WebhookFormat};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use email::{SmtpConfig, SmtpTls, check_address, parse_mailbox};
pub use notice::{Notice, NoticeKind};
pub use webhook::{
    Attempt, DELIVERY_HEADER, EVENT_HEADER, SECRET_MAX, SECRET_MIN, SIGNATURE_HEADER,
    TIMESTAMP_HEADER, check_secret, check_url, new_secret, sign,
};

/// What the operator configured.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// The web app's address as people reach it (`[notifications] public_url`), for links.
    pub public_url: Option<String>,
    /// Webhooks may go to this machine and private networks (`[notifications]
    /// allow_private_targets`); off, they go to public addresses only.
    pub allow_private_targets: bool,
    /// E-mail is sent only with an SMTP server.
    pub smtp: Option<SmtpConfig>,
    /// How many times a transient failure is tried in all.
    pub attempts: u32,
    /// The pause after the first failed attempt; each later pause is four times the last.
    pub first_pause: Duration,
    /// How long one webhook attempt may take.
    pub timeout: Duration,
}

impl Default for NotifyConfig {
    fn default() -> NotifyConfig {
        NotifyConfig {
            public_url: None,
            allow_private_targets: false,
            smtp: None,
            attempts: 3,
            first_pause: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
        }
    }
}

/// How long deliveries under way may finish after the process is told to stop.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Tells owners of their tasks' state changes in this process.
#[derive(Debug, Clone)]
pub struct Notifier {
    store: Store,
    config: Arc<NotifyConfig>,
}

impl Notifier {
    pub fn new(store: Store, config: NotifyConfig) -> Notifier {
        Notifier {
            store,
            config: Arc::new(config),
        }
    }

    /// What the operator configured.
    pub fn config(&self) -> &NotifyConfig {
        &self.config
    }

    /// Listens from now on (before any task is run, so no change is missed) and delivers
    /// until `shutdown`; the returned task ends once deliveries under way finished or
    /// [`STOP_GRACE`] passed.
    pub fn start(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let changes = self.store.events().state_changes();
        tokio::spawn(self.run(changes, shutdown))
    }

    async fn run(
        self,
        mut changes: tokio::sync::broadcast::Receiver<Event>,
        shutdown: CancellationToken,
    ) {
        let deliveries = TaskTracker::new();
        let cut = CancellationToken::new();
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => break,
                event = changes.recv() => event,
            };
            match event {
                Ok(event) => {
                    let Some(kind) = NoticeKind::of(&event) else {
                        continue;
                    };
                    let notifier = self.clone();
                    let cut = cut.clone();
                    deliveries.spawn(async move {
                        tokio::select! {
                            () = cut.cancelled() => {}
                            () = notifier.tell(kind, &event) => {}
                        }
                    });
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "the notifier fell behind; some state changes were not told"
                    );
                }
                Err(RecvError::Closed) => break,
            }
        }
        deliveries.close();
        if tokio::time::timeout(STOP_GRACE, deliveries.wait())
            .await
            .is_err()
        {
            cut.cancel();
            deliveries.wait().await;
        }
    }

    /// Tells the owner of `event`'s task on each channel they set; nothing fails the task.
    async fn tell(&self, kind: NoticeKind, event: &Event) {
        let task = match self.store.task_by_id(&event.task_id).await {
            Ok(task) => task,
            Err(error) => {
                tracing::warn!(task.id = %event.task_id, error = %error, "cannot read a task to notify of");
                return;
            }
        };
        let settings = match self.store.notification_settings(&task.owner).await {
            Ok(settings) => settings,
            Err(error) => {
                tracing::warn!(task.id = %task.id, error = %error, "cannot read notification settings");
                return;
            }
        };
        let notice = Notice::new(kind, &task, event, self.config.public_url.as_deref());
        let webhook = async {
            if let Some(webhook) = &settings.webhook {
                self.webhook(&task.owner, &webhook.url, webhook.format, &notice)
                    .await;
            }
        };
        let email = async {
            if let (true, Some(address), Some(_)) =
                (settings.email_enabled, &settings.email, &self.config.smtp)
            {
                self.email(&task.owner, address, &notice).await;
            }
        };
        tokio::join!(webhook, email);
    }

    /// Delivers `notice` to the owner's webhook now, with its retries, and records how it went
    /// (what the settings' "Send a test" uses too).
    pub async fn webhook(
        &self,
        owner: &UserId,
        url: &str,
        format: WebhookFormat,
        notice: &Notice,
    ) -> Delivery {
        let outcome = self.webhook_outcome(owner, url, format, notice).await;
        self.record(owner, "webhook", notice, outcome).await
    }

    async fn webhook_outcome(
        &self,
        owner: &UserId,
        url: &str,
        format: WebhookFormat,
        notice: &Notice,
    ) -> Result<String, String> {
        let allow_private = self.config.allow_private_targets;
        let url = check_url(url, "webhook", allow_private).map_err(|error| error.message)?;
        let secret = match self.store.webhook_secret(owner).await {
            Ok(Some(secret)) => secret,
            Ok(None) => return Err("no secret is set; save the webhook again".into()),
            Err(error) => return Err(format!("cannot read the webhook's secret: {error}")),
        };
        let delivery = uuid::Uuid::now_v7().to_string();
        let body = match format {
            WebhookFormat::Json => notice.json(&delivery),
            WebhookFormat::Slack => serde_json::json!({ "text": notice.slack_text() }),
        };
        let body = body.to_string();
        let request = webhook::Request {
            url: &url,
            body: body.as_bytes(),
            secret: secret.as_bytes(),
            event: notice.kind.as_str(),
            delivery: &delivery,
            timestamp: notice.at.unix_millis() / 1000,
        };
        let mut pause = self.config.first_pause;
        let mut tries = 0;
        loop {
            tries += 1;
            match webhook::send(&request, allow_private, self.config.timeout).await {
                Attempt::Delivered(status) => return Ok(format!("{status}")),
                Attempt::Permanent(why) => return Err(why),
                Attempt::Transient(why) if tries >= self.config.attempts => {
                    return Err(format!("{why} ({tries} attempts)"));
                }
                Attempt::Transient(_) => {
                    tokio::time::sleep(pause).await;
                    pause *= 4;
                }
            }
        }
    }

    /// Mails `notice` to `address` now, with retries, and records how it went.
    pub async fn email(&self, owner: &UserId, address: &str, notice: &Notice) -> Delivery {
        let outcome = self.email_outcome(address, notice).await;
        self.record(owner, "email", notice, outcome).await
    }

    async fn email_outcome(&self, address: &str, notice: &Notice) -> Result<String, String> {
        let Some(smtp) = &self.config.smtp else {
            return Err("the operator has not configured an SMTP server ([smtp])".into());
        };
        let to = check_address(address, "email").map_err(|error| error.message)?;
        let mut pause = self.config.first_pause;
        let mut tries = 0;
        loop {
            tries += 1;
            match email::send(smtp, &to, notice).await {
                Ok(()) => return Ok(format!("sent to {to}")),
                Err((true, why)) if tries < self.config.attempts => {
                    tracing::debug!(error = %why, "an e-mail failed; trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 4;
                }
                Err((_, why)) => return Err(format!("{why} ({tries} attempts)")),
            }
        }
    }

    async fn record(
        &self,
        owner: &UserId,
        channel: &str,
        notice: &Notice,
        outcome: Result<String, String>,
    ) -> Delivery {
        let delivery = Delivery {
            channel: channel.to_owned(),
            task_id: Some(notice.task_id.clone()),
            event: notice.kind.as_str().to_owned(),
            ok: outcome.is_ok(),
            detail: match outcome {
                Ok(detail) | Err(detail) => detail,
            },
            at: Timestamp::now(),
        };
        if delivery.ok {
            tracing::info!(user.id = %owner, task.id = %notice.task_id, channel, event = notice.kind.as_str(), "notification delivered");
        } else {
            tracing::warn!(user.id = %owner, task.id = %notice.task_id, channel, event = notice.kind.as_str(), error = %delivery.detail, "notification not delivered");
        }
        if let Err(error) = self.store.record_notification(owner, &delivery).await {
            tracing::warn!(error = %error, "cannot record a notification's delivery");
        }
        delivery
    }
}
