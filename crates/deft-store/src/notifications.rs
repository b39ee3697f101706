//! Where a person is told about their tasks (an outgoing webhook, an e-mail address) and how
//! the last delivery on each went.
//!
//! The webhook's secret is sealed like a secret (AES-256-GCM under the master key, the owner as
//! associated data) and leaves the store only through [`Store::webhook_secret`], for signing.
//! Addresses and URLs are checked by the caller (`deft-notify`): the store keeps what it is
//! given, refusing only a format it does not know.

use deft_core::{TaskId, Timestamp, UserId};
use sqlx::Row as _;

use crate::{Store, StoreError};

/// The body a webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// deft's own JSON, signed.
    Json,
    /// `{"text": "..."}`, what a Slack incoming webhook (and many chat tools) accept.
    Slack,
}

impl WebhookFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Json => "json",
            WebhookFormat::Slack => "slack",
        }
    }

    pub fn parse(text: &str) -> Option<WebhookFormat> {
        match text {
            "json" => Some(WebhookFormat::Json),
            "slack" => Some(WebhookFormat::Slack),
            _ => None,
        }
    }
}

/// A user's outgoing webhook, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub url: String,
    pub format: WebhookFormat,
}

/// A user's notification settings; nothing set until first saved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotificationSettings {
    pub webhook: Option<Webhook>,
    /// Where e-mail goes, kept while e-mail is off.
    pub email: Option<String>,
    /// The person asked for e-mail (sent only when the operator configured SMTP).
    pub email_enabled: bool,
}

/// How one delivery went, as the settings page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// `webhook` or `email`.
    pub channel: String,
    pub task_id: Option<TaskId>,
    /// What was told (`task.asked`, ...).
    pub event: String,
    pub ok: bool,
    /// The receiver's status, or what went wrong and what to do.
    pub detail: String,
    pub at: Timestamp,
}

/// The longest detail kept: a receiver's error text is not ours to store whole.
const DETAIL_MAX: usize = 500;

fn secret_context(user: &UserId) -> String {
    format!("deft-webhook-secret\0{user}")
}

impl Store {
    /// The user's notification settings.
    pub async fn notification_settings(
        &self,
        user: &UserId,
    ) -> Result<NotificationSettings, StoreError> {
        let row = sqlx::query(
            "SELECT webhook_url, webhook_format, email, email_enabled \
             FROM notification_settings WHERE user_id = $1",
        )
        .bind(user.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(NotificationSettings::default());
        };
        let url: Option<String> = row.try_get("webhook_url")?;
        let format: String = row.try_get("webhook_format")?;
        let format = WebhookFormat::parse(&format).ok_or_else(|| StoreError::Corrupt {
            what: format!("webhook format `{format}`"),
        })?;
        Ok(NotificationSettings {
            webhook: url.map(|url| Webhook { url, format }),
            email: row.try_get("email")?,
            email_enabled: row.try_get::<i64, _>("email_enabled")? != 0,
        })
    }

