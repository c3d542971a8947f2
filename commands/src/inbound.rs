//! Inbound messages: a channel delivers a contact's message to an inbox.
//!
//! The route stream (keyed hash of inbox + the contact's channel id) decides whether
//! the message is new and where it goes; the contact, its data key, the conversation
//! and the message are then written with the route's events in one transaction. A
//! redelivery finds its key in the route and returns the original, whatever the
//! timing: concurrent deliveries queue on the route's lock in this process and
//! conflict on its sequence across processes.

use anyhow::Context;
use domain::actor::Actor;
use domain::attachment::Attachment;
use domain::contact::{Contact, ContactCommand, ContactDetails, ContactEvent};
use domain::conversation::{Conversation, ConversationCommand, ConversationEvent};
use domain::ids::{AccountId, ContactId, ConversationId, InboxId, MessageId};
use domain::route::{Delivery, Route, RouteCommand, RouteEvent};
use domain::values::{check_source_id, MessageContent};
use projections::keyring::Keyring;
use uuid::Uuid;

use crate::context::CommandContext;
use crate::side_write::{ChannelIdentity, SideWrites};
use crate::store::{Loaded, UnitOfWork};
use crate::{decide, retry, CommandError, Commands, Written};

/// A message as a channel hands it over.
#[derive(Debug, Clone)]
pub struct InboundMessage {
    pub inbox_id: Uuid,
    /// The contact's id on the channel (phone number, PSID, e-mail, API source id).
    pub contact_source_id: String,
    pub contact: ContactDetails,
    /// The message's id on the channel: unique per sender.
    pub source_id: String,
    pub content: MessageContent,
    /// Files it carries (channels with media); with them the content may be empty.
    pub attachments: Vec<Attachment>,
    /// When the contact sent it, by the provider's clock (channels that say).
    pub sent_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// What a message says, as the conversation records it.
#[derive(Debug, Clone)]
pub struct Said {
    pub content: MessageContent,
    pub attachments: Vec<Attachment>,
    pub sent_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The message's id on the channel, kept (sealed) so a reply can quote it.
    pub source_id: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub message_id: Uuid,
    pub conversation_id: Uuid,
    pub contact_id: Uuid,
    /// The message had been received before; nothing was written.
    pub duplicate: bool,
    pub written: Written,
}

impl Commands {
    /// Receives one inbound message; exactly once per (inbox, contact, source id).
    pub async fn receive_message(
        &self,
        context: &CommandContext,
        message: InboundMessage,
    ) -> Result<Received, CommandError> {
        check_source_id("contact sourceId", &message.contact_source_id)?;
        check_source_id("sourceId", &message.source_id)?;
        // Only that the inbox is the account's, which never changes: not a read to assert.
        let inbox = self.store().peek::<domain::inbox::Inbox>(&message.inbox_id.to_string()).await?.state;
        crate::inbox::in_account(context, inbox.account_id())?;
        let keyring = self.store().keyring();
        let keys = RouteKeys::new(keyring, message.inbox_id, &message.contact_source_id);
        let staging = InboundStaging { keyring, context, inbox_id: message.inbox_id, keys: &keys };
        retry(|| async {
            let _route_guard = self.store().lock::<Route>(&keys.route_id).await;
            let mut route = self.store().load_for_update::<Route>(&keys.route_id).await?;
            let routed = staging.route(&mut route, &message.source_id).await?;
            let outcome = |duplicate, written| Received {
                message_id: routed.delivery.message_id.as_uuid(),
                conversation_id: routed.delivery.conversation_id.as_uuid(),
                contact_id: routed.contact_id.as_uuid(),
                duplicate,
                written,
            };
            if routed.events.is_empty() {
                self.store().keep(route);
                return Ok(outcome(true, Written::default()));
            }
            // The contact is the author of what it sends, whoever relayed it.
            let context = CommandContext { actor: Actor::Contact(routed.contact_id.as_uuid()), ..context.clone() };
            let mut work = UnitOfWork::new(&context);
            work.append(route, routed.events.clone())?;
            if routed.new_contact {
                let contact =
                    staging.contact(work.side_writes(), &routed, message.contact.clone(), &message.contact_source_id);
                let (contact, events) = contact.await?;
                work.append(contact, events)?;
            }
            let conversation_key = routed.delivery.conversation_id.to_string();
            let _conversation_guard = self.store().lock::<Conversation>(&conversation_key).await;
            let (mut conversation, display_id) = if routed.new_conversation {
                let display_id = self.reserve_display_ids(context.account_id, 1).await?;
                (Loaded::<Conversation>::new_stream(conversation_key), Some(display_id))
            } else {
                (self.store().load_for_update::<Conversation>(&conversation_key).await?, None)
            };
            let said = Said {
                content: message.content.clone(),
                attachments: message.attachments.clone(),
                sent_at: message.sent_at,
                source_id: Some(message.source_id.clone()),
            };
            let events = staging.conversation(&mut conversation, &routed, display_id, said).await?;
            work.append(conversation, events)?;
            let position = self.store().commit(work).await?;
            Ok(outcome(false, Written { position }))
        })
        .await
    }

