//! The catalogue of public event names (`message_created`, …): the names integrators
//! subscribe to, whatever the internal event that causes them.

use serde::{Deserialize, Serialize};

use crate::contact::ContactEvent;
use crate::conversation::ConversationEvent;
use crate::DomainError;

/// The events as the public API names them: what webhooks subscribe to, one catalogue
/// that later capabilities extend and the real-time subscriptions mirror one to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublicEvent {
    ConversationCreated,
    ConversationStatusChanged,
    ConversationUpdated,
    ConversationAssigneeChanged,
    MessageCreated,
    ContactCreated,
    ContactUpdated,
}

impl PublicEvent {
    pub const ALL: [PublicEvent; 7] = [
        PublicEvent::ConversationCreated,
        PublicEvent::ConversationStatusChanged,
        PublicEvent::ConversationUpdated,
        PublicEvent::ConversationAssigneeChanged,
        PublicEvent::MessageCreated,
        PublicEvent::ContactCreated,
        PublicEvent::ContactUpdated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PublicEvent::ConversationCreated => "conversation_created",
            PublicEvent::ConversationStatusChanged => "conversation_status_changed",
            PublicEvent::ConversationUpdated => "conversation_updated",
            PublicEvent::ConversationAssigneeChanged => "conversation_assignee_changed",
            PublicEvent::MessageCreated => "message_created",
            PublicEvent::ContactCreated => "contact_created",
            PublicEvent::ContactUpdated => "contact_updated",
        }
    }

    pub fn parse(name: &str) -> Result<Self, DomainError> {
        Self::ALL.into_iter().find(|e| e.as_str() == name).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|e| e.as_str()).collect();
            DomainError::invalid(format!("unknown event name '{name}'; known: {}", known.join(", ")))
        })
    }

    /// A non-empty set of names, each once, in catalogue order.
    pub fn parse_set(names: &[String]) -> Result<Vec<Self>, DomainError> {
        let mut events = names.iter().map(|n| Self::parse(n)).collect::<Result<Vec<_>, _>>()?;
        events.sort_unstable();
        events.dedup();
        if events.is_empty() {
            return Err(DomainError::invalid("at least one event name is needed"));
        }
        Ok(events)
    }
}

impl PublicEvent {
    /// The public name of a conversation's event, if it has one.
    pub fn of_conversation(event: &ConversationEvent) -> Option<Self> {
        use ConversationEvent as E;
        Some(match event {
            E::ConversationStarted { .. } => PublicEvent::ConversationCreated,
            E::MessageReceived { .. } | E::MessageSent { .. } => PublicEvent::MessageCreated,
            E::StatusChanged { .. } => PublicEvent::ConversationStatusChanged,
            E::AssigneeChanged { .. } => PublicEvent::ConversationAssigneeChanged,
            E::TeamChanged { .. }
            | E::PriorityChanged { .. }
            | E::LabelsChanged { .. }
            | E::MuteChanged { .. }
            | E::CustomAttributesChanged { .. } => PublicEvent::ConversationUpdated,
        })
    }

    /// The public name of a contact's event, if it has one (an erasure has none).
    pub fn of_contact(event: &ContactEvent) -> Option<Self> {
        match event {
            ContactEvent::ContactCreated { .. } => Some(PublicEvent::ContactCreated),
            ContactEvent::ContactUpdated { .. } => Some(PublicEvent::ContactUpdated),
            ContactEvent::ContactErased { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_unknown_ones_are_refused() {
        for event in PublicEvent::ALL {
            assert_eq!(PublicEvent::parse(event.as_str()).unwrap(), event);
        }
        assert!(PublicEvent::parse("message_deleted").is_err());
        let set =
            PublicEvent::parse_set(&["message_created".into(), "contact_created".into(), "message_created".into()]);
        assert_eq!(set.unwrap(), vec![PublicEvent::MessageCreated, PublicEvent::ContactCreated]);
        assert!(PublicEvent::parse_set(&[]).is_err());
    }
}
