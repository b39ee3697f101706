//! `[notifications]` and `[smtp]` of the config file, resolved into what `deft-notify`
//! runs with; a bad value stops the command naming the key and what to write.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use deft_notify::{NotifyConfig, SmtpConfig, SmtpTls};

use crate::config::ConfigFile;
use crate::env_vars::DEFT_SMTP_PASSWORD;

/// `[notifications]`: where people are told about their tasks from.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsFile {
    /// The web app's address as people reach it, for the links in webhooks and e-mail
    /// (`https://deft.example.com`); unset, notifications carry the task's id only.
    pub public_url: Option<String>,
    /// Lets people's webhooks reach this machine and private networks. Off by default: a
    /// webhook URL is the person's, and deft runs on the operator's machine.
    #[serde(default)]
    pub allow_private_targets: bool,
}

/// `[smtp]`: the server e-mail notifications go through; unset, no e-mail is sent.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpFile {
    pub host: String,
    /// Default: 587 for `starttls`, 465 for `tls`, 25 for `none`.
    pub port: Option<u16>,
    /// `starttls` (the default), `tls`, or `none` for a relay on this machine.
    pub tls: Option<String>,
    /// The sender: `deft <deft@example.com>` or `deft@example.com`.
    pub from: String,
    pub username: Option<String>,
    /// A file holding the password (its first line); `DEFT_SMTP_PASSWORD` overrides it.
    pub password_file: Option<PathBuf>,
    /// How long one message may take, connection included (default 30).
    pub timeout_secs: Option<u64>,
}

/// The notifier's settings from the file, without the SMTP password (read at start only).
pub fn resolve(
    notifications: &NotificationsFile,
    smtp: Option<&SmtpFile>,
) -> anyhow::Result<NotifyConfig> {
    let public_url = match &notifications.public_url {
        None => None,
        Some(text) => Some(public_url(text).context("[notifications] public_url")?),
    };
    let smtp = match smtp {
        None => None,
        Some(file) => Some(smtp_config(file)?),
    };
    Ok(NotifyConfig {
        public_url,
        allow_private_targets: notifications.allow_private_targets,
        smtp,
        ..NotifyConfig::default()
    })
}

/// What `deft serve` and `deft worker` notify with: the file's settings and the SMTP password.
pub fn notify_config(config: &ConfigFile) -> anyhow::Result<NotifyConfig> {
    let mut resolved = resolve(&config.notifications, config.smtp.as_ref())?;
    if let (Some(smtp), Some(file)) = (resolved.smtp.as_mut(), config.smtp.as_ref())
        && let Some(user) = &file.username
    {
        let password = match std::env::var(DEFT_SMTP_PASSWORD) {
            Ok(password) if !password.is_empty() => password,
            _ => match &file.password_file {
                Some(path) => fs_err::read_to_string(path)
                    .context(
                        "[smtp] password_file cannot be read; check the path and its permissions",
                    )?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                None => bail!(
                    "[smtp] username is set but no password: set {DEFT_SMTP_PASSWORD}, or password_file to a file holding it"
                ),
            },
        };
        smtp.credentials = Some((user.clone(), password));
    }
    Ok(resolved)
}

fn public_url(text: &str) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(text.trim()).map_err(|error| {
        anyhow::anyhow!("`{text}` is not a URL ({error}); write the web app's address, such as https://deft.example.com")
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        bail!(
            "`{text}` is not an http(s) address; write the web app's address, such as https://deft.example.com"
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!(
            "`{text}` has a query or fragment; write only the web app's address, such as https://deft.example.com"
        );
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn smtp_config(file: &SmtpFile) -> anyhow::Result<SmtpConfig> {
    if file.host.trim().is_empty() {
        bail!("[smtp] host is empty; give the SMTP server's name, such as smtp.example.com");
    }
    let tls = SmtpTls::parse(file.tls.as_deref().unwrap_or("starttls"))
        .map_err(|error| anyhow::anyhow!("[smtp] tls {error}"))?;
    let from = deft_notify::parse_mailbox(&file.from)
        .map_err(|error| anyhow::anyhow!("[smtp] from {error}"))?;
    if file.port == Some(0) {
        bail!(
            "[smtp] port is 0; give the server's port, or remove the line for {}",
            tls.default_port()
        );
    }
    let timeout = file.timeout_secs.unwrap_or(30);
    if !(1..=600).contains(&timeout) {
        bail!("[smtp] timeout_secs is {timeout}; give 1 to 600 seconds");
    }
    if file.password_file.is_some() && file.username.is_none() {
        bail!("[smtp] password_file is set without username; set the user name the server expects");
    }
    Ok(SmtpConfig {
        host: file.host.trim().to_owned(),
        port: file.port.unwrap_or(tls.default_port()),
        tls,
        from,
        credentials: None,
        timeout: Duration::from_secs(timeout),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expect: Result<&str, &str>) {
        let parsed = toml::from_str::<toml::Table>(text).unwrap();
        let notifications: NotificationsFile = parsed
            .get("notifications")
            .map(|value| value.clone().try_into().unwrap())
            .unwrap_or_default();
        let smtp: Option<SmtpFile> = parsed
            .get("smtp")
            .map(|value| value.clone().try_into().unwrap());
        let got = resolve(&notifications, smtp.as_ref()).map(|config| format!("{config:?}"));
        match (got, expect) {
            (Ok(got), Ok(want)) => assert!(got.contains(want), "{got}"),
            (Err(error), Err(want)) => {
                let error = format!("{error:#}");
                assert!(error.contains(want), "{error}");
            }
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn the_sections_are_checked_naming_the_key() {
        check("", Ok("smtp: None"));
        check(
            "[notifications]\npublic_url = \"https://deft.example.com/\"\n",
            Ok("public_url: Some(\"https://deft.example.com\")"),
        );
        check(
            "[notifications]\npublic_url = \"deft.example.com\"\n",
            Err("[notifications] public_url: `deft.example.com` is not a URL"),
        );
        check(
            "[notifications]\nallow_private_targets = true\n",
            Ok("allow_private_targets: true"),
        );
        check(
            "[smtp]\nhost = \"smtp.example.com\"\nfrom = \"deft <deft@example.com>\"\n",
            Ok("port: 587, tls: StartTls"),
        );
        check(
            "[smtp]\nhost = \"127.0.0.1\"\nport = 2525\ntls = \"none\"\nfrom = \"deft@example.com\"\n",
            Ok("port: 2525, tls: None"),
        );
        check(
            "[smtp]\nhost = \"smtp.example.com\"\ntls = \"ssl\"\nfrom = \"deft@example.com\"\n",
            Err("[smtp] tls is `ssl`; use `starttls`"),
        );
        check(
            "[smtp]\nhost = \"smtp.example.com\"\nfrom = \"nobody\"\n",
            Err("[smtp] from is `nobody`, not an e-mail address"),
        );
        check(
            "[smtp]\nhost = \"smtp.example.com\"\nfrom = \"d@example.com\"\npassword_file = \"p\"\n",
            Err("without username"),
        );
    }
}