    /// Reserves the account's next `count` conversation numbers and returns the last.
    pub async fn reserve_display_ids(&self, account_id: Uuid, count: i64) -> anyhow::Result<i64> {
        self.store().numbering().reserve(account_id, count).await
    }
}

/// How one inbound message is staged into a unit of work, the same for every caller
/// (a channel's delivery, and the benchmark's synthetic history): the route decides
/// whether the message is new and where it goes; a new contact comes with its data
/// key and channel identity; the conversation starts if the route opened one, then
/// receives the message.
pub struct InboundStaging<'a> {
    pub keyring: &'a Keyring,
    pub context: &'a CommandContext,
    pub inbox_id: Uuid,
    pub keys: &'a RouteKeys,
}

/// What the route decided for one message. No events: a redelivery.
pub struct Routed {
    pub events: Vec<RouteEvent>,
    pub delivery: Delivery,
    pub contact_id: ContactId,
    pub new_contact: bool,
    pub new_conversation: bool,
}

impl InboundStaging<'_> {
    /// Lets the route decide on the message with this source id; its state moves on.
    pub async fn route(&self, route: &mut Loaded<Route>, source_id: &str) -> Result<Routed, CommandError> {
        let source_key = RouteKeys::source_key(self.keyring, &self.keys.identity_hash, source_id);
        let deliver = RouteCommand::Deliver {
            account_id: AccountId(self.context.account_id),
            inbox_id: InboxId(self.inbox_id),
            source_key: source_key.clone(),
            new_contact_id: ContactId(Uuid::now_v7()),
            new_conversation_id: ConversationId(Uuid::now_v7()),
            new_message_id: MessageId(Uuid::now_v7()),
            at: self.context.at,
        };
        let events = decide(route, deliver).await?;
        Ok(Routed {
            delivery: route.state.delivery(&source_key).context("route accepted no delivery")?,
            contact_id: route.state.contact_id().context("route without a contact")?,
            new_contact: events.iter().any(|e| matches!(e, RouteEvent::RouteOpened { .. })),
            new_conversation: events.iter().any(|e| matches!(e, RouteEvent::ConversationLinked { .. })),
            events,
        })
    }

    /// The new contact the route opened: its stream and events (with its id on the
    /// channel, sealed: replies go to it), its data key and its channel identity (into
    /// `side_writes`).
    pub async fn contact(
        &self,
        side_writes: &mut SideWrites,
        routed: &Routed,
        details: ContactDetails,
        source_id: &str,
    ) -> Result<(Loaded<Contact>, Vec<ContactEvent>), CommandError> {
        let contact_id = routed.contact_id;
        side_writes.data_key(self.keyring, contact_id.as_uuid())?;
        side_writes.channel_identity(ChannelIdentity {
            hash: self.keys.identity_hash.clone(),
            account: self.context.account_id,
            inbox: self.inbox_id,
            contact: contact_id.as_uuid(),
        });
        // A fresh id: the stream is new, nothing to read.
        let mut contact = Loaded::<Contact>::new_stream(contact_id.to_string());
        let create = ContactCommand::Create {
            contact_id,
            account_id: AccountId(self.context.account_id),
            details,
            source_id: Some(source_id.to_string()),
            at: self.context.at,
        };
        let events = decide(&mut contact, create).await?;
        Ok((contact, events))
    }

    /// The conversation's events for what the message says: started first (with
    /// `display_id`) when the route opened it.
    pub async fn conversation(
        &self,
        conversation: &mut Loaded<Conversation>,
        routed: &Routed,
        display_id: Option<i64>,
        said: Said,
    ) -> Result<Vec<ConversationEvent>, CommandError> {
        let mut events = Vec::new();
        if routed.new_conversation {
            let start = ConversationCommand::Start {
                conversation_id: routed.delivery.conversation_id,
                account_id: AccountId(self.context.account_id),
                inbox_id: InboxId(self.inbox_id),
                contact_id: routed.contact_id,
                display_id: display_id.context("a new conversation needs its number")?,
                at: self.context.at,
            };
            events.extend(decide(conversation, start).await?);
        }
        let receive = ConversationCommand::ReceiveMessage {
            message_id: routed.delivery.message_id,
            content: said.content,
            attachments: said.attachments,
            sent_at: said.sent_at,
            source_id: said.source_id,
            at: self.context.at,
        };
        events.extend(decide(conversation, receive).await?);
        Ok(events)
    }
}

/// Where a contact's channel identity routes: its keyed hash (the lookup key) and the
/// route stream's id derived from it.
pub struct RouteKeys {
    pub identity_hash: String,
    pub route_id: String,
}

impl RouteKeys {
    pub fn new(keyring: &Keyring, inbox_id: Uuid, contact_source_id: &str) -> Self {
        let identity_hash = keyring.keyed_hash(&["channel-identity", &inbox_id.to_string(), contact_source_id]);
        let route_id = uuid_from_hash(&identity_hash).to_string();
        Self { identity_hash, route_id }
    }

    /// The dedupe key of one message of this identity.
    pub fn source_key(keyring: &Keyring, identity_hash: &str, source_id: &str) -> String {
        keyring.keyed_hash(&["message", identity_hash, source_id])
    }
}

/// A stream id from a keyed hash: its first 16 bytes as a uuid.
pub(crate) fn uuid_from_hash(hex: &str) -> Uuid {
    let bytes: Vec<u8> = (0..32).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or(0)).collect();
    Uuid::from_slice(&bytes).unwrap_or_default()
}
