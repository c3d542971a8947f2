//! Who caused an event: the one place an author is printed into an event's metadata
//! and a timeline line, and parsed back.
//!
//! The text form is part of the log (`user:<id>`, `contact:<id>`, `automation:<rule>`,
//! `channel:<name>`, `system:<policy>`, `system`): it never changes meaning.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::DomainError;

/// Longest name of a channel or a policy.
const MAX_NAME_CHARS: usize = 40;

/// The author of an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Actor {
    /// An agent or administrator, by user id.
    User(Uuid),
    /// A customer, by contact id.
    Contact(Uuid),
    /// An automation rule, by rule id.
    Automation(Uuid),
    /// A provider reporting on its own (a delivery status, an echo), by channel name.
    Channel(String),
    /// A policy of this service acting on events, by policy name.
    Policy(String),
    /// The service itself, for no one in particular (bootstrap, migrations).
    System,
}

impl Actor {
    /// A channel as author; its name is a lowercase identifier (`whatsapp`).
    pub fn channel(name: &str) -> Result<Self, DomainError> {
        Ok(Actor::Channel(checked_name("channel", name)?))
    }

    /// A policy as author; its name is a lowercase identifier (`outgoing_webhooks`).
    pub fn policy(name: &str) -> Result<Self, DomainError> {
        Ok(Actor::Policy(checked_name("policy", name)?))
    }

    /// The user, when the author is one.
    pub fn user(&self) -> Option<Uuid> {
        match self {
            Actor::User(id) => Some(*id),
            _ => None,
        }
    }
}

fn checked_name(what: &str, name: &str) -> Result<String, DomainError> {
    let fits = !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !fits {
        return Err(DomainError::invalid(format!(
            "a {what} name is 1-{MAX_NAME_CHARS} lowercase letters, digits, '_' or '-'"
        )));
    }
    Ok(name.to_string())
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::User(id) => write!(f, "user:{id}"),
            Actor::Contact(id) => write!(f, "contact:{id}"),
            Actor::Automation(id) => write!(f, "automation:{id}"),
            Actor::Channel(name) => write!(f, "channel:{name}"),
            Actor::Policy(name) => write!(f, "system:{name}"),
            Actor::System => f.write_str("system"),
        }
    }
}

impl FromStr for Actor {
    type Err = DomainError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "system" {
            return Ok(Actor::System);
        }
        let unknown = || DomainError::invalid(format!("'{text}' is not an actor"));
        let (kind, rest) = text.split_once(':').ok_or_else(unknown)?;
        let id = || Uuid::parse_str(rest).map_err(|_| unknown());
        match kind {
            "user" => Ok(Actor::User(id()?)),
            "contact" => Ok(Actor::Contact(id()?)),
            "automation" => Ok(Actor::Automation(id()?)),
            "channel" => Actor::channel(rest),
            "system" => Actor::policy(rest),
            _ => Err(unknown()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_author_prints_as_the_log_records_it_and_parses_back() {
        let id = Uuid::from_u128(7);
        let authors = [
            (Actor::User(id), format!("user:{id}")),
            (Actor::Contact(id), format!("contact:{id}")),
            (Actor::Automation(id), format!("automation:{id}")),
            (Actor::channel("whatsapp").unwrap(), "channel:whatsapp".to_string()),
            (Actor::policy("outgoing_webhooks").unwrap(), "system:outgoing_webhooks".to_string()),
            (Actor::System, "system".to_string()),
        ];
        for (actor, text) in authors {
            assert_eq!(actor.to_string(), text);
            assert_eq!(text.parse::<Actor>().unwrap(), actor);
        }
    }

    #[test]
    fn text_that_names_no_author_is_refused() {
        for text in ["", "user:", "user:forged", "robot:1", "channel:WhatsApp", "system:", "system:a b", "contact"] {
            assert!(text.parse::<Actor>().is_err(), "{text:?} parsed");
        }
        assert!(Actor::policy(&"p".repeat(MAX_NAME_CHARS + 1)).is_err());
    }
}
