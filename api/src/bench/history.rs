//! Synthetic history, written fast but exactly as the product writes it: every message
//! is staged by the product's own inbound staging (`commands::inbound::InboundStaging`),
//! and the store seals, chains and appends them — many streams per transaction instead
//! of one command each.

use anyhow::Context;
use commands::context::CommandContext;
use commands::inbound::{InboundStaging, RouteKeys, Said};
use commands::store::{EventStore, Loaded, UnitOfWork};
use domain::actor::Actor;
use domain::contact::ContactDetails;
use domain::conversation::Conversation;
use domain::route::Route;
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
    let keys = RouteKeys::new(store.keyring(), inbox, contact_source_id);
    let staging = InboundStaging { keyring: store.keyring(), context, inbox_id: inbox, keys: &keys };
    let mut route = Loaded::<Route>::new_stream(keys.route_id.clone());
    let mut contact = None;
    let mut thread = None;
    let mut route_events = Vec::new();
    let mut thread_events = Vec::new();
    for n in 0..messages {
        let routed = staging.route(&mut route, &format!("m-{n}")).await?;
        if routed.new_contact {
            let details =
                ContactDetails { name: Some(format!("Customer {contact_source_id}")), email: None, phone: None };
            contact = Some(staging.contact(work.side_writes(), &routed, details, contact_source_id).await?);
        }
        let conversation = thread
            .get_or_insert_with(|| Loaded::<Conversation>::new_stream(routed.delivery.conversation_id.to_string()));
        let text = format!("Hello, this is message {n} about my order; could someone from support look at it please?");
        let display_id = routed.new_conversation.then_some(display_id);
        thread_events.extend(
            staging
                .conversation(
                    conversation,
                    &routed,
                    display_id,
                    Said {
                        content: MessageContent::parse(text)?,
                        attachments: Vec::new(),
                        sent_at: None,
                        source_id: None,
                    },
                )
                .await?,
        );
        route_events.extend(routed.events);
    }
    let (contact, contact_events) = contact.context("the route opened no contact")?;
    let thread = thread.context("no message was generated")?;
    let count = (route_events.len() + contact_events.len() + thread_events.len()) as u64;
    work.append(route, route_events)?;
    work.append(contact, contact_events)?;
    work.append(thread, thread_events)?;
    Ok(count)
}
