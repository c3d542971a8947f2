//! Inbox: one channel instance of an account, and the agents who work it.

use std::collections::HashSet;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, UserId};
use crate::values::{Channel, Instant, Name};
use crate::{domain_event, DomainError, PersonalData};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Inbox {
    account_id: Option<AccountId>,
    name: String,
    members: HashSet<UserId>,
}

impl Inbox {
    /// The account the inbox belongs to; `None` if it was never created.
    pub fn account_id(&self) -> Option<AccountId> {
        self.account_id
    }
    pub fn has_member(&self, user: UserId) -> bool {
        self.members.contains(&user)
    }
}

#[derive(Debug)]
pub enum InboxCommand {
    Create {
        account_id: AccountId,
        name: Name,
        channel: Channel,
        at: Instant,
    },
    AddMember {
        user_id: UserId,
        at: Instant,
    },
    RemoveMember {
        user_id: UserId,
        at: Instant,
    },
    /// The inbox's settings, as agents see them (its name, for now).
    Rename {
        name: Name,
        at: Instant,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InboxEvent {
    InboxCreated { account_id: AccountId, name: String, channel: Channel, at: Instant },
    InboxMemberAdded { account_id: AccountId, user_id: UserId, at: Instant },
    InboxMemberRemoved { account_id: AccountId, user_id: UserId, at: Instant },
    InboxRenamed { account_id: AccountId, name: String, at: Instant },
}

domain_event!(InboxEvent, version = "1", [InboxCreated, InboxMemberAdded, InboxMemberRemoved, InboxRenamed]);
impl PersonalData for InboxEvent {}

impl Aggregate for Inbox {
    const TYPE: &'static str = "inbox";
    type Command = InboxCommand;
    type Event = InboxEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(&mut self, command: InboxCommand, _: &(), sink: &EventSink<Self>) -> Result<(), DomainError> {
        if let InboxCommand::Create { account_id, name, channel, at } = command {
            if self.account_id.is_some() {
                return Err(DomainError::AlreadyExists("inbox"));
            }
            sink.write(InboxEvent::InboxCreated { account_id, name: name.into_inner(), channel, at }, self).await;
            return Ok(());
        }
        let account_id = self.account_id.ok_or(DomainError::NotFound("inbox"))?;
        match command {
            InboxCommand::AddMember { user_id, at } if !self.members.contains(&user_id) => {
                sink.write(InboxEvent::InboxMemberAdded { account_id, user_id, at }, self).await;
            }
            InboxCommand::RemoveMember { user_id, at } if self.members.contains(&user_id) => {
                sink.write(InboxEvent::InboxMemberRemoved { account_id, user_id, at }, self).await;
            }
            InboxCommand::Rename { name, at } if name.as_str() != self.name => {
                sink.write(InboxEvent::InboxRenamed { account_id, name: name.into_inner(), at }, self).await;
            }
            // Adding a member twice, removing a non-member or renaming to the same
            // name changes nothing.
            _ => {}
        }
        Ok(())
    }

    fn apply(&mut self, event: InboxEvent) {
        match event {
            InboxEvent::InboxCreated { account_id, name, .. } => {
                self.account_id = Some(account_id);
                self.name = name;
            }
            InboxEvent::InboxRenamed { name, .. } => self.name = name,
            InboxEvent::InboxMemberAdded { user_id, .. } => {
                self.members.insert(user_id);
            }
            InboxEvent::InboxMemberRemoved { user_id, .. } => {
                self.members.remove(&user_id);
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

    fn at() -> Instant {
        chrono::Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap()
    }
    const ACCOUNT: AccountId = AccountId(Uuid::from_u128(1));
    const AGENT: UserId = UserId(Uuid::from_u128(2));

    fn created() -> InboxEvent {
        InboxEvent::InboxCreated { account_id: ACCOUNT, name: "Support".into(), channel: Channel::Api, at: at() }
    }

    #[test]
    fn adding_a_member_is_recorded_once() {
        let added = InboxEvent::InboxMemberAdded { account_id: ACCOUNT, user_id: AGENT, at: at() };
        TestFramework::<Inbox>::with(())
            .given(vec![created()])
            .when(InboxCommand::AddMember { user_id: AGENT, at: at() })
            .then_expect_events(vec![added.clone()]);
        TestFramework::<Inbox>::with(())
            .given(vec![created(), added])
            .when(InboxCommand::AddMember { user_id: AGENT, at: at() })
            .then_expect_events(vec![]);
    }

    #[test]
    fn removing_a_non_member_changes_nothing_and_a_missing_inbox_is_not_found() {
        TestFramework::<Inbox>::with(())
            .given(vec![created()])
            .when(InboxCommand::RemoveMember { user_id: AGENT, at: at() })
            .then_expect_events(vec![]);
        TestFramework::<Inbox>::with(())
            .given_no_previous_events()
            .when(InboxCommand::AddMember { user_id: AGENT, at: at() })
            .then_expect_error(DomainError::NotFound("inbox"));
    }

    #[test]
    fn renaming_records_the_new_name_once() {
        let created =
            InboxEvent::InboxCreated { account_id: ACCOUNT, name: "Web".into(), channel: Channel::Api, at: at() };
        let rename = |name: &str| InboxCommand::Rename { name: Name::parse("inbox name", name).unwrap(), at: at() };
        TestFramework::<Inbox>::with(()).given(vec![created.clone()]).when(rename("Website")).then_expect_events(vec![
            InboxEvent::InboxRenamed { account_id: ACCOUNT, name: "Website".into(), at: at() },
        ]);
        TestFramework::<Inbox>::with(()).given(vec![created]).when(rename("Web")).then_expect_events(vec![]);
    }
}
