//! Subscriptions: what happens in the account, pushed to every screen allowed to see
//! it, from whichever process wrote it.
//!
//! A subscriber takes the events of this process's [`LiveFeed`](crate::live::feed::LiveFeed) (read once for every
//! subscriber, each event once every read model that shows it has committed it, so a
//! client that queries on receipt sees the new state), in feed order, each once.
//! `after` first replays the account's events since that position; a backlog beyond
//! [`MAX_BACKLOG_EVENTS`] or [`MAX_BACKLOG_AGE`] answers one `RESYNC_REQUIRED` instead
//! (the client refetches), and the subscription goes on live. A subscriber that falls
//! more than the feed retains behind is closed with [`close::TOO_SLOW`]. Each push is
//! authorized for the subscriber as it stands then (a revoked token, a removed inbox
//! membership, stops it at once).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::{Context, Enum, Object, Subscription, ID};
use chrono::Utc;
use commands::Written;
use domain::public_event::PublicEvent;
use futures_util::Stream;
use projections::feed::FeedPosition;
use projections::inbox_list;
use projections::publication::Signal;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::subscriber::Subscriber;
use super::types::{Conversation, Message};
use super::{feed_cursor, parse_id};
use crate::error::{ApiError, Result};
use crate::live::feed::LiveEvent;
use crate::live::socket::close;
use crate::live::viewers::{Viewing, VIEWERS_CHANGED};
use crate::policy::Action;

/// The longest backlog a resuming subscriber is replayed; beyond, `RESYNC_REQUIRED`.
pub const MAX_BACKLOG_EVENTS: i64 = 1_000;
pub const MAX_BACKLOG_AGE: Duration = Duration::from_secs(24 * 3600);
/// How often a quiet subscriber checks its credentials (revoked while nothing happens).
pub const IDLE_LOOK: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct ConversationSubscription;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ConversationEventType {
    ConversationCreated,
    ConversationStatusChanged,
    ConversationUpdated,
    AssigneeChanged,
    TeamChanged,
    ConversationRead,
    MessageCreated,
    /// A message's delivery status moved (`Message.status`).
    MessageUpdated,
    ContactCreated,
    ContactUpdated,
    /// Who has the conversation open changed (`Conversation.viewers`); pushed to
    /// subscriptions narrowed to a conversation, never stored, not resumed.
    ViewersChanged,
    /// The backlog since `after` is too long to replay: refetch, then carry on.
    ResyncRequired,
}

impl From<PublicEvent> for ConversationEventType {
    fn from(event: PublicEvent) -> Self {
        match event {
            PublicEvent::ConversationCreated => Self::ConversationCreated,
            PublicEvent::ConversationStatusChanged => Self::ConversationStatusChanged,
            PublicEvent::ConversationUpdated => Self::ConversationUpdated,
            PublicEvent::ConversationAssigneeChanged => Self::AssigneeChanged,
            PublicEvent::ConversationTeamChanged => Self::TeamChanged,
            PublicEvent::ConversationRead => Self::ConversationRead,
            PublicEvent::MessageCreated => Self::MessageCreated,
            PublicEvent::MessageUpdated => Self::MessageUpdated,
            PublicEvent::ContactCreated => Self::ContactCreated,
            PublicEvent::ContactUpdated => Self::ContactUpdated,
        }
    }
}

/// One thing that happened, as a subscriber receives it.
pub struct ConversationEventPush {
    position: FeedPosition,
    kind: ConversationEventType,
    event: Option<Arc<LiveEvent>>,
    /// The conversation (and its account) whose viewers changed.
    viewed: Option<(Uuid, Uuid)>,
}

#[Object(name = "ConversationEvent")]
impl ConversationEventPush {
    /// The event's place in the feed (the `events` cursor): pass it as `after` to resume.
    async fn position(&self) -> String {
        self.position.to_string()
    }
    #[graphql(name = "type")]
    async fn kind(&self) -> ConversationEventType {
        self.kind
    }
    async fn conversation_id(&self) -> Option<ID> {
        if let Some((conversation, _)) = self.viewed {
            return Some(ID(conversation.to_string()));
        }
        let row = self.event.as_ref()?.conversation.as_ref()?;
        Some(ID(row.conversation_id.to_string()))
    }
    async fn contact_id(&self) -> Option<ID> {
        self.event.as_ref()?.contact_id.map(|id| ID(id.to_string()))
    }
    /// The conversation as it was when the event was pushed (already in the read models).
    async fn conversation(&self) -> Option<Conversation> {
        if let Some((conversation, account)) = self.viewed {
            return Some(Conversation::changed(conversation, account, Written::default()));
        }
        self.event.as_ref()?.conversation.clone().map(Conversation::loaded)
    }
    /// The message, for `MESSAGE_CREATED` and `MESSAGE_UPDATED`.
    async fn message(&self) -> Option<Message> {
        let event = self.event.as_ref()?;
        event.message.clone().map(|row| Message::loaded(row, event.account_id))
    }
}

