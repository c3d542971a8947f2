//! Files a contact's message carries (images, audio, video, documents, stickers), as
//! the log records them: sealed with the message, since a file's name and where it
//! is fetched from may identify the contact.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::FileType;
use crate::DomainError;

/// Most files one message may carry.
pub const MAX_ATTACHMENTS: usize = 10;

/// One file of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub attachment_id: Uuid,
    pub file_type: FileType,
    pub mime_type: Option<String>,
    pub file_name: Option<String>,
    /// Where the file is fetched from: the provider's media id (WhatsApp) or its URL
    /// (Messenger's CDN). It expires: the file is copied at once.
    pub source: String,
}

impl Attachment {
    /// The attachments of a message as the log holds them (opened), in order; an
    /// unreadable or erased list reads as none.
    pub fn list(value: Option<&serde_json::Value>) -> Vec<Attachment> {
        value.and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default()
    }

    /// The log's form of a message's attachments (`None` for none).
    pub fn record(attachments: &[Attachment]) -> Result<Option<serde_json::Value>, DomainError> {
        if attachments.len() > MAX_ATTACHMENTS {
            return Err(DomainError::invalid(format!("a message carries at most {MAX_ATTACHMENTS} files")));
        }
        if attachments.is_empty() {
            return Ok(None);
        }
        serde_json::to_value(attachments).map(Some).map_err(|e| DomainError::invalid(e.to_string()))
    }
}
