//! Projector `notifications`: who is told what about conversations, and what each
//! user did about it (ADR 0009), with the queries over it.
//!
//! Recipients are decided from the projector's own copy of what they depend on (the
//! account's and inboxes' members, each conversation's inbox, assignee and
//! participants, each user's settings), as it stood at the event: a replay decides
//! exactly as the live run did. The actor is never told about what they did.

use std::borrow::Cow;
use std::num::NonZeroUsize;
use std::sync::Mutex;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::account::AccountEvent;
use domain::actor::Actor;
use domain::contact::ContactEvent;
use domain::conversation::ConversationEvent;
use domain::ids::UserId;
use domain::inbox::InboxEvent;
use domain::notification::{mentions, Channels, NotificationInboxEvent as N, NotificationType};
use lru::LruCache;
use sqlx::{FromRow, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::engine::Projector;
use crate::feed::{FeedEvent, FeedPosition};

/// The projector's name, which the notifications policy and subscription wait on.
pub const PROJECTOR: &str = "notifications";

/// Namespace of notification ids: uuid v5 of the causing event, type and recipient,
/// so a replay gives every notification the id it had.
const NOTIFICATION_NAMESPACE: Uuid = Uuid::from_u128(0x6e6f_7469_6669_4e53_8000_0000_0000_0001);

/// Conversations remembered between batches, at most: those active lately.
const REMEMBERED_CONVERSATIONS: usize = 20_000;

/// The projector. It remembers whom each conversation's events concern (it alone
/// writes those tables while it holds the projector), so a contact's message in a
/// conversation it has seen costs no query.
pub struct Notifications {
    followed: Mutex<LruCache<Uuid, Followers>>,
}

impl Default for Notifications {
    fn default() -> Self {
        let capacity = NonZeroUsize::new(REMEMBERED_CONVERSATIONS).expect("a positive capacity");
        Self { followed: Mutex::new(LruCache::new(capacity)) }
    }
}

/// Whom a conversation's new messages concern: its assignee and participants.
#[derive(Clone, Default)]
struct Followers {
    assignee: Option<Uuid>,
    participants: Vec<Uuid>,
}

impl Followers {
    fn all(&self) -> Vec<Uuid> {
        let mut all = self.participants.clone();
        all.extend(self.assignee.filter(|a| !self.participants.contains(a)));
        all
    }
}

/// The conversation events that may notify someone (the notifications policy reacts
/// to the same).
pub const NOTIFYING_EVENTS: [&str; 4] = ["ConversationStarted", "AssigneeChanged", "MessageReceived", "MessageSent"];

/// Whether the projector reads an event: the others are not decoded (their sealed
/// fields are not opened for it).
fn reads(event: &FeedEvent) -> bool {
    match event.aggregate_type.as_str() {
        "account" => matches!(event.event_type.as_str(), "MemberAdded" | "MemberRemoved"),
        "inbox" => matches!(event.event_type.as_str(), "InboxMemberAdded" | "InboxMemberRemoved"),
        "conversation" => NOTIFYING_EVENTS.contains(&event.event_type.as_str()),
        "contact" => event.event_type == "ContactErased",
        _ => true,
    }
}

/// A notification to make, before its recipients' settings are applied.
struct Notice<'a> {
    event: &'a FeedEvent,
    account: Uuid,
    kind: NotificationType,
    conversation: Uuid,
    message: Option<Uuid>,
    at: DateTime<Utc>,
}

#[async_trait]
impl Projector for Notifications {
    fn name(&self) -> &'static str {
        PROJECTOR
    }

    fn consumes(&self) -> &'static [&'static str] {
        &["account", "inbox", "conversation", "contact", "notification_inbox"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "rm_notifications",
            "rm_notification_settings",
            "rm_notification_members",
            "rm_notification_inbox_members",
            "rm_notification_conversations",
            "rm_notification_participants",
        ]
    }

    /// Only a note's text is read (for its mentions).
    fn opens(&self, event_type: &str) -> bool {
        event_type == "MessageSent"
    }

    fn forget(&self) {
        self.followed.lock().expect("followers lock").clear();
    }

    /// One event at a time: each may change whom the next one notifies. (The engine
    /// calls `forget` when the batch does not commit.)
    async fn apply(&self, tx: &mut Transaction<'_, Postgres>, events: &[Cow<'_, FeedEvent>]) -> anyhow::Result<()> {
        for event in events.iter().filter(|e| reads(e)) {
            let id = || event.aggregate_id.parse::<Uuid>().with_context(|| format!("{} id is not a uuid", event.id()));
            match event.aggregate_type.as_str() {
                "account" => account(tx, event, id()?).await?,
                "inbox" => inbox(tx, event, id()?).await?,
                "conversation" => self.conversation(tx, event, id()?).await?,
                "contact" => contact(tx, event).await?,
                "notification_inbox" => user_state(tx, event).await?,
                _ => {}
            }
        }
        Ok(())
    }
}

