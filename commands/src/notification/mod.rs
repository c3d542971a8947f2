//! Notifications, the write side (ADR 0009): what a user decides about their own
//! (read, unread, snooze, settings, browsers for push) on their `notification_inbox`
//! stream in the account (this file); the policy that sends notifications beyond the
//! app (`policy`); the job that delivers one by e-mail or web push (`delivery`).

use async_trait::async_trait;
use domain::ids::UserId;
use domain::notification::{Channels, NotificationInbox, NotificationInboxCommand as C, NotificationType};
use domain::values::Instant;
use domain::DomainError;
use projections::keyring::Keyring;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::context::CommandContext;
use crate::error::StoreError;
use crate::outbound::Outbound;
use crate::side_write::{SideWrite, SideWrites};
use crate::web_push::{Subscription, VapidKey};
use crate::{CommandError, Commands, Written};

pub mod delivery;
pub mod policy;

/// Namespace of the streams (uuid v5 of account and user) and of push subscriptions
/// (of the user's stream and the endpoint: registering a browser again replaces it).
const NAMESPACE: Uuid = Uuid::from_u128(0x6e6f_7469_6669_5354_8000_0000_0000_0001);

/// What a user does to one of their notifications.
#[derive(Debug, Clone, Copy)]
pub enum NotificationChange {
    Read,
    Unread,
    Snooze { until: Instant },
}

/// The stream of a user's decisions about their notifications in an account.
fn stream(account: Uuid, user: Uuid) -> Uuid {
    Uuid::new_v5(&NAMESPACE, format!("{account}/{user}").as_bytes())
}

/// The server's VAPID key, the same in every process: derived from the master key.
pub fn vapid_key(keyring: &Keyring) -> anyhow::Result<VapidKey> {
    // A derived scalar at or above the curve's order (odds about 2^-32) is derived again.
    (0..4)
        .find_map(|round| VapidKey::from_secret(&keyring.derive(&format!("web-push-vapid/{round}"))).ok())
        .ok_or_else(|| anyhow::anyhow!("no VAPID key derives from this master key"))
}

/// What a push subscription's sealed setting holds.
#[derive(Serialize, Deserialize)]
pub(crate) struct SealedSubscription {
    pub endpoint: String,
    pub p256dh: Vec<u8>,
    pub auth: Vec<u8>,
}

/// Where a push subscription's sealed setting is bound.
pub(crate) fn subscription_binding(subscription: Uuid) -> String {
    format!("push_subscription/{subscription}")
}

impl Commands {
    /// Reads, unreads or snoozes one of the caller's notifications: anyone else's,
    /// in this account or another, is not found. Whose a notification is, the read
    /// model knows (notifications are derived there, never decided), and never changes.
    pub async fn change_notification(
        &self,
        context: &CommandContext,
        notification_id: Uuid,
        change: NotificationChange,
    ) -> Result<Written, CommandError> {
        let user = caller(context)?;
        let mine = projections::notifications::get(self.store().pool(), context.account_id, user, notification_id)
            .await
            .map_err(anyhow::Error::from)?;
        if mine.is_none() {
            return Err(DomainError::NotFound("notification").into());
        }
        let (user_id, at) = (UserId(user), context.at);
        self.execute::<NotificationInbox>(context, &stream(context.account_id, user).to_string(), |_| {
            Ok(match change {
                NotificationChange::Read => C::MarkRead { user_id, notification_id, at },
                NotificationChange::Unread => C::MarkUnread { user_id, notification_id, at },
                NotificationChange::Snooze { until } => C::Snooze { user_id, notification_id, until, at },
            })
        })
        .await
    }

    /// Reads every notification the caller has in the account.
    pub async fn mark_all_notifications_read(&self, context: &CommandContext) -> Result<Written, CommandError> {
        let user = caller(context)?;
        let (user_id, at) = (UserId(user), context.at);
        self.execute::<NotificationInbox>(context, &stream(context.account_id, user).to_string(), |_| {
            Ok(C::MarkAllRead { user_id, at })
        })
        .await
    }

    pub async fn set_notification_channels(
        &self,
        context: &CommandContext,
        kind: NotificationType,
        channels: Channels,
    ) -> Result<Written, CommandError> {
        let user = caller(context)?;
        let (user_id, at) = (UserId(user), context.at);
        self.execute::<NotificationInbox>(context, &stream(context.account_id, user).to_string(), |_| {
            Ok(C::SetChannels { user_id, kind, channels, at })
        })
        .await
    }

    /// Registers a browser of the caller's for web push; its endpoint is checked by the
    /// outbound guard, as a webhook's URL is. Returns the subscription's id.
    pub async fn register_push_subscription(
        &self,
        context: &CommandContext,
        outbound: &Outbound,
        endpoint: &str,
        p256dh: &str,
        auth: &str,
    ) -> Result<(Uuid, Written), CommandError> {
        let user = caller(context)?;
        let subscription =
            Subscription::parse(endpoint, p256dh, auth).map_err(|e| DomainError::invalid(e.to_string()))?;
        let url = outbound.check(&subscription.endpoint).await?;
        let inbox = stream(context.account_id, user);
        let subscription_id = Uuid::new_v5(&inbox, subscription.endpoint.as_bytes());
        let sealed = serde_json::to_vec(&SealedSubscription {
            endpoint: subscription.endpoint,
            p256dh: subscription.p256dh,
            auth: subscription.auth,
        })
        .map_err(anyhow::Error::from)?;
        let row = PushSubscriptionRow {
            subscription_id,
            account: context.account_id,
            user,
            sealed: self.store().keyring().seal_setting(&subscription_binding(subscription_id), &sealed)?,
        };
        let (user_id, at, host) = (UserId(user), context.at, url.host_str().unwrap_or_default().to_string());
        let written = self
            .execute_with::<NotificationInbox>(
                context,
                &inbox.to_string(),
                |_| Ok(C::RegisterPushSubscription { user_id, subscription_id, host: host.clone(), at }),
                &SideWrites::of(row),
            )
            .await?;
        Ok((subscription_id, written))
    }
}

/// The user acting: notifications are a person's, never a policy's or an API client's.
fn caller(context: &CommandContext) -> Result<Uuid, CommandError> {
    context.actor.user().ok_or_else(|| DomainError::invalid("only a signed-in user has notifications").into())
}

/// A browser registered for push (replacing what the same endpoint held).
struct PushSubscriptionRow {
    subscription_id: Uuid,
    account: Uuid,
    user: Uuid,
    sealed: Vec<u8>,
}

#[async_trait]
impl SideWrite for PushSubscriptionRow {
    async fn write(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO push_subscriptions (subscription_id, account_id, user_id, sealed) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (subscription_id) DO UPDATE SET sealed = EXCLUDED.sealed",
        )
        .bind(self.subscription_id)
        .bind(self.account)
        .bind(self.user)
        .bind(&self.sealed)
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(|e| StoreError::of_write(e, "", StoreError::Conflict))
    }
}
