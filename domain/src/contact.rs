//! Contact: the customer on the other side of a conversation. Every identifying field
//! is personal data, sealed in the log with the contact's own key.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{AccountId, ContactId, ConversationId};
use crate::values::{Instant, Name};
use crate::{domain_event, DomainError, PersonalData};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Contact {
    id: Option<ContactId>,
    account_id: Option<AccountId>,
    /// The contact's id on its channel (opened from the log; gone once erased).
    source_id: Option<String>,
    erased: bool,
}

impl Contact {
    pub fn account_id(&self) -> Option<AccountId> {
        self.account_id
    }
    /// The id replies are addressed to on the contact's channel (`wa_id`, PSID).
    pub fn source_id(&self) -> Option<&str> {
        self.source_id.as_deref()
    }
}

/// What a channel tells us about a contact; every field optional, all personal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactDetails {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
}

#[derive(Debug)]
pub enum ContactCommand {
    Create {
        contact_id: ContactId,
        account_id: AccountId,
        details: ContactDetails,
        /// The contact's id on a provider channel, which replies are sent to.
        source_id: Option<String>,
        at: Instant,
    },
    /// Replaces name, e-mail and phone (`None` clears one).
    Update { details: ContactDetails, at: Instant },
    /// The right to be forgotten: the contact's key is shredded with this event.
    Erase { reason: Name, conversations: Vec<ConversationId>, at: Instant },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ContactEvent {
    /// Name, e-mail and phone are `None` when unknown or after erasure.
    ContactCreated {
        contact_id: ContactId,
        account_id: AccountId,
        name: Option<String>,
        email: Option<String>,
        phone: Option<String>,
        /// The contact's id on a provider channel (`wa_id`, PSID): sealed, since it
        /// identifies them; replies are sent to it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source_id: Option<String>,
        at: Instant,
    },
    /// The details as they are now (sealed like the first ones).
    ContactUpdated {
        contact_id: ContactId,
        name: Option<String>,
        email: Option<String>,
        phone: Option<String>,
        at: Instant,
    },
    /// Read models clear the contact's details and the text of these conversations.
    ContactErased { reason: String, conversations: Vec<ConversationId>, at: Instant },
}

domain_event!(ContactEvent, version = "1", [ContactCreated, ContactUpdated, ContactErased]);

impl PersonalData for ContactEvent {
    fn personal_fields(&self) -> &'static [&'static str] {
        match self {
            ContactEvent::ContactCreated { .. } => &["name", "email", "phone", "source_id"],
            ContactEvent::ContactUpdated { .. } => &["name", "email", "phone"],
            ContactEvent::ContactErased { .. } => &[],
        }
    }
    fn data_subject(&self) -> Option<Uuid> {
        match self {
            ContactEvent::ContactCreated { contact_id, .. } | ContactEvent::ContactUpdated { contact_id, .. } => {
                Some(contact_id.as_uuid())
            }
            ContactEvent::ContactErased { .. } => None,
        }
    }
}

impl Aggregate for Contact {
    const TYPE: &'static str = "contact";
    type Command = ContactCommand;
    type Event = ContactEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(&mut self, command: ContactCommand, _: &(), sink: &EventSink<Self>) -> Result<(), DomainError> {
        let event = match command {
            ContactCommand::Create { contact_id, account_id, details, source_id, at } => {
                if self.id.is_some() {
                    return Err(DomainError::AlreadyExists("contact"));
                }
                let ContactDetails { name, email, phone } = details;
                ContactEvent::ContactCreated { contact_id, account_id, name, email, phone, source_id, at }
            }
            ContactCommand::Update { details, at } => {
                let contact_id = self.id.ok_or(DomainError::NotFound("contact"))?;
                if self.erased {
                    return Err(DomainError::invalid("this contact has been erased"));
                }
                let ContactDetails { name, email, phone } = details;
                ContactEvent::ContactUpdated { contact_id, name, email, phone, at }
            }
            ContactCommand::Erase { reason, conversations, at } => {
                if self.id.is_none() {
                    return Err(DomainError::NotFound("contact"));
                }
                if self.erased {
                    return Err(DomainError::invalid("this contact has already been erased"));
                }
                ContactEvent::ContactErased { reason: reason.into_inner(), conversations, at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: ContactEvent) {
        match event {
            ContactEvent::ContactCreated { contact_id, account_id, source_id, .. } => {
                self.id = Some(contact_id);
                self.account_id = Some(account_id);
                self.source_id = source_id;
            }
            ContactEvent::ContactUpdated { .. } => {}
            ContactEvent::ContactErased { .. } => {
                self.erased = true;
                self.source_id = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;

    fn at() -> Instant {
        chrono::Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap()
    }

    #[test]
    fn a_contact_is_erased_once_with_its_reason() {
        let created = ContactEvent::ContactCreated {
            contact_id: ContactId(Uuid::from_u128(1)),
            account_id: AccountId(Uuid::from_u128(2)),
            name: None,
            email: None,
            phone: None,
            source_id: None,
            at: at(),
        };
        let erase = || ContactCommand::Erase {
            reason: Name::parse("reason", "customer request").unwrap(),
            conversations: vec![ConversationId(Uuid::from_u128(3))],
            at: at(),
        };
        let erased = ContactEvent::ContactErased {
            reason: "customer request".into(),
            conversations: vec![ConversationId(Uuid::from_u128(3))],
            at: at(),
        };
        TestFramework::<Contact>::with(())
            .given_no_previous_events()
            .when(erase())
            .then_expect_error(DomainError::NotFound("contact"));
        TestFramework::<Contact>::with(())
            .given(vec![created.clone()])
            .when(erase())
            .then_expect_events(vec![erased.clone()]);
        TestFramework::<Contact>::with(())
            .given(vec![created, erased])
            .when(erase())
            .then_expect_error(DomainError::invalid("this contact has already been erased"));
    }
}