#[Subscription]
impl ConversationSubscription {
    /// What happens to the conversations (and contacts) the caller may see, narrowed to
    /// an inbox or a conversation; `after` (a `position`, exclusive) replays what
    /// happened since, in order, then goes on live.
    async fn conversation_events(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        inbox_id: Option<ID>,
        conversation_id: Option<ID>,
    ) -> Result<impl Stream<Item = ConversationEventPush>> {
        let subscriber = Subscriber::of(ctx)?;
        let filter = Filter {
            inbox: inbox_id.as_ref().map(|id| parse_id(id, "inbox")).transpose()?,
            conversation: conversation_id.as_ref().map(|id| parse_id(id, "conversation")).transpose()?,
        };
        let after = after.map(|a| feed_cursor(Some(a))).transpose()?;
        let watching = match filter.conversation {
            Some(conversation) => Some(Watching::start(&subscriber, conversation).await?),
            None => None,
        };
        let (through, receiver) = subscriber.state.live.subscribe();
        let mut follower =
            Follower { cursor: through, pending: VecDeque::new(), receiver, filter, subscriber, watching };
        if let Some(after) = after {
            follower.catch_up(after, through).await?;
        }
        Ok(futures_util::stream::unfold(follower, |mut follower| async move {
            follower.next().await.map(|push| (push, follower))
        }))
    }
}

/// A subscription to one conversation: its agent views it while it lives.
struct Watching {
    conversation: Uuid,
    inbox: Uuid,
    assignee: Option<Uuid>,
    signals: broadcast::Receiver<Signal>,
    _viewing: Viewing,
}

impl Watching {
    /// Registers the subscriber as viewing the conversation, if they may see it.
    async fn start(subscriber: &Subscriber, conversation: Uuid) -> Result<Self> {
        let (state, principal) = (&subscriber.state, &subscriber.principal);
        let row = inbox_list::get(&state.pool, principal.account_id, conversation)
            .await?
            .ok_or_else(|| ApiError::not_found("conversation"))?;
        principal.require_conversation(row.inbox_id, row.assignee_id)?;
        // Listening first: the subscriber hears of its own arrival too.
        let signals = state.engine.publisher().subscribe_signals();
        let viewing = state.viewers.view((principal.account_id, conversation, principal.user_id)).await?;
        Ok(Self { conversation, inbox: row.inbox_id, assignee: row.assignee_id, signals, _viewing: viewing })
    }

