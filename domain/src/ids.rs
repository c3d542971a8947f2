//! Typed identifiers: a conversation id cannot be passed where an inbox id is wanted.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($($name:ident),+ $(,)?) => {$(
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    )+};
}

id_type!(AccountId, UserId, InboxId, ContactId, ConversationId, MessageId, TeamId, LabelId, TokenId, RoleId);

impl MessageId {
    /// A reply's id from the client's key for it (`clientMessageId`): the same key
    /// from the same author in the same conversation names the same message, so a
    /// retried reply is recognized. 1–100 printable characters.
    pub fn keyed(conversation: ConversationId, author: UserId, key: &str) -> Result<Self, crate::DomainError> {
        if key.is_empty() || key.chars().count() > 100 || key.chars().any(char::is_control) {
            return Err(crate::DomainError::invalid("clientMessageId must be 1-100 printable characters"));
        }
        let name = format!("{}:{key}", author.0);
        Ok(MessageId(Uuid::new_v5(&conversation.0, name.as_bytes())))
    }
}