async fn account(tx: &mut Transaction<'_, Postgres>, event: &FeedEvent, account: Uuid) -> anyhow::Result<()> {
    let (sql, user) = match event.decode::<AccountEvent>()? {
        AccountEvent::MemberAdded { user_id, .. } => (
            "INSERT INTO rm_notification_members (account_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            user_id,
        ),
        AccountEvent::MemberRemoved { user_id, .. } => {
            ("DELETE FROM rm_notification_members WHERE account_id = $1 AND user_id = $2", user_id)
        }
        _ => return Ok(()),
    };
    sqlx::query(sql).bind(account).bind(user.as_uuid()).execute(&mut **tx).await.context("failed to keep a member")?;
    Ok(())
}

async fn inbox(tx: &mut Transaction<'_, Postgres>, event: &FeedEvent, inbox: Uuid) -> anyhow::Result<()> {
    let (sql, user) = match event.decode::<InboxEvent>()? {
        InboxEvent::InboxMemberAdded { user_id, .. } => (
            "INSERT INTO rm_notification_inbox_members (inbox_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            user_id,
        ),
        InboxEvent::InboxMemberRemoved { user_id, .. } => {
            ("DELETE FROM rm_notification_inbox_members WHERE inbox_id = $1 AND user_id = $2", user_id)
        }
        _ => return Ok(()),
    };
    sqlx::query(sql)
        .bind(inbox)
        .bind(user.as_uuid())
        .execute(&mut **tx)
        .await
        .context("failed to keep an inbox member")?;
    Ok(())
}

