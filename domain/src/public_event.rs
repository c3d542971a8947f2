//! The catalogue of public event names (`message_created`, …): the names integrators
//! subscribe to, whatever the internal event that causes them.

use serde::{Deserialize, Serialize};

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
    ConversationTeamChanged,
    ConversationRead,
    MessageCreated,
    /// A message's delivery status moved (sent, delivered, read, failed).
    MessageUpdated,
    ContactCreated,
    ContactUpdated,
}

impl PublicEvent {
    pub const ALL: [PublicEvent; 10] = [
        PublicEvent::ConversationCreated,
        PublicEvent::ConversationStatusChanged,
        PublicEvent::ConversationUpdated,
        PublicEvent::ConversationAssigneeChanged,
        PublicEvent::ConversationTeamChanged,
        PublicEvent::ConversationRead,
        PublicEvent::MessageCreated,
        PublicEvent::MessageUpdated,
        PublicEvent::ContactCreated,
        PublicEvent::ContactUpdated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PublicEvent::ConversationCreated => "conversation_created",
            PublicEvent::ConversationStatusChanged => "conversation_status_changed",
            PublicEvent::ConversationUpdated => "conversation_updated",
            PublicEvent::ConversationAssigneeChanged => "conversation_assignee_changed",
            PublicEvent::ConversationTeamChanged => "conversation_team_changed",
            PublicEvent::ConversationRead => "conversation_read",
            PublicEvent::MessageCreated => "message_created",
            PublicEvent::MessageUpdated => "message_updated",
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
    /// The public name of an event of the log, from its stream and type alone (no
    /// payload to open or decode), if it has one.
    pub fn of(aggregate_type: &str, event_type: &str) -> Option<Self> {
        match (aggregate_type, event_type) {
            ("conversation", "ConversationStarted") => Some(PublicEvent::ConversationCreated),
            ("conversation", "MessageReceived" | "MessageSent") => Some(PublicEvent::MessageCreated),
            // The attempt itself changes nothing a client shows.
            ("conversation", "MessageAcceptedByProvider" | "MessageStatusUpdated" | "MessageDeliveryFailed") => {
                Some(PublicEvent::MessageUpdated)
            }
            ("conversation", "StatusChanged") => Some(PublicEvent::ConversationStatusChanged),
            ("conversation", "AssigneeChanged") => Some(PublicEvent::ConversationAssigneeChanged),
            ("conversation", "TeamChanged") => Some(PublicEvent::ConversationTeamChanged),
            ("conversation", "ConversationRead") => Some(PublicEvent::ConversationRead),
            ("conversation", "PriorityChanged" | "LabelsChanged" | "MuteChanged" | "CustomAttributesChanged") => {
                Some(PublicEvent::ConversationUpdated)
            }
            ("contact", "ContactCreated") => Some(PublicEvent::ContactCreated),
            ("contact", "ContactUpdated") => Some(PublicEvent::ContactUpdated),
            _ => None,
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

    #[test]
    fn every_conversation_and_contact_event_type_has_its_public_name_or_none_on_purpose() {
        use crate::activity::Activity;
        use crate::contact::ContactEvent;
        use crate::conversation::ConversationEvent as E;
        use crate::ids::{ContactId, MessageId};
        use crate::values::{Priority, Status};
        use cqrs_es::DomainEvent;
        let at = chrono::Utc::now();
        let activity = Activity::by(MessageId(uuid::Uuid::nil()), crate::activity::ActedBy::System);
        let contact = ContactId(uuid::Uuid::nil());
        let message = MessageId(uuid::Uuid::nil());
        let conversation = [
            (
                E::MessageReceived {
                    message_id: message,
                    contact_id: contact,
                    content: None,
                    waiting_since: None,
                    sent_at: None,
                    attachments: None,
                    source_id: None,
                    at,
                },
                Some(PublicEvent::MessageCreated),
            ),
            (
                E::StatusChanged { from: Status::Open, to: Status::Resolved, snoozed_until: None, activity: None, at },
                Some(PublicEvent::ConversationStatusChanged),
            ),
            (
                E::AssigneeChanged { from: None, to: None, activity: activity.clone(), at },
                Some(PublicEvent::ConversationAssigneeChanged),
            ),
            (
                E::TeamChanged { from: None, to: None, activity: activity.clone(), at },
                Some(PublicEvent::ConversationTeamChanged),
            ),
            (
                E::ConversationRead { reader: crate::ids::UserId(uuid::Uuid::nil()), messages_read: 1, at },
                Some(PublicEvent::ConversationRead),
            ),
            (
                E::PriorityChanged { from: Priority::None, to: Priority::High, activity: activity.clone(), at },
                Some(PublicEvent::ConversationUpdated),
            ),
            (E::MuteChanged { muted: true, activity, at }, Some(PublicEvent::ConversationUpdated)),
            (E::MessageDeliveryAttempted { message_id: message, attempt: 1, at }, None),
            (
                E::MessageAcceptedByProvider { message_id: message, provider_message_id: "wamid.1".into(), at },
                Some(PublicEvent::MessageUpdated),
            ),
            (
                E::MessageStatusUpdated { message_id: message, status: crate::values::MessageStatus::Read, at },
                Some(PublicEvent::MessageUpdated),
            ),
            (
                E::MessageDeliveryFailed { message_id: message, code: None, reason: "refused".into(), at },
                Some(PublicEvent::MessageUpdated),
            ),
            (
                E::CustomAttributesChanged { contact_id: contact, attributes: None, at },
                Some(PublicEvent::ConversationUpdated),
            ),
        ];
        for (event, public) in conversation {
            assert_eq!(PublicEvent::of("conversation", &event.event_type()), public, "{}", event.event_type());
        }
        let created = ContactEvent::ContactCreated {
            contact_id: contact,
            account_id: crate::ids::AccountId(uuid::Uuid::nil()),
            name: None,
            email: None,
            phone: None,
            source_id: None,
            at,
        };
        assert_eq!(PublicEvent::of("contact", &created.event_type()), Some(PublicEvent::ContactCreated));
        let erased = ContactEvent::ContactErased { reason: "x".into(), conversations: Vec::new(), at };
        assert_eq!(PublicEvent::of("contact", &erased.event_type()), None);
    }
}
