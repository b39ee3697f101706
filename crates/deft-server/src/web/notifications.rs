//! The settings' notifications: a person's webhook (URL, body format, secret) and e-mail,
//! checked and stored the same way for the settings page and for `PUT
//! /api/v1/settings/notifications`, and what the page shows of them (each channel's last
//! delivery). Browser notifications are the browser's own permission (`assets/notify.js`).
//!
//! A webhook's secret is shown once, when deft makes it (the person left the field empty the
//! first time); a secret a person types is never shown back.

use deft_core::{UserId, ValidationError};
use deft_store::{Delivery, Webhook, WebhookFormat};

use super::{Moment, shorten};
use crate::{ApiError, AppState};

/// The page's view of one channel's last delivery.
pub struct LastDelivery {
    pub ok: bool,
    pub text: String,
    pub at: Moment,
}

/// A choice of the webhook's body.
pub struct FormatChoice {
    pub value: &'static str,
    pub label: &'static str,
    pub selected: bool,
}

/// What the notifications section shows.
pub struct NotificationsView {
    pub webhook_url: String,
    pub formats: Vec<FormatChoice>,
    pub webhook_set: bool,
    pub webhook_last: Option<LastDelivery>,
    /// The operator configured SMTP.
    pub email_available: bool,
    pub email: String,
    pub email_enabled: bool,
    pub email_last: Option<LastDelivery>,
    pub new_secret: Option<String>,
}

/// What a refused notifications form typed, to put back.
#[derive(Default)]
pub(crate) struct TypedNotifications {
    pub webhook_url: Option<String>,
    pub webhook_format: Option<String>,
    pub email: Option<String>,
    /// The secret deft just made, shown on the next page only.
    pub new_secret: Option<String>,
}

/// Shown of a delivery's detail (a receiver's status or the reason it failed).
const SHOWN: usize = 300;

fn last(deliveries: &[Delivery], channel: &str) -> Option<LastDelivery> {
    deliveries
        .iter()
        .find(|delivery| delivery.channel == channel)
        .map(|delivery| LastDelivery {
            ok: delivery.ok,
            text: format!(
                "{} ({}): {}",
                if delivery.ok { "delivered" } else { "failed" },
                delivery.event,
                shorten(&delivery.detail, SHOWN)
            ),
            at: Moment::new(delivery.at),
        })
}

pub(crate) async fn view(
    app: &AppState,
    user: &UserId,
    typed: TypedNotifications,
) -> Result<NotificationsView, deft_store::StoreError> {
    let settings = app.store.notification_settings(user).await?;
    let deliveries = app.store.notification_deliveries(user).await?;
    let stored_format = settings
        .webhook
        .as_ref()
        .map_or("json", |webhook| webhook.format.as_str());
    let format = typed
        .webhook_format
        .unwrap_or_else(|| stored_format.to_owned());
    Ok(NotificationsView {
        webhook_url: typed.webhook_url.unwrap_or_else(|| {
            settings
                .webhook
                .as_ref()
                .map(|webhook| webhook.url.clone())
                .unwrap_or_default()
        }),
        formats: [
            (WebhookFormat::Json, "deft's JSON, signed"),
            (
                WebhookFormat::Slack,
                "Slack-compatible text ({\"text\": …})",
            ),
        ]
        .into_iter()
        .map(|(value, label)| FormatChoice {
            value: value.as_str(),
            label,
            selected: value.as_str() == format,
        })
        .collect(),
        webhook_set: settings.webhook.is_some(),
        webhook_last: last(&deliveries, "webhook"),
        email_available: email_available(app),
        email: typed
            .email
            .unwrap_or_else(|| settings.email.clone().unwrap_or_default()),
        email_enabled: settings.email_enabled,
        email_last: last(&deliveries, "email"),
        new_secret: typed.new_secret,
    })
}

fn email_available(app: &AppState) -> bool {
    app.notifier
        .as_ref()
        .is_some_and(|notifier| notifier.config().smtp.is_some())
}

fn private_allowed(app: &AppState) -> bool {
    app.notifier
        .as_ref()
        .is_some_and(|notifier| notifier.config().allow_private_targets)
}

/// Checks and stores the user's webhook; the secret deft made, when it made one, to show once.
/// An empty `secret` keeps the stored one (or makes one when there is none).
pub(crate) async fn put_webhook(
    app: &AppState,
    user: &UserId,
    url: &str,
    format: &str,
    secret: &str,
) -> Result<Option<String>, ApiError> {
    let webhook = check_webhook(app, url, format, secret)?;
    if !secret.is_empty() {
        app.store.set_webhook(user, &webhook, Some(secret)).await?;
        return Ok(None);
    }
    if app.store.webhook_secret(user).await?.is_some() {
        app.store.set_webhook(user, &webhook, None).await?;
        return Ok(None);
    }
    let made = deft_notify::new_secret();
    app.store.set_webhook(user, &webhook, Some(&made)).await?;
    Ok(Some(made))
}

