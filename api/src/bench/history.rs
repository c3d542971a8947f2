//! Synthetic history, written fast but exactly as the product writes it: the domain
//! aggregates decide every event, and the store seals, chains and appends them — many
//! streams per transaction instead of one command each.

use anyhow::Context;
use commands::context::CommandContext;
use commands::decide;
use commands::inbound::RouteKeys;
use commands::side_write::ChannelIdentity;
use commands::store::{EventStore, Loaded, UnitOfWork};
use domain::actor::Actor;
use domain::contact::{Contact, ContactCommand, ContactDetails};
use domain::conversation::{Conversation, ConversationCommand};
use domain::ids::{AccountId, ContactId, ConversationId, InboxId, MessageId};
use domain::route::{Route, RouteCommand};
use domain::values::MessageContent;
use uuid::Uuid;

/// Streams appended per transaction.
const CONVERSATIONS_PER_COMMIT: usize = 400;

/// Writes `conversations` conversations of `messages` incoming messages each, from
/// contacts named `{prefix}-{n}`, to one inbox; returns the events written.
pub async fn generate(
    commands: &commands::Commands,
    account: Uuid,
    inbox: Uuid,
    prefix: &str,
    conversations: usize,
    messages: usize,
) -> anyhow::Result<u64> {
    let store = commands.store();
    let mut written = 0u64;
    let mut next = 0usize;
    while next < conversations {
        let batch = CONVERSATIONS_PER_COMMIT.min(conversations - next).min((20_000 / messages.max(1)).max(1));
        let last_display_id = commands.reserve_display_ids(account, batch as i64).await?;
        let context = CommandContext::now(account, Actor::System);
        let mut work = UnitOfWork::new(&context);
        for k in 0..batch {
            let display_id = last_display_id - (batch - 1 - k) as i64;
            written += conversation(
                store,
                &mut work,
                &context,
                inbox,
                &format!("{prefix}-{}", next + k),
                display_id,
                messages,
            )
            .await?;
        }
        store.commit(work).await?;
        next += batch;
    }
    Ok(written)
}

async fn conversation(
    store: &EventStore,
    work: &mut UnitOfWork<'_>,
    context: &CommandContext,
    inbox: Uuid,
    contact_source_id: &str,
    display_id: i64,
    messages: usize,
) -> anyhow::Result<u64> {
    let keyring = store.keyring();
    let keys = RouteKeys::new(keyring, inbox, contact_source_id);
    let contact_id = ContactId(Uuid::now_v7());
    let conversation_id = ConversationId(Uuid::now_v7());
    let account_id = AccountId(context.account_id);
    let mut route = Loaded::<Route>::new_stream(keys.route_id.clone());
    let mut contact = Loaded::<Contact>::new_stream(contact_id.to_string());
    let mut thread = Loaded::<Conversation>::new_stream(conversation_id.to_string());
    let mut route_events = Vec::new();
    let mut thread_events = Vec::new();
    for n in 0..messages {
        let deliver = RouteCommand::Deliver {
            account_id,
            inbox_id: InboxId(inbox),
            source_key: RouteKeys::source_key(keyring, &keys.identity_hash, &format!("m-{n}")),
            new_contact_id: contact_id,
            new_conversation_id: conversation_id,
            new_message_id: MessageId(Uuid::now_v7()),
            at: context.at,
        };
        route_events.extend(decide(&mut route, deliver).await?);
        let delivery = route.state.delivery(&RouteKeys::source_key(keyring, &keys.identity_hash, &format!("m-{n}")));
        let delivery = delivery.context("the route accepted no delivery")?;
        if n == 0 {
            let start = ConversationCommand::Start {
                conversation_id,
                account_id,
                inbox_id: InboxId(inbox),
                contact_id,
                display_id,
                at: context.at,
            };
            thread_events.extend(decide(&mut thread, start).await?);
        }
        let text = format!("Hello, this is message {n} about my order; could someone from support look at it please?");
        let receive = ConversationCommand::ReceiveMessage {
            message_id: delivery.message_id,
            content: MessageContent::parse(text)?,
            at: context.at,
        };
        thread_events.extend(decide(&mut thread, receive).await?);
    }
    work.side_writes().data_key(keyring, contact_id.as_uuid())?;
    work.side_writes().channel_identity(ChannelIdentity {
        hash: keys.identity_hash.clone(),
        account: context.account_id,
        inbox,
        contact: contact_id.as_uuid(),
    });
    let details = ContactDetails { name: Some(format!("Customer {contact_source_id}")), email: None, phone: None };
    let create = ContactCommand::Create { contact_id, account_id, details, at: context.at };
    let contact_events = decide(&mut contact, create).await?;
    let count = (route_events.len() + contact_events.len() + thread_events.len()) as u64;
    work.append(route, route_events)?;
    work.append(contact, contact_events)?;
    work.append(thread, thread_events)?;
    Ok(count)
}