impl Notifications {
    async fn conversation(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &FeedEvent,
        id: Uuid,
    ) -> anyhow::Result<()> {
        use ConversationEvent as E;
        let account = event.account_id.context("a conversation event without an account")?;
        let notice = |kind, message: Option<Uuid>, at| Notice { event, account, kind, conversation: id, message, at };
        match event.decode::<E>()? {
            E::ConversationStarted { inbox_id, at, .. } => {
                sqlx::query(
                "INSERT INTO rm_notification_conversations (conversation_id, account_id, inbox_id) VALUES ($1, $2, $3)",
            )
            .bind(id)
            .bind(account)
            .bind(inbox_id.as_uuid())
            .execute(&mut **tx)
            .await
            .context("failed to keep a conversation")?;
                self.followed.lock().expect("followers lock").put(id, Followers::default());
                let members: Vec<Uuid> =
                    sqlx::query_scalar("SELECT user_id FROM rm_notification_inbox_members WHERE inbox_id = $1")
                        .bind(inbox_id.as_uuid())
                        .fetch_all(&mut **tx)
                        .await?;
                notify(tx, notice(NotificationType::ConversationCreated, None, at), members).await?;
            }
            E::AssigneeChanged { to, at, .. } => {
                sqlx::query("UPDATE rm_notification_conversations SET assignee_id = $2 WHERE conversation_id = $1")
                    .bind(id)
                    .bind(to.map(|u| u.as_uuid()))
                    .execute(&mut **tx)
                    .await
                    .context("failed to keep an assignee")?;
                if let Some(followers) = self.followed.lock().expect("followers lock").get_mut(&id) {
                    followers.assignee = to.map(|u| u.as_uuid());
                }
                if let Some(to) = to {
                    notify(tx, notice(NotificationType::ConversationAssigned, None, at), vec![to.as_uuid()]).await?;
                }
            }
            E::MessageReceived { message_id, at, .. } => {
                let followers = self.followers(tx, id).await?.all();
                notify(tx, notice(NotificationType::NewMessage, Some(message_id.as_uuid()), at), followers).await?;
            }
            E::MessageSent { message_id, author, content, private, at, .. } => {
                let mut followers = self.followers(tx, id).await?;
                if !followers.participants.contains(&author.as_uuid()) {
                    sqlx::query(
                        "INSERT INTO rm_notification_participants (conversation_id, user_id) VALUES ($1, $2) \
                     ON CONFLICT DO NOTHING",
                    )
                    .bind(id)
                    .bind(author.as_uuid())
                    .execute(&mut **tx)
                    .await
                    .context("failed to keep a participant")?;
                    followers.participants.push(author.as_uuid());
                    self.followed.lock().expect("followers lock").put(id, followers);
                }
                // A note's text is gone once its contact is erased: so are its mentions.
                if let (true, Some(text)) = (private, content) {
                    let mentioned = mentions(&text).into_iter().map(|u| u.as_uuid()).collect();
                    notify(tx, notice(NotificationType::Mentioned, Some(message_id.as_uuid()), at), mentioned).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Whom the conversation's messages concern, remembered or read.
    async fn followers(&self, tx: &mut Transaction<'_, Postgres>, id: Uuid) -> anyhow::Result<Followers> {
        if let Some(followers) = self.followed.lock().expect("followers lock").get(&id) {
            return Ok(followers.clone());
        }
        let assignee: Option<Option<Uuid>> =
            sqlx::query_scalar("SELECT assignee_id FROM rm_notification_conversations WHERE conversation_id = $1")
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?;
        let participants: Vec<Uuid> =
            sqlx::query_scalar("SELECT user_id FROM rm_notification_participants WHERE conversation_id = $1")
                .bind(id)
                .fetch_all(&mut **tx)
                .await?;
        let followers = Followers { assignee: assignee.flatten(), participants };
        self.followed.lock().expect("followers lock").put(id, followers.clone());
        Ok(followers)
    }
}

/// An erased contact's notes read as nothing now: a replay finds no mentions in them.
async fn contact(tx: &mut Transaction<'_, Postgres>, event: &FeedEvent) -> anyhow::Result<()> {
    if let ContactEvent::ContactErased { conversations, .. } = event.decode()? {
        let ids: Vec<Uuid> = conversations.iter().map(|c| c.as_uuid()).collect();
        sqlx::query("DELETE FROM rm_notifications WHERE conversation_id = ANY($1) AND type = $2")
            .bind(ids)
            .bind(NotificationType::Mentioned.as_str())
            .execute(&mut **tx)
            .await
            .context("failed to drop an erased contact's mentions")?;
    }
    Ok(())
}

/// Records a notice for each recipient who is a member of the account, is not its
/// actor, and has some channel of its type on.
async fn notify(tx: &mut Transaction<'_, Postgres>, notice: Notice<'_>, recipients: Vec<Uuid>) -> anyhow::Result<()> {
    let actor = notice.event.actor().unwrap_or(Actor::System);
    let source = notice.event.id();
    let recipients: Vec<Uuid> = recipients.into_iter().filter(|user| actor.user() != Some(*user)).collect();
    if recipients.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = recipients
        .iter()
        .map(|user| Uuid::new_v5(&NOTIFICATION_NAMESPACE, format!("{source}/{}/{user}", notice.kind).as_bytes()))
        .collect();
    let default = notice.kind.default_channels();
    sqlx::query(
        "INSERT INTO rm_notifications (notification_id, account_id, user_id, type, conversation_id, message_id, \
             actor, source_event, txid, position, in_app, email, push, created_at) \
         SELECT r.id, $3, r.user_id, $4, $5, $6, $7, $8, $9, $10, \
                coalesce(s.in_app, $11), coalesce(s.email, $12), coalesce(s.push, $13), $14 \
         FROM UNNEST($1::uuid[], $2::uuid[]) AS r(id, user_id) \
         JOIN rm_notification_members m ON m.account_id = $3 AND m.user_id = r.user_id \
         LEFT JOIN rm_notification_settings s ON s.account_id = $3 AND s.user_id = r.user_id AND s.type = $4 \
         WHERE coalesce(s.in_app, $11) OR coalesce(s.email, $12) OR coalesce(s.push, $13) \
         ON CONFLICT DO NOTHING",
    )
    .bind(ids)
    .bind(recipients)
    .bind(notice.account)
    .bind(notice.kind.as_str())
    .bind(notice.conversation)
    .bind(notice.message)
    .bind(actor.to_string())
    .bind(source)
    .bind(notice.event.position.transaction_id)
    .bind(notice.event.position.global_position)
    .bind(default.in_app)
    .bind(default.email)
    .bind(default.push)
    .bind(notice.at)
    .execute(&mut **tx)
    .await
    .context("failed to add notifications")?;
    Ok(())
}

/// What a user did about their notifications: only ever their own rows.
async fn user_state(tx: &mut Transaction<'_, Postgres>, event: &FeedEvent) -> anyhow::Result<()> {
    let account = event.account_id.context("a notification event without an account")?;
    // Every statement takes the account and the user first.
    let of_user = |sql: &'static str, user: UserId| sqlx::query(sql).bind(account).bind(user.as_uuid());
    let query = match event.decode::<N>()? {
        N::NotificationRead { user_id, notification_id, at } => of_user(
            "UPDATE rm_notifications SET read_at = $4 \
                 WHERE account_id = $1 AND user_id = $2 AND notification_id = $3",
            user_id,
        )
        .bind(notification_id)
        .bind(at),
        N::NotificationUnread { user_id, notification_id, .. } => of_user(
            "UPDATE rm_notifications SET read_at = NULL \
                 WHERE account_id = $1 AND user_id = $2 AND notification_id = $3",
            user_id,
        )
        .bind(notification_id),
        N::AllNotificationsRead { user_id, at } => of_user(
            "UPDATE rm_notifications SET read_at = $3 \
                 WHERE account_id = $1 AND user_id = $2 AND read_at IS NULL",
            user_id,
        )
        .bind(at),
        N::NotificationSnoozed { user_id, notification_id, until, .. } => of_user(
            "UPDATE rm_notifications SET snoozed_until = $4 \
                 WHERE account_id = $1 AND user_id = $2 AND notification_id = $3",
            user_id,
        )
        .bind(notification_id)
        .bind(until),
        N::NotificationChannelsChanged { user_id, kind, channels, .. } => of_user(
            "INSERT INTO rm_notification_settings (account_id, user_id, type, in_app, email, push) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (account_id, user_id, type) DO UPDATE \
             SET in_app = EXCLUDED.in_app, email = EXCLUDED.email, push = EXCLUDED.push",
            user_id,
        )
        .bind(kind.as_str())
        .bind(channels.in_app)
        .bind(channels.email)
        .bind(channels.push),
        N::PushSubscriptionRegistered { .. } => return Ok(()),
    };
    query.execute(&mut **tx).await.context("failed to keep a user's notification state")?;
    Ok(())
}

/// A notification as its recipient sees it.
#[derive(Debug, Clone, FromRow)]
pub struct NotificationRow {
    pub notification_id: Uuid,
    pub account_id: Uuid,
    pub user_id: Uuid,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub conversation_id: Uuid,
    pub message_id: Option<Uuid>,
    pub actor: String,
    /// The causing event, `<type>/<id>/<sequence>`.
    pub source_event: String,
    pub txid: i64,
    pub position: i64,
    pub in_app: bool,
    pub email: bool,
    pub push: bool,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
    pub snoozed_until: Option<DateTime<Utc>>,
}

impl NotificationRow {
    /// Where the causing event is in the feed.
    pub fn position(&self) -> FeedPosition {
        FeedPosition { transaction_id: self.txid, global_position: self.position }
    }
}

const COLUMNS: &str = "notification_id, account_id, user_id, type, conversation_id, message_id, actor, source_event, \
                       txid, position, in_app, email, push, created_at, read_at, snoozed_until";
/// Unread: not read, and not snoozed until later.
const UNREAD: &str = "read_at IS NULL AND (snoozed_until IS NULL OR snoozed_until <= now())";

/// A user's notifications, newest first, after the keyset cursor `after`; `limit` rows.
#[tracing::instrument(skip_all)]
pub async fn list(
    pool: &PgPool,
    account: Uuid,
    user: Uuid,
    unread_only: bool,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<NotificationRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM rm_notifications WHERE account_id = $1 AND user_id = $2 AND in_app \
           AND (NOT $3 OR ({UNREAD})) \
           AND ($4::timestamptz IS NULL OR (created_at, notification_id) < ($4, $5)) \
         ORDER BY created_at DESC, notification_id DESC LIMIT $6"
    ))
    .bind(account)
    .bind(user)
    .bind(unread_only)
    .bind(after.map(|(at, _)| at))
    .bind(after.map(|(_, id)| id))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One of the user's notifications (listed in-app), if it is theirs.
#[tracing::instrument(skip_all)]
pub async fn get(pool: &PgPool, account: Uuid, user: Uuid, id: Uuid) -> sqlx::Result<Option<NotificationRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM rm_notifications \
         WHERE account_id = $1 AND user_id = $2 AND notification_id = $3 AND in_app"
    ))
    .bind(account)
    .bind(user)
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Any notification by id, in-app or kept only for delivery.
#[tracing::instrument(skip_all)]
pub async fn by_id(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<NotificationRow>> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM rm_notifications WHERE notification_id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

#[tracing::instrument(skip_all)]
pub async fn unread_count(pool: &PgPool, account: Uuid, user: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM rm_notifications WHERE account_id = $1 AND user_id = $2 AND in_app AND {UNREAD}"
    ))
    .bind(account)
    .bind(user)
    .fetch_one(pool)
    .await
}

