//! Notifications, for the signed-in user: their own list, unread count and settings,
//! what they do about them, browsers for web push, and `notificationCreated` (ADR 0009).
//! A user reaches only their own notifications: another's id is NOT_FOUND.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::connection::Connection;
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use commands::notification::{vapid_key, NotificationChange};
use commands::Written;
use domain::notification::{self as model, Channels};
use futures_util::Stream;
use projections::notifications::{self, NotificationRow, PROJECTOR};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::subscriber::Subscriber;
use super::types::{connection, Conversation};
use super::{mutate, parse_id, principal, state, time_cursor, Acting, SHORT_PAGE};
use crate::error::{ApiError, Result};
use crate::live::socket::close;
use crate::state::AppState;

/// How often a quiet subscriber's credentials are checked.
const CREDENTIALS_CHECK: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct NotificationQuery;

#[derive(Default)]
pub struct NotificationMutation;

#[derive(Default)]
pub struct NotificationSubscription;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "model::NotificationType")]
pub enum NotificationType {
    /// A conversation started in one of your inboxes (off unless you turn it on).
    ConversationCreated,
    /// Someone else assigned a conversation to you.
    ConversationAssigned,
    /// A contact wrote in a conversation you are assigned to or took part in.
    NewMessage,
    /// A private note mentioned you: `@[Your Name](user:<your id>)`.
    Mentioned,
    /// Reserved for SLA policies, which do not exist yet: never sent today.
    SlaMissed,
}

/// Something the caller was told about.
pub struct Notification(NotificationRow);

#[Object]
impl Notification {
    async fn id(&self) -> ID {
        ID(self.0.notification_id.to_string())
    }
    #[graphql(name = "type")]
    async fn kind(&self) -> Result<NotificationType> {
        let kind: model::NotificationType =
            self.0.kind.parse().map_err(|e| ApiError::internal(anyhow::anyhow!("read model holds {e}")))?;
        Ok(kind.into())
    }
    async fn read(&self) -> bool {
        self.0.read_at.is_some()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// Out of the unread count and the unread list until then.
    async fn snoozed_until(&self) -> Option<DateTime<Utc>> {
        self.0.snoozed_until
    }
    /// Its fields need the right to see the conversation now.
    async fn conversation(&self) -> Conversation {
        Conversation::changed(self.0.conversation_id, self.0.account_id, Written::default())
    }
    /// Who caused it, as events record it: `user:<id>`, `contact:<id>`,
    /// `automation:<rule>`, `channel:<name>`, `system:<policy>` or `system`.
    async fn actor(&self) -> &str {
        &self.0.actor
    }
}

/// The caller's channels for one type.
#[derive(SimpleObject)]
pub struct NotificationSetting {
    #[graphql(name = "type")]
    pub kind: NotificationType,
    pub in_app: bool,
    pub email: bool,
    pub push: bool,
}

impl NotificationSetting {
    fn of(kind: model::NotificationType, channels: Channels) -> Self {
        Self { kind: kind.into(), in_app: channels.in_app, email: channels.email, push: channels.push }
    }
}

#[Object]
impl NotificationQuery {
    /// The caller's notifications, newest first.
    #[graphql(complexity = "SHORT_PAGE.cost(first, child_complexity)")]
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        unread_only: Option<bool>,
    ) -> Result<Connection<String, Notification>> {
        let principal = principal(ctx)?;
        let limit = SHORT_PAGE.size(first)?;
        let after = after.map(|c| time_cursor(&c)).transpose()?;
        let rows = notifications::list(
            &state(ctx)?.pool,
            principal.account_id,
            principal.user_id,
            unread_only.unwrap_or(false),
            after,
            limit + 1,
        )
        .await?;
        Ok(connection(rows, limit, |n| format!("{}|{}", n.created_at.to_rfc3339(), n.notification_id), Notification))
    }

    /// Notifications neither read nor snoozed.
    async fn unread_notifications_count(&self, ctx: &Context<'_>) -> Result<i64> {
        let principal = principal(ctx)?;
        Ok(notifications::unread_count(&state(ctx)?.pool, principal.account_id, principal.user_id).await?)
    }

    /// The caller's channels for every type.
    async fn notification_settings(&self, ctx: &Context<'_>) -> Result<Vec<NotificationSetting>> {
        let principal = principal(ctx)?;
        let settings = notifications::settings(&state(ctx)?.pool, principal.account_id, principal.user_id).await?;
        Ok(settings.into_iter().map(|(kind, channels)| NotificationSetting::of(kind, channels)).collect())
    }

    /// The server's VAPID public key (base64url), a browser's `applicationServerKey`.
    async fn vapid_public_key(&self, ctx: &Context<'_>) -> Result<String> {
        principal(ctx)?;
        Ok(vapid_key(&state(ctx)?.keyring)?.public_key())
    }
}

#[derive(InputObject)]
pub struct NotificationIdInput {
    pub id: ID,
}

#[derive(InputObject)]
pub struct SnoozeNotificationInput {
    pub id: ID,
    pub until: DateTime<Utc>,
}

#[derive(InputObject)]
pub struct SetNotificationSettingsInput {
    #[graphql(name = "type")]
    pub kind: NotificationType,
    pub in_app: bool,
    pub email: bool,
    pub push: bool,
}

/// A browser's `PushSubscription.toJSON()`: the endpoint and its keys (base64url).
#[derive(InputObject)]
pub struct RegisterPushSubscriptionInput {
    pub endpoint: String,
    #[graphql(name = "p256dh")]
    pub p256dh: String,
    pub auth: String,
}

