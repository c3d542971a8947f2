//! Value types that parse: an invalid value cannot be built.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::DomainError;

/// Longest message the product accepts, in characters (as the reference does).
pub const MAX_MESSAGE_CHARS: usize = 150_000;
/// Longest name of an inbox, team, label, contact or agent.
pub const MAX_NAME_CHARS: usize = 255;

/// A closed set of values stored and exchanged as lower-case strings.
macro_rules! str_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = DomainError;
            fn from_str(text: &str) -> Result<Self, DomainError> {
                match text {
                    $($text => Ok(Self::$variant),)+
                    other => Err(DomainError::invalid(format!("'{other}' is not a valid {}", stringify!($name)))),
                }
            }
        }
    };
}

str_enum!(
    /// A role within one account.
    Role { Administrator = "administrator", Agent = "agent" }
);

str_enum!(
    /// What a custom role lets an agent do (an agent without one may do all but reports).
    Permission {
        /// Every conversation of the agent's inboxes.
        ConversationManage = "conversation_manage",
        /// Unassigned conversations of the agent's inboxes, and their own.
        ConversationUnassignedManage = "conversation_unassigned_manage",
        /// Only conversations assigned to the agent.
        ConversationParticipatingManage = "conversation_participating_manage",
        ContactManage = "contact_manage",
        ReportManage = "report_manage",
    }
);

str_enum!(
    /// The kind of channel an inbox receives from.
    Channel { Api = "api", Webchat = "webchat", Whatsapp = "whatsapp", Messenger = "messenger", Email = "email" }
);

str_enum!(
    /// A conversation's status.
    #[derive(Default)]
    Status {
        #[default]
        Open = "open",
        Pending = "pending",
        Snoozed = "snoozed",
        Resolved = "resolved",
    }
);

str_enum!(
    /// Where one of our messages stands at the provider that delivers it.
    MessageStatus {
        /// Not yet accepted by the provider.
        Pending = "pending",
        Sent = "sent",
        Delivered = "delivered",
        Read = "read",
        /// Terminal: the provider refused or gave up.
        Failed = "failed",
    }
);

impl MessageStatus {
    /// Whether a callback saying `next` moves a message that is at `self`: statuses
    /// only move forward (sent < delivered < read), and failed is terminal.
    pub fn moves_to(self, next: MessageStatus) -> bool {
        let rank = |s: MessageStatus| match s {
            Self::Pending => 0,
            Self::Sent => 1,
            Self::Delivered => 2,
            Self::Read => 3,
            Self::Failed => 4,
        };
        match (self, next) {
            (Self::Failed, _) => false,
            // A read message was delivered: a failure after it is a late, stale callback.
            (Self::Read, Self::Failed) => false,
            (_, Self::Failed) => true,
            _ => rank(next) > rank(self),
        }
    }
}

str_enum!(
    /// A conversation's priority, from none to urgent.
    #[derive(Default, PartialOrd, Ord)]
    Priority {
        #[default]
        None = "none",
        Low = "low",
        Medium = "medium",
        High = "high",
        Urgent = "urgent",
    }
);

impl Priority {
    /// Sort key: none = 0 … urgent = 4.
    pub fn rank(self) -> i16 {
        self as i16
    }
}

str_enum!(
    /// An agent's availability, chosen or effective.
    #[derive(Default)]
    AvailabilityStatus {
        Online = "online",
        Busy = "busy",
        #[default]
        Offline = "offline",
    }
);

str_enum!(
    /// What kind of file an attachment is.
    FileType { Image = "image", Audio = "audio", Video = "video", File = "file", Sticker = "sticker" }
);

impl FileType {
    /// What a file of this MIME type is shown and sent as (anything else is a file).
    pub fn of_mime(mime_type: &str) -> Self {
        match mime_type.split('/').next().unwrap_or_default().to_ascii_lowercase().as_str() {
            "image" => Self::Image,
            "audio" => Self::Audio,
            "video" => Self::Video,
            _ => Self::File,
        }
    }
}

