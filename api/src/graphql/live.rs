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
use domain::public_event::PublicEvent;
use futures_util::Stream;
use projections::feed::FeedPosition;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::types::{Conversation, Message};
use super::{feed_cursor, parse_id, state};
use crate::auth::{Auth, Principal};
use crate::error::{ApiError, Result};
use crate::live::feed::LiveEvent;
use crate::live::socket::{close, SocketControl};
use crate::policy::Action;
use crate::state::AppState;

/// The longest backlog a resuming subscriber is replayed; beyond, `RESYNC_REQUIRED`.
pub const MAX_BACKLOG_EVENTS: i64 = 1_000;
pub const MAX_BACKLOG_AGE: Duration = Duration::from_secs(24 * 3600);
/// How often a quiet subscriber checks its credentials (revoked while nothing happens).
const IDLE_LOOK: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct ConversationSubscription;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ConversationEventType {
    ConversationCreated,
    ConversationStatusChanged,
    ConversationUpdated,
    AssigneeChanged,
    MessageCreated,
    ContactCreated,
    ContactUpdated,
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
            PublicEvent::MessageCreated => Self::MessageCreated,
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
        let row = self.event.as_ref()?.conversation.as_ref()?;
        Some(ID(row.conversation_id.to_string()))
    }
    async fn contact_id(&self) -> Option<ID> {
        self.event.as_ref()?.contact_id.map(|id| ID(id.to_string()))
    }
    /// The conversation as it was when the event was pushed (already in the read models).
    async fn conversation(&self) -> Option<Conversation> {
        self.event.as_ref()?.conversation.clone().map(Conversation::loaded)
    }
    /// The message, for `MESSAGE_CREATED`.
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
        let state = state(ctx)?.clone();
        let auth = ctx.data::<Auth>().map_err(|_| ApiError::unauthenticated())?.clone();
        let principal = auth.principal()?.clone();
        let filter = Filter {
            inbox: inbox_id.as_ref().map(|id| parse_id(id, "inbox")).transpose()?,
            conversation: conversation_id.as_ref().map(|id| parse_id(id, "conversation")).transpose()?,
        };
        let after = after.map(|a| feed_cursor(Some(a))).transpose()?;
        let (through, receiver) = state.live.subscribe();
        let mut follower = Follower {
            cursor: through,
            pending: VecDeque::new(),
            receiver,
            auth,
            principal,
            filter,
            control: ctx.data::<SocketControl>().ok().cloned(),
            state,
        };
        if let Some(after) = after {
            follower.catch_up(after, through).await?;
        }
        Ok(futures_util::stream::unfold(follower, |mut follower| async move {
            follower.next().await.map(|push| (push, follower))
        }))
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
    auth: Auth,
    principal: Principal,
    filter: Filter,
    /// The socket, to close when the subscriber is too slow or its credentials go.
    control: Option<SocketControl>,
    state: AppState,
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
                        if event.position <= self.cursor || event.account_id != self.principal.account_id {
                            continue;
                        }
                        self.cursor = event.position;
                        if !self.still_allowed().await {
                            return None;
                        }
                        if let Some(push) = self.admit(event) {
                            return Some(push);
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::info!(missed, "a subscriber fell too far behind; closing its socket");
                        self.close(close::TOO_SLOW, "too slow: resume from your last position");
                        return None;
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = tokio::time::sleep(IDLE_LOOK) => {
                    if !self.still_allowed().await {
                        return None;
                    }
                }
            }
        }
    }

    fn close(&self, code: u16, reason: &str) {
        if let Some(control) = &self.control {
            control.close(code, reason);
        }
    }

    /// Whether the subscriber's credentials still hold (through the principal cache
    /// every access change invalidates); the socket is closed when they do not.
    async fn still_allowed(&mut self) -> bool {
        match self.state.authenticator.refresh(&self.auth).await.map(|auth| auth.principal().cloned()) {
            Ok(Ok(principal)) => {
                self.principal = principal;
                true
            }
            Ok(Err(_)) => {
                self.close(close::FORBIDDEN, "forbidden: the credentials no longer hold");
                false
            }
            Err(error) => {
                // The database is away: go on with what was known (checked again next time).
                tracing::warn!(error = error.message, "could not check a subscriber's credentials");
                true
            }
        }
    }

    /// The push, if the subscriber asked for it and may see it as they stand now.
    fn admit(&self, event: Arc<LiveEvent>) -> Option<ConversationEventPush> {
        if let Some(row) = &event.conversation {
            if self.filter.conversation.is_some_and(|c| c != row.conversation_id)
                || self.filter.inbox.is_some_and(|i| i != row.inbox_id)
                || self.principal.require_conversation(row.inbox_id, row.assignee_id).is_err()
            {
                return None;
            }
        }
        if event.contact_id.is_some() {
            let narrowed = self.filter.inbox.is_some() || self.filter.conversation.is_some();
            let visible = match self.principal.visibility().inboxes {
                None => true,
                Some(inboxes) => inboxes.iter().any(|i| event.contact_inboxes.contains(i)),
            };
            if narrowed || !visible || self.principal.require(Action::ReadContacts).is_err() {
                return None;
            }
        }
        Some(ConversationEventPush { position: event.position, kind: event.public.into(), event: Some(event) })
    }

    /// Replays the account's events after `after` through `through`, or, beyond the
    /// bound, answers one `RESYNC_REQUIRED` (at `through`).
    async fn catch_up(&mut self, after: FeedPosition, through: FeedPosition) -> anyhow::Result<()> {
        if after >= through {
            return Ok(());
        }
        let account = self.principal.account_id;
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
        .fetch_one(&self.state.pool)
        .await?;
        let too_old =
            oldest.is_some_and(|at| Utc::now() - at > chrono::Duration::from_std(MAX_BACKLOG_AGE).unwrap_or_default());
        if backlog > MAX_BACKLOG_EVENTS || too_old {
            self.pending.push_back(ConversationEventPush {
                position: through,
                kind: ConversationEventType::ResyncRequired,
                event: None,
            });
            return Ok(());
        }
        // Right after this process started, the feed's reader begins at the head, which
        // the read models may not all show yet.
        let projectors = self.state.engine.projector_names();
        self.state.engine.wait_for(&projectors, through, self.state.read_your_writes_timeout).await;
        for event in self.state.live.backlog(account, after, through, MAX_BACKLOG_EVENTS).await? {
            if let Some(push) = self.admit(Arc::new(event)) {
                self.pending.push_back(push);
            }
        }
        Ok(())
    }
}