    /// Sets the user's webhook; `secret` replaces the stored one, `None` keeps it. A webhook
    /// without a secret is refused: every delivery is signed.
    pub async fn set_webhook(
        &self,
        user: &UserId,
        webhook: &Webhook,
        secret: Option<&str>,
    ) -> Result<(), StoreError> {
        let sealed = secret.map(|secret| self.key.seal(&secret_context(user), secret.as_bytes()));
        let (nonce, sealed) = sealed.unzip();
        let mut tx = self.begin_write().await?;
        self.ensure_notification_row(&mut tx, user).await?;
        let updated = sqlx::query(
            "UPDATE notification_settings SET webhook_url = $2, webhook_format = $3, \
             webhook_nonce = COALESCE($4, webhook_nonce), \
             webhook_secret = COALESCE($5, webhook_secret), updated_at = $6 \
             WHERE user_id = $1 RETURNING webhook_secret",
        )
        .bind(user.as_str())
        .bind(&webhook.url)
        .bind(webhook.format.as_str())
        .bind(nonce)
        .bind(sealed)
        .bind(Timestamp::now().unix_millis())
        .fetch_one(&mut *tx)
        .await?;
        if updated
            .try_get::<Option<String>, _>("webhook_secret")?
            .is_none()
        {
            return Err(StoreError::Invalid(deft_core::ValidationError::new(
                "webhook.secret",
                "is not set; give a secret, or leave it empty the first time for deft to make one",
            )));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes the user's webhook and its secret.
    pub async fn remove_webhook(&self, user: &UserId) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE notification_settings SET webhook_url = NULL, webhook_nonce = NULL, \
             webhook_secret = NULL, updated_at = $2 WHERE user_id = $1",
        )
        .bind(user.as_str())
        .bind(Timestamp::now().unix_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Sets where the user's e-mail goes and whether they want it.
    pub async fn set_email(
        &self,
        user: &UserId,
        email: Option<&str>,
        enabled: bool,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        self.ensure_notification_row(&mut tx, user).await?;
        sqlx::query(
            "UPDATE notification_settings SET email = $2, email_enabled = $3, updated_at = $4 \
             WHERE user_id = $1",
        )
        .bind(user.as_str())
        .bind(email)
        .bind(i64::from(enabled))
        .bind(Timestamp::now().unix_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The webhook's secret, opened, for signing a delivery; `None` without a webhook.
    pub async fn webhook_secret(&self, user: &UserId) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT webhook_nonce, webhook_secret FROM notification_settings WHERE user_id = $1",
        )
        .bind(user.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let nonce: Option<String> = row.try_get("webhook_nonce")?;
        let sealed: Option<String> = row.try_get("webhook_secret")?;
        let (Some(nonce), Some(sealed)) = (nonce, sealed) else {
            return Ok(None);
        };
        let opened = self.key.open(&secret_context(user), &nonce, &sealed)?;
        String::from_utf8(opened)
            .map(Some)
            .map_err(|_| StoreError::Corrupt {
                what: "a webhook secret is not text".into(),
            })
    }

    /// Records how a delivery went, in place of the channel's last.
    pub async fn record_notification(
        &self,
        user: &UserId,
        delivery: &Delivery,
    ) -> Result<(), StoreError> {
        let mut detail = delivery.detail.clone();
        if detail.len() > DETAIL_MAX {
            let mut end = DETAIL_MAX;
            while !detail.is_char_boundary(end) {
                end -= 1;
            }
            detail.truncate(end);
            detail.push('…');
        }
        sqlx::query(
            "INSERT INTO notification_deliveries (user_id, channel, task_id, event, ok, detail, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (user_id, channel) DO UPDATE SET \
             task_id = excluded.task_id, event = excluded.event, ok = excluded.ok, \
             detail = excluded.detail, at = excluded.at",
        )
        .bind(user.as_str())
        .bind(&delivery.channel)
        .bind(delivery.task_id.as_ref().map(TaskId::as_str))
        .bind(&delivery.event)
        .bind(i64::from(delivery.ok))
        .bind(detail)
        .bind(delivery.at.unix_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The last delivery on each of the user's channels, by channel name.
    pub async fn notification_deliveries(
        &self,
        user: &UserId,
    ) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT channel, task_id, event, ok, detail, at FROM notification_deliveries \
             WHERE user_id = $1 ORDER BY channel",
        )
        .bind(user.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Delivery {
                    channel: row.try_get("channel")?,
                    task_id: row
                        .try_get::<Option<String>, _>("task_id")?
                        .map(TaskId::from_stored),
                    event: row.try_get("event")?,
                    ok: row.try_get::<i64, _>("ok")? != 0,
                    detail: row.try_get("detail")?,
                    at: Timestamp::from_unix_millis(row.try_get("at")?),
                })
            })
            .collect()
    }

    async fn ensure_notification_row(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        user: &UserId,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO notification_settings (user_id, updated_at) VALUES ($1, $2) \
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user.as_str())
        .bind(Timestamp::now().unix_millis())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}