str_enum!(
    /// Message direction, as agents see it in the timeline.
    MessageType { Incoming = "incoming", Outgoing = "outgoing", Activity = "activity", Template = "template" }
);

/// Message text: not blank, at most [`MAX_MESSAGE_CHARS`] characters (or empty, for
/// a message that is its files: [`MessageContent::caption`], the default).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageContent(String);

/// Refuses text PostgreSQL cannot store (`text` and `jsonb` hold no NUL): accepted
/// into the log sealed, it would stop every read model that has to store it.
pub fn storable(what: &str, text: &str) -> Result<(), DomainError> {
    if text.contains('\0') {
        return Err(DomainError::invalid(format!("{what} must not contain NUL characters (U+0000)")));
    }
    Ok(())
}

impl MessageContent {
    pub fn parse(text: impl Into<String>) -> Result<Self, DomainError> {
        let text = text.into();
        storable("message content", &text)?;
        if text.trim().is_empty() {
            return Err(DomainError::invalid("message content must not be empty"));
        }
        let chars = text.chars().count();
        if chars > MAX_MESSAGE_CHARS {
            return Err(DomainError::invalid(format!(
                "message content has {chars} characters; at most {MAX_MESSAGE_CHARS} are allowed"
            )));
        }
        Ok(Self(text))
    }
    /// A caption of files: may be empty (the message is its attachments), else as
    /// [`MessageContent::parse`].
    pub fn caption(text: impl Into<String>) -> Result<Self, DomainError> {
        let text = text.into();
        if text.trim().is_empty() {
            return Ok(Self(String::new()));
        }
        Self::parse(text)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn into_inner(self) -> String {
        self.0
    }
}

/// Most attributes one conversation may carry, and the largest serialised set.
const MAX_ATTRIBUTES: usize = 50;
const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;
/// Longest attribute name.
const MAX_ATTRIBUTE_NAME_CHARS: usize = 64;

/// Custom attributes: a flat JSON object of at most [`MAX_ATTRIBUTES`] keys (1–64
/// printable characters) whose values are strings, numbers, booleans or null.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomAttributes(serde_json::Map<String, serde_json::Value>);

impl CustomAttributes {
    pub fn parse(value: serde_json::Value) -> Result<Self, DomainError> {
        let serde_json::Value::Object(map) = value else {
            return Err(DomainError::invalid("custom attributes must be a JSON object"));
        };
        if map.len() > MAX_ATTRIBUTES || serde_json::to_vec(&map).map_or(true, |b| b.len() > MAX_ATTRIBUTES_BYTES) {
            return Err(DomainError::invalid(format!(
                "at most {MAX_ATTRIBUTES} custom attributes and {MAX_ATTRIBUTES_BYTES} bytes are allowed"
            )));
        }
        for (key, value) in &map {
            let chars = key.chars().count();
            if chars == 0 || chars > MAX_ATTRIBUTE_NAME_CHARS || key.chars().any(char::is_control) {
                return Err(DomainError::invalid(format!(
                    "custom attribute name '{key}' must be 1-{MAX_ATTRIBUTE_NAME_CHARS} printable characters"
                )));
            }
            if let Some(text) = value.as_str() {
                storable(&format!("custom attribute '{key}'"), text)?;
            }
            if value.is_object() || value.is_array() {
                return Err(DomainError::invalid(format!(
                    "custom attribute '{key}' must be a string, number, boolean or null"
                )));
            }
        }
        Ok(Self(map))
    }

