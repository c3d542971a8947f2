//! The webhooks policy: each public event of an account becomes one delivery per
//! active webhook subscribed to it, enqueued with its job. Keyed by the webhook and
//! the causing event, so reacting to an event again enqueues nothing more.

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::public_event::PublicEvent;
use projections::feed::FeedEvent;
use projections::policy::Policy;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::jobs::{enqueue, Clock, NewJob, DEFAULT_MAX_ATTEMPTS};
use std::sync::Arc;

/// The policy's name (its checkpoint, and its actor `system:webhooks`).
pub const POLICY: &str = "webhooks";
/// The job kind of a delivery.
pub const DELIVERY_JOB: &str = "webhook_delivery";

/// What a delivery job carries: which webhook, and the event by reference (its
/// content is read, and opened, when it is sent: an erased contact's never is).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryJob {
    pub delivery_id: Uuid,
    pub webhook_id: Uuid,
    pub event_name: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub transaction_id: i64,
    pub global_position: i64,
    /// The causing event's correlation, which what the delivery writes joins.
    #[serde(default)]
    pub correlation_id: Option<Uuid>,
}

/// The aggregate type of a test delivery's stand-in event.
pub const TEST_EVENT: &str = "test";

impl DeliveryJob {
    fn new(webhook_id: Uuid, event_name: &str, event: &FeedEvent) -> Self {
        let mut job = Self {
            delivery_id: Uuid::nil(),
            webhook_id,
            event_name: event_name.to_string(),
            aggregate_type: event.aggregate_type.clone(),
            aggregate_id: event.aggregate_id.clone(),
            sequence: event.sequence,
            transaction_id: event.position.transaction_id,
            global_position: event.position.global_position,
            correlation_id: event.correlation_id(),
        };
        job.delivery_id = Uuid::new_v5(&webhook_id, job.job_key().as_bytes());
        job
    }

    /// A test delivery (`webhook_test`), about no event of the log.
    pub fn test(webhook_id: Uuid) -> Self {
        let id = Uuid::now_v7();
        let mut job = Self {
            delivery_id: Uuid::nil(),
            webhook_id,
            event_name: "webhook_test".into(),
            aggregate_type: TEST_EVENT.into(),
            aggregate_id: id.to_string(),
            sequence: 0,
            transaction_id: 0,
            global_position: 0,
            correlation_id: None,
        };
        job.delivery_id = Uuid::new_v5(&webhook_id, job.job_key().as_bytes());
        job
    }

    /// The causing event (`<type>/<id>/<sequence>`).
    pub fn event_ref(&self) -> String {
        projections::envelope::event_id(&self.aggregate_type, &self.aggregate_id, self.sequence)
    }

    /// The job's key: this webhook and this event, enqueued once.
    pub fn job_key(&self) -> String {
        format!("webhook:{}:{}", self.webhook_id, self.event_ref())
    }
}

/// Records a delivery (pending) and enqueues its job, once: in the transaction of
/// `conn`, which the caller commits.
pub async fn enqueue_delivery(
    conn: &mut PgConnection,
    job: &DeliveryJob,
    account: Uuid,
    run_at: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO webhook_deliveries (delivery_id, webhook_id, account_id, event_name, event_ref) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(job.delivery_id)
    .bind(job.webhook_id)
    .bind(account)
    .bind(&job.event_name)
    .bind(job.event_ref())
    .execute(&mut *conn)
    .await
    .context("failed to record a delivery")?;
    let new = NewJob {
        kind: DELIVERY_JOB,
        account: Some(account),
        key: job.job_key(),
        payload: serde_json::to_value(job)?,
        run_at,
        max_attempts: DEFAULT_MAX_ATTEMPTS,
    };
    enqueue(&mut *conn, &new).await.context("failed to enqueue a delivery")?;
    Ok(())
}

/// A webhook as the policy matches events to it.
#[derive(sqlx::FromRow)]
struct Subscription {
    webhook_id: Uuid,
    account_id: Uuid,
    events: Vec<String>,
    created_at: DateTime<Utc>,
}

pub struct WebhooksPolicy {
    pool: PgPool,
    clock: Arc<dyn Clock>,
}

impl WebhooksPolicy {
    pub fn new(pool: PgPool, clock: Arc<dyn Clock>) -> Self {
        Self { pool, clock }
    }
}

#[async_trait]
impl Policy for WebhooksPolicy {
    fn name(&self) -> &'static str {
        POLICY
    }

    fn consumes(&self) -> &'static [&'static str] {
        &["conversation", "contact"]
    }

    /// Deliveries read (and open) their event when they send: nothing to open here.
    fn opens(&self) -> bool {
        false
    }

    async fn react(&self, events: &[FeedEvent]) -> anyhow::Result<()> {
        let mut named = Vec::new();
        for event in events {
            let name = PublicEvent::of(&event.aggregate_type, &event.event_type);
            if let (Some(name), Some(account)) = (name, event.account_id) {
                named.push((event, name, account));
            }
        }
        if named.is_empty() {
            return Ok(());
        }
        let mut accounts: Vec<Uuid> = named.iter().map(|(_, _, account)| *account).collect();
        accounts.sort_unstable();
        accounts.dedup();
        // The batch's accounts' webhooks, once for the batch.
        let webhooks: Vec<Subscription> = sqlx::query_as(
            "SELECT webhook_id, account_id, events, created_at FROM webhooks \
             WHERE account_id = ANY($1) AND active AND deleted_at IS NULL",
        )
        .bind(&accounts)
        .fetch_all(&self.pool)
        .await
        .context("failed to find the accounts' webhooks")?;
        if webhooks.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.context("failed to begin")?;
        for (event, name, account) in named {
            // Webhooks that existed when the event was recorded.
            let subscribed = webhooks.iter().filter(|w| {
                w.account_id == account
                    && w.created_at <= event.recorded_at
                    && w.events.iter().any(|e| e == name.as_str())
            });
            for webhook in subscribed {
                let job = DeliveryJob::new(webhook.webhook_id, name.as_str(), event);
                enqueue_delivery(&mut tx, &job, account, self.clock.now()).await?;
            }
        }
        tx.commit().await.context("failed to commit deliveries")?;
        Ok(())
    }
}
