//! Label: a tag agents put on conversations (title and colour).

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::ids::AccountId;
use crate::values::Instant;
use crate::{domain_event, DomainError, PersonalData};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Label {
    account_id: Option<AccountId>,
    deleted: bool,
}

impl Label {
    /// The account of a label that exists (`None` once deleted).
    pub fn account_id(&self) -> Option<AccountId> {
        self.account_id.filter(|_| !self.deleted)
    }
}

/// A label title: lower-case letters, digits, `-` and `_`, 1–64 characters, as the
/// reference allows, so it can be typed in filters and automation rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelTitle(String);

impl LabelTitle {
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        let title = text.trim().to_lowercase();
        let valid =
            (1..=64).contains(&title.len()) && title.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if valid {
            Ok(Self(title))
        } else {
            Err(DomainError::invalid(format!("label '{text}' must be 1-64 letters, digits, '-' or '_'")))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn into_inner(self) -> String {
        self.0
    }
}

#[derive(Debug)]
pub enum LabelCommand {
    Create {
        account_id: AccountId,
        title: LabelTitle,
        color: String,
        at: Instant,
    },
    /// Conversations keep the title; the label can be defined again.
    Delete {
        at: Instant,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LabelEvent {
    LabelCreated { account_id: AccountId, title: String, color: String, at: Instant },
    LabelDeleted { account_id: AccountId, at: Instant },
}

domain_event!(LabelEvent, version = "1", [LabelCreated, LabelDeleted]);
impl PersonalData for LabelEvent {}

impl Aggregate for Label {
    const TYPE: &'static str = "label";
    type Command = LabelCommand;
    type Event = LabelEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(&mut self, command: LabelCommand, _: &(), sink: &EventSink<Self>) -> Result<(), DomainError> {
        let event = match command {
            LabelCommand::Create { account_id, title, color, at } => {
                if self.account_id().is_some() {
                    return Err(DomainError::AlreadyExists("label"));
                }
                LabelEvent::LabelCreated { account_id, title: title.into_inner(), color, at }
            }
            LabelCommand::Delete { at } => {
                let account_id = self.account_id().ok_or(DomainError::NotFound("label"))?;
                LabelEvent::LabelDeleted { account_id, at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: LabelEvent) {
        match event {
            LabelEvent::LabelCreated { account_id, .. } => {
                self.account_id = Some(account_id);
                self.deleted = false;
            }
            LabelEvent::LabelDeleted { .. } => self.deleted = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_label_can_be_defined_again_and_is_deleted_once() {
        use cqrs_es::test::TestFramework;
        let at = chrono::Utc::now();
        let account_id = AccountId(uuid::Uuid::from_u128(1));
        let title = LabelTitle::parse("vip").unwrap();
        let created = LabelEvent::LabelCreated { account_id, title: "vip".into(), color: "#ff0000".into(), at };
        let deleted = LabelEvent::LabelDeleted { account_id, at };
        TestFramework::<Label>::with(())
            .given(vec![created.clone()])
            .when(LabelCommand::Delete { at })
            .then_expect_events(vec![deleted.clone()]);
        TestFramework::<Label>::with(())
            .given(vec![created.clone(), deleted.clone()])
            .when(LabelCommand::Delete { at })
            .then_expect_error(DomainError::NotFound("label"));
        TestFramework::<Label>::with(())
            .given(vec![created.clone(), deleted])
            .when(LabelCommand::Create { account_id, title, color: "#ff0000".into(), at })
            .then_expect_events(vec![created]);
    }

    #[test]
    fn label_titles_are_normalised_and_checked() {
        assert_eq!(LabelTitle::parse(" VIP ").unwrap().as_str(), "vip");
        assert!(LabelTitle::parse("two words").is_err());
        assert!(LabelTitle::parse("").is_err());
        assert!(LabelTitle::parse(&"x".repeat(65)).is_err());
    }
}
