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
    Create { account_id: AccountId, title: LabelTitle, color: String, at: Instant },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LabelEvent {
    LabelCreated { account_id: AccountId, title: String, color: String, at: Instant },
}

domain_event!(LabelEvent, version = "1", [LabelCreated]);
impl PersonalData for LabelEvent {}

impl Aggregate for Label {
    const TYPE: &'static str = "label";
    type Command = LabelCommand;
    type Event = LabelEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(&mut self, command: LabelCommand, _: &(), sink: &EventSink<Self>) -> Result<(), DomainError> {
        let LabelCommand::Create { account_id, title, color, at } = command;
        if self.account_id.is_some() {
            return Err(DomainError::AlreadyExists("label"));
        }
        sink.write(LabelEvent::LabelCreated { account_id, title: title.into_inner(), color, at }, self).await;
        Ok(())
    }

    fn apply(&mut self, event: LabelEvent) {
        let LabelEvent::LabelCreated { account_id, .. } = event;
        self.account_id = Some(account_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_titles_are_normalised_and_checked() {
        assert_eq!(LabelTitle::parse(" VIP ").unwrap().as_str(), "vip");
        assert!(LabelTitle::parse("two words").is_err());
        assert!(LabelTitle::parse("").is_err());
        assert!(LabelTitle::parse(&"x".repeat(65)).is_err());
    }
}
