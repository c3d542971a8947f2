//! Our messages at their provider: which provider id is which message (recorded when
//! the provider accepts it), and the provider's callbacks about them, kept as they
//! arrive and applied once both are known.
//!
//! Callbacks come in any order and may come before the acceptance is recorded. The
//! intake keeps a callback first and then looks for its message; the delivery records
//! the message first and then looks for kept callbacks. Whichever commits second sees
//! the other's row, so no callback is lost, and applying one twice changes nothing
//! (statuses only move forward).

use std::sync::Mutex;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::conversation::{Conversation, ConversationCommand, DeliveryOutcome};
use domain::ids::MessageId;
use domain::values::MessageStatus;
use projections::keyring::Keyring;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::context::CommandContext;
use crate::error::StoreError;
use crate::side_write::{SideWrite, SideWrites};
use crate::{CommandError, Commands};

/// Most earlier messages one watermark moves (the newest; older ones moved before).
const WATERMARK_REACH: i64 = 50;

/// The keyed hash a contact's id on the channel is tracked by (never in clear here).
pub fn recipient_key(keyring: &Keyring, inbox: Uuid, recipient: &str) -> String {
    keyring.keyed_hash(&["channel-recipient", &inbox.to_string(), recipient])
}

fn rank(status: MessageStatus) -> i16 {
    match status {
        MessageStatus::Pending => 0,
        MessageStatus::Sent => 1,
        MessageStatus::Delivered => 2,
        MessageStatus::Read => 3,
        MessageStatus::Failed => 9,
    }
}

fn status_of(rank: i16) -> MessageStatus {
    match rank {
        1 => MessageStatus::Sent,
        2 => MessageStatus::Delivered,
        3 => MessageStatus::Read,
        _ => MessageStatus::Failed,
    }
}

/// A message the provider accepted: written with `MessageAcceptedByProvider`.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub inbox: Uuid,
    pub provider_message_id: String,
    pub conversation: Uuid,
    pub message: Uuid,
    /// [`recipient_key`] of the contact it went to.
    pub recipient: String,
    pub accepted_at: DateTime<Utc>,
}

#[async_trait]
impl SideWrite for Accepted {
    async fn write(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO channel_messages \
               (inbox_id, provider_message_id, conversation_id, message_id, recipient, accepted_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(self.inbox)
        .bind(&self.provider_message_id)
        .bind(self.conversation)
        .bind(self.message)
        .bind(&self.recipient)
        .bind(self.accepted_at)
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(|e| StoreError::of_write(e, "", StoreError::Conflict))
    }
}

/// A provider's callback about one of our messages.
#[derive(Debug, Clone)]
pub struct Callback {
    pub inbox: Uuid,
    pub provider_message_id: String,
    /// Sent, delivered or read; `Err((code, title))` when it failed.
    pub status: Result<MessageStatus, (String, String)>,
    pub at: DateTime<Utc>,
}

impl Callback {
    fn outcome(&self) -> DeliveryOutcome {
        match &self.status {
            Ok(status) => DeliveryOutcome::Status(*status),
            Err((code, title)) => DeliveryOutcome::Failed { code: Some(code.clone()), reason: title.clone() },
        }
    }
}

impl Commands {
    /// Records an attempt or outcome of a reply's delivery (with `side_writes` in the
    /// same transaction); answers the message's status as the decision saw it.
    pub async fn record_delivery(
        &self,
        context: &CommandContext,
        conversation_id: Uuid,
        message: MessageId,
        outcome: DeliveryOutcome,
        side_writes: &SideWrites,
    ) -> Result<Option<MessageStatus>, CommandError> {
        let seen = Mutex::new(None);
        self.execute_with::<Conversation>(
            context,
            &conversation_id.to_string(),
            |conversation| {
                *seen.lock().unwrap_or_else(|e| e.into_inner()) = conversation.delivery_status(message);
                Ok(ConversationCommand::RecordDelivery {
                    message_id: message,
                    outcome: outcome.clone(),
                    at: Utc::now(),
                })
            },
            side_writes,
        )
        .await?;
        Ok(seen.into_inner().unwrap_or_else(|e| e.into_inner()))
    }

