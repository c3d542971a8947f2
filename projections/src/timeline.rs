//! Projector `timeline`: each conversation's messages and activity lines, in order.

use std::borrow::Cow;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

use domain::activity::{ActivityLine, Line, Names};
use domain::actor::Actor;
use domain::attachment::Attachment;
use domain::contact::ContactEvent;
use domain::conversation::ConversationEvent as E;
use domain::ids::{TeamId, UserId};
use domain::values::{MessageStatus, MessageType};
use sqlx::types::Json;
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
    activity: Option<Json<ActivityLine>>,
    sender: String,
    /// `pending` for a public reply a provider delivers.
    status: Option<String>,
    /// The files it carries, as shown (their sources left out).
    attachments: Option<Json<serde_json::Value>>,
    at: DateTime<Utc>,
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
        let mut deliveries = Vec::new();
        for event in events.iter().filter(|e| e.aggregate_type == "conversation") {
            let decoded = event.decode::<E>()?;
            if let Some(delivery) = delivery_of(&decoded) {
                deliveries.push(delivery);
            } else if let Some(message) = message_of(event, decoded) {
                let conversation: Uuid = event.aggregate_id.parse().context("conversation id is not a uuid")?;
                rows.message_id.push(message.message_id);
                rows.conversation_id.push(conversation);
                rows.account_id.push(event.account_id.context("conversation event without an account")?);
                rows.seq.push(event.sequence);
                rows.message_type.push(message.message_type.as_str().to_string());
                rows.private.push(message.private);
                rows.content.push(message.content);
                rows.activity.push(message.activity);
                rows.sender.push(message.sender);
                rows.status.push(message.status);
                rows.attachments.push(message.attachments);
                rows.created_at.push(message.at);
            }
        }
        if !rows.message_id.is_empty() {
            insert(tx, rows).await?;
        }
        // Deliveries move their message's status, in the order they happened (after
        // the batch's new messages, which they may concern).
        for (message, status, error) in deliveries {
            sqlx::query("UPDATE rm_messages SET status = $2, status_error = $3 WHERE message_id = $1")
                .bind(message)
                .bind(status.as_str())
                .bind(error)
                .execute(&mut **tx)
                .await
                .context("failed to move a message's status")?;
        }
        // Erasure: the text of the contact's conversations goes (its key is shredded).
        for event in events.iter().filter(|e| e.event_type == "ContactErased") {
            if let ContactEvent::ContactErased { conversations, .. } = event.decode()? {
                let ids: Vec<Uuid> = conversations.iter().map(|c| c.as_uuid()).collect();
                sqlx::query(
                    "UPDATE rm_messages SET content = NULL, attachments = NULL WHERE conversation_id = ANY($1)",
                )
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
             activity, sender, status, attachments, created_at) SELECT * FROM UNNEST($1::uuid[], $2::uuid[], \
             $3::uuid[], $4::bigint[], $5::text[], $6::bool[], $7::text[], $8::jsonb[], $9::text[], $10::text[], \
             $11::jsonb[], $12::timestamptz[])",
    )
    .bind(rows.message_id)
    .bind(rows.conversation_id)
    .bind(rows.account_id)
    .bind(rows.seq)
    .bind(rows.message_type)
    .bind(rows.private)
    .bind(rows.content)
    .bind(rows.activity)
    .bind(rows.sender)
    .bind(rows.status)
    .bind(rows.attachments)
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
    activity: Vec<Option<Json<ActivityLine>>>,
    sender: Vec<String>,
    status: Vec<Option<String>>,
    attachments: Vec<Option<Json<serde_json::Value>>>,
    created_at: Vec<DateTime<Utc>>,
}

/// A message's files as the timeline shows them: without where they came from.
pub fn shown(attachments: Option<&serde_json::Value>) -> Option<Json<serde_json::Value>> {
    let files = Attachment::list(attachments);
    if files.is_empty() {
        return None;
    }
    let shown: Vec<serde_json::Value> = files
        .into_iter()
        .map(|a| {
            serde_json::json!({"attachment_id": a.attachment_id, "file_type": a.file_type,
                               "mime_type": a.mime_type, "file_name": a.file_name})
        })
        .collect();
    Some(Json(serde_json::Value::Array(shown)))
}

/// The status a delivery event moves its message to, with the provider's error.
fn delivery_of(event: &E) -> Option<(Uuid, MessageStatus, Option<String>)> {
    match event {
        E::MessageAcceptedByProvider { message_id, .. } => Some((message_id.as_uuid(), MessageStatus::Sent, None)),
        E::MessageStatusUpdated { message_id, status, .. } => Some((message_id.as_uuid(), *status, None)),
        E::MessageDeliveryFailed { message_id, code, reason, .. } => {
            let error = match code {
                Some(code) => format!("{code}: {reason}"),
                None => reason.clone(),
            };
            Some((message_id.as_uuid(), MessageStatus::Failed, Some(error)))
        }
        _ => None,
    }
}

