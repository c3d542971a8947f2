//! Outgoing webhooks: administrators subscribe a URL to public events of their
//! account (this file); the webhooks policy turns each event into one delivery per
//! subscribed webhook (`policy`); a durable job delivers it, signed by the Standard
//! Webhooks specification (`delivery`, `signature`).

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use domain::ids::AccountId;
use domain::public_event::PublicEvent;
use domain::values::Name;
use domain::webhook::{Webhook, WebhookCommand};
use domain::DomainError;
use rand::RngCore;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::context::CommandContext;
use crate::error::StoreError;
use crate::outbound::Outbound;
use crate::side_write::{SideWrite, SideWrites};
use crate::{CommandError, Commands, Written};

pub mod delivery;
pub mod policy;
pub mod signature;

/// What an administrator sets.
pub struct WebhookInput {
    pub name: Option<String>,
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub active: Option<bool>,
}

/// A new webhook and its signing secret (shown once).
pub struct CreatedWebhook {
    pub webhook_id: Uuid,
    pub secret: String,
}

/// A fresh signing secret: `whsec_` and 24 random bytes, base64.
fn new_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("whsec_{}", BASE64.encode(bytes))
}

/// Where a webhook's sealed settings are bound (see `Keyring::seal_setting`).
pub fn url_binding(webhook: Uuid) -> String {
    format!("webhook/{webhook}/url")
}
pub(crate) fn secret_binding(webhook: Uuid) -> String {
    format!("webhook/{webhook}/secret")
}

impl Commands {
    /// Creates a webhook in the context's account; its URL is checked against the
    /// outbound guard first.
    pub async fn create_webhook(
        &self,
        context: &CommandContext,
        outbound: &Outbound,
        name: &str,
        url: &str,
        events: &[String],
    ) -> Result<(CreatedWebhook, Written), CommandError> {
        let name = Name::parse("name", name)?;
        let events = PublicEvent::parse_set(events)?;
        let url = outbound.check(url).await?;
        let webhook_id = Uuid::now_v7();
        let secret = new_secret();
        let keyring = self.store().keyring();
        let row = NewWebhookRow {
            webhook_id,
            account: context.account_id,
            name: name.as_str().to_string(),
            url_sealed: keyring.seal_setting(&url_binding(webhook_id), url.as_str().as_bytes())?,
            secret_sealed: keyring.seal_setting(&secret_binding(webhook_id), secret.as_bytes())?,
            events: events.iter().map(|e| e.as_str().to_string()).collect(),
        };
        let host = url.host_str().unwrap_or_default().to_string();
        let written = self
            .execute_with::<Webhook>(
                context,
                &webhook_id.to_string(),
                |_| {
                    Ok(WebhookCommand::Create {
                        account_id: AccountId(context.account_id),
                        name: name.clone(),
                        host: host.clone(),
                        events: events.clone(),
                        at: context.at,
                    })
                },
                &SideWrites::of(row),
            )
            .await?;
        Ok((CreatedWebhook { webhook_id, secret }, written))
    }

    /// Changes a webhook's name, URL, events, or whether it is active (enabling one
    /// that was disabled).
    pub async fn update_webhook(
        &self,
        context: &CommandContext,
        outbound: &Outbound,
        webhook_id: Uuid,
        input: WebhookInput,
    ) -> Result<Written, CommandError> {
        let name = input.name.as_deref().map(|n| Name::parse("name", n)).transpose()?;
        let events = input.events.as_deref().map(PublicEvent::parse_set).transpose()?;
        let url = match input.url.as_deref() {
            Some(url) => Some(outbound.check(url).await?),
            None => None,
        };
        let keyring = self.store().keyring();
        let change = WebhookChange {
            webhook_id,
            name: name.as_ref().map(|n| n.as_str().to_string()),
            url_sealed: url
                .as_ref()
                .map(|u| keyring.seal_setting(&url_binding(webhook_id), u.as_str().as_bytes()))
                .transpose()?,
            events: events.as_ref().map(|e| e.iter().map(|e| e.as_str().to_string()).collect()),
            active: input.active,
            disabled_reason: input.active.map(|active| (!active).then(|| "disabled by an administrator".to_string())),
            ..WebhookChange::default()
        };
        let host = url.as_ref().map(|u| u.host_str().unwrap_or_default().to_string());
        self.change_webhook(context, webhook_id, change, |_| WebhookCommand::Update {
            name: name.clone(),
            host: host.clone(),
            events: events.clone(),
            active: input.active,
            at: context.at,
        })
        .await
    }

