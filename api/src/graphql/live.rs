//! Subscriptions: what happens in the account, pushed to every screen allowed to see
//! it, from whichever process wrote it.
//!
//! A subscriber follows the feed from a position: it is woken by the engine's
//! publications (this process's projectors at once, the others' through the fan-out),
//! reads the account's events after its position, and pushes each once every read
//! model that shows it has committed it (a client that queries on receipt sees the new
//! state). Events are pushed in feed order, each once; `after` resumes where a client
//! left off. A backlog beyond [`MAX_BACKLOG_EVENTS`] or [`MAX_BACKLOG_AGE`] answers one
//! `RESYNC_REQUIRED` instead (the client refetches), and the subscription goes on live;
//! so does a subscriber that falls that far behind live (its memory is bounded anyway:
//! it reads ahead at most [`READ_BATCH`] events).
//! Each push is authorized for the subscriber as it stands then (a revoked token, a
//! removed inbox membership, stops it at once).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use async_graphql::{Context, Enum, Object, Subscription, ID};
use chrono::Utc;
use domain::public_event::PublicEvent;
use futures_util::Stream;
use projections::feed::{read_sealed_after, FeedEvent, FeedPosition};
use projections::inbox_list::{self, ConversationRow};
use projections::timeline::{self, MessageRow};
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::types::{Conversation, Message};
use super::{feed_cursor, parse_id, state};
use crate::auth::{Auth, Principal};
use crate::error::{ApiError, Result};
use crate::state::AppState;

/// The longest backlog a resuming subscriber is replayed; beyond, `RESYNC_REQUIRED`.
pub const MAX_BACKLOG_EVENTS: i64 = 1_000;
pub const MAX_BACKLOG_AGE: Duration = Duration::from_secs(24 * 3600);
/// Events read from the feed per look.
const READ_BATCH: i64 = 500;
/// How often a quiet subscriber looks anyway (a publication lost in a reconnect, a
/// credential revoked while nothing happens).
const IDLE_LOOK: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct SubscriptionRoot;

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

/// One thing that happened, as a subscriber receives it, with the rows it shows
/// (read for a whole batch of pushes at once).
pub struct ConversationEventPush {
    position: FeedPosition,
    kind: ConversationEventType,
    account_id: Uuid,
    conversation_id: Option<Uuid>,
    contact_id: Option<Uuid>,
    conversation: Option<ConversationRow>,
    message: Option<MessageRow>,
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
        self.conversation_id.map(|id| ID(id.to_string()))
    }
    async fn contact_id(&self) -> Option<ID> {
        self.contact_id.map(|id| ID(id.to_string()))
    }
    /// The conversation as it is now (already in the read models).
    async fn conversation(&self) -> Option<Conversation> {
        self.conversation.clone().map(Conversation::loaded)
    }
    /// The message, for `MESSAGE_CREATED`.
    async fn message(&self) -> Option<Message> {
        self.message.clone().map(|row| Message::loaded(row, self.account_id))
    }
}

#[Subscription]
impl SubscriptionRoot {
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
        let publications = state.engine.publisher().subscribe();
        let mut follower = Follower {
            cursor: FeedPosition::START,
            reached: HashMap::new(),
            pending: VecDeque::new(),
            publications,
            auth,
            principal,
            filter,
            state,
            ended: false,
        };
        follower.reached = follower.checkpoints().await?;
        match after {
            None => follower.cursor = follower.state.engine.head().await?,
            Some(after) => {
                follower.cursor = feed_cursor(Some(after))?;
                follower.resync_if_too_far().await?;
            }
        }
        Ok(futures_util::stream::unfold(follower, |mut follower| async move {
            follower.next().await.map(|push| (push, follower))
        }))
    }
}

/// An event the subscriber may receive, before authorization.
struct Candidate {
    position: FeedPosition,
    kind: ConversationEventType,
    conversation_id: Option<Uuid>,
    message_id: Option<Uuid>,
    contact_id: Option<Uuid>,
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
    /// How far each projector has committed, as last heard.
    reached: HashMap<String, FeedPosition>,
    pending: VecDeque<ConversationEventPush>,
    publications: tokio::sync::broadcast::Receiver<projections::publication::Published>,
    auth: Auth,
    principal: Principal,
    filter: Filter,
    state: AppState,
    ended: bool,
}

