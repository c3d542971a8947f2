//! Outgoing webhooks, for administrators: their settings, and the delivery log.

use async_graphql::connection::Connection;
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use commands::webhook::delivery::webhook_id_header;
use commands::webhook::policy::{enqueue_delivery, DeliveryJob};
use commands::webhook::{url_binding, WebhookInput};
use uuid::Uuid;

use super::types::connection;
use super::{mutate, parse_id, principal, state, time_cursor, Acting, SHORT_PAGE};
use crate::error::{ApiError, Result};
use crate::policy::Action;
use crate::state::AppState;

#[derive(Default)]
pub struct WebhookQuery;

#[derive(Default)]
pub struct WebhookMutation;

/// A URL subscribed to public events of the account, signed by the Standard Webhooks
/// specification (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
#[derive(SimpleObject)]
pub struct Webhook {
    pub id: ID,
    pub name: String,
    pub url: String,
    /// Public event names (`message_created`, …).
    pub events: Vec<String>,
    pub active: bool,
    /// Why it was disabled: by an administrator, a `410 Gone`, or deliveries that died.
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct WebhookRow {
    webhook_id: Uuid,
    name: String,
    url_sealed: Vec<u8>,
    events: Vec<String>,
    active: bool,
    disabled_reason: Option<String>,
    created_at: DateTime<Utc>,
}

impl WebhookRow {
    fn into_webhook(self, state: &AppState) -> Result<Webhook> {
        let url = String::from_utf8(state.keyring.open_setting(&url_binding(self.webhook_id), &self.url_sealed)?)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("a webhook URL is not UTF-8: {e}")))?;
        Ok(Webhook {
            id: ID(self.webhook_id.to_string()),
            name: self.name,
            url,
            events: self.events,
            active: self.active,
            disabled_reason: self.disabled_reason,
            created_at: self.created_at,
        })
    }
}

const WEBHOOK_COLUMNS: &str = "webhook_id, name, url_sealed, events, active, disabled_reason, created_at";

async fn webhook(state: &AppState, account: Uuid, id: Uuid) -> Result<Webhook> {
    let row: Option<WebhookRow> = sqlx::query_as(&format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE webhook_id = $1 AND account_id = $2 AND deleted_at IS NULL"
    ))
    .bind(id)
    .bind(account)
    .fetch_optional(&state.pool)
    .await?;
    row.ok_or_else(|| ApiError::not_found("webhook"))?.into_webhook(state)
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Not attempted yet.
    Pending,
    Delivered,
    /// The last attempt failed; it is tried again (`nextAttemptAt`).
    Failed,
    /// No more attempts: the schedule ran out, or the webhook is gone.
    Dead,
}

/// One event sent (or being sent) to a webhook; every attempt answers to the same
/// `webhookEventId`, the `webhook-id` header receivers deduplicate by.
#[derive(SimpleObject)]
pub struct WebhookDelivery {
    pub id: ID,
    pub event_name: String,
    pub webhook_event_id: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    delivery_id: Uuid,
    event_name: String,
    status: String,
    attempts: i32,
    last_status_code: Option<i32>,
    last_error: Option<String>,
    next_attempt_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl From<DeliveryRow> for WebhookDelivery {
    fn from(row: DeliveryRow) -> Self {
        WebhookDelivery {
            id: ID(row.delivery_id.to_string()),
            event_name: row.event_name,
            webhook_event_id: webhook_id_header(row.delivery_id),
            status: match row.status.as_str() {
                "delivered" => DeliveryStatus::Delivered,
                "failed" => DeliveryStatus::Failed,
                "dead" => DeliveryStatus::Dead,
                _ => DeliveryStatus::Pending,
            },
            attempts: row.attempts,
            last_status_code: row.last_status_code,
            last_error: row.last_error,
            next_attempt_at: row.next_attempt_at,
            delivered_at: row.delivered_at,
        }
    }
}

#[Object]
impl WebhookQuery {
    /// The account's webhooks.
    async fn webhooks(&self, ctx: &Context<'_>) -> Result<Vec<Webhook>> {
        let principal = principal(ctx)?;
        principal.require(Action::ManageAccount)?;
        let state = state(ctx)?;
        let rows: Vec<WebhookRow> = sqlx::query_as(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE account_id = $1 AND deleted_at IS NULL \
             ORDER BY created_at, webhook_id"
        ))
        .bind(principal.account_id)
        .fetch_all(&state.pool)
        .await?;
        rows.into_iter().map(|row| row.into_webhook(state)).collect()
    }

