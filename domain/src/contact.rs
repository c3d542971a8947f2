//! Contact: the customer on the other side of a conversation. Every identifying field
//! is personal data, sealed in the log with the contact's own key.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{AccountId, ContactId};
use crate::values::Instant;
use crate::{domain_event, DomainError, PersonalData};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Contact {
    id: Option<ContactId>,
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
    Create { contact_id: ContactId, account_id: AccountId, details: ContactDetails, at: Instant },
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
        at: Instant,
    },
}

domain_event!(ContactEvent, version = "1", [ContactCreated]);

impl PersonalData for ContactEvent {
    fn personal_fields(&self) -> &'static [&'static str] {
        &["name", "email", "phone"]
    }
    fn data_subject(&self) -> Option<Uuid> {
        let ContactEvent::ContactCreated { contact_id, .. } = self;
        Some(contact_id.as_uuid())
    }
}

impl Aggregate for Contact {
    const TYPE: &'static str = "contact";
    type Command = ContactCommand;
    type Event = ContactEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(&mut self, command: ContactCommand, _: &(), sink: &EventSink<Self>) -> Result<(), DomainError> {
        let ContactCommand::Create { contact_id, account_id, details, at } = command;
        if self.id.is_some() {
            return Err(DomainError::AlreadyExists("contact"));
        }
        let ContactDetails { name, email, phone } = details;
        sink.write(ContactEvent::ContactCreated { contact_id, account_id, name, email, phone, at }, self).await;
        Ok(())
    }

    fn apply(&mut self, event: ContactEvent) {
        let ContactEvent::ContactCreated { contact_id, .. } = event;
        self.id = Some(contact_id);
    }
}
