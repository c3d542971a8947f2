//! Authorization in one place: may this principal do that, on this? Every resolver
//! asks here; none decides for itself.
//!
//! - Administrators may do everything in their account.
//! - Agents see and act on conversations of the inboxes they are members of; a
//!   custom role narrows that (only unassigned-or-own, or only own conversations)
//!   and decides contacts and reports.
//! - Anything of another account is NOT_FOUND (its existence is not the caller's
//!   business); something of the caller's account they may not touch is FORBIDDEN.

use domain::values::{Permission, Role};
use projections::inbox_list::{Visibility, VisibleAssignees};
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::ApiError;

/// Account-level actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Inboxes and their members, teams, labels, agents, roles.
    ManageAccount,
    /// The administrative audit trail and the raw event log.
    ReadAuditLog,
    ReadEventLog,
    /// The right to be forgotten: contacts, and former agents.
    ErasePersonalData,
    ReadContacts,
    ReadReports,
    /// The live dashboard's figures, of the inboxes the principal sees: counts of every
    /// conversation there, so for those who see them all (or may read reports).
    ReadLiveMetrics,
    /// The account's directory: agents, teams, labels, inboxes one works in.
    ReadDirectory,
    /// One's own password, sessions and API tokens.
    ManageOwnCredentials,
}

impl Principal {
    pub fn is_administrator(&self) -> bool {
        self.role == Role::Administrator
    }

    fn has(&self, permission: Permission) -> bool {
        match (&self.custom_permissions, permission) {
            _ if self.is_administrator() => true,
            (Some(granted), _) => granted.contains(&permission),
            // An agent without a custom role: every conversation of their inboxes,
            // and contacts; reports are for administrators.
            (None, Permission::ReportManage) => false,
            (None, _) => true,
        }
    }

    /// May the principal do `action` in their account?
    pub fn require(&self, action: Action) -> Result<(), ApiError> {
        let allowed = match action {
            Action::ManageAccount | Action::ReadAuditLog | Action::ReadEventLog | Action::ErasePersonalData => {
                self.is_administrator()
            }
            Action::ReadContacts => self.has(Permission::ContactManage),
            Action::ReadReports => self.has(Permission::ReportManage),
            Action::ReadLiveMetrics => self.assignees() == VisibleAssignees::Any || self.has(Permission::ReportManage),
            Action::ReadDirectory | Action::ManageOwnCredentials => true,
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("your role does not allow this ({action:?})")))
        }
    }

    /// The conversations of the account the principal may see and act on.
    pub fn visibility(&self) -> Visibility {
        if self.is_administrator() {
            return Visibility::default();
        }
        Visibility { inboxes: Some(self.inboxes.to_vec()), assignees: self.assignees() }
    }

    /// Whose conversations of their inboxes an agent may see.
    fn assignees(&self) -> VisibleAssignees {
        if self.has(Permission::ConversationManage) {
            VisibleAssignees::Any
        } else if self.has(Permission::ConversationUnassignedManage) {
            VisibleAssignees::OwnOrUnassigned(self.user_id)
        } else if self.has(Permission::ConversationParticipatingManage) {
            VisibleAssignees::Own(self.user_id)
        } else {
            VisibleAssignees::Nothing
        }
    }

    /// May the principal see and act on a conversation of their account in `inbox`,
    /// assigned to `assignee`?
    pub fn require_conversation(&self, inbox: Uuid, assignee: Option<Uuid>) -> Result<(), ApiError> {
        if self.sees(inbox, assignee) {
            Ok(())
        } else {
            Err(ApiError::forbidden("you may not access this conversation"))
        }
    }

    /// Whether whom a conversation is assigned to decides if the principal sees it.
    pub fn sees_by_assignee(&self) -> bool {
        !self.is_administrator() && self.assignees() != VisibleAssignees::Any
    }

    pub fn sees(&self, inbox: Uuid, assignee: Option<Uuid>) -> bool {
        if self.is_administrator() {
            return true;
        }
        let by_assignee = match self.assignees() {
            VisibleAssignees::Any => true,
            VisibleAssignees::Own(me) => assignee == Some(me),
            VisibleAssignees::OwnOrUnassigned(me) => assignee.is_none_or(|a| a == me),
            VisibleAssignees::Nothing => false,
        };
        self.inboxes.contains(&inbox) && by_assignee
    }

    /// May the principal work in `inbox` (receive into it, list it)?
    pub fn require_inbox(&self, inbox: Uuid) -> Result<(), ApiError> {
        if self.is_administrator() || self.inboxes.contains(&inbox) {
            Ok(())
        } else {
            Err(ApiError::forbidden("you are not a member of this inbox"))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use commands::access::TokenKind;

    use super::*;

    fn principal(role: Role, custom: Option<Vec<Permission>>) -> Principal {
        Principal {
            account_id: Uuid::from_u128(1),
            user_id: Uuid::from_u128(2),
            role,
            credential_id: Uuid::from_u128(3),
            credential: TokenKind::Session,
            inboxes: Arc::from(vec![Uuid::from_u128(10)]),
            custom_permissions: custom.map(Into::into),
            access_version: 0,
        }
    }

    #[test]
    fn administrators_see_everything_and_agents_their_inboxes() {
        let (mine, other) = (Uuid::from_u128(10), Uuid::from_u128(11));
        let admin = principal(Role::Administrator, None);
        assert!(admin.sees(other, None) && admin.require(Action::ManageAccount).is_ok());
        let agent = principal(Role::Agent, None);
        assert!(agent.sees(mine, Some(Uuid::from_u128(99))));
        assert!(!agent.sees(other, None));
        assert!(agent.require(Action::ManageAccount).is_err());
        assert!(agent.require(Action::ReadReports).is_err());
        assert!(agent.require(Action::ReadContacts).is_ok());
    }

    #[test]
    fn custom_roles_narrow_an_agent_to_unassigned_or_own_conversations() {
        let (inbox, me, someone) = (Uuid::from_u128(10), Uuid::from_u128(2), Uuid::from_u128(99));
        let triage = principal(Role::Agent, Some(vec![Permission::ConversationUnassignedManage]));
        assert!(triage.sees(inbox, None) && triage.sees(inbox, Some(me)));
        assert!(!triage.sees(inbox, Some(someone)));
        assert!(triage.require(Action::ReadContacts).is_err());
        let participating = principal(Role::Agent, Some(vec![Permission::ConversationParticipatingManage]));
        assert!(participating.sees(inbox, Some(me)) && !participating.sees(inbox, None));
        let reports_only = principal(Role::Agent, Some(vec![Permission::ReportManage]));
        assert!(!reports_only.sees(inbox, Some(me)));
        assert!(reports_only.require(Action::ReadReports).is_ok());
    }

    #[test]
    fn live_metrics_are_for_those_who_see_every_conversation_of_their_inboxes_or_read_reports() {
        let allowed = |role, custom| principal(role, custom).require(Action::ReadLiveMetrics).is_ok();
        assert!(allowed(Role::Administrator, None));
        assert!(allowed(Role::Agent, None));
        assert!(allowed(Role::Agent, Some(vec![Permission::ConversationManage])));
        assert!(allowed(Role::Agent, Some(vec![Permission::ReportManage])));
        assert!(!allowed(Role::Agent, Some(vec![Permission::ConversationUnassignedManage])));
        assert!(!allowed(Role::Agent, Some(vec![Permission::ConversationParticipatingManage])));
    }
}
