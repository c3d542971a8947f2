//! Provider channels (WhatsApp Cloud API, Messenger Platform): their settings outside
//! the log, the signed webhooks they deliver, and the replies sent through them.
//!
//! Each provider's wire format is read into [`Notice`]s, the same for every provider,
//! so what happens next (a message received, a status applied) is written once.

use chrono::{DateTime, Utc};

pub mod intake;
pub mod messenger;
pub mod settings;
pub mod signature;
pub mod whatsapp;

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
        status: DeliveryStatus,
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
    /// The text an agent reads (the body, a caption, a button's title, …).
    pub text: String,
    /// The provider's id of the message this one answers or reacts to.
    pub reply_to: Option<String>,
}

/// Where an outgoing message stands at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeliveryStatus {
    Sent,
    Delivered,
    Read,
}

/// A provider's callback about one of our messages.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderStatus {
    pub routing_id: String,
    pub provider_message_id: String,
    /// `Err((code, title))`: the provider failed it (terminal).
    pub status: Result<DeliveryStatus, (String, String)>,
    pub at: DateTime<Utc>,
}

/// Why a webhook body was refused (400): not the provider's envelope at all.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);
