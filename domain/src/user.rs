//! User: a person who signs in; their sessions and the API tokens issued to them.
//! Secrets never enter the log: only that a credential exists, and for what.

use std::collections::{HashMap, HashSet};

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, TokenId};
use crate::values::{EmailAddress, Instant, Name};
use crate::{domain_event, DomainError, PersonalData};
use uuid::Uuid;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct User {
    registered: bool,
    password_set: bool,
    api_tokens: HashMap<TokenId, AccountId>,
    sessions: HashSet<TokenId>,
    /// The data subject sealing the user's name and e-mail in the log.
    subject: Option<Uuid>,
    erased: bool,
}

impl User {
    pub fn exists(&self) -> bool {
        self.registered
    }
    /// The account an active API token of this user was issued for.
    pub fn api_token_account(&self, token: TokenId) -> Option<AccountId> {
        self.api_tokens.get(&token).copied()
    }
}

#[derive(Debug)]
pub enum UserCommand {
    /// `invited`: the user sets a password later, by accepting the invitation.
    /// `subject`: a fresh id whose data key seals the name and e-mail.
    Register {
        email: EmailAddress,
        name: Name,
        invited: bool,
        subject: Uuid,
        at: Instant,
    },
    /// Forgets the login and what the log holds about it (no account has them left).
    Erase {
        at: Instant,
    },
    AcceptInvitation {
        at: Instant,
    },
    IssueApiToken {
        token_id: TokenId,
        account_id: AccountId,
        name: Name,
        at: Instant,
    },
    RevokeApiToken {
        token_id: TokenId,
        at: Instant,
    },
    SignIn {
        session_id: TokenId,
        account_id: AccountId,
        at: Instant,
    },
    SignOut {
        session_id: TokenId,
        at: Instant,
    },
    /// Ends every session but `kept_session` (the one the change was made in).
    ChangePassword {
        kept_session: Option<TokenId>,
        /// Revoke every personal API token too (they do not end with sessions).
        revoke_api_tokens: bool,
        at: Instant,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    /// Name and e-mail are sealed with `subject`'s key (`None` once erased); events
    /// recorded before users were sealed have no subject and hold them in clear.
    UserRegistered {
        email: Option<String>,
        name: Option<String>,
        #[serde(default)]
        invited: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<Uuid>,
        at: Instant,
    },
    /// The login is gone and its data subject shredded.
    UserErased {
        subjects: Vec<Uuid>,
        at: Instant,
    },
    InvitationAccepted {
        at: Instant,
    },
    ApiTokenIssued {
        token_id: TokenId,
        account_id: AccountId,
        name: String,
        at: Instant,
    },
    ApiTokenRevoked {
        token_id: TokenId,
        at: Instant,
    },
    SignedIn {
        session_id: TokenId,
        account_id: AccountId,
        at: Instant,
    },
    SignedOut {
        session_id: TokenId,
        at: Instant,
    },
    PasswordChanged {
        kept_session: Option<TokenId>,
        sessions_ended: Vec<TokenId>,
        #[serde(default)]
        api_tokens_revoked: Vec<TokenId>,
        at: Instant,
    },
}

domain_event!(
    UserEvent,
    version = "1",
    [
        UserRegistered,
        UserErased,
        InvitationAccepted,
        ApiTokenIssued,
        ApiTokenRevoked,
        SignedIn,
        SignedOut,
        PasswordChanged
    ]
);

impl PersonalData for UserEvent {
    fn personal_fields(&self) -> &'static [&'static str] {
        match self {
            Self::UserRegistered { .. } => &["email", "name"],
            _ => &[],
        }
    }
    fn data_subject(&self) -> Option<Uuid> {
        match self {
            Self::UserRegistered { subject, .. } => *subject,
            _ => None,
        }
    }
}

