//! E-mail through the SMTP server the operator configured (`[smtp]`), with lettre.
//!
//! The server is the operator's, so it is not held to the webhooks' address policy (a relay on
//! this machine is common). The recipient is the person's own address, checked when saved.

use std::time::Duration;

use deft_core::ValidationError;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::notice::Notice;

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// TLS from the first byte (port 465).
    Tls,
    /// Plain, then `STARTTLS`, which must succeed (port 587).
    StartTls,
    /// No TLS: only for a relay on this machine or a trusted network.
    None,
}

impl SmtpTls {
    /// Reads `tls` from the config file; the error says what may be written.
    pub fn parse(text: &str) -> Result<SmtpTls, String> {
        match text {
            "tls" => Ok(SmtpTls::Tls),
            "starttls" => Ok(SmtpTls::StartTls),
            "none" => Ok(SmtpTls::None),
            other => Err(format!(
                "is `{other}`; use `starttls` (port 587), `tls` (port 465) or `none` (a relay on this machine)"
            )),
        }
    }

    /// The usual port for this mode.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::Tls => 465,
            SmtpTls::StartTls => 587,
            SmtpTls::None => 25,
        }
    }
}

/// The operator's SMTP server.
#[derive(Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// The sender, `deft <deft@example.com>` or a bare address.
    pub from: Mailbox,
    /// User name and password, when the server asks for them.
    pub credentials: Option<(String, String)>,
    /// How long one message may take, connection included.
    pub timeout: Duration,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password is never printed.
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("from", &self.from.to_string())
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .finish_non_exhaustive()
    }
}

/// Reads a sender (`Name <address>` or an address) from the config file.
pub fn parse_mailbox(text: &str) -> Result<Mailbox, String> {
    text.parse::<Mailbox>().map_err(|error| {
        format!("is `{text}`, not an e-mail address ({error}); write `deft <deft@example.com>` or `deft@example.com`")
    })
}

/// The longest address accepted (RFC 5321's path limit).
const ADDRESS_MAX: usize = 254;

/// Checks a person's e-mail address as typed; `field` names it in the error.
pub fn check_address(text: &str, field: &str) -> Result<Address, ValidationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ValidationError::new(
            field,
            "is empty; give the address the notifications should go to, such as ada@example.com",
        ));
    }
    if text.len() > ADDRESS_MAX {
        return Err(ValidationError::new(
            field,
            format!(
                "is {} bytes, over the {ADDRESS_MAX} an e-mail address may be",
                text.len()
            ),
        ));
    }
    text.parse::<Address>().map_err(|_| {
        ValidationError::new(
            field,
            format!("`{text}` is not an e-mail address; write it as name@example.com, without a display name"),
        )
    })
}

/// How sending one message went: `Ok(())`, or the reason and whether to try again.
pub(crate) async fn send(
    config: &SmtpConfig,
    to: &Address,
    notice: &Notice,
) -> Result<(), (bool, String)> {
    let message = Message::builder()
        .from(config.from.clone())
        .to(Mailbox::new(None, to.clone()))
        .subject(notice.subject())
        .header(ContentType::TEXT_PLAIN)
        .body(notice.email_text())
        .map_err(|error| (false, format!("cannot build the message: {error}")))?;
    let builder = match config.tls {
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host),
        SmtpTls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)
            .map_err(|error| {
                (
                    false,
                    format!("cannot set up STARTTLS with {}: {error}", config.host),
                )
            })?,
        SmtpTls::Tls => {
            AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host).map_err(|error| {
                (
                    false,
                    format!("cannot set up TLS with {}: {error}", config.host),
                )
            })?
        }
    };
    let mut builder = builder.port(config.port).timeout(Some(config.timeout));
    if let Some((user, password)) = &config.credentials {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    let transport = builder.build();
    match tokio::time::timeout(config.timeout, transport.send(message)).await {
        Err(_) => Err((
            true,
            format!(
                "the SMTP server {} did not answer within {} s",
                config.host,
                config.timeout.as_secs()
            ),
        )),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err((
            !error.is_permanent(),
            format!(
                "the SMTP server {}:{} refused or failed: {error}",
                config.host, config.port
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_modes_are_checked_naming_the_fix() {
        assert!(check_address("ada@example.com", "email").is_ok());
        let error = check_address("", "email").unwrap_err();
        assert_eq!(error.field, "email");
        assert!(error.message.contains("is empty"));
        let error = check_address("Ada <ada@example.com>", "email").unwrap_err();
        assert!(error.message.contains("without a display name"), "{error}");
        let error = check_address("ada@example.com\r\nBcc: x@example.com", "email").unwrap_err();
        assert!(error.message.contains("not an e-mail address"), "{error}");
        assert!(check_address(&format!("{}@example.com", "a".repeat(300)), "email").is_err());
        assert_eq!(SmtpTls::parse("starttls"), Ok(SmtpTls::StartTls));
        assert!(
            SmtpTls::parse("ssl")
                .unwrap_err()
                .contains("use `starttls`")
        );
        assert!(parse_mailbox("deft <deft@example.com>").is_ok());
        assert!(
            parse_mailbox("not an address")
                .unwrap_err()
                .contains("deft@example.com")
        );
    }
}
