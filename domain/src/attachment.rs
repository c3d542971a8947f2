//! Files a message carries (images, audio, video, documents, stickers: a contact's,
//! or an agent's uploads), as the log records them: sealed with the message, since a
//! file's name and where it is fetched from may identify the contact.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::FileType;
use crate::DomainError;

/// Most files one message may carry.
pub const MAX_ATTACHMENTS: usize = 10;
/// Longest file name kept.
const MAX_FILE_NAME_CHARS: usize = 255;
/// Longest MIME type kept (RFC 6838 allows 127 characters on each side).
const MAX_MIME_TYPE_CHARS: usize = 255;

/// One file of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub attachment_id: Uuid,
    pub file_type: FileType,
    pub mime_type: Option<String>,
    pub file_name: Option<String>,
    /// Where the file is fetched from: the provider's media id (WhatsApp) or its URL
    /// (Messenger's CDN), which expire (the file is copied at once); `upload` for an
    /// agent's file, kept when uploaded.
    pub source: String,
}

impl Attachment {
    /// The attachments of a message as the log holds them (opened), in order; an
    /// unreadable or erased list reads as none.
    pub fn list(value: Option<&serde_json::Value>) -> Vec<Attachment> {
        value.and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default()
    }

    /// A file's name as a client gives it: its last path segment, without control
    /// characters, at most 255 characters.
    pub fn file_name(given: &str) -> Result<String, DomainError> {
        let name = given.rsplit(['/', '\\']).next().unwrap_or_default().trim();
        if name.is_empty() || name == "." || name == ".." {
            return Err(DomainError::invalid("a file needs a name"));
        }
        if name.chars().any(char::is_control) {
            return Err(DomainError::invalid("a file name contains control characters"));
        }
        if name.chars().count() > MAX_FILE_NAME_CHARS {
            return Err(DomainError::invalid(format!("a file name has at most {MAX_FILE_NAME_CHARS} characters")));
        }
        Ok(name.to_string())
    }

    /// A MIME type as a client gives it (`type/subtype`, lower-cased, parameters
    /// dropped); anything else, or none, is `application/octet-stream`.
    pub fn mime_type(given: Option<&str>) -> String {
        let essence = given.and_then(|t| t.split(';').next()).unwrap_or_default().trim().to_ascii_lowercase();
        let token = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c));
        match essence.split_once('/') {
            Some((kind, sub)) if token(kind) && token(sub) && essence.len() <= MAX_MIME_TYPE_CHARS => essence,
            _ => "application/octet-stream".to_string(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_name_is_its_last_segment_and_printable() {
        assert_eq!(Attachment::file_name("C:\\Users\\ana\\invoice.pdf").unwrap(), "invoice.pdf");
        assert_eq!(Attachment::file_name("../../etc/passwd").unwrap(), "passwd");
        assert_eq!(Attachment::file_name(" photo 1.jpg ").unwrap(), "photo 1.jpg");
        for bad in ["", "dir/", "..", "a\u{0}b", "a\nb", &"x".repeat(256)] {
            assert!(Attachment::file_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_mime_type_is_its_essence_or_octet_stream() {
        assert_eq!(Attachment::mime_type(Some("Image/PNG")), "image/png");
        assert_eq!(Attachment::mime_type(Some("text/plain; charset=utf-8")), "text/plain");
        for odd in [None, Some(""), Some("image"), Some("image/"), Some("text/html\r\nX: y"), Some("a b/c")] {
            assert_eq!(Attachment::mime_type(odd), "application/octet-stream", "{odd:?}");
        }
    }
}
