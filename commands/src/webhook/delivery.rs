//! Delivering one webhook event: the job of kind `webhook_delivery`.
//!
//! Each attempt reads the event from the log (opened now: an erased contact's content
//! is never sent), builds the body as the API shows the entity, signs it and POSTs it
//! through the outbound guard. A 2xx answer delivers it; `410 Gone` disables the
//! webhook; anything else (or no answer in 10 s) is retried on the job schedule, a
//! `Retry-After` winning. When the last attempt fails the delivery is dead and the
//! webhook disabled, with the reason, until an administrator enables it again.
//!
//! At least once: the receiver deduplicates by `webhook-id`, the same on every
//! attempt. A second accepted delivery can happen only when the process dies between
//! the receiver's answer and the record of it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use domain::actor::Actor;
use domain::contact::ContactEvent;
use domain::conversation::ConversationEvent;
use projections::feed::{read_event, FeedPosition};
use serde_json::{json, Value};
use uuid::Uuid;

use super::policy::{DeliveryJob, DELIVERY_JOB, POLICY, TEST_EVENT};
use super::signature::sign;
use super::{secret_binding, url_binding};
use crate::context::CommandContext;
use crate::jobs::{Clock, Job, JobHandler, Outcome};
use crate::outbound::{Outbound, OutboundError};
use crate::Commands;

/// How long a projector may take to show an event before a delivery asks again.
const NOT_YET_PROJECTED: Duration = Duration::from_millis(200);
/// The longest error text kept per attempt.
const MAX_ERROR_CHARS: usize = 500;

pub struct WebhookDelivery {
    commands: Commands,
    outbound: Outbound,
    clock: Arc<dyn Clock>,
}

impl WebhookDelivery {
    pub fn new(commands: Commands, outbound: Outbound, clock: Arc<dyn Clock>) -> Self {
        Self { commands, outbound, clock }
    }
}

#[derive(sqlx::FromRow)]
struct Target {
    account_id: Uuid,
    active: bool,
    deleted: bool,
    url_sealed: Vec<u8>,
    secret_sealed: Vec<u8>,
}

/// How an attempt ended, as the delivery log records it.
struct Attempt {
    status_code: Option<i32>,
    error: Option<String>,
    started: Instant,
}

#[async_trait]
impl JobHandler for WebhookDelivery {
    fn kind(&self) -> &'static str {
        DELIVERY_JOB
    }

    async fn run(&self, job: &Job) -> Outcome {
        let delivery: DeliveryJob = match job.payload() {
            Ok(delivery) => delivery,
            Err(given_up) => return given_up,
        };
        match self.attempt(job, &delivery).await {
            Ok(outcome) => outcome,
            Err(error) => Outcome::Retry { error: format!("{error:#}"), after: None },
        }
    }
}

impl WebhookDelivery {
    async fn attempt(&self, job: &Job, delivery: &DeliveryJob) -> anyhow::Result<Outcome> {
        let pool = self.commands.store().pool();
        let target: Option<Target> = sqlx::query_as(
            "SELECT account_id, active, deleted_at IS NOT NULL AS deleted, url_sealed, secret_sealed \
             FROM webhooks WHERE webhook_id = $1",
        )
        .bind(delivery.webhook_id)
        .fetch_optional(pool)
        .await
        .context("failed to read the webhook")?;
        let target = match target {
            Some(target) if target.active && !target.deleted => target,
            _ => {
                let reason = "the webhook was disabled or deleted before delivery";
                self.record(
                    job,
                    delivery,
                    "dead",
                    &Attempt { status_code: None, error: Some(reason.into()), started: Instant::now() },
                )
                .await?;
                return Ok(Outcome::Give { error: reason.into() });
            }
        };
        let Some(data) = self.data(target.account_id, delivery).await? else {
            return Ok(Outcome::NotYet { after: NOT_YET_PROJECTED });
        };
        let keyring = self.commands.store().keyring();
        let url = String::from_utf8(keyring.open_setting(&url_binding(delivery.webhook_id), &target.url_sealed)?)?;
        let secret =
            String::from_utf8(keyring.open_setting(&secret_binding(delivery.webhook_id), &target.secret_sealed)?)?;
        let now = self.clock.now();
        let body = serde_json::to_vec(&json!({
            "event": delivery.event_name,
            "timestamp": now.to_rfc3339(),
            "account_id": target.account_id,
            "data": data,
        }))?;
        let signed = sign(&secret, &webhook_id_header(delivery.delivery_id), now.timestamp(), &body)?;
        let mut headers = vec![("content-type", "application/json".to_string())];
        headers.extend(signed.headers());
        let started = Instant::now();
        let answer = self.outbound.post(&url, &headers, body).await;
        let (attempt, retry_after) = match &answer {
            Ok(response) => {
                let code = response.status().as_u16();
                let error = (!response.status().is_success()).then(|| format!("the receiver answered {code}"));
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                (Attempt { status_code: Some(i32::from(code)), error, started }, retry_after)
            }
            Err(error) => (Attempt { status_code: None, error: Some(error.to_string()), started }, None),
        };
        let gone = attempt.status_code == Some(410);
        let refused = matches!(answer, Err(OutboundError::Refused(_)));
        if attempt.error.is_none() {
            self.record(job, delivery, "delivered", &attempt).await?;
            return Ok(Outcome::Done);
        }
        let error = attempt.error.clone().unwrap_or_default();
        if gone || refused || job.is_last_attempt() {
            self.record(job, delivery, "dead", &attempt).await?;
            let reason = if gone {
                "the receiver answered 410 Gone".to_string()
            } else {
                format!("a delivery failed {} times; the last: {error}", job.attempts)
            };
            self.disable(target.account_id, delivery, &reason).await?;
            return Ok(Outcome::Give { error });
        }
        self.record(job, delivery, "failed", &attempt).await?;
        Ok(Outcome::Retry { error, after: retry_after })
    }

