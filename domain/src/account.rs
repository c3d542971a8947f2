//! Account: the tenant, who works in it with which role, and its custom roles.

use std::collections::HashMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::ids::{RoleId, UserId};
use crate::values::{EmailAddress, Instant, Name, Permission, Role};
use crate::{domain_event, DomainError, PersonalData};
use uuid::Uuid;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Account {
    created: bool,
    members: HashMap<UserId, Member>,
    roles: HashMap<RoleId, CustomRole>,
    /// Everyone who has been a member, with the data subjects sealing what the log
    /// holds about them here (one per time they joined) that are not yet erased.
    people: HashMap<UserId, Vec<Uuid>>,
}

/// What the account knows of one of its people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub role: Role,
    /// Narrows what an agent may do to the role's permissions.
    pub custom_role: Option<RoleId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomRole {
    pub name: String,
    pub permissions: Vec<Permission>,
}

impl Account {
    pub fn exists(&self) -> bool {
        self.created
    }
    pub fn member(&self, user: UserId) -> Option<&Member> {
        self.members.get(&user)
    }
    pub fn custom_role(&self, role: RoleId) -> Option<&CustomRole> {
        self.roles.get(&role)
    }

    fn administrators(&self) -> usize {
        self.members.values().filter(|m| m.role == Role::Administrator).count()
    }

    /// A custom role narrows an agent; an administrator has every permission.
    fn check_role(&self, role: Role, custom_role: Option<RoleId>) -> Result<(), DomainError> {
        match custom_role {
            None => Ok(()),
            Some(_) if role == Role::Administrator => {
                Err(DomainError::invalid("a custom role applies to agents, not to administrators"))
            }
            Some(id) if self.roles.contains_key(&id) => Ok(()),
            Some(_) => Err(DomainError::NotFound("custom role")),
        }
    }

    /// The account must keep an administrator: nobody could manage it otherwise.
    fn check_keeps_an_administrator(&self, user: UserId, new_role: Option<Role>) -> Result<(), DomainError> {
        let is_admin = self.members.get(&user).is_some_and(|m| m.role == Role::Administrator);
        if is_admin && new_role != Some(Role::Administrator) && self.administrators() == 1 {
            return Err(DomainError::invalid("the account's last administrator cannot be removed or demoted"));
        }
        Ok(())
    }
}