/// A place among notifications in the order of their causing events (then of their
/// ids): after `notification` among those of the event at `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reached {
    pub position: FeedPosition,
    pub notification: Uuid,
}

impl Reached {
    pub const START: Self = Self::through(FeedPosition::START);

    /// After every notification of the events through `position`.
    pub const fn through(position: FeedPosition) -> Self {
        Self { position, notification: Uuid::max() }
    }

    /// Just after the row.
    pub fn at(row: &NotificationRow) -> Self {
        Self { position: row.position(), notification: row.notification_id }
    }
}

/// Every user's in-app notifications after `after`, caused by events through
/// `through`, in that order; `limit` rows.
#[tracing::instrument(skip_all)]
pub async fn created_after(
    pool: &PgPool,
    after: Reached,
    through: FeedPosition,
    limit: i64,
) -> sqlx::Result<Vec<NotificationRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM rm_notifications WHERE in_app \
           AND (txid, position, notification_id) > ($1, $2, $3) AND (txid, position) <= ($4, $5) \
         ORDER BY txid, position, notification_id LIMIT $6"
    ))
    .bind(after.position.transaction_id)
    .bind(after.position.global_position)
    .bind(after.notification)
    .bind(through.transaction_id)
    .bind(through.global_position)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The notifications the events `sources` (`<type>/<id>/<sequence>`) caused that go
