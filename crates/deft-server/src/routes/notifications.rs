//! `GET/PUT /api/v1/settings/notifications` (SPEC §5): the person's webhook and e-mail, checked
//! and stored as the settings page does (`web/notifications.rs`). The webhook's secret is never
//! shown, except once in the answer to the `PUT` that made it.

use axum::Json;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::ApiError;
use crate::auth::Caller;
use crate::extract::ApiJson;
use crate::web::notifications::{check_webhook, json, put_email, put_webhook};

pub async fn show(Caller { app, user }: Caller) -> Result<Json<Value>, ApiError> {
    Ok(Json(json(&app, &user.id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    url: String,
    /// `json` (the default) or `slack`.
    #[serde(default)]
    format: Option<String>,
    /// Replaces the secret; absent keeps it (or makes one the first time).
    #[serde(default)]
    secret: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailBody {
    #[serde(default)]
    address: String,
    enabled: bool,
}

/// Each part is optional: what is given replaces that part; `"webhook": null` removes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutNotifications {
    #[serde(default, deserialize_with = "present")]
    webhook: Option<Option<WebhookBody>>,
    email: Option<EmailBody>,
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

pub async fn put(
    Caller { app, user }: Caller,
    ApiJson(body): ApiJson<PutNotifications>,
) -> Result<Json<Value>, ApiError> {
    // The webhook is checked before the e-mail is stored, so that a refused part stores
    // nothing of the other.
    if let Some(Some(webhook)) = &body.webhook {
        check_webhook(
            &app,
            &webhook.url,
            webhook.format.as_deref().unwrap_or("json"),
            webhook.secret.as_deref().unwrap_or(""),
        )?;
    }
    let mut new_secret = None;
    if let Some(email) = &body.email {
        put_email(&app, &user.id, &email.address, email.enabled).await?;
    }
    match body.webhook {
        None => {}
        Some(None) => app.store.remove_webhook(&user.id).await?,
        Some(Some(webhook)) => {
            new_secret = put_webhook(
                &app,
                &user.id,
                &webhook.url,
                webhook.format.as_deref().unwrap_or("json"),
                webhook.secret.as_deref().unwrap_or(""),
            )
            .await?;
        }
    }
    let mut shown = json(&app, &user.id).await?;
    if let (Some(secret), Some(webhook)) = (new_secret, shown.get_mut("webhook")) {
        webhook["secret"] = Value::String(secret);
    }
    Ok(Json(shown))
}