    /// A new signing secret (shown once); the old one signs nothing from now on.
    pub async fn rotate_webhook_secret(
        &self,
        context: &CommandContext,
        webhook_id: Uuid,
    ) -> Result<(String, Written), CommandError> {
        let secret = new_secret();
        let sealed = self.store().keyring().seal_setting(&secret_binding(webhook_id), secret.as_bytes())?;
        let change = WebhookChange { webhook_id, secret_sealed: Some(sealed), ..WebhookChange::default() };
        let written =
            self.change_webhook(context, webhook_id, change, |at| WebhookCommand::RotateSecret { at }).await?;
        Ok((secret, written))
    }

    pub async fn delete_webhook(&self, context: &CommandContext, webhook_id: Uuid) -> Result<Written, CommandError> {
        let change = WebhookChange { webhook_id, deleted: true, ..WebhookChange::default() };
        self.change_webhook(context, webhook_id, change, |at| WebhookCommand::Delete { at }).await
    }

    /// Stops deliveries to a webhook, for `reason` (its deliveries die, or its
    /// receiver answered 410 Gone); an administrator enables it again.
    pub async fn disable_webhook(
        &self,
        context: &CommandContext,
        webhook_id: Uuid,
        reason: &str,
    ) -> Result<Written, CommandError> {
        let change = WebhookChange {
            webhook_id,
            active: Some(false),
            disabled_reason: Some(Some(reason.to_string())),
            ..WebhookChange::default()
        };
        let reason = reason.to_string();
        self.change_webhook(context, webhook_id, change, |at| WebhookCommand::Disable { reason: reason.clone(), at })
            .await
    }

    async fn change_webhook(
        &self,
        context: &CommandContext,
        webhook_id: Uuid,
        change: WebhookChange,
        command: impl Fn(domain::values::Instant) -> WebhookCommand,
    ) -> Result<Written, CommandError> {
        self.execute_with::<Webhook>(
            context,
            &webhook_id.to_string(),
            |webhook| match webhook.account_id() {
                Some(owner) if owner.as_uuid() == context.account_id => Ok(command(context.at)),
                _ => Err(DomainError::NotFound("webhook").into()),
            },
            &SideWrites::of(change),
        )
        .await
    }
}

/// A new webhook's settings row.
struct NewWebhookRow {
    webhook_id: Uuid,
    account: Uuid,
    name: String,
    url_sealed: Vec<u8>,
    secret_sealed: Vec<u8>,
    events: Vec<String>,
}

#[async_trait]
impl SideWrite for NewWebhookRow {
    async fn write(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO webhooks (webhook_id, account_id, name, url_sealed, secret_sealed, events) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(self.webhook_id)
        .bind(self.account)
        .bind(&self.name)
        .bind(&self.url_sealed)
        .bind(&self.secret_sealed)
        .bind(&self.events)
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(|e| StoreError::of_write(e, "", StoreError::Conflict))
    }
}

/// A change to a webhook's settings row; `None` leaves a column as it is.
#[derive(Default)]
struct WebhookChange {
    webhook_id: Uuid,
    name: Option<String>,
    url_sealed: Option<Vec<u8>>,
    secret_sealed: Option<Vec<u8>>,
    events: Option<Vec<String>>,
    active: Option<bool>,
    disabled_reason: Option<Option<String>>,
    deleted: bool,
}

#[async_trait]
impl SideWrite for WebhookChange {
    async fn write(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhooks SET name = COALESCE($2, name), url_sealed = COALESCE($3, url_sealed), \
             secret_sealed = COALESCE($4, secret_sealed), events = COALESCE($5, events), \
             active = COALESCE($6, active), \
             disabled_reason = CASE WHEN $7 THEN $8 ELSE disabled_reason END, \
             deleted_at = CASE WHEN $9 THEN now() ELSE deleted_at END \
             WHERE webhook_id = $1",
        )
        .bind(self.webhook_id)
        .bind(&self.name)
        .bind(&self.url_sealed)
        .bind(&self.secret_sealed)
        .bind(&self.events)
        .bind(self.active)
        .bind(self.disabled_reason.is_some())
        .bind(self.disabled_reason.clone().flatten())
        .bind(self.deleted)
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(|e| StoreError::of_write(e, "", StoreError::Conflict))
    }
}
