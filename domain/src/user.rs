//! User: a person who signs in; the API tokens issued to them.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, TokenId};
use crate::values::{EmailAddress, Instant, Name};
use crate::{domain_event, DomainError, PersonalData};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct User {
    registered: bool,
}

#[derive(Debug)]
pub enum UserCommand {
    Register {
        email: EmailAddress,
        name: Name,
        at: Instant,
    },
    /// The token's secret never enters the log: only that it exists, and for what.
    IssueApiToken {
        token_id: TokenId,
        account_id: AccountId,
        name: Name,
        at: Instant,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    UserRegistered { email: String, name: String, at: Instant },
    ApiTokenIssued { token_id: TokenId, account_id: AccountId, name: String, at: Instant },
}

domain_event!(UserEvent, version = "1", [UserRegistered, ApiTokenIssued]);
impl PersonalData for UserEvent {}

impl Aggregate for User {
    const TYPE: &'static str = "user";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(&mut self, command: UserCommand, _: &(), sink: &EventSink<Self>) -> Result<(), DomainError> {
        match command {
            UserCommand::Register { email, name, at } => {
                if self.registered {
                    return Err(DomainError::AlreadyExists("user"));
                }
                let event = UserEvent::UserRegistered { email: email.into_inner(), name: name.into_inner(), at };
                sink.write(event, self).await;
            }
            UserCommand::IssueApiToken { token_id, account_id, name, at } => {
                if !self.registered {
                    return Err(DomainError::NotFound("user"));
                }
                let event = UserEvent::ApiTokenIssued { token_id, account_id, name: name.into_inner(), at };
                sink.write(event, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: UserEvent) {
        if let UserEvent::UserRegistered { .. } = event {
            self.registered = true;
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

    #[test]
    fn a_token_is_issued_only_to_a_registered_user() {
        let token = || UserCommand::IssueApiToken {
            token_id: TokenId(Uuid::from_u128(1)),
            account_id: AccountId(Uuid::from_u128(2)),
            name: Name::parse("token name", "cli").unwrap(),
            at: at(),
        };
        TestFramework::<User>::with(())
            .given_no_previous_events()
            .when(token())
            .then_expect_error(DomainError::NotFound("user"));
        TestFramework::<User>::with(())
            .given(vec![UserEvent::UserRegistered { email: "a@b.test".into(), name: "A".into(), at: at() }])
            .when(token())
            .then_expect_events(vec![UserEvent::ApiTokenIssued {
                token_id: TokenId(Uuid::from_u128(1)),
                account_id: AccountId(Uuid::from_u128(2)),
                name: "cli".into(),
                at: at(),
            }]);
    }
}