/// The webhook as typed, once its URL, format and secret (when given) pass their checks.
pub(crate) fn check_webhook(
    app: &AppState,
    url: &str,
    format: &str,
    secret: &str,
) -> Result<Webhook, ApiError> {
    let url = deft_notify::check_url(url, "webhook.url", private_allowed(app))?;
    let format = WebhookFormat::parse(format.trim()).ok_or_else(|| {
        ValidationError::new(
            "webhook.format",
            format!(
                "is `{}`; use `json` (deft's signed JSON) or `slack` (a Slack-compatible {{\"text\"}})",
                shorten(format, 40)
            ),
        )
    })?;
    if !secret.is_empty() {
        deft_notify::check_secret(secret, "webhook.secret")?;
    }
    Ok(Webhook {
        url: url.to_string(),
        format,
    })
}

/// Checks and stores where the user's e-mail goes and whether they want it.
pub(crate) async fn put_email(
    app: &AppState,
    user: &UserId,
    address: &str,
    enabled: bool,
) -> Result<(), ApiError> {
    let address = address.trim();
    if enabled && !email_available(app) {
        return Err(ApiError::field(
            "email.enabled",
            "cannot be turned on: this server has no SMTP server configured (`[smtp]` in deft's config file); ask its operator, or use a webhook",
        ));
    }
    let address = if address.is_empty() && !enabled {
        None
    } else {
        Some(deft_notify::check_address(address, "email.address")?.to_string())
    };
    app.store
        .set_email(user, address.as_deref(), enabled)
        .await?;
    Ok(())
}

/// The settings as the API shows them: never the secret.
pub(crate) async fn json(app: &AppState, user: &UserId) -> Result<serde_json::Value, ApiError> {
    let settings = app.store.notification_settings(user).await?;
    let deliveries = app.store.notification_deliveries(user).await?;
    let delivery = |channel: &str| {
        deliveries
            .iter()
            .find(|delivery| delivery.channel == channel)
            .map(|delivery| {
                serde_json::json!({
                    "ok": delivery.ok,
                    "event": delivery.event,
                    "task_id": delivery.task_id.as_ref().map(|id| id.as_str()),
                    "detail": delivery.detail,
                    "at": delivery.at.to_rfc3339(),
                })
            })
    };
    Ok(serde_json::json!({
        "browser": "set in each browser, on the settings page",
        "webhook": settings.webhook.as_ref().map(|webhook| serde_json::json!({
            "url": webhook.url,
            "format": webhook.format.as_str(),
            "secret_set": true,
            "last_delivery": delivery("webhook"),
        })),
        "email": {
            "address": settings.email,
            "enabled": settings.email_enabled,
            "available": email_available(app),
            "last_delivery": delivery("email"),
        },
    }))
}

/// The settings' webhook and e-mail forms: stored, or back with the message beside the form.
pub(super) async fn save(
    app: &AppState,
    session: &super::WebSession,
    section: &str,
    form: &super::WebForm,
) -> Result<axum::response::Response, super::WebError> {
    use super::settings::{Flash, refused_to, saved};
    let user = &session.user.id;
    let (result, typed) = if section == "webhook" {
        let (url, format) = (form.get("url"), form.get("format"));
        let result = put_webhook(app, user, url, format, form.get("secret")).await;
        let typed = TypedNotifications {
            webhook_url: Some(kept(url)),
            webhook_format: Some(kept(format)),
            ..TypedNotifications::default()
        };
        (result, typed)
    } else {
        let address = form.get("address");
        let result = put_email(app, user, address, form.checked("enabled"))
            .await
            .map(|()| None);
        let typed = TypedNotifications {
            email: Some(kept(address)),
            ..TypedNotifications::default()
        };
        (result, typed)
    };
    match result {
        Ok(None) => Ok(saved(section)),
        // Shown once, on the page after the redirect: never in a URL.
        Ok(Some(secret)) => {
            let typed = TypedNotifications {
                new_secret: Some(secret),
                ..TypedNotifications::default()
            };
            let mut flash = Flash::default();
            flash.typed.notifications = typed;
            Ok(refused_to(app, session, section, flash))
        }
        Err(error) => {
            let mut flash = Flash::default();
            flash.typed.notifications = typed;
            let message = shorten(&error.message, 600);
            match section {
                "webhook" => flash.errors.webhook = Some(message),
                _ => flash.errors.email = Some(message),
            }
            Ok(refused_to(app, session, section, flash))
        }
    }
}

/// What was typed, when short enough to put back in its field.
fn kept(value: &str) -> String {
    if value.len() <= 4096 {
        value.to_owned()
    } else {
        String::new()
    }
}
