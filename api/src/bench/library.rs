//! The baseline: what a user of the bare libraries gets — cqrs-es over postgres-es,
//! a minimal conversation aggregate, one event per command, no projections.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PlainConversation {
    messages: u64,
}

#[derive(Debug)]
pub struct ReceiveMessage {
    pub message_id: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PlainEvent {
    MessageReceived { message_id: String, content: String },
}

impl DomainEvent for PlainEvent {
    fn event_type(&self) -> String {
        "MessageReceived".into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("refused")]
pub struct Refused;

impl Aggregate for PlainConversation {
    const TYPE: &'static str = "plain_conversation";
    type Command = ReceiveMessage;
    type Event = PlainEvent;
    type Error = Refused;
    type Services = ();

    async fn handle(&mut self, command: ReceiveMessage, _: &(), sink: &EventSink<Self>) -> Result<(), Refused> {
        let ReceiveMessage { message_id, content } = command;
        sink.write(PlainEvent::MessageReceived { message_id, content }, self).await;
        Ok(())
    }

    fn apply(&mut self, _: PlainEvent) {
        self.messages += 1;
    }
}
