//! Projector `timeline`: each conversation's messages and activity lines, in order.

use std::borrow::Cow;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::contact::ContactEvent;
use domain::conversation::{Activity, ConversationEvent as E};
use domain::values::MessageType;
use sqlx::{FromRow, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::engine::Projector;
use crate::feed::FeedEvent;

pub struct Timeline;

struct NewMessage {
    message_id: Uuid,
    message_type: MessageType,
    private: bool,
    content: Option<String>,
    sender: String,
    at: DateTime<Utc>,
}

impl NewMessage {
    fn activity(activity: Activity, event: &FeedEvent, at: DateTime<Utc>) -> Self {
        Self {
            message_id: activity.message_id.as_uuid(),
            message_type: MessageType::Activity,
            private: false,
            content: Some(activity.content),
            sender: event.actor().to_string(),
            at,
        }
    }
}

#[async_trait]
impl Projector for Timeline {
    fn name(&self) -> &'static str {
        "timeline"
    }

    fn consumes(&self) -> &'static [&'static str] {
        &["conversation", "contact"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_messages"]
    }

    /// Collects the batch's messages and activity lines; one INSERT writes them all.
    async fn apply(&self, tx: &mut Transaction<'_, Postgres>, events: &[Cow<'_, FeedEvent>]) -> anyhow::Result<()> {
        let mut rows = Rows::default();
        for event in events.iter().filter(|e| e.aggregate_type == "conversation") {
            if let Some(message) = message_of(event)? {
                let conversation: Uuid = event.aggregate_id.parse().context("conversation id is not a uuid")?;
                rows.message_id.push(message.message_id);
                rows.conversation_id.push(conversation);
                rows.account_id.push(event.account_id.context("conversation event without an account")?);
                rows.seq.push(event.sequence);
                rows.message_type.push(message.message_type.as_str().to_string());
                rows.private.push(message.private);
                rows.content.push(message.content);
                rows.sender.push(message.sender);
                rows.created_at.push(message.at);
            }
        }
        if !rows.message_id.is_empty() {
            insert(tx, rows).await?;
        }
        // Erasure: the text of the contact's conversations goes (its key is shredded).
        for event in events.iter().filter(|e| e.event_type == "ContactErased") {
            if let ContactEvent::ContactErased { conversations, .. } = event.decode()? {
                let ids: Vec<Uuid> = conversations.iter().map(|c| c.as_uuid()).collect();
                sqlx::query("UPDATE rm_messages SET content = NULL WHERE conversation_id = ANY($1)")
                    .bind(ids)
                    .execute(&mut **tx)
                    .await
                    .context("failed to erase message text")?;
            }
        }
        Ok(())
    }
}

async fn insert(tx: &mut Transaction<'_, Postgres>, rows: Rows) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO rm_messages (message_id, conversation_id, account_id, seq, message_type, private, content, \
             sender, created_at) SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::bigint[], $5::text[], \
             $6::bool[], $7::text[], $8::text[], $9::timestamptz[])",
    )
    .bind(rows.message_id)
    .bind(rows.conversation_id)
    .bind(rows.account_id)
    .bind(rows.seq)
    .bind(rows.message_type)
    .bind(rows.private)
    .bind(rows.content)
    .bind(rows.sender)
    .bind(rows.created_at)
    .execute(&mut **tx)
    .await
    .context("failed to add timeline messages")?;
    Ok(())
}

#[derive(Default)]
struct Rows {
    message_id: Vec<Uuid>,
    conversation_id: Vec<Uuid>,
    account_id: Vec<Uuid>,
    seq: Vec<i64>,
    message_type: Vec<String>,
    private: Vec<bool>,
    content: Vec<Option<String>>,
    sender: Vec<String>,
    created_at: Vec<DateTime<Utc>>,
}

/// The timeline line an event adds, if any.
fn message_of(event: &FeedEvent) -> anyhow::Result<Option<NewMessage>> {
    Ok(Some(match event.decode::<E>()? {
        E::MessageReceived { message_id, contact_id, content, at, .. } => NewMessage {
            message_id: message_id.as_uuid(),
            message_type: MessageType::Incoming,
            private: false,
            content,
            sender: format!("contact:{contact_id}"),
            at,
        },
        E::MessageSent { message_id, author, content, private, at, .. } => NewMessage {
            message_id: message_id.as_uuid(),
            message_type: MessageType::Outgoing,
            private,
            content,
            sender: format!("user:{author}"),
            at,
        },
        E::AssigneeChanged { activity, at, .. }
        | E::TeamChanged { activity, at, .. }
        | E::PriorityChanged { activity, at, .. }
        | E::LabelsChanged { activity, at, .. }
        | E::MuteChanged { activity, at, .. }
        | E::StatusChanged { activity: Some(activity), at, .. } => NewMessage::activity(activity, event, at),
        _ => return Ok(None),
    }))
}

#[derive(Debug, Clone, FromRow)]
pub struct MessageRow {
    pub message_id: Uuid,
    pub conversation_id: Uuid,
    pub seq: i64,
    pub message_type: String,
    pub private: bool,
    pub content: Option<String>,
    pub sender: String,
    pub created_at: DateTime<Utc>,
}

/// Messages of one conversation in order, after position `after_seq`; `limit` rows.
#[tracing::instrument(skip_all)]
pub async fn messages(
    pool: &PgPool,
    account: Uuid,
    conversation: Uuid,
    after_seq: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<MessageRow>> {
    sqlx::query_as(
        "SELECT message_id, conversation_id, seq, message_type, private, content, sender, created_at FROM rm_messages \
         WHERE account_id = $1 AND conversation_id = $2 AND seq > coalesce($3, 0) ORDER BY seq LIMIT $4",
    )
    .bind(account)
    .bind(conversation)
    .bind(after_seq)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The conversation a message belongs to, within the account.
#[tracing::instrument(skip_all)]
pub async fn message(pool: &PgPool, account: Uuid, message: Uuid) -> sqlx::Result<Option<MessageRow>> {
    sqlx::query_as(
        "SELECT message_id, conversation_id, seq, message_type, private, content, sender, created_at FROM rm_messages \
         WHERE account_id = $1 AND message_id = $2",
    )
    .bind(account)
    .bind(message)
    .fetch_optional(pool)
    .await
}
