//! Outgoing webhooks: an administrator's subscription of a URL to named events of
//! their account. The URL and the signing secret are settings kept sealed outside the
//! log (a URL often carries a token); events record that they changed, and the URL's
//! host, never their value.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::ids::AccountId;
use crate::public_event::PublicEvent;
use crate::values::{Instant, Name};
use crate::{domain_event, DomainError, PersonalData};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Webhook {
    account_id: Option<AccountId>,
    active: bool,
    deleted: bool,
}

impl Webhook {
    /// The account of a webhook that exists (`None` once deleted).
    pub fn account_id(&self) -> Option<AccountId> {
        self.account_id.filter(|_| !self.deleted)
    }
    pub fn active(&self) -> bool {
        self.active && !self.deleted
    }
}

#[derive(Debug)]
pub enum WebhookCommand {
    Create {
        account_id: AccountId,
        name: Name,
        host: String,
        events: Vec<PublicEvent>,
        at: Instant,
    },
    /// `None` leaves a field as it is; `active: Some(true)` re-enables a disabled one.
    Update {
        name: Option<Name>,
        host: Option<String>,
        events: Option<Vec<PublicEvent>>,
        active: Option<bool>,
        at: Instant,
    },
    RotateSecret {
        at: Instant,
    },
    /// Deliveries keep failing, or the receiver said it is gone: no more are sent.
    Disable {
        reason: String,
        at: Instant,
    },
    Delete {
        at: Instant,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WebhookEvent {
    WebhookCreated {
        account_id: AccountId,
        name: String,
        host: String,
        events: Vec<PublicEvent>,
        at: Instant,
    },
    WebhookUpdated {
        account_id: AccountId,
        name: Option<String>,
        /// The URL changed (to one on this host).
        host: Option<String>,
        events: Option<Vec<PublicEvent>>,
        at: Instant,
    },
    WebhookSecretRotated {
        account_id: AccountId,
        at: Instant,
    },
    WebhookEnabled {
        account_id: AccountId,
        at: Instant,
    },
    WebhookDisabled {
        account_id: AccountId,
        reason: String,
        at: Instant,
    },
    WebhookDeleted {
        account_id: AccountId,
        at: Instant,
    },
}

domain_event!(
    WebhookEvent,
    version = "1",
    [WebhookCreated, WebhookUpdated, WebhookSecretRotated, WebhookEnabled, WebhookDisabled, WebhookDeleted]
);
impl PersonalData for WebhookEvent {}

impl Aggregate for Webhook {
    const TYPE: &'static str = "webhook";
    type Command = WebhookCommand;
    type Event = WebhookEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(&mut self, command: WebhookCommand, _: &(), sink: &EventSink<Self>) -> Result<(), DomainError> {
        use WebhookEvent as E;
        let existing = || self.account_id().ok_or(DomainError::NotFound("webhook"));
        let events = match command {
            WebhookCommand::Create { account_id, name, host, events, at } => {
                if self.account_id.is_some() {
                    return Err(DomainError::AlreadyExists("webhook"));
                }
                vec![E::WebhookCreated { account_id, name: name.into_inner(), host, events, at }]
            }
            WebhookCommand::Update { name, host, events: names, active, at } => {
                let account_id = existing()?;
                let mut events = Vec::new();
                if name.is_some() || host.is_some() || names.is_some() {
                    let name = name.map(Name::into_inner);
                    events.push(E::WebhookUpdated { account_id, name, host, events: names, at });
                }
                match active {
                    Some(true) if !self.active => events.push(E::WebhookEnabled { account_id, at }),
                    Some(false) if self.active => {
                        let reason = "disabled by an administrator".to_string();
                        events.push(E::WebhookDisabled { account_id, reason, at });
                    }
                    _ => {}
                }
                events
            }
            WebhookCommand::RotateSecret { at } => vec![E::WebhookSecretRotated { account_id: existing()?, at }],
            WebhookCommand::Disable { reason, at } => {
                let account_id = existing()?;
                if self.active {
                    vec![E::WebhookDisabled { account_id, reason, at }]
                } else {
                    Vec::new()
                }
            }
            WebhookCommand::Delete { at } => vec![E::WebhookDeleted { account_id: existing()?, at }],
        };
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: WebhookEvent) {
        match event {
            WebhookEvent::WebhookCreated { account_id, .. } => {
                self.account_id = Some(account_id);
                self.active = true;
            }
            WebhookEvent::WebhookEnabled { .. } => self.active = true,
            WebhookEvent::WebhookDisabled { .. } => self.active = false,
            WebhookEvent::WebhookDeleted { .. } => self.deleted = true,
            WebhookEvent::WebhookUpdated { .. } | WebhookEvent::WebhookSecretRotated { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn created(at: Instant) -> WebhookEvent {
        WebhookEvent::WebhookCreated {
            account_id: AccountId(uuid::Uuid::from_u128(1)),
            name: "CRM".into(),
            host: "crm.example.com".into(),
            events: vec![PublicEvent::MessageCreated],
            at,
        }
    }

    #[test]
    fn a_disabled_webhook_is_disabled_once_and_an_administrator_enables_it_again() {
        let at = chrono::Utc::now();
        let account_id = AccountId(uuid::Uuid::from_u128(1));
        let disabled = WebhookEvent::WebhookDisabled { account_id, reason: "410 Gone".into(), at };
        TestFramework::<Webhook>::with(())
            .given(vec![created(at)])
            .when(WebhookCommand::Disable { reason: "410 Gone".into(), at })
            .then_expect_events(vec![disabled.clone()]);
        TestFramework::<Webhook>::with(())
            .given(vec![created(at), disabled.clone()])
            .when(WebhookCommand::Disable { reason: "again".into(), at })
            .then_expect_events(vec![]);
        TestFramework::<Webhook>::with(())
            .given(vec![created(at), disabled])
            .when(WebhookCommand::Update { name: None, host: None, events: None, active: Some(true), at })
            .then_expect_events(vec![WebhookEvent::WebhookEnabled { account_id, at }]);
    }

    #[test]
    fn a_deleted_webhook_takes_no_command() {
        let at = chrono::Utc::now();
        let deleted = WebhookEvent::WebhookDeleted { account_id: AccountId(uuid::Uuid::from_u128(1)), at };
        TestFramework::<Webhook>::with(())
            .given(vec![created(at), deleted])
            .when(WebhookCommand::RotateSecret { at })
            .then_expect_error(DomainError::NotFound("webhook"));
    }
}
