//! A provider inbox's settings outside the log: its routing id (which inbox a
//! provider's webhook is for) and its secrets, sealed. Written with the event that
//! configures the inbox; read, current, by every webhook and every send.

use std::collections::HashMap;

use anyhow::Context;
use async_trait::async_trait;
use domain::channel::ChannelSecret;
use domain::values::Channel;
use projections::keyring::Keyring;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::StoreError;
use crate::side_write::SideWrite;

/// Where one secret of an inbox is bound (see `Keyring::seal_setting`).
fn binding(inbox: Uuid, secret: ChannelSecret) -> String {
    format!("inbox/{inbox}/{}", secret.as_str())
}

/// The keyed hash a verify token is found by.
fn verify_token_hash(keyring: &Keyring, channel: Channel, token: &str) -> String {
    keyring.keyed_hash(&["verify-token", channel.as_str(), token])
}

/// The settings an inbox's configuration writes: its routing id, and the secrets
/// given (sealed here, so the write carries no clear value).
pub struct ChannelSettingsWrite {
    account: Uuid,
    inbox: Uuid,
    channel: Channel,
    routing_id: String,
    secrets: Vec<(ChannelSecret, Vec<u8>, Option<String>)>,
}

impl ChannelSettingsWrite {
    pub fn new(
        keyring: &Keyring,
        account: Uuid,
        inbox: Uuid,
        channel: Channel,
        routing_id: &str,
        secrets: &[(ChannelSecret, String)],
    ) -> anyhow::Result<Self> {
        let secrets = secrets
            .iter()
            .map(|(name, value)| {
                let sealed = keyring.seal_setting(&binding(inbox, *name), value.as_bytes())?;
                let lookup = (*name == ChannelSecret::VerifyToken).then(|| verify_token_hash(keyring, channel, value));
                Ok((*name, sealed, lookup))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { account, inbox, channel, routing_id: routing_id.to_string(), secrets })
    }
}

#[async_trait]
impl SideWrite for ChannelSettingsWrite {
    async fn write(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO inbox_channels (inbox_id, account_id, channel, routing_id) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (inbox_id) DO UPDATE SET routing_id = EXCLUDED.routing_id",
        )
        .bind(self.inbox)
        .bind(self.account)
        .bind(self.channel.as_str())
        .bind(&self.routing_id)
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            StoreError::of_write(
                e,
                "inbox_channels_routing",
                StoreError::Duplicate("inbox with this provider id (phoneNumberId or pageId)"),
            )
        })?;
        for (name, sealed, lookup) in &self.secrets {
            sqlx::query(
                "INSERT INTO inbox_channel_secrets (inbox_id, name, sealed, lookup_hash) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (inbox_id, name) DO UPDATE SET sealed = EXCLUDED.sealed, lookup_hash = EXCLUDED.lookup_hash",
            )
            .bind(self.inbox)
            .bind(name.as_str())
            .bind(sealed)
            .bind(lookup)
            .execute(&mut *conn)
            .await
            .map_err(|e| StoreError::of_write(e, "", StoreError::Conflict))?;
        }
        Ok(())
    }
}

/// A provider inbox as its webhooks and sends need it, secrets opened.
#[derive(Clone)]
pub struct ChannelInbox {
    pub inbox_id: Uuid,
    pub account_id: Uuid,
    pub channel: Channel,
    pub routing_id: String,
    secrets: HashMap<ChannelSecret, String>,
}

impl std::fmt::Debug for ChannelInbox {
    /// Never the secrets' values.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelInbox")
            .field("inbox_id", &self.inbox_id)
            .field("channel", &self.channel)
            .field("routing_id", &self.routing_id)
            .finish_non_exhaustive()
    }
}

impl ChannelInbox {
    pub fn secret(&self, name: ChannelSecret) -> Option<&str> {
        self.secrets.get(&name).map(String::as_str)
    }