#[derive(Debug)]
pub enum AccountCommand {
    Create {
        name: Name,
        at: Instant,
    },
    /// `subject`: a fresh id whose data key seals the member's name and e-mail.
    AddMember {
        user_id: UserId,
        name: Name,
        email: EmailAddress,
        role: Role,
        custom_role: Option<RoleId>,
        subject: Uuid,
        at: Instant,
    },
    /// Offers someone with a login elsewhere a place here; they join on accepting.
    InviteMember {
        user_id: UserId,
        role: Role,
        custom_role: Option<RoleId>,
        at: Instant,
    },
    ChangeRole {
        user_id: UserId,
        role: Role,
        custom_role: Option<RoleId>,
        at: Instant,
    },
    RemoveMember {
        user_id: UserId,
        at: Instant,
    },
    /// Forgets a former member's personal data (their right to be forgotten).
    EraseMember {
        user_id: UserId,
        reason: Name,
        at: Instant,
    },
    CreateCustomRole {
        role_id: RoleId,
        name: Name,
        permissions: Vec<Permission>,
        at: Instant,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccountEvent {
    AccountCreated {
        name: String,
        at: Instant,
    },
    /// Name and e-mail are sealed with `subject`'s key (`None` once erased); events
    /// recorded before members were sealed have no subject and hold them in clear.
    MemberAdded {
        user_id: UserId,
        name: Option<String>,
        email: Option<String>,
        role: Role,
        #[serde(default)]
        custom_role: Option<RoleId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<Uuid>,
        at: Instant,
    },
    MemberRoleChanged {
        user_id: UserId,
        role: Role,
        custom_role: Option<RoleId>,
        at: Instant,
    },
    MemberRemoved {
        user_id: UserId,
        at: Instant,
    },
    /// A former member's data subjects here were shredded.
    MemberErased {
        user_id: UserId,
        subjects: Vec<Uuid>,
        reason: String,
        at: Instant,
    },
    /// An invitation to a user who has a login already: not a member until they
    /// accept (`MemberAdded`).
    MemberInvited {
        user_id: UserId,
        role: Role,
        custom_role: Option<RoleId>,
        at: Instant,
    },
    CustomRoleCreated {
        role_id: RoleId,
        name: String,
        permissions: Vec<Permission>,
        at: Instant,
    },
}

// Version 2: see `upcast` (AccountCreated's `created_at` is `at`).
domain_event!(
    AccountEvent,
    version = "2",
    [AccountCreated, MemberAdded, MemberRoleChanged, MemberRemoved, MemberErased, MemberInvited, CustomRoleCreated]
);

impl PersonalData for AccountEvent {
    fn personal_fields(&self) -> &'static [&'static str] {
        match self {
            Self::MemberAdded { .. } => &["name", "email"],
            _ => &[],
        }
    }
    fn data_subject(&self) -> Option<Uuid> {
        match self {
            Self::MemberAdded { subject, .. } => *subject,
            _ => None,
        }
    }
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(&mut self, command: AccountCommand, _: &(), sink: &EventSink<Self>) -> Result<(), DomainError> {
        if !self.created && !matches!(command, AccountCommand::Create { .. }) {
            return Err(DomainError::NotFound("account"));
        }
        let event = match command {
            AccountCommand::Create { name, at } => {
                if self.created {
                    return Err(DomainError::AlreadyExists("account"));
                }
                AccountEvent::AccountCreated { name: name.into_inner(), at }
            }
            AccountCommand::AddMember { user_id, name, email, role, custom_role, subject, at } => {
                if self.members.contains_key(&user_id) {
                    return Err(DomainError::AlreadyExists("account member"));
                }
                self.check_role(role, custom_role)?;
                AccountEvent::MemberAdded {
                    user_id,
                    name: Some(name.into_inner()),
                    email: Some(email.into_inner()),
                    role,
                    custom_role,
                    subject: Some(subject),
                    at,
                }
            }
            AccountCommand::InviteMember { user_id, role, custom_role, at } => {
                if self.members.contains_key(&user_id) {
                    return Err(DomainError::AlreadyExists("account member"));
                }
                self.check_role(role, custom_role)?;
                AccountEvent::MemberInvited { user_id, role, custom_role, at }
            }
            AccountCommand::ChangeRole { user_id, role, custom_role, at } => {
                let member = self.members.get(&user_id).ok_or(DomainError::NotFound("agent"))?;
                if member.role == role && member.custom_role == custom_role {
                    return Ok(());
                }
                self.check_role(role, custom_role)?;
                self.check_keeps_an_administrator(user_id, Some(role))?;
                AccountEvent::MemberRoleChanged { user_id, role, custom_role, at }
            }
            AccountCommand::RemoveMember { user_id, at } => {
                if !self.members.contains_key(&user_id) {
                    return Err(DomainError::NotFound("agent"));
                }
                self.check_keeps_an_administrator(user_id, None)?;
                AccountEvent::MemberRemoved { user_id, at }
            }
            AccountCommand::EraseMember { user_id, reason, at } => {
                let subjects = self.people.get(&user_id).ok_or(DomainError::NotFound("agent"))?;
                if self.members.contains_key(&user_id) {
                    return Err(DomainError::invalid("remove the agent from the account before erasing their data"));
                }
                if subjects.is_empty() {
                    return Ok(());
                }
                AccountEvent::MemberErased { user_id, subjects: subjects.clone(), reason: reason.into_inner(), at }
            }
            AccountCommand::CreateCustomRole { role_id, name, permissions, at } => {
                if permissions.is_empty() {
                    return Err(DomainError::invalid("a custom role needs at least one permission"));
                }
                if self.roles.values().any(|r| r.name.eq_ignore_ascii_case(name.as_str())) {
                    return Err(DomainError::AlreadyExists("custom role"));
                }
                let mut permissions = permissions;
                permissions.sort_by_key(|p| p.as_str());
                permissions.dedup();
                AccountEvent::CustomRoleCreated { role_id, name: name.into_inner(), permissions, at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: AccountEvent) {
        match event {
            AccountEvent::AccountCreated { .. } => self.created = true,
            AccountEvent::MemberAdded { user_id, role, custom_role, subject, .. } => {
                self.members.insert(user_id, Member { role, custom_role });
                self.people.entry(user_id).or_default().extend(subject);
            }
            AccountEvent::MemberRoleChanged { user_id, role, custom_role, .. } => {
                if let Some(member) = self.members.get_mut(&user_id) {
                    member.role = role;
                    member.custom_role = custom_role;
                }
            }
            AccountEvent::MemberRemoved { user_id, .. } => {
                self.members.remove(&user_id);
            }
            AccountEvent::MemberErased { user_id, .. } => {
                self.people.insert(user_id, Vec::new());
            }
            AccountEvent::MemberInvited { .. } => {}
            AccountEvent::CustomRoleCreated { role_id, name, permissions, .. } => {
                self.roles.insert(role_id, CustomRole { name, permissions });
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
        AccountEvent::AccountCreated { name: "Acme".into(), at: at() }
    }

    fn add(user: Uuid) -> AccountCommand {
        AccountCommand::AddMember {
            user_id: UserId(user),
            name: Name::parse("name", "Ana").unwrap(),
            email: EmailAddress::parse("ana@acme.test").unwrap(),
            role: Role::Administrator,
            custom_role: None,
            subject: Uuid::from_u128(70),
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
                name: Some("Ana".into()),
                email: Some("ana@acme.test".into()),
                role: Role::Administrator,
                custom_role: None,
                subject: Some(Uuid::from_u128(70)),
                at: at(),
            },
        ]);
        TestFramework::<Account>::with(())
            .given_no_previous_events()
            .when(add(user))
            .then_expect_error(DomainError::NotFound("account"));
    }

    fn member_added(user: u128, role: Role) -> AccountEvent {
        AccountEvent::MemberAdded {
            user_id: UserId(Uuid::from_u128(user)),
            name: Some(format!("user {user}")),
            email: Some(format!("u{user}@acme.test")),
            role,
            custom_role: None,
            subject: Some(Uuid::from_u128(1000 + user)),
            at: at(),
        }
    }

    #[test]
    fn the_last_administrator_can_be_neither_demoted_nor_removed() {
        let admin = UserId(Uuid::from_u128(1));
        let given = || vec![created(), member_added(1, Role::Administrator), member_added(2, Role::Agent)];
        TestFramework::<Account>::with(())
            .given(given())
            .when(AccountCommand::ChangeRole { user_id: admin, role: Role::Agent, custom_role: None, at: at() })
            .then_expect_error(DomainError::invalid("the account's last administrator cannot be removed or demoted"));
        TestFramework::<Account>::with(())
            .given(given())
            .when(AccountCommand::RemoveMember { user_id: admin, at: at() })
            .then_expect_error(DomainError::invalid("the account's last administrator cannot be removed or demoted"));
        let mut two_admins = given();
        two_admins.push(member_added(3, Role::Administrator));
        TestFramework::<Account>::with(())
            .given(two_admins)
            .when(AccountCommand::RemoveMember { user_id: admin, at: at() })
            .then_expect_events(vec![AccountEvent::MemberRemoved { user_id: admin, at: at() }]);
    }

    #[test]
    fn only_a_former_member_is_erased_and_only_once() {
        let erase = |user: u128| AccountCommand::EraseMember {
            user_id: UserId(Uuid::from_u128(user)),
            reason: Name::parse("reason", "asked to be forgotten").unwrap(),
            at: at(),
        };
        let removed = AccountEvent::MemberRemoved { user_id: UserId(Uuid::from_u128(2)), at: at() };
        let given = || vec![created(), member_added(1, Role::Administrator), member_added(2, Role::Agent)];
        TestFramework::<Account>::with(())
            .given(given())
            .when(erase(2))
            .then_expect_error(DomainError::invalid("remove the agent from the account before erasing their data"));
        TestFramework::<Account>::with(())
            .given(given())
            .when(erase(3))
            .then_expect_error(DomainError::NotFound("agent"));
        let erased = AccountEvent::MemberErased {
            user_id: UserId(Uuid::from_u128(2)),
            subjects: vec![Uuid::from_u128(1002)],
            reason: "asked to be forgotten".into(),
            at: at(),
        };
        let mut left = given();
        left.push(removed);
        TestFramework::<Account>::with(()).given(left.clone()).when(erase(2)).then_expect_events(vec![erased.clone()]);
        left.push(erased);
        TestFramework::<Account>::with(()).given(left).when(erase(2)).then_expect_events(vec![]);
    }

    #[test]
    fn a_custom_role_must_exist_and_applies_to_agents_only() {
        let role = RoleId(Uuid::from_u128(9));
        let agent = UserId(Uuid::from_u128(2));
        let defined = AccountEvent::CustomRoleCreated {
            role_id: role,
            name: "Triage".into(),
            permissions: vec![Permission::ConversationUnassignedManage],
            at: at(),
        };
        let change = |role_kind, custom_role| AccountCommand::ChangeRole {
            user_id: agent,
            role: role_kind,
            custom_role,
            at: at(),
        };
        TestFramework::<Account>::with(())
            .given(vec![created(), member_added(2, Role::Agent)])
            .when(change(Role::Agent, Some(role)))
            .then_expect_error(DomainError::NotFound("custom role"));
        TestFramework::<Account>::with(())
            .given(vec![created(), member_added(1, Role::Administrator), member_added(2, Role::Agent), defined.clone()])
            .when(change(Role::Administrator, Some(role)))
            .then_expect_error(DomainError::invalid("a custom role applies to agents, not to administrators"));
        TestFramework::<Account>::with(())
            .given(vec![created(), member_added(2, Role::Agent), defined])
            .when(change(Role::Agent, Some(role)))
            .then_expect_events(vec![AccountEvent::MemberRoleChanged {
                user_id: agent,
                role: Role::Agent,
                custom_role: Some(role),
                at: at(),
            }]);
    }
}