    /// The entity the event is about, as the API shows it; `None` while the read
    /// model it comes from has not reached the event.
    async fn data(&self, account: Uuid, delivery: &DeliveryJob) -> anyhow::Result<Option<Value>> {
        if delivery.aggregate_type == TEST_EVENT {
            return Ok(Some(json!({ "webhookId": delivery.webhook_id, "test": true })));
        }
        let store = self.commands.store();
        let mut conn = store.pool().acquire().await.context("failed to get a connection")?;
        let event =
            read_event(&mut conn, store.keyring(), &delivery.aggregate_type, &delivery.aggregate_id, delivery.sequence)
                .await?
                .context("the event of a delivery is not in the log")?;
        if event.aggregate_type == "contact" {
            return Ok(Some(match event.decode::<ContactEvent>()? {
                ContactEvent::ContactCreated { contact_id, name, email, phone, .. }
                | ContactEvent::ContactUpdated { contact_id, name, email, phone, .. } => {
                    json!({ "id": contact_id, "name": name, "email": email, "phone": phone })
                }
                ContactEvent::ContactErased { .. } => Value::Null,
            }));
        }
        let conversation_id = event.aggregate_id.clone();
        match event.decode::<ConversationEvent>()? {
            ConversationEvent::MessageReceived { message_id, contact_id, content, at, .. } => Ok(Some(json!({
                "id": message_id, "conversationId": conversation_id, "messageType": "incoming", "private": false,
                "content": content, "sender": Actor::Contact(contact_id.as_uuid()).to_string(), "createdAt": at,
            }))),
            ConversationEvent::MessageSent { message_id, author, content, private, at, .. } => Ok(Some(json!({
                "id": message_id, "conversationId": conversation_id, "messageType": "outgoing", "private": private,
                "content": content, "sender": Actor::User(author.as_uuid()).to_string(), "createdAt": at,
            }))),
            ConversationEvent::MessageAcceptedByProvider { message_id, .. }
            | ConversationEvent::MessageStatusUpdated { message_id, .. }
            | ConversationEvent::MessageDeliveryFailed { message_id, .. } => {
                // The message's status as the timeline shows it, once it shows this event.
                let position =
                    FeedPosition { transaction_id: delivery.transaction_id, global_position: delivery.global_position };
                if projections::engine::committed_through(store.pool(), "timeline").await? < position {
                    return Ok(None);
                }
                let row = projections::timeline::message(store.pool(), account, message_id.as_uuid()).await?;
                Ok(Some(row.map_or(Value::Null, |m| {
                    json!({ "id": m.message_id, "conversationId": m.conversation_id, "status": m.status,
                            "statusError": m.status_error })
                })))
            }
            _ => {
                let position =
                    FeedPosition { transaction_id: delivery.transaction_id, global_position: delivery.global_position };
                if projections::engine::committed_through(store.pool(), "inbox_list").await? < position {
                    return Ok(None);
                }
                let id: Uuid = conversation_id.parse().context("a conversation id that is no uuid")?;
                let row = projections::inbox_list::get(store.pool(), account, id).await?;
                Ok(Some(row.map_or(Value::Null, |c| {
                    json!({
                        "id": c.conversation_id, "displayId": c.display_id, "inboxId": c.inbox_id,
                        "contactId": c.contact_id, "status": c.status, "priority": c.priority,
                        "assigneeId": c.assignee_id, "teamId": c.team_id, "labels": c.labels,
                        "snoozedUntil": c.snoozed_until, "muted": c.muted, "customAttributes": c.custom_attributes,
                        "createdAt": c.created_at, "lastActivityAt": c.last_activity_at,
                    })
                })))
            }
        }
    }

    /// Keeps the attempt in the delivery log and the delivery's state.
    async fn record(&self, job: &Job, delivery: &DeliveryJob, status: &str, attempt: &Attempt) -> anyhow::Result<()> {
        let now = self.clock.now();
        let error = attempt.error.as_ref().map(|e| e.chars().take(MAX_ERROR_CHARS).collect::<String>());
        let mut tx = self.commands.store().pool().begin().await?;
        sqlx::query(
            "INSERT INTO webhook_delivery_attempts (delivery_id, attempt, at, status_code, error, duration_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(delivery.delivery_id)
        .bind(job.attempts)
        .bind(now)
        .bind(attempt.status_code)
        .bind(&error)
        .bind(i32::try_from(attempt.started.elapsed().as_millis()).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $2, attempts = $3, last_status_code = $4, last_error = $5, \
             delivered_at = CASE WHEN $2 = 'delivered' THEN $6 END WHERE delivery_id = $1",
        )
        .bind(delivery.delivery_id)
        .bind(status)
        .bind(job.attempts)
        .bind(attempt.status_code)
        .bind(&error)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await.context("failed to record a delivery attempt")?;
        Ok(())
    }

    async fn disable(&self, account: Uuid, delivery: &DeliveryJob, reason: &str) -> anyhow::Result<()> {
        let mut context = CommandContext::now(account, Actor::policy(POLICY)?);
        context.causation_id = Some(delivery.event_ref());
        if let Some(correlation) = delivery.correlation_id {
            context.correlation_id = correlation;
        }
        tracing::warn!(webhook = %delivery.webhook_id, reason, "disabling a webhook");
        self.commands.disable_webhook(&context, delivery.webhook_id, reason).await?;
        Ok(())
    }
}

/// The `webhook-id` of a delivery: the same on every attempt.
pub fn webhook_id_header(delivery: Uuid) -> String {
    format!("msg_{}", delivery.simple())
}