    /// Whether `token` is the inbox's verify token (compared as digests, so the time
    /// taken says nothing about the token).
    pub fn verify_token_is(&self, token: &str) -> bool {
        use sha2::{Digest, Sha256};
        self.secret(ChannelSecret::VerifyToken)
            .is_some_and(|mine| Sha256::digest(mine.as_bytes()) == Sha256::digest(token.as_bytes()))
    }

    /// The token sends and media downloads are authorized with.
    pub fn access_token(&self) -> Option<&str> {
        self.secret(ChannelSecret::AccessToken).or_else(|| self.secret(ChannelSecret::PageAccessToken))
    }
}

#[derive(sqlx::FromRow)]
struct SettingsRow {
    inbox_id: Uuid,
    account_id: Uuid,
    channel: String,
    routing_id: String,
    names: Vec<String>,
    sealed: Vec<Vec<u8>>,
}

const SELECT: &str = "SELECT c.inbox_id, c.account_id, c.channel, c.routing_id, \
        coalesce(array_agg(s.name) FILTER (WHERE s.name IS NOT NULL), '{}') AS names, \
        coalesce(array_agg(s.sealed) FILTER (WHERE s.name IS NOT NULL), '{}') AS sealed \
     FROM inbox_channels c LEFT JOIN inbox_channel_secrets s USING (inbox_id)";

fn open(keyring: &Keyring, row: SettingsRow) -> anyhow::Result<ChannelInbox> {
    let channel: Channel = row.channel.parse()?;
    let mut secrets = HashMap::new();
    for (name, sealed) in row.names.iter().zip(&row.sealed) {
        let secret: ChannelSecret = name.parse()?;
        let opened = keyring.open_setting(&binding(row.inbox_id, secret), sealed)?;
        secrets.insert(secret, String::from_utf8(opened).context("a channel secret is not text")?);
    }
    Ok(ChannelInbox {
        inbox_id: row.inbox_id,
        account_id: row.account_id,
        channel,
        routing_id: row.routing_id,
        secrets,
    })
}

/// One inbox's channel settings, if it is a provider inbox of `channel`.
pub async fn of_inbox(
    pool: &PgPool,
    keyring: &Keyring,
    channel: Channel,
    inbox: Uuid,
) -> anyhow::Result<Option<ChannelInbox>> {
    let row: Option<SettingsRow> =
        sqlx::query_as(&format!("{SELECT} WHERE c.inbox_id = $1 AND c.channel = $2 GROUP BY c.inbox_id"))
            .bind(inbox)
            .bind(channel.as_str())
            .fetch_optional(pool)
            .await
            .context("failed to read an inbox's channel settings")?;
    row.map(|row| open(keyring, row)).transpose()
}

/// The inboxes of `channel` the provider names by these routing ids (phone number
/// ids, page ids); ids no inbox has are absent.
pub async fn by_routing_ids(
    pool: &PgPool,
    keyring: &Keyring,
    channel: Channel,
    routing_ids: &[String],
) -> anyhow::Result<Vec<ChannelInbox>> {
    let rows: Vec<SettingsRow> =
        sqlx::query_as(&format!("{SELECT} WHERE c.channel = $1 AND c.routing_id = ANY($2) GROUP BY c.inbox_id"))
            .bind(channel.as_str())
            .bind(routing_ids)
            .fetch_all(pool)
            .await
            .context("failed to route a webhook to its inboxes")?;
    rows.into_iter().map(|row| open(keyring, row)).collect()
}

/// Whether some inbox of `channel` has this verify token (the app-level handshake).
pub async fn verify_token_known(
    pool: &PgPool,
    keyring: &Keyring,
    channel: Channel,
    token: &str,
) -> anyhow::Result<bool> {
    let hash = verify_token_hash(keyring, channel, token);
    let found: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM inbox_channel_secrets s JOIN inbox_channels c USING (inbox_id) \
         WHERE s.lookup_hash = $1 AND c.channel = $2 LIMIT 1",
    )
    .bind(hash)
    .bind(channel.as_str())
    .fetch_optional(pool)
    .await
    .context("failed to look a verify token up")?;
    Ok(found.is_some())
}