#[derive(SimpleObject)]
pub struct MarkAllNotificationsReadPayload {
    pub unread_count: i64,
}

#[derive(SimpleObject)]
pub struct RegisterPushSubscriptionPayload {
    /// The same for the same endpoint: registering a browser again replaces it.
    pub id: ID,
}

/// One of the caller's notifications as the read model shows it after `written`.
async fn own(state: &AppState, account: Uuid, user: Uuid, id: Uuid, written: Written) -> Result<Notification> {
    state.settle(written, &[PROJECTOR]).await;
    let row = notifications::get(&state.pool, account, user, id).await?;
    Ok(Notification(row.ok_or_else(|| ApiError::not_found("notification"))?))
}

async fn change(ctx: &Context<'_>, id: &ID, change: NotificationChange) -> Result<Notification> {
    let id = parse_id(id, "notification")?;
    mutate(ctx, move |Acting { principal, state, context }| async move {
        let written = state.commands.change_notification(&context, id, change).await?;
        own(&state, principal.account_id, principal.user_id, id, written).await
    })
    .await
}

#[Object]
impl NotificationMutation {
    async fn mark_notification_read(&self, ctx: &Context<'_>, input: NotificationIdInput) -> Result<Notification> {
        change(ctx, &input.id, NotificationChange::Read).await
    }

    async fn mark_notification_unread(&self, ctx: &Context<'_>, input: NotificationIdInput) -> Result<Notification> {
        change(ctx, &input.id, NotificationChange::Unread).await
    }

    /// Out of the unread count and list until `until` (in the future).
    async fn snooze_notification(&self, ctx: &Context<'_>, input: SnoozeNotificationInput) -> Result<Notification> {
        change(ctx, &input.id, NotificationChange::Snooze { until: input.until }).await
    }

    /// Reads every notification the caller has now.
    async fn mark_all_notifications_read(&self, ctx: &Context<'_>) -> Result<MarkAllNotificationsReadPayload> {
        mutate(ctx, move |Acting { principal, state, context }| async move {
            let written = state.commands.mark_all_notifications_read(&context).await?;
            state.settle(written, &[PROJECTOR]).await;
            let unread_count =
                notifications::unread_count(&state.pool, principal.account_id, principal.user_id).await?;
            Ok(MarkAllNotificationsReadPayload { unread_count })
        })
        .await
    }

    /// Where notifications of one type reach the caller; in-app off means none is
    /// listed, e-mail and push off mean none is sent.
    async fn set_notification_settings(
        &self,
        ctx: &Context<'_>,
        input: SetNotificationSettingsInput,
    ) -> Result<NotificationSetting> {
        let kind = model::NotificationType::from(input.kind);
        let channels = Channels { in_app: input.in_app, email: input.email, push: input.push };
        mutate(ctx, move |Acting { principal, state, context }| async move {
            let written = state.commands.set_notification_channels(&context, kind, channels).await?;
            state.settle(written, &[PROJECTOR]).await;
            let settings = notifications::settings(&state.pool, principal.account_id, principal.user_id).await?;
            let (kind, channels) = settings
                .into_iter()
                .find(|(listed, _)| *listed == kind)
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no setting for {kind}")))?;
            Ok(NotificationSetting::of(kind, channels))
        })
        .await
    }

    /// Registers a browser for web push; the endpoint must be a public http(s) URL.
    async fn register_push_subscription(
        &self,
        ctx: &Context<'_>,
        input: RegisterPushSubscriptionInput,
    ) -> Result<RegisterPushSubscriptionPayload> {
        let input = &input;
        mutate(ctx, move |Acting { state, context, .. }| async move {
            let (id, _) = state
                .commands
                .register_push_subscription(&context, &state.outbound, &input.endpoint, &input.p256dh, &input.auth)
                .await?;
            Ok(RegisterPushSubscriptionPayload { id: ID(id.to_string()) })
        })
        .await
    }
}

#[Subscription]
impl NotificationSubscription {
    /// Each new notification of the caller's, once `notifications` lists it, in the
    /// order of the events that caused them; from when the subscription starts.
    async fn notification_created(&self, ctx: &Context<'_>) -> Result<impl Stream<Item = Notification>> {
        let subscriber = Subscriber::of(ctx)?;
        let notices = subscriber.state.notices.subscribe();
        let watcher = Watcher { notices, beat: tokio::time::interval(CREDENTIALS_CHECK), subscriber };
        Ok(futures_util::stream::unfold(watcher, |mut watcher| async move {
            watcher.next().await.map(|push| (push, watcher))
        }))
    }
}

/// One subscriber, taking its own from the process's notification feed.
struct Watcher {
    notices: broadcast::Receiver<Arc<NotificationRow>>,
    /// A credentials check every so often, however quiet the feed.
    beat: tokio::time::Interval,
    subscriber: Subscriber,
}

impl Watcher {
    /// The next push, or `None` when the subscription ends.
    async fn next(&mut self) -> Option<Notification> {
        loop {
            tokio::select! {
                received = self.notices.recv() => match received {
                    Ok(row) => {
                        let principal = &self.subscriber.principal;
                        if row.account_id != principal.account_id || row.user_id != principal.user_id {
                            continue;
                        }
                        if !self.subscriber.still_allowed().await {
                            return None;
                        }
                        return Some(Notification(NotificationRow::clone(&row)));
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::info!(missed, "a notifications subscriber fell too far behind; closing its socket");
                        self.subscriber.close(close::TOO_SLOW, "too slow: read `notifications` again");
                        return None;
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = self.beat.tick() => {
                    if !self.subscriber.still_allowed().await {
                        return None;
                    }
                }
            }
        }
    }
}
