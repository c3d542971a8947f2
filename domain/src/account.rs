//! Account: the tenant, and who works in it with which role.

use std::collections::HashMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::ids::UserId;
use crate::values::{EmailAddress, Instant, Name, Role};
use crate::{domain_event, DomainError, PersonalData};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Account {
    created: bool,
    members: HashMap<UserId, Member>,
}

/// What the account knows of one of its people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub role: Role,
}

impl Account {
    pub fn exists(&self) -> bool {
        self.created
    }
    pub fn member(&self, user: UserId) -> Option<&Member> {
        self.members.get(&user)
    }
}

#[derive(Debug)]
pub enum AccountCommand {
    Create { name: Name, at: Instant },
    AddMember { user_id: UserId, name: Name, email: EmailAddress, role: Role, at: Instant },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccountEvent {
    AccountCreated { name: String, created_at: Instant },
    MemberAdded { user_id: UserId, name: String, email: String, role: Role, at: Instant },
}

domain_event!(AccountEvent, version = "1", [AccountCreated, MemberAdded]);
impl PersonalData for AccountEvent {}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(&mut self, command: AccountCommand, _: &(), sink: &EventSink<Self>) -> Result<(), DomainError> {
        match command {
            AccountCommand::Create { name, at } => {
                if self.created {
                    return Err(DomainError::AlreadyExists("account"));
                }
                sink.write(AccountEvent::AccountCreated { name: name.into_inner(), created_at: at }, self).await;
            }
            AccountCommand::AddMember { user_id, name, email, role, at } => {
                if !self.created {
                    return Err(DomainError::NotFound("account"));
                }
                if self.members.contains_key(&user_id) {
                    return Err(DomainError::AlreadyExists("account member"));
                }
                let event =
                    AccountEvent::MemberAdded { user_id, name: name.into_inner(), email: email.into_inner(), role, at };
                sink.write(event, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: AccountEvent) {
        match event {
            AccountEvent::AccountCreated { .. } => self.created = true,
            AccountEvent::MemberAdded { user_id, name, role, .. } => {
                self.members.insert(user_id, Member { name, role });
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

    fn created() -> AccountEvent {
        AccountEvent::AccountCreated { name: "Acme".into(), created_at: at() }
    }

    fn add(user: Uuid) -> AccountCommand {
        AccountCommand::AddMember {
            user_id: UserId(user),
            name: Name::parse("name", "Ana").unwrap(),
            email: EmailAddress::parse("ana@acme.test").unwrap(),
            role: Role::Administrator,
            at: at(),
        }
    }

    #[test]
    fn an_account_is_created_once() {
        TestFramework::<Account>::with(())
            .given_no_previous_events()
            .when(AccountCommand::Create { name: Name::parse("name", "Acme").unwrap(), at: at() })
            .then_expect_events(vec![created()]);
        TestFramework::<Account>::with(())
            .given(vec![created()])
            .when(AccountCommand::Create { name: Name::parse("name", "Acme").unwrap(), at: at() })
            .then_expect_error(DomainError::AlreadyExists("account"));
    }

    #[test]
    fn a_member_joins_once_with_a_role() {
        let user = Uuid::from_u128(7);
        TestFramework::<Account>::with(()).given(vec![created()]).when(add(user)).then_expect_events(vec![
            AccountEvent::MemberAdded {
                user_id: UserId(user),
                name: "Ana".into(),
                email: "ana@acme.test".into(),
                role: Role::Administrator,
                at: at(),
            },
        ]);
        TestFramework::<Account>::with(())
            .given_no_previous_events()
            .when(add(user))
            .then_expect_error(DomainError::NotFound("account"));
    }
}