impl Aggregate for User {
    const TYPE: &'static str = "user";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(&mut self, command: UserCommand, _: &(), sink: &EventSink<Self>) -> Result<(), DomainError> {
        if !self.registered && !matches!(command, UserCommand::Register { .. }) {
            return Err(DomainError::NotFound("user"));
        }
        if self.erased {
            // Erasing again changes nothing; nothing else applies to a forgotten login.
            return match command {
                UserCommand::Erase { .. } => Ok(()),
                _ => Err(DomainError::NotFound("user")),
            };
        }
        let event = match command {
            UserCommand::Register { email, name, invited, subject, at } => {
                if self.registered {
                    return Err(DomainError::AlreadyExists("user"));
                }
                let (email, name) = (Some(email.into_inner()), Some(name.into_inner()));
                UserEvent::UserRegistered { email, name, invited, subject: Some(subject), at }
            }
            UserCommand::Erase { at } => UserEvent::UserErased { subjects: self.subject.into_iter().collect(), at },
            UserCommand::AcceptInvitation { at } => {
                if self.password_set {
                    return Err(DomainError::invalid("this invitation has already been accepted"));
                }
                UserEvent::InvitationAccepted { at }
            }
            UserCommand::IssueApiToken { token_id, account_id, name, at } => {
                UserEvent::ApiTokenIssued { token_id, account_id, name: name.into_inner(), at }
            }
            UserCommand::RevokeApiToken { token_id, at } => {
                if !self.api_tokens.contains_key(&token_id) {
                    return Err(DomainError::NotFound("API token"));
                }
                UserEvent::ApiTokenRevoked { token_id, at }
            }
            UserCommand::SignIn { session_id, account_id, at } => {
                if !self.password_set {
                    return Err(DomainError::invalid("this user has not set a password yet"));
                }
                UserEvent::SignedIn { session_id, account_id, at }
            }
            UserCommand::SignOut { session_id, at } => {
                if !self.sessions.contains(&session_id) {
                    return Err(DomainError::NotFound("session"));
                }
                UserEvent::SignedOut { session_id, at }
            }
            UserCommand::ChangePassword { kept_session, revoke_api_tokens, at } => {
                if !self.password_set {
                    return Err(DomainError::invalid("this user has not set a password yet"));
                }
                let mut sessions_ended: Vec<TokenId> =
                    self.sessions.iter().copied().filter(|s| Some(*s) != kept_session).collect();
                sessions_ended.sort();
                let mut api_tokens_revoked: Vec<TokenId> =
                    if revoke_api_tokens { self.api_tokens.keys().copied().collect() } else { Vec::new() };
                api_tokens_revoked.sort();
                UserEvent::PasswordChanged { kept_session, sessions_ended, api_tokens_revoked, at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: UserEvent) {
        match event {
            UserEvent::UserRegistered { invited, subject, .. } => {
                self.registered = true;
                self.password_set = !invited;
                self.subject = subject;
            }
            UserEvent::UserErased { .. } => {
                self.erased = true;
                self.sessions.clear();
                self.api_tokens.clear();
            }
            UserEvent::InvitationAccepted { .. } => self.password_set = true,
            UserEvent::ApiTokenIssued { token_id, account_id, .. } => {
                self.api_tokens.insert(token_id, account_id);
            }
            UserEvent::ApiTokenRevoked { token_id, .. } => {
                self.api_tokens.remove(&token_id);
            }
            UserEvent::SignedIn { session_id, .. } => {
                self.sessions.insert(session_id);
            }
            UserEvent::SignedOut { session_id, .. } => {
                self.sessions.remove(&session_id);
            }
            UserEvent::PasswordChanged { sessions_ended, api_tokens_revoked, .. } => {
                for session in sessions_ended {
                    self.sessions.remove(&session);
                }
                for token in api_tokens_revoked {
                    self.api_tokens.remove(&token);
                }
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

    fn registered(invited: bool) -> UserEvent {
        UserEvent::UserRegistered {
            email: Some("a@b.test".into()),
            name: Some("A".into()),
            invited,
            subject: Some(Uuid::from_u128(50)),
            at: at(),
        }
    }

    fn id(n: u128) -> TokenId {
        TokenId(Uuid::from_u128(n))
    }

    fn signed_in(n: u128) -> UserEvent {
        UserEvent::SignedIn { session_id: id(n), account_id: AccountId(Uuid::from_u128(100)), at: at() }
    }

    #[test]
    fn a_token_is_issued_only_to_a_registered_user_and_revoked_once() {
        let issue = || UserCommand::IssueApiToken {
            token_id: id(1),
            account_id: AccountId(Uuid::from_u128(2)),
            name: Name::parse("token name", "cli").unwrap(),
            at: at(),
        };
        let issued = UserEvent::ApiTokenIssued {
            token_id: id(1),
            account_id: AccountId(Uuid::from_u128(2)),
            name: "cli".into(),
            at: at(),
        };
        TestFramework::<User>::with(())
            .given_no_previous_events()
            .when(issue())
            .then_expect_error(DomainError::NotFound("user"));
        TestFramework::<User>::with(())
            .given(vec![registered(false)])
            .when(issue())
            .then_expect_events(vec![issued.clone()]);
        let revoked = UserEvent::ApiTokenRevoked { token_id: id(1), at: at() };
        TestFramework::<User>::with(())
            .given(vec![registered(false), issued.clone()])
            .when(UserCommand::RevokeApiToken { token_id: id(1), at: at() })
            .then_expect_events(vec![revoked.clone()]);
        TestFramework::<User>::with(())
            .given(vec![registered(false), issued, revoked])
            .when(UserCommand::RevokeApiToken { token_id: id(1), at: at() })
            .then_expect_error(DomainError::NotFound("API token"));
    }

    #[test]
    fn an_invited_user_signs_in_only_after_accepting_and_accepts_once() {
        let sign_in =
            || UserCommand::SignIn { session_id: id(5), account_id: AccountId(Uuid::from_u128(100)), at: at() };
        TestFramework::<User>::with(())
            .given(vec![registered(true)])
            .when(sign_in())
            .then_expect_error(DomainError::invalid("this user has not set a password yet"));
        TestFramework::<User>::with(())
            .given(vec![registered(true), UserEvent::InvitationAccepted { at: at() }])
            .when(sign_in())
            .then_expect_events(vec![signed_in(5)]);
        TestFramework::<User>::with(())
            .given(vec![registered(true), UserEvent::InvitationAccepted { at: at() }])
            .when(UserCommand::AcceptInvitation { at: at() })
            .then_expect_error(DomainError::invalid("this invitation has already been accepted"));
    }

    #[test]
    fn an_erased_login_is_erased_once_and_takes_no_other_command() {
        let erased = UserEvent::UserErased { subjects: vec![Uuid::from_u128(50)], at: at() };
        TestFramework::<User>::with(())
            .given(vec![registered(false), signed_in(1)])
            .when(UserCommand::Erase { at: at() })
            .then_expect_events(vec![erased.clone()]);
        TestFramework::<User>::with(())
            .given(vec![registered(false), erased.clone()])
            .when(UserCommand::Erase { at: at() })
            .then_expect_events(vec![]);
        TestFramework::<User>::with(())
            .given(vec![registered(false), erased])
            .when(UserCommand::SignIn { session_id: id(2), account_id: AccountId(Uuid::from_u128(100)), at: at() })
            .then_expect_error(DomainError::NotFound("user"));
    }

    #[test]
    fn a_password_change_ends_every_other_session() {
        TestFramework::<User>::with(())
            .given(vec![
                registered(false),
                signed_in(3),
                signed_in(1),
                signed_in(2),
                UserEvent::SignedOut { session_id: id(3), at: at() },
            ])
            .when(UserCommand::ChangePassword { kept_session: Some(id(2)), revoke_api_tokens: false, at: at() })
            .then_expect_events(vec![UserEvent::PasswordChanged {
                kept_session: Some(id(2)),
                sessions_ended: vec![id(1)],
                api_tokens_revoked: vec![],
                at: at(),
            }]);
    }

    #[test]
    fn a_password_change_can_revoke_every_api_token_too() {
        let issued = |n| UserEvent::ApiTokenIssued {
            token_id: id(n),
            account_id: AccountId(Uuid::from_u128(9)),
            name: "script".into(),
            at: at(),
        };
        TestFramework::<User>::with(())
            .given(vec![
                registered(false),
                issued(5),
                issued(4),
                UserEvent::ApiTokenRevoked { token_id: id(4), at: at() },
            ])
            .when(UserCommand::ChangePassword { kept_session: None, revoke_api_tokens: true, at: at() })
            .then_expect_events(vec![UserEvent::PasswordChanged {
                kept_session: None,
                sessions_ended: vec![],
                api_tokens_revoked: vec![id(5)],
                at: at(),
            }]);
    }
}
