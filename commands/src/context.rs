//! Who issues a command, for which account, when, and as part of what.

use std::fmt;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The author of an event, as recorded in its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    User(Uuid),
    Contact(Uuid),
    System,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::User(id) => write!(f, "user:{id}"),
            Actor::Contact(id) => write!(f, "contact:{id}"),
            Actor::System => f.write_str("system"),
        }
    }
}

/// Everything about a command that is not its payload; copied into each event's
/// metadata. The account is the one the caller acts in, never one named by input.
#[derive(Debug, Clone)]
pub struct CommandContext {
    pub account_id: Uuid,
    pub actor: Actor,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub channel: Option<String>,
    pub at: DateTime<Utc>,
}

impl CommandContext {
    /// A context stamped with the current time and a fresh correlation id.
    pub fn now(account_id: Uuid, actor: Actor) -> Self {
        Self { account_id, actor, correlation_id: Uuid::now_v7(), causation_id: None, channel: None, at: Utc::now() }
    }
}
