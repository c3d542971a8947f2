//! Provider channels (WhatsApp Cloud API, Messenger Platform): their settings outside
//! the log, the signed webhooks they deliver, and the replies sent through them.
//!
//! Each provider's wire format is read into [`Notice`]s, the same for every provider,
//! so what happens next (a message received, a status applied) is written once.

use chrono::{DateTime, Utc};
use domain::values::{FileType, MessageStatus};

pub mod delivery;
pub mod intake;
pub mod media;
pub mod messenger;
pub mod settings;
pub mod signature;
pub mod templates;
pub mod tracking;
pub mod whatsapp;

/// Where the providers' Graph API is: operator configuration, never a tenant's.
#[derive(Debug, Clone)]
pub struct GraphApi {
    /// `https://graph.facebook.com` in production; a loopback fake in tests.
    pub base_url: String,
    /// `v21.0`.
    pub version: String,
}

impl GraphApi {
    /// The URL of a Graph API path (`<id>/messages`).
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}/{path}", self.base_url.trim_end_matches('/'), self.version)
    }
}

/// The largest webhook body a provider may send (WhatsApp documents 3 MB).
pub const MAX_WEBHOOK_BYTES: usize = 4 * 1024 * 1024;

/// One thing a provider's webhook tells, whatever the provider.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    Message(ProviderMessage),
    Status(ProviderStatus),
    /// Messenger: every outgoing message to `recipient` before `up_to` was delivered
    /// (or read).
    Watermark {
        routing_id: String,
        recipient: String,
        status: MessageStatus,
        up_to: DateTime<Utc>,
    },
    /// Our own send, echoed back: matched by its id, never stored as a new message.
    Echo {
        routing_id: String,
        provider_message_id: String,
    },
    /// Valid, but of a kind not handled: acknowledged and logged at debug.
    Ignored {
        routing_id: String,
        kind: String,
    },
}

impl Notice {
    /// The provider's id of the inbox it is for (phone number id, page id).
    pub fn routing_id(&self) -> &str {
        match self {
            Self::Message(m) => &m.routing_id,
            Self::Status(s) => &s.routing_id,
            Self::Watermark { routing_id, .. } | Self::Echo { routing_id, .. } | Self::Ignored { routing_id, .. } => {
                routing_id
            }
        }
    }
}

/// A contact's message as a provider delivered it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderMessage {
    pub routing_id: String,
    /// The contact's id on the channel (`wa_id`, PSID).
    pub sender: String,
    pub sender_name: Option<String>,
    pub sender_phone: Option<String>,
    /// The provider's message id (`wamid…`, `m_…`): unique, the dedupe key.
    pub provider_message_id: String,
    /// The provider's timestamp: the 24-hour window runs from it.
    pub sent_at: DateTime<Utc>,
    /// The text an agent reads (the body, a caption, a button's title, …); empty
    /// when the message is only files.
    pub text: String,
    /// The files it carries, to fetch at once (their sources expire).
    pub media: Vec<ProviderMedia>,
    /// The provider's id of the message this one answers or reacts to.
    pub reply_to: Option<String>,
}

/// A file of a contact's message, as the provider points to it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderMedia {
    pub file_type: FileType,
    pub mime_type: Option<String>,
    pub file_name: Option<String>,
    /// The provider's media id (WhatsApp: fetched through the media endpoint) or a
    /// URL (Messenger's CDN).
    pub source: String,
}

/// A provider's callback about one of our messages.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderStatus {
    pub routing_id: String,
    pub provider_message_id: String,
    /// Sent, delivered or read; `Err((code, title))`: the provider failed it (terminal).
    pub status: Result<MessageStatus, (String, String)>,
    pub at: DateTime<Utc>,
}

/// Why a webhook body was refused (400): not the provider's envelope at all.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// A provider's refusal of a send, as the Graph API reports it.
#[derive(Debug, Clone)]
pub struct ProviderError {
    /// The provider's error code (`131047`, `190`, …) or the HTTP status.
    pub code: Option<String>,
    pub message: String,
    /// Worth trying again: no answer, 5xx, 429, or a throttling code.
    pub transient: bool,
    /// How long the provider asked us to wait (`Retry-After`).
    pub retry_after: Option<std::time::Duration>,
}

/// The Graph API's throttling codes (WhatsApp and Messenger): the send may succeed later.
const THROTTLING_CODES: [&str; 9] = ["4", "17", "32", "613", "80007", "130429", "131048", "131056", "133016"];

impl ProviderError {
    pub fn transient(message: String) -> Self {
        Self { code: None, message, transient: true, retry_after: None }
    }

    pub fn permanent(message: String) -> Self {
        Self { code: None, message, transient: false, retry_after: None }
    }

    /// A request's successful answer, or why there was none: no answer through the
    /// guard (refused: permanent; failed: transient), or the provider's error.
    pub async fn answered(
        sent: Result<reqwest::Response, crate::outbound::OutboundError>,
    ) -> Result<reqwest::Response, Self> {
        use crate::outbound::OutboundError;
        match sent {
            Ok(response) if response.status().is_success() => Ok(response),
            Ok(response) => Err(Self::of(response).await),
            Err(OutboundError::Refused(reason)) => Err(Self::permanent(reason)),
            Err(OutboundError::Failed(reason)) => Err(Self::transient(reason)),
        }
    }

    /// Reads a non-2xx answer: `{"error": {"message", "code", …}}` where the provider
    /// gives one.
    pub async fn of(response: reqwest::Response) -> Self {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(std::time::Duration::from_secs);
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let error = &body["error"];
        let code = match &error["code"] {
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::String(s) => Some(s.clone()),
            _ => None,
        };
        let message = error["message"].as_str().map_or_else(|| format!("HTTP {status}"), str::to_string);
        let throttled = code.as_deref().is_some_and(|c| THROTTLING_CODES.contains(&c));
        let transient = status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 || throttled;
        Self { code: code.or_else(|| Some(status.as_u16().to_string())), message, transient, retry_after }
    }
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{code}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}