    pub fn into_inner(self) -> serde_json::Map<String, serde_json::Value> {
        self.0
    }
}

/// A display name: trimmed, not blank, at most [`MAX_NAME_CHARS`] characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    pub fn parse(what: &str, text: &str) -> Result<Self, DomainError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(DomainError::invalid(format!("{what} must not be empty")));
        }
        if text.chars().count() > MAX_NAME_CHARS {
            return Err(DomainError::invalid(format!("{what} is longer than {MAX_NAME_CHARS} characters")));
        }
        if text.chars().any(char::is_control) {
            return Err(DomainError::invalid(format!("{what} contains control characters")));
        }
        Ok(Self(text.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn into_inner(self) -> String {
        self.0
    }
}

/// An e-mail address, lower-cased; checked for shape, not deliverability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        let text = text.trim().to_lowercase();
        let valid = text.len() <= 254
            && !text.chars().any(|c| c.is_whitespace() || c.is_control())
            && matches!(text.split_once('@'), Some((local, domain))
                if !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
                    && !domain.ends_with('.') && !domain.contains('@'));
        if valid {
            Ok(Self(text))
        } else {
            Err(DomainError::invalid(format!("'{text}' is not a valid e-mail address")))
        }
    }
    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A phone number as people write it: digits (4 to 20) with an optional leading `+`
/// and the usual separators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        let phone = text.trim();
        let digits = phone.chars().filter(char::is_ascii_digit).count();
        let allowed =
            phone.chars().enumerate().all(|(i, c)| c.is_ascii_digit() || " -().".contains(c) || (c == '+' && i == 0));
        if allowed && (4..=20).contains(&digits) {
            Ok(Self(phone.to_string()))
        } else {
            Err(DomainError::invalid(format!("'{phone}' is not a valid phone number")))
        }
    }
    pub fn into_inner(self) -> String {
        self.0
    }
}

/// Longest id a channel may give a contact or a message.
pub const MAX_SOURCE_ID_CHARS: usize = 512;

/// An id a channel gives a contact or a message (`what` names which, for the error):
/// 1–512 printable characters.
pub fn check_source_id(what: &str, id: &str) -> Result<(), DomainError> {
    if id.trim().is_empty() || id.chars().count() > MAX_SOURCE_ID_CHARS || id.chars().any(char::is_control) {
        return Err(DomainError::invalid(format!("{what} must be 1-{MAX_SOURCE_ID_CHARS} printable characters")));
    }
    Ok(())
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The instant a command happens at, given by the caller's clock.
pub type Instant = DateTime<Utc>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_and_source_ids_are_checked_where_they_enter() {
        assert_eq!(PhoneNumber::parse(" +55 (11) 99999-0000 ").unwrap().into_inner(), "+55 (11) 99999-0000");
        assert!(PhoneNumber::parse("123").is_err(), "too few digits");
        assert!(PhoneNumber::parse("55+11").is_err(), "a + only first");
        assert!(PhoneNumber::parse("call me").is_err());
        assert!(check_source_id("sourceId", "wamid.HBgL").is_ok());
        assert!(check_source_id("sourceId", " ").is_err());
        assert!(check_source_id("sourceId", &"x".repeat(MAX_SOURCE_ID_CHARS + 1)).is_err());
        assert!(check_source_id("sourceId", "a\u{7}b").is_err());
    }

    #[test]
    fn custom_attributes_are_a_flat_bounded_object_of_storable_scalars() {
        let parsed = CustomAttributes::parse(serde_json::json!({ "plan": "gold", "seats": 3, "vip": true, "x": null }));
        assert_eq!(parsed.unwrap().into_inner().len(), 4);
        for refused in [
            serde_json::json!(["plan"]),
            serde_json::json!({ "nested": { "a": 1 } }),
            serde_json::json!({ "list": [1] }),
            serde_json::json!({ "": 1 }),
            serde_json::json!({ "a\u{1}": 1 }),
            serde_json::json!({ "nul": "a\u{0}b" }),
        ] {
            assert!(CustomAttributes::parse(refused.clone()).is_err(), "{refused} was accepted");
        }
        let many: serde_json::Map<_, _> =
            (0..=MAX_ATTRIBUTES).map(|n| (format!("k{n}"), serde_json::json!(n))).collect();
        assert!(CustomAttributes::parse(serde_json::Value::Object(many)).is_err());
        let big = serde_json::json!({ "text": "x".repeat(MAX_ATTRIBUTES_BYTES) });
        assert!(CustomAttributes::parse(big).is_err());
    }
}