    /// Keeps a callback, then applies it if its message is known.
    pub async fn track_status(&self, context: &CommandContext, callback: &Callback) -> anyhow::Result<()> {
        let pool = self.store().pool();
        let (rank, error) = match &callback.status {
            Ok(status) => (rank(*status), None),
            Err(error) => (rank(MessageStatus::Failed), Some(error.clone())),
        };
        let (code, title) = error.unzip();
        sqlx::query(
            "INSERT INTO channel_statuses (inbox_id, provider_message_id, status, error_code, error_title, at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(callback.inbox)
        .bind(&callback.provider_message_id)
        .bind(rank)
        .bind(code)
        .bind(title)
        .bind(callback.at)
        .execute(pool)
        .await
        .context("failed to keep a delivery status")?;
        let known: Option<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT conversation_id, message_id FROM channel_messages WHERE inbox_id = $1 AND provider_message_id = $2",
        )
        .bind(callback.inbox)
        .bind(&callback.provider_message_id)
        .fetch_optional(pool)
        .await
        .context("failed to find a callback's message")?;
        if let Some((conversation, message)) = known {
            self.apply(context, conversation, message, callback.outcome()).await?;
        }
        Ok(())
    }

    /// Keeps a Messenger watermark (every message to `recipient` before `up_to` was
    /// delivered, or read), then applies it to the messages it covers.
    pub async fn track_watermark(
        &self,
        context: &CommandContext,
        inbox: Uuid,
        recipient: &str,
        status: MessageStatus,
        up_to: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let pool = self.store().pool();
        let recipient = recipient_key(self.store().keyring(), inbox, recipient);
        sqlx::query(
            "INSERT INTO channel_watermarks (inbox_id, recipient, status, up_to) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (inbox_id, recipient, status) \
             DO UPDATE SET up_to = greatest(channel_watermarks.up_to, EXCLUDED.up_to)",
        )
        .bind(inbox)
        .bind(&recipient)
        .bind(rank(status))
        .bind(up_to)
        .execute(pool)
        .await
        .context("failed to keep a watermark")?;
        let covered: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT conversation_id, message_id FROM channel_messages \
             WHERE inbox_id = $1 AND recipient = $2 AND accepted_at <= $3 ORDER BY accepted_at DESC LIMIT $4",
        )
        .bind(inbox)
        .bind(&recipient)
        .bind(up_to)
        .bind(WATERMARK_REACH)
        .fetch_all(pool)
        .await
        .context("failed to find a watermark's messages")?;
        for (conversation, message) in covered {
            self.apply(context, conversation, message, DeliveryOutcome::Status(status)).await?;
        }
        Ok(())
    }

    /// After the provider's acceptance is recorded: what it said about the message
    /// before that (its statuses, and the watermarks of its recipient).
    pub async fn apply_kept_callbacks(&self, context: &CommandContext, accepted: &Accepted) -> anyhow::Result<()> {
        let pool = self.store().pool();
        let kept: Vec<(i16, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT status, error_code, error_title FROM channel_statuses \
             WHERE inbox_id = $1 AND provider_message_id = $2 ORDER BY status",
        )
        .bind(accepted.inbox)
        .bind(&accepted.provider_message_id)
        .fetch_all(pool)
        .await
        .context("failed to read kept statuses")?;
        let marks: Vec<i16> = sqlx::query_scalar(
            "SELECT status FROM channel_watermarks WHERE inbox_id = $1 AND recipient = $2 AND up_to >= $3 \
             ORDER BY status",
        )
        .bind(accepted.inbox)
        .bind(&accepted.recipient)
        .bind(accepted.accepted_at)
        .fetch_all(pool)
        .await
        .context("failed to read kept watermarks")?;
        let outcomes = kept
            .into_iter()
            .map(|(rank, code, title)| match status_of(rank) {
                MessageStatus::Failed => {
                    DeliveryOutcome::Failed { code, reason: title.unwrap_or_else(|| "failed".into()) }
                }
                status => DeliveryOutcome::Status(status),
            })
            .chain(marks.into_iter().map(|rank| DeliveryOutcome::Status(status_of(rank))));
        for outcome in outcomes {
            self.apply(context, accepted.conversation, accepted.message, outcome).await?;
        }
        Ok(())
    }

    async fn apply(
        &self,
        context: &CommandContext,
        conversation: Uuid,
        message: Uuid,
        outcome: DeliveryOutcome,
    ) -> anyhow::Result<()> {
        self.record_delivery(context, conversation, MessageId(message), outcome, &SideWrites::default())
            .await
            .context("failed to apply a provider's callback")?;
        Ok(())
    }
}