/// out by e-mail or push.
#[tracing::instrument(skip_all)]
pub async fn to_deliver(pool: &PgPool, sources: &[String]) -> sqlx::Result<Vec<NotificationRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM rm_notifications WHERE source_event = ANY($1) AND (email OR push) \
         ORDER BY txid, position, notification_id"
    ))
    .bind(sources)
    .fetch_all(pool)
    .await
}

/// The user's channels for every type, defaults included.
#[tracing::instrument(skip_all)]
pub async fn settings(pool: &PgPool, account: Uuid, user: Uuid) -> sqlx::Result<Vec<(NotificationType, Channels)>> {
    let changed: Vec<(String, bool, bool, bool)> = sqlx::query_as(
        "SELECT type, in_app, email, push FROM rm_notification_settings WHERE account_id = $1 AND user_id = $2",
    )
    .bind(account)
    .bind(user)
    .fetch_all(pool)
    .await?;
    Ok(NotificationType::ALL
        .into_iter()
        .map(|kind| {
            let set = changed.iter().find(|(t, ..)| t == kind.as_str());
            let channels =
                set.map_or(kind.default_channels(), |&(_, in_app, email, push)| Channels { in_app, email, push });
            (kind, channels)
        })
        .collect())
}

/// How far the projector has committed, in whichever process runs it.
pub async fn projected_through(pool: &PgPool) -> sqlx::Result<FeedPosition> {
    crate::engine::committed_through(pool, PROJECTOR).await
}