    /// Resolves when the conversation's viewers change (or may have: signals were
    /// missed); never when not watching.
    async fn changed(watching: &mut Option<Self>) -> Option<()> {
        let Some(watching) = watching else { return std::future::pending().await };
        loop {
            match watching.signals.recv().await {
                Ok(signal) => {
                    let about = signal.body.get("conversation_id").and_then(|c| c.as_str());
                    if signal.kind == VIEWERS_CHANGED && about == Some(watching.conversation.to_string().as_str()) {
                        return Some(());
                    }
                }
                Err(RecvError::Lagged(_)) => return Some(()),
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// What the subscriber asked to narrow to.
struct Filter {
    inbox: Option<Uuid>,
    conversation: Option<Uuid>,
}

/// One subscriber's place in the feed.
struct Follower {
    /// The last event looked at (pushed, or skipped as not the subscriber's).
    cursor: FeedPosition,
    /// The backlog being replayed.
    pending: VecDeque<ConversationEventPush>,
    receiver: broadcast::Receiver<Arc<LiveEvent>>,
    filter: Filter,
    subscriber: Subscriber,
    watching: Option<Watching>,
}

impl Follower {
    /// The next push, or `None` when the subscription ends.
    async fn next(&mut self) -> Option<ConversationEventPush> {
        loop {
            if let Some(push) = self.pending.pop_front() {
                return Some(push);
            }
            tokio::select! {
                received = self.receiver.recv() => match received {
                    Ok(event) => {
                        if event.position <= self.cursor || event.account_id != self.subscriber.principal.account_id {
                            continue;
                        }
                        self.cursor = event.position;
                        if !self.subscriber.still_allowed().await {
                            return None;
                        }
                        if let Some(push) = self.admit(event) {
                            return Some(push);
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::info!(missed, "a subscriber fell too far behind; closing its socket");
                        self.subscriber.close(close::TOO_SLOW, "too slow: resume from your last position");
                        return None;
                    }
                    Err(RecvError::Closed) => return None,
                },
                changed = Watching::changed(&mut self.watching) => {
                    changed?;
                    if !self.subscriber.still_allowed().await {
                        return None;
                    }
                    if let Some(push) = self.viewers_changed() {
                        return Some(push);
                    }
                }
                _ = tokio::time::sleep(IDLE_LOOK) => {
                    if !self.subscriber.still_allowed().await {
                        return None;
                    }
                }
            }
        }
    }

    /// `VIEWERS_CHANGED`, if the subscriber may still see the conversation.
    fn viewers_changed(&self) -> Option<ConversationEventPush> {
        let watching = self.watching.as_ref()?;
        let principal = &self.subscriber.principal;
        principal.require_conversation(watching.inbox, watching.assignee).ok()?;
        Some(ConversationEventPush {
            position: self.cursor,
            kind: ConversationEventType::ViewersChanged,
            event: None,
            viewed: Some((watching.conversation, principal.account_id)),
        })
    }

    /// The push, if the subscriber asked for it and may see it as they stand now.
    fn admit(&mut self, event: Arc<LiveEvent>) -> Option<ConversationEventPush> {
        if let (Some(watching), Some(row)) = (self.watching.as_mut(), &event.conversation) {
            if row.conversation_id == watching.conversation {
                watching.assignee = row.assignee_id;
            }
        }
        let principal = &self.subscriber.principal;
        if let Some(row) = &event.conversation {
            if self.filter.conversation.is_some_and(|c| c != row.conversation_id)
                || self.filter.inbox.is_some_and(|i| i != row.inbox_id)
                || principal.require_conversation(row.inbox_id, row.assignee_id).is_err()
            {
                return None;
            }
        }
        if event.contact_id.is_some() {
            let narrowed = self.filter.inbox.is_some() || self.filter.conversation.is_some();
            let visible = match principal.visibility().inboxes {
                None => true,
                Some(inboxes) => inboxes.iter().any(|i| event.contact_inboxes.contains(i)),
            };
            if narrowed || !visible || principal.require(Action::ReadContacts).is_err() {
                return None;
            }
        }
        Some(ConversationEventPush {
            position: event.position,
            kind: event.public.into(),
            event: Some(event),
            viewed: None,
        })
    }

    /// Replays the account's events after `after` through `through`, or, beyond the
    /// bound, answers one `RESYNC_REQUIRED` (at `through`).
    async fn catch_up(&mut self, after: FeedPosition, through: FeedPosition) -> anyhow::Result<()> {
        if after >= through {
            return Ok(());
        }
        let account = self.subscriber.principal.account_id;
        let (backlog, oldest): (i64, Option<chrono::DateTime<Utc>>) = sqlx::query_as(
            "SELECT count(*), min(recorded_at) FROM (SELECT recorded_at FROM events \
             WHERE account_id = $1 AND (transaction_id, global_position) > ($2::text::xid8, $3) \
               AND (transaction_id, global_position) <= ($4::text::xid8, $5) LIMIT $6) AS backlog",
        )
        .bind(account)
        .bind(after.transaction_id.to_string())
        .bind(after.global_position)
        .bind(through.transaction_id.to_string())
        .bind(through.global_position)
        .bind(MAX_BACKLOG_EVENTS + 1)
        .fetch_one(&self.subscriber.state.pool)
        .await?;
        let too_old =
            oldest.is_some_and(|at| Utc::now() - at > chrono::Duration::from_std(MAX_BACKLOG_AGE).unwrap_or_default());
        if backlog > MAX_BACKLOG_EVENTS || too_old {
            self.pending.push_back(ConversationEventPush {
                position: through,
                kind: ConversationEventType::ResyncRequired,
                event: None,
                viewed: None,
            });
            return Ok(());
        }
        // Right after this process started, the feed's reader begins at the head, which
        // the read models may not all show yet.
        let projectors = self.subscriber.state.engine.projector_names();
        self.subscriber
            .state
            .engine
            .wait_for(&projectors, through, self.subscriber.state.read_your_writes_timeout)
            .await;
        for event in self.subscriber.state.live.backlog(account, after, through, MAX_BACKLOG_EVENTS).await? {
            if let Some(push) = self.admit(Arc::new(event)) {
                self.pending.push_back(push);
            }
        }
        Ok(())
    }
}
