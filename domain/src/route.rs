//! Route: the stream of one contact's channel identity in one inbox.
//!
//! Every inbound message passes through it, so optimistic concurrency on this one
//! stream — not luck — makes concurrent first messages yield one contact and one
//! conversation, and makes a redelivered message (same channel source id) a no-op.
//! Its id is a keyed hash of inbox + channel contact id, never the id itself.

use std::collections::HashMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, ContactId, ConversationId, InboxId, MessageId};
use crate::values::Instant;
use crate::{domain_event, DomainError, PersonalData};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Route {
    contact_id: Option<ContactId>,
    conversation_id: Option<ConversationId>,
    /// Keyed hash of each accepted message's channel id → where it landed.
    seen: HashMap<String, Delivery>,
}

impl Route {
    pub fn conversation_id(&self) -> Option<ConversationId> {
        self.conversation_id
    }
}

/// Where an inbound message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub message_id: MessageId,
    pub conversation_id: ConversationId,
}

impl Route {
    pub fn contact_id(&self) -> Option<ContactId> {
        self.contact_id
    }
    /// Where the message with this source key landed, if it was accepted.
    pub fn delivery(&self, source_key: &str) -> Option<Delivery> {
        self.seen.get(source_key).copied()
    }
}

#[derive(Debug)]
pub enum RouteCommand {
    /// Accept an inbound message unless its source key was seen. The ids are used only
    /// if this delivery creates the contact, the conversation or the message.
    Deliver {
        account_id: AccountId,
        inbox_id: InboxId,
        source_key: String,
        new_contact_id: ContactId,
        new_conversation_id: ConversationId,
        new_message_id: MessageId,
        at: Instant,
    },
    /// The routed contact was erased.
    Forget { at: Instant },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RouteEvent {
    RouteOpened {
        account_id: AccountId,
        inbox_id: InboxId,
        contact_id: ContactId,
        at: Instant,
    },
    /// The contact was erased: the next message from this identity starts a new contact.
    ContactForgotten {
        at: Instant,
    },
    ConversationLinked {
        conversation_id: ConversationId,
        at: Instant,
    },
    InboundAccepted {
        source_key: String,
        message_id: MessageId,
        conversation_id: ConversationId,
        at: Instant,
    },
}

domain_event!(RouteEvent, version = "1", [RouteOpened, ConversationLinked, InboundAccepted, ContactForgotten]);
impl PersonalData for RouteEvent {}

impl Aggregate for Route {
    const TYPE: &'static str = "route";
    type Command = RouteCommand;
    type Event = RouteEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(&mut self, command: RouteCommand, _: &(), sink: &EventSink<Self>) -> Result<(), DomainError> {
        let (account_id, inbox_id, source_key, new_contact_id, new_conversation_id, new_message_id, at) = match command
        {
            RouteCommand::Deliver {
                account_id,
                inbox_id,
                source_key,
                new_contact_id,
                new_conversation_id,
                new_message_id,
                at,
            } => (account_id, inbox_id, source_key, new_contact_id, new_conversation_id, new_message_id, at),
            RouteCommand::Forget { at } => {
                if self.contact_id.is_some() {
                    sink.write(RouteEvent::ContactForgotten { at }, self).await;
                }
                return Ok(());
            }
        };
        if source_key.is_empty() {
            return Err(DomainError::invalid("source id must not be empty"));
        }
        if self.seen.contains_key(&source_key) {
            return Ok(());
        }
        if self.contact_id.is_none() {
            sink.write(RouteEvent::RouteOpened { account_id, inbox_id, contact_id: new_contact_id, at }, self).await;
        }
        let conversation_id = match self.conversation_id {
            Some(id) => id,
            None => {
                sink.write(RouteEvent::ConversationLinked { conversation_id: new_conversation_id, at }, self).await;
                new_conversation_id
            }
        };
        let accepted = RouteEvent::InboundAccepted { source_key, message_id: new_message_id, conversation_id, at };
        sink.write(accepted, self).await;
        Ok(())
    }

    fn apply(&mut self, event: RouteEvent) {
        match event {
            RouteEvent::RouteOpened { contact_id, .. } => self.contact_id = Some(contact_id),
            RouteEvent::ConversationLinked { conversation_id, .. } => self.conversation_id = Some(conversation_id),
            RouteEvent::ContactForgotten { .. } => {
                self.contact_id = None;
                self.conversation_id = None;
            }
            RouteEvent::InboundAccepted { source_key, message_id, conversation_id, .. } => {
                self.seen.insert(source_key, Delivery { message_id, conversation_id });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;
    use uuid::Uuid;

    const ACCOUNT: AccountId = AccountId(Uuid::from_u128(1));
    const INBOX: InboxId = InboxId(Uuid::from_u128(2));
    const CONTACT: ContactId = ContactId(Uuid::from_u128(3));
    const CONVERSATION: ConversationId = ConversationId(Uuid::from_u128(4));

    fn at() -> Instant {
        chrono::Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap()
    }

    fn deliver(key: &str, message: u128) -> RouteCommand {
        RouteCommand::Deliver {
            account_id: ACCOUNT,
            inbox_id: INBOX,
            source_key: key.into(),
            new_contact_id: CONTACT,
            new_conversation_id: CONVERSATION,
            new_message_id: MessageId(Uuid::from_u128(message)),
            at: at(),
        }
    }

    fn accepted(key: &str, message: u128) -> RouteEvent {
        RouteEvent::InboundAccepted {
            source_key: key.into(),
            message_id: MessageId(Uuid::from_u128(message)),
            conversation_id: CONVERSATION,
            at: at(),
        }
    }

    fn opened() -> Vec<RouteEvent> {
        vec![
            RouteEvent::RouteOpened { account_id: ACCOUNT, inbox_id: INBOX, contact_id: CONTACT, at: at() },
            RouteEvent::ConversationLinked { conversation_id: CONVERSATION, at: at() },
        ]
    }

    #[test]
    fn a_first_message_opens_the_route_with_a_contact_and_a_conversation() {
        let mut expected = opened();
        expected.push(accepted("a", 10));
        TestFramework::<Route>::with(()).given_no_previous_events().when(deliver("a", 10)).then_expect_events(expected);
    }

    #[test]
    fn a_later_message_lands_in_the_same_conversation() {
        let mut given = opened();
        given.push(accepted("a", 10));
        TestFramework::<Route>::with(())
            .given(given)
            .when(deliver("b", 11))
            .then_expect_events(vec![accepted("b", 11)]);
    }

    #[test]
    fn a_redelivered_message_is_a_no_op() {
        let mut given = opened();
        given.push(accepted("a", 10));
        TestFramework::<Route>::with(()).given(given).when(deliver("a", 12)).then_expect_events(vec![]);
    }

    #[test]
    fn an_empty_source_id_is_refused() {
        TestFramework::<Route>::with(())
            .given_no_previous_events()
            .when(deliver("", 10))
            .then_expect_error(DomainError::invalid("source id must not be empty"));
    }
}