impl Follower {
    /// The next push, or `None` when the subscription ends (credentials gone).
    async fn next(&mut self) -> Option<ConversationEventPush> {
        loop {
            if let Some(push) = self.pending.pop_front() {
                return Some(push);
            }
            if self.ended {
                return None;
            }
            match self.look().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(error) => tracing::warn!(error = format!("{error:#}"), "a subscription could not read the feed"),
            }
            if self.ended {
                return None;
            }
            tokio::select! {
                heard = self.publications.recv() => match heard {
                    Ok(published) => {
                        let reached = self.reached.entry(published.projector).or_default();
                        *reached = (*reached).max(published.through);
                    }
                    // Missed publications: the checkpoints say how far everyone got.
                    Err(RecvError::Lagged(_)) => {
                        if let Ok(reached) = self.checkpoints().await {
                            self.reached = reached;
                        }
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = tokio::time::sleep(IDLE_LOOK) => {
                    if let Ok(reached) = self.checkpoints().await {
                        self.reached = reached;
                    }
                }
            }
        }
    }

    /// Reads the feed after the cursor and queues what is in every read model by now;
    /// says whether anything was queued. Stops the subscription if its credentials no
    /// longer hold.
    async fn look(&mut self) -> anyhow::Result<bool> {
        match self.state.authenticator.refresh(&self.auth).await.map(|auth| auth.principal().cloned()) {
            Ok(Ok(principal)) => self.principal = principal,
            Ok(Err(_)) => {
                self.ended = true;
                return Ok(false);
            }
            Err(error) => anyhow::bail!("could not check the subscriber's credentials: {}", error.message),
        }
        let mut conn = self.state.pool.acquire().await?;
        let account = self.principal.account_id;
        // Sealed fields stay sealed: what a push shows comes from the read models.
        let bodies = Some(&["conversation", "contact"][..]);
        let mut events = read_sealed_after(&mut conn, Some(account), bodies, self.cursor, READ_BATCH).await?;
        drop(conn);
        // A subscriber that cannot keep up is not let fall further behind: past the
        // bound, it is told to refetch and goes on from the head.
        if events.len() as i64 == READ_BATCH && self.resync_if_too_far().await? {
            return Ok(true);
        }
        // What every read model already shows, in order.
        let shown = events.iter().position(|e| !self.projected(e)).unwrap_or(events.len());
        events.truncate(shown);
        let Some(last) = events.last().map(|e| e.position) else { return Ok(false) };
        let candidates: Vec<Candidate> =
            events.iter().filter_map(|e| self.candidate(e).transpose()).collect::<anyhow::Result<_>>()?;
        let conversations: Vec<Uuid> = candidates.iter().filter_map(|c| c.conversation_id).collect();
        let messages: Vec<Uuid> = candidates.iter().filter_map(|c| c.message_id).collect();
        let rows: HashMap<Uuid, ConversationRow> = inbox_list::get_many(&self.state.pool, account, &conversations)
            .await?
            .into_iter()
            .map(|row| (row.conversation_id, row))
            .collect();
        let mut message_rows: HashMap<Uuid, MessageRow> = if messages.is_empty() {
            HashMap::new()
        } else {
            timeline::messages_by_id(&self.state.pool, account, &messages)
                .await?
                .into_iter()
                .map(|row| (row.message_id, row))
                .collect()
        };
        let before = self.pending.len();
        for candidate in candidates {
            if let Some(push) = self.authorized(candidate, &rows, &mut message_rows).await? {
                self.pending.push_back(push);
            }
        }
        self.cursor = last;
        Ok(self.pending.len() > before)
    }

    /// Whether every projector that reads the event's stream has committed it.
    fn projected(&self, event: &FeedEvent) -> bool {
        self.state
            .engine
            .consumers_of(&event.aggregate_type)
            .iter()
            .all(|p| self.reached.get(*p).is_some_and(|reached| *reached >= event.position))
    }

    /// What `event` would push, before authorization and the rows it shows.
    fn candidate(&self, event: &FeedEvent) -> anyhow::Result<Option<Candidate>> {
        let mut candidate = Candidate {
            position: event.position,
            kind: ConversationEventType::ResyncRequired,
            conversation_id: None,
            message_id: None,
            contact_id: None,
        };
        let Some(public) = PublicEvent::of(&event.aggregate_type, &event.event_type) else { return Ok(None) };
        match event.aggregate_type.as_str() {
            "conversation" => {
                // A stream id that is no uuid is no conversation a client can ask about.
                let Ok(id) = event.aggregate_id.parse::<Uuid>() else { return Ok(None) };
                if self.filter.conversation.is_some_and(|c| c != id) {
                    return Ok(None);
                }
                candidate.kind = public.into();
                candidate.conversation_id = Some(id);
                // The message's id is not sealed.
                candidate.message_id = (public == PublicEvent::MessageCreated)
                    .then(|| event.payload.get(&event.event_type)?.get("message_id")?.as_str()?.parse().ok())
                    .flatten();
            }
            "contact" => {
                if self.filter.inbox.is_some() || self.filter.conversation.is_some() {
                    return Ok(None);
                }
                candidate.kind = public.into();
                let Ok(id) = event.aggregate_id.parse::<Uuid>() else { return Ok(None) };
                candidate.contact_id = Some(id);
            }
            _ => return Ok(None),
        }
        Ok(Some(candidate))
    }

    /// The push, if the subscriber may see it as they stand now.
    async fn authorized(
        &self,
        candidate: Candidate,
        conversations: &HashMap<Uuid, ConversationRow>,
        messages: &mut HashMap<Uuid, MessageRow>,
    ) -> anyhow::Result<Option<ConversationEventPush>> {
        let mut push = ConversationEventPush {
            position: candidate.position,
            kind: candidate.kind,
            account_id: self.principal.account_id,
            conversation_id: candidate.conversation_id,
            contact_id: candidate.contact_id,
            conversation: None,
            message: None,
        };
        if let Some(id) = candidate.conversation_id {
            let Some(row) = conversations.get(&id) else { return Ok(None) };
            if self.filter.inbox.is_some_and(|i| i != row.inbox_id)
                || self.principal.require_conversation(row.inbox_id, row.assignee_id).is_err()
            {
                return Ok(None);
            }
            push.conversation = Some(row.clone());
            push.message = candidate.message_id.and_then(|m| messages.remove(&m));
        }
        if let Some(id) = candidate.contact_id {
            if self.principal.require(crate::policy::Action::ReadContacts).is_err()
                || super::visible_contact(&self.principal, &self.state.pool, id).await.is_err()
            {
                return Ok(None);
            }
        }
        Ok(Some(push))
    }

    /// Every projector's checkpoint.
    async fn checkpoints(&self) -> anyhow::Result<HashMap<String, FeedPosition>> {
        let rows: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT projector, last_txid::text::bigint, last_position FROM projector_checkpoints")
                .fetch_all(&self.state.pool)
                .await?;
        Ok(rows.into_iter().map(|(p, t, g)| (p, FeedPosition { transaction_id: t, global_position: g })).collect())
    }

    /// A subscriber too far behind (resuming from long ago, or too slow to keep up) is
    /// answered one `RESYNC_REQUIRED`, and the subscription carries on from the head;
    /// says whether it was.
    async fn resync_if_too_far(&mut self) -> anyhow::Result<bool> {
        let (backlog, oldest): (i64, Option<chrono::DateTime<Utc>>) = sqlx::query_as(
            "SELECT count(*), min(recorded_at) FROM (SELECT recorded_at FROM events \
             WHERE account_id = $1 AND (transaction_id, global_position) > ($2::text::xid8, $3) LIMIT $4) AS backlog",
        )
        .bind(self.principal.account_id)
        .bind(self.cursor.transaction_id.to_string())
        .bind(self.cursor.global_position)
        .bind(MAX_BACKLOG_EVENTS + 1)
        .fetch_one(&self.state.pool)
        .await?;
        let too_old =
            oldest.is_some_and(|at| Utc::now() - at > chrono::Duration::from_std(MAX_BACKLOG_AGE).unwrap_or_default());
        if backlog > MAX_BACKLOG_EVENTS || too_old {
            let head = self.state.engine.head().await?;
            self.pending.push_back(ConversationEventPush {
                position: head,
                kind: ConversationEventType::ResyncRequired,
                account_id: self.principal.account_id,
                conversation_id: None,
                contact_id: None,
                conversation: None,
                message: None,
            });
            self.cursor = head;
            return Ok(true);
        }
        Ok(false)
    }
}