    /// A webhook's deliveries, newest first.
    #[graphql(complexity = "SHORT_PAGE.cost(first, child_complexity)")]
    async fn webhook_deliveries(
        &self,
        ctx: &Context<'_>,
        webhook_id: ID,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, WebhookDelivery>> {
        let principal = principal(ctx)?;
        principal.require(Action::ManageAccount)?;
        let webhook = parse_id(&webhook_id, "webhook")?;
        let limit = SHORT_PAGE.size(first)?;
        let after = after.map(|c| time_cursor(&c)).transpose()?;
        let rows: Vec<DeliveryRow> = sqlx::query_as(
            "SELECT d.delivery_id, d.event_name, d.status, d.attempts, d.last_status_code, d.last_error, \
                    CASE WHEN j.state = 'pending' THEN j.run_at END AS next_attempt_at, d.delivered_at, d.created_at \
             FROM webhook_deliveries d \
             LEFT JOIN jobs j ON j.job_key = 'webhook:' || d.webhook_id || ':' || d.event_ref \
             WHERE d.webhook_id = $1 AND d.account_id = $2 \
               AND ($3::timestamptz IS NULL OR (d.created_at, d.delivery_id) < ($3, $4)) \
             ORDER BY d.created_at DESC, d.delivery_id DESC LIMIT $5",
        )
        .bind(webhook)
        .bind(principal.account_id)
        .bind(after.map(|(at, _)| at))
        .bind(after.map(|(_, id)| id))
        .bind(limit + 1)
        .fetch_all(&state(ctx)?.pool)
        .await?;
        Ok(connection(
            rows,
            limit,
            |d| format!("{}|{}", d.created_at.to_rfc3339(), d.delivery_id),
            WebhookDelivery::from,
        ))
    }
}

#[derive(InputObject)]
pub struct CreateWebhookInput {
    pub name: String,
    pub url: String,
    /// Public event names: `conversation_created`, `conversation_status_changed`,
    /// `conversation_updated`, `conversation_assignee_changed`, `message_created`,
    /// `contact_created`, `contact_updated`.
    pub events: Vec<String>,
}

#[derive(SimpleObject)]
pub struct CreateWebhookPayload {
    pub id: ID,
    /// The signing secret (`whsec_…`), shown this once.
    pub secret: String,
    pub webhook: Webhook,
}

#[derive(InputObject)]
pub struct UpdateWebhookInput {
    pub webhook_id: ID,
    pub name: Option<String>,
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    /// `true` enables a disabled webhook again.
    pub active: Option<bool>,
}

#[derive(SimpleObject)]
pub struct WebhookPayload {
    pub webhook: Webhook,
}

#[derive(InputObject)]
pub struct WebhookIdInput {
    pub webhook_id: ID,
}

#[derive(SimpleObject)]
pub struct RotateWebhookSecretPayload {
    /// The new signing secret, shown this once.
    pub secret: String,
    pub webhook: Webhook,
}

#[derive(SimpleObject)]
pub struct DeleteWebhookPayload {
    pub webhook_id: ID,
}

#[derive(SimpleObject)]
pub struct SendTestWebhookPayload {
    /// The test delivery: `webhookDeliveries` shows how it goes.
    pub delivery_id: ID,
    pub webhook_event_id: String,
}

#[Object]
impl WebhookMutation {
    async fn create_webhook(&self, ctx: &Context<'_>, input: CreateWebhookInput) -> Result<CreateWebhookPayload> {
        let input = &input;
        mutate(ctx, move |Acting { principal, state, context }| async move {
            principal.require(Action::ManageAccount)?;
            let (created, _) = state
                .commands
                .create_webhook(&context, &state.outbound, &input.name, &input.url, &input.events)
                .await?;
            let webhook = webhook(&state, principal.account_id, created.webhook_id).await?;
            Ok(CreateWebhookPayload { id: webhook.id.clone(), secret: created.secret, webhook })
        })
        .await
    }

    async fn update_webhook(&self, ctx: &Context<'_>, input: UpdateWebhookInput) -> Result<WebhookPayload> {
        let id = parse_id(&input.webhook_id, "webhook")?;
        let input = &input;
        mutate(ctx, move |Acting { principal, state, context }| async move {
            principal.require(Action::ManageAccount)?;
            let change = WebhookInput {
                name: input.name.clone(),
                url: input.url.clone(),
                events: input.events.clone(),
                active: input.active,
            };
            state.commands.update_webhook(&context, &state.outbound, id, change).await?;
            Ok(WebhookPayload { webhook: webhook(&state, principal.account_id, id).await? })
        })
        .await
    }

    async fn rotate_webhook_secret(
        &self,
        ctx: &Context<'_>,
        input: WebhookIdInput,
    ) -> Result<RotateWebhookSecretPayload> {
        let id = parse_id(&input.webhook_id, "webhook")?;
        mutate(ctx, move |Acting { principal, state, context }| async move {
            principal.require(Action::ManageAccount)?;
            let (secret, _) = state.commands.rotate_webhook_secret(&context, id).await?;
            Ok(RotateWebhookSecretPayload { secret, webhook: webhook(&state, principal.account_id, id).await? })
        })
        .await
    }

    async fn delete_webhook(&self, ctx: &Context<'_>, input: WebhookIdInput) -> Result<DeleteWebhookPayload> {
        let id = parse_id(&input.webhook_id, "webhook")?;
        mutate(ctx, move |Acting { principal, state, context }| async move {
            principal.require(Action::ManageAccount)?;
            state.commands.delete_webhook(&context, id).await?;
            Ok(DeleteWebhookPayload { webhook_id: ID(id.to_string()) })
        })
        .await
    }

    /// Sends a test event (`webhook_test`) to the webhook, through the same signed,
    /// retried delivery as any other.
    async fn send_test_webhook(&self, ctx: &Context<'_>, input: WebhookIdInput) -> Result<SendTestWebhookPayload> {
        let principal = principal(ctx)?;
        principal.require(Action::ManageAccount)?;
        let id = parse_id(&input.webhook_id, "webhook")?;
        let state = state(ctx)?;
        webhook(state, principal.account_id, id).await?;
        let job = DeliveryJob::test(id);
        let mut tx = state.pool.begin().await?;
        enqueue_delivery(&mut tx, &job, principal.account_id, state.jobs.clock().now()).await?;
        tx.commit().await?;
        Ok(SendTestWebhookPayload {
            delivery_id: ID(job.delivery_id.to_string()),
            webhook_event_id: webhook_id_header(job.delivery_id),
        })
    }
}
