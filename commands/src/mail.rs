//! The server's own outgoing mail (`SMTP_URL`, `SMTP_FROM`): notification e-mails.
//! The relay is the operator's setting, not a tenant's, so it does not go through the
//! outbound guard. `smtp://host:port` speaks plain SMTP (STARTTLS with
//! `?tls=required`), `smtps://` TLS from the start; `user:password@` authenticates.

use std::time::Duration;

use anyhow::Context;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// The longest one message may take to hand over.
const SEND_TIMEOUT: Duration = Duration::from_secs(20);

/// Hands messages to the configured relay.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

/// Why a message was not handed over.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The relay or the address refused it for good (a 5xx answer, an address that
    /// does not parse): trying again cannot help.
    #[error("refused: {0}")]
    Refused(String),
    /// No answer, or "try later".
    #[error("{0}")]
    Failed(String),
}

impl Mailer {
    pub fn new(url: &str, from: &str) -> anyhow::Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .context("SMTP_URL is not a valid smtp:// or smtps:// URL")?
            .timeout(Some(SEND_TIMEOUT))
            .build();
        let from = from.parse().with_context(|| format!("SMTP_FROM '{from}' is not an e-mail address"))?;
        Ok(Self { transport, from })
    }

    /// Sends a plain-text message; `message_id` (`<…@…>`) is the same on every attempt,
    /// so a receiver can tell a second delivery of it.
    pub async fn send(&self, to: &str, subject: &str, body: String, message_id: &str) -> Result<(), MailError> {
        let to: Mailbox =
            to.parse().map_err(|e| MailError::Refused(format!("the address {to} does not parse: {e}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(message_id.to_string()))
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| MailError::Refused(e.to_string()))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(error) if error.is_permanent() => Err(MailError::Refused(error.to_string())),
            Err(error) => Err(MailError::Failed(format!("{:#}", anyhow::Error::new(error)))),
        }
    }
}