/// The timeline line an event adds, if any.
fn message_of(event: &FeedEvent, decoded: E) -> Option<NewMessage> {
    Some(match decoded {
        E::MessageReceived { message_id, contact_id, content, attachments, at, .. } => NewMessage {
            message_id: message_id.as_uuid(),
            message_type: MessageType::Incoming,
            private: false,
            content,
            activity: None,
            sender: Actor::Contact(contact_id.as_uuid()).to_string(),
            status: None,
            attachments: shown(attachments.as_ref()),
            at,
        },
        E::MessageSent { message_id, author, content, private, delivered_by, attachments, at, .. } => NewMessage {
            message_id: message_id.as_uuid(),
            message_type: MessageType::Outgoing,
            private,
            content,
            activity: None,
            sender: Actor::User(author.as_uuid()).to_string(),
            status: delivered_by.map(|_| MessageStatus::Pending.as_str().to_string()),
            attachments: shown(attachments.as_ref()),
            at,
        },
        ref change @ (E::AssigneeChanged { at, .. }
        | E::TeamChanged { at, .. }
        | E::PriorityChanged { at, .. }
        | E::LabelsChanged { at, .. }
        | E::MuteChanged { at, .. }
        | E::StatusChanged { activity: Some(_), at, .. }) => {
            let (message_id, line) = change.activity_line()?;
            let (content, activity) = match line {
                Line::Structured(line) => (None, Some(Json(line))),
                Line::Text(text) => (Some(text), None),
            };
            NewMessage {
                message_id: message_id.as_uuid(),
                message_type: MessageType::Activity,
                private: false,
                content,
                activity,
                sender: event.actor().unwrap_or(Actor::System).to_string(),
                status: None,
                attachments: None,
                at,
            }
        }
        _ => return None,
    })
}

#[derive(Debug, Clone, FromRow)]
pub struct MessageRow {
    pub message_id: Uuid,
    pub conversation_id: Uuid,
    pub seq: i64,
    pub message_type: String,
    pub private: bool,
    /// An activity line's text is rendered when read (see [`render_activity`]).
    pub content: Option<String>,
    pub sender: String,
    pub created_at: DateTime<Utc>,
    /// Where a reply a provider delivers stands (`pending` … `read`, `failed`).
    pub status: Option<String>,
    /// The provider's error, when it failed.
    pub status_error: Option<String>,
    /// The files it carries: `[{attachment_id, file_type, mime_type, file_name}]`.
    pub attachments: Option<Json<serde_json::Value>>,
}

#[derive(FromRow)]
struct StoredMessage {
    #[sqlx(flatten)]
    row: MessageRow,
    activity: Option<Json<ActivityLine>>,
}

const MESSAGE_COLUMNS: &str = "message_id, conversation_id, seq, message_type, private, content, activity, sender, \
                               created_at, status, status_error, attachments";

/// Messages of one conversation in order, after position `after_seq`; `limit` rows.
#[tracing::instrument(skip_all)]
pub async fn messages(
    pool: &PgPool,
    account: Uuid,
    conversation: Uuid,
    after_seq: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<MessageRow>> {
    let stored = sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM rm_messages \
         WHERE account_id = $1 AND conversation_id = $2 AND seq > coalesce($3, 0) ORDER BY seq LIMIT $4"
    ))
    .bind(account)
    .bind(conversation)
    .bind(after_seq)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    render_activity(pool, account, stored).await
}

/// The conversation a message belongs to, within the account.
#[tracing::instrument(skip_all)]
pub async fn message(pool: &PgPool, account: Uuid, message: Uuid) -> sqlx::Result<Option<MessageRow>> {
    Ok(messages_by_id(pool, account, &[message]).await?.pop())
}

/// Several messages of the account at once (those that exist), in no order.
#[tracing::instrument(skip_all)]
pub async fn messages_by_id(pool: &PgPool, account: Uuid, messages: &[Uuid]) -> sqlx::Result<Vec<MessageRow>> {
    let stored: Vec<StoredMessage> = sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM rm_messages WHERE account_id = $1 AND message_id = ANY($2)"
    ))
    .persistent(crate::ONE_OFF_PLAN)
    .bind(account)
    .bind(messages)
    .fetch_all(pool)
    .await?;
    render_activity(pool, account, stored).await
}

/// Renders activity lines with the names the account knows now: one query for the
/// people and one for the teams the page's lines mention.
async fn render_activity(pool: &PgPool, account: Uuid, stored: Vec<StoredMessage>) -> sqlx::Result<Vec<MessageRow>> {
    let lines = || stored.iter().filter_map(|m| m.activity.as_ref().map(|line| line.names_needed()));
    let mut users: Vec<Uuid> = lines().flat_map(|(users, _)| users).map(|u| u.as_uuid()).collect();
    let mut teams: Vec<Uuid> = lines().filter_map(|(_, team)| team).map(|t| t.as_uuid()).collect();
    users.sort_unstable();
    users.dedup();
    teams.sort_unstable();
    teams.dedup();
    let mut known = Known::default();
    if !users.is_empty() {
        known.people = crate::directory::people(pool, account, &users).await?.into_iter().collect();
    }
    if !teams.is_empty() {
        known.teams = crate::directory::team_names(pool, account, &teams).await?.into_iter().collect();
    }
    Ok(stored
        .into_iter()
        .map(|StoredMessage { mut row, activity }| {
            if let Some(line) = activity {
                row.content = Some(line.render(&known));
            }
            row
        })
        .collect())
}

#[derive(Default)]
struct Known {
    people: HashMap<Uuid, String>,
    teams: HashMap<Uuid, String>,
}

impl Names for Known {
    fn agent(&self, user: UserId) -> Option<&str> {
        self.people.get(&user.as_uuid()).map(String::as_str)
    }
    fn team(&self, team: TeamId) -> Option<&str> {
        self.teams.get(&team.as_uuid()).map(String::as_str)
    }
}
