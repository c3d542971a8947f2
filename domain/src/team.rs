//! Team: a group of agents conversations can be handed to.

use std::collections::HashSet;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, UserId};
use crate::values::{Instant, Name};
use crate::{domain_event, DomainError, PersonalData};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Team {
    account_id: Option<AccountId>,
    name: String,
    members: HashSet<UserId>,
    deleted: bool,
}

impl Team {
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The account of a team that exists (`None` once deleted).
    pub fn account_id(&self) -> Option<AccountId> {
        self.account_id.filter(|_| !self.deleted)
    }
}

#[derive(Debug)]
pub enum TeamCommand {
    Create {
        account_id: AccountId,
        name: Name,
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
    /// Conversations handed to it keep its id; their lines then read "a former team".
    Delete {
        at: Instant,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TeamEvent {
    TeamCreated { account_id: AccountId, name: String, at: Instant },
    TeamMemberAdded { account_id: AccountId, user_id: UserId, at: Instant },
    TeamMemberRemoved { account_id: AccountId, user_id: UserId, at: Instant },
    TeamDeleted { account_id: AccountId, at: Instant },
}

domain_event!(TeamEvent, version = "1", [TeamCreated, TeamMemberAdded, TeamMemberRemoved, TeamDeleted]);
impl PersonalData for TeamEvent {}

impl Aggregate for Team {
    const TYPE: &'static str = "team";
    type Command = TeamCommand;
    type Event = TeamEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(&mut self, command: TeamCommand, _: &(), sink: &EventSink<Self>) -> Result<(), DomainError> {
        match command {
            TeamCommand::Create { account_id, name, at } => {
                if self.account_id.is_some() {
                    return Err(DomainError::AlreadyExists("team"));
                }
                sink.write(TeamEvent::TeamCreated { account_id, name: name.into_inner(), at }, self).await;
            }
            TeamCommand::AddMember { user_id, at } => {
                let account_id = self.account_id().ok_or(DomainError::NotFound("team"))?;
                if !self.members.contains(&user_id) {
                    sink.write(TeamEvent::TeamMemberAdded { account_id, user_id, at }, self).await;
                }
            }
            TeamCommand::RemoveMember { user_id, at } => {
                let account_id = self.account_id().ok_or(DomainError::NotFound("team"))?;
                if !self.members.contains(&user_id) {
                    return Err(DomainError::NotFound("team member"));
                }
                sink.write(TeamEvent::TeamMemberRemoved { account_id, user_id, at }, self).await;
            }
            TeamCommand::Delete { at } => {
                let account_id = self.account_id().ok_or(DomainError::NotFound("team"))?;
                sink.write(TeamEvent::TeamDeleted { account_id, at }, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: TeamEvent) {
        match event {
            TeamEvent::TeamCreated { account_id, name, .. } => {
                self.account_id = Some(account_id);
                self.name = name;
            }
            TeamEvent::TeamMemberAdded { user_id, .. } => {
                self.members.insert(user_id);
            }
            TeamEvent::TeamMemberRemoved { user_id, .. } => {
                self.members.remove(&user_id);
            }
            TeamEvent::TeamDeleted { .. } => self.deleted = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;
    use uuid::Uuid;

    #[test]
    fn members_join_an_existing_team_once() {
        let at = chrono::Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap();
        let account_id = AccountId(Uuid::from_u128(1));
        let user_id = UserId(Uuid::from_u128(2));
        let created = TeamEvent::TeamCreated { account_id, name: "Billing".into(), at };
        let joined = TeamEvent::TeamMemberAdded { account_id, user_id, at };
        TestFramework::<Team>::with(())
            .given(vec![created.clone()])
            .when(TeamCommand::AddMember { user_id, at })
            .then_expect_events(vec![joined.clone()]);
        TestFramework::<Team>::with(())
            .given(vec![created, joined])
            .when(TeamCommand::AddMember { user_id, at })
            .then_expect_events(vec![]);
        TestFramework::<Team>::with(())
            .given_no_previous_events()
            .when(TeamCommand::AddMember { user_id, at })
            .then_expect_error(DomainError::NotFound("team"));
    }

    #[test]
    fn a_member_leaves_once_and_a_deleted_team_takes_nothing_more() {
        let at = chrono::Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap();
        let account_id = AccountId(Uuid::from_u128(1));
        let user_id = UserId(Uuid::from_u128(2));
        let created = TeamEvent::TeamCreated { account_id, name: "Billing".into(), at };
        let joined = TeamEvent::TeamMemberAdded { account_id, user_id, at };
        let left = TeamEvent::TeamMemberRemoved { account_id, user_id, at };
        TestFramework::<Team>::with(())
            .given(vec![created.clone(), joined.clone()])
            .when(TeamCommand::RemoveMember { user_id, at })
            .then_expect_events(vec![left.clone()]);
        TestFramework::<Team>::with(())
            .given(vec![created.clone(), joined, left])
            .when(TeamCommand::RemoveMember { user_id, at })
            .then_expect_error(DomainError::NotFound("team member"));
        let deleted = TeamEvent::TeamDeleted { account_id, at };
        TestFramework::<Team>::with(())
            .given(vec![created.clone()])
            .when(TeamCommand::Delete { at })
            .then_expect_events(vec![deleted.clone()]);
        TestFramework::<Team>::with(())
            .given(vec![created, deleted])
            .when(TeamCommand::AddMember { user_id, at })
            .then_expect_error(DomainError::NotFound("team"));
    }
}
