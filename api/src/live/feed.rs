//! The feed as this process's subscribers see it: one reader per process, however
//! many sockets are open.
//!
//! The reader follows the feed behind the read models: woken by the engine's
//! publications (this process's projectors at once, the others' through the fan-out),
//! it takes the events after its position that the read models a push shows have
//! committed, loads the rows they show (the conversation, the message, which inboxes a
//! contact wrote to) once for everyone, and broadcasts each event. It reads the feed
//! ahead of the read models (a batch at most, kept in memory), so that when their
//! publication comes only the rows are left to read: one round trip to the database
//! between a projector's commit and the push, not two. Subscribers filter
//! and authorize in memory. The broadcast keeps the last [`RETAINED_EVENTS`] events
//! for subscribers to take; one that falls further behind is told it lagged (and is
//! closed: ADR 0008), so memory stays bounded whatever a client does.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use domain::public_event::PublicEvent;
use futures_util::future::try_join_all;
use projections::engine::Engine;
use projections::feed::{read_sealed_after, FeedEvent, FeedPosition};
use projections::inbox_list::{self, ConversationRow};
use projections::timeline::{self, MessageRow};
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Events kept for subscribers that have not taken them yet; a subscriber further
/// behind is too slow.
pub const RETAINED_EVENTS: usize = 4096;
/// Events read from the feed per look.
const READ_BATCH: i64 = 500;
/// How often the reader looks at the checkpoints anyway (a publication lost while the
/// fan-out reconnected).
const IDLE_LOOK: Duration = Duration::from_secs(1);
/// Sealed fields stay sealed: what a push shows comes from the read models.
const BODIES: &[&str] = &["conversation", "contact"];

/// Events committed after what was broadcast, read before their read models showed
/// them (in feed order), and where that reading stopped.
#[derive(Default)]
struct ReadAhead {
    events: VecDeque<FeedEvent>,
    through: FeedPosition,
}

/// One event of the feed as subscribers receive it, with the rows it shows as the
/// read models had them when it was read.
#[derive(Debug)]
pub struct LiveEvent {
    pub position: FeedPosition,
    pub account_id: Uuid,
    pub public: PublicEvent,
    pub conversation: Option<ConversationRow>,
    pub message: Option<MessageRow>,
    pub contact_id: Option<Uuid>,
    /// The inboxes a contact wrote to: agents see the customers of their inboxes.
    pub contact_inboxes: Vec<Uuid>,
}

/// The per-process reader and its broadcast.
#[derive(Clone)]
pub struct LiveFeed {
    pool: PgPool,
    engine: Engine,
    sender: broadcast::Sender<Arc<LiveEvent>>,
    /// Every event through this position has been broadcast (or skipped while nobody
    /// listened); held while broadcasting, so a new subscriber misses nothing.
    sent_through: Arc<Mutex<FeedPosition>>,
}

impl LiveFeed {
    pub fn new(pool: PgPool, engine: Engine) -> Self {
        Self {
            pool,
            engine,
            sender: broadcast::channel(RETAINED_EVENTS).0,
            sent_through: Arc::new(Mutex::new(FeedPosition::START)),
        }
    }

    /// Every event after the returned position, as it is broadcast.
    pub fn subscribe(&self) -> (FeedPosition, broadcast::Receiver<Arc<LiveEvent>>) {
        let through = self.sent_through.lock().expect("live feed position");
        (*through, self.sender.subscribe())
    }

    /// Sockets' subscriptions listening now.
    pub fn listeners(&self) -> usize {
        self.sender.receiver_count()
    }

    /// One account's events after `after` through `through` (a position the reader
    /// has broadcast through), at most `limit`, for a subscriber catching up.
    pub async fn backlog(
        &self,
        account: Uuid,
        after: FeedPosition,
        through: FeedPosition,
        limit: i64,
    ) -> anyhow::Result<Vec<LiveEvent>> {
        let mut conn = self.pool.acquire().await?;
        let mut events = read_sealed_after(&mut conn, Some(account), Some(BODIES), after, limit).await?;
        drop(conn);
        events.retain(|e| e.position <= through);
        self.load(events).await
    }

    /// Reads and broadcasts until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut publications = self.engine.publisher().subscribe();
        let mut reached: HashMap<String, FeedPosition> = HashMap::new();
        let mut ahead = ReadAhead::default();
        loop {
            match self.start().await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "the live feed cannot start; retrying");
                    tokio::select! { _ = tokio::time::sleep(IDLE_LOOK) => {}, _ = shutdown.cancelled() => return }
                }
            }
        }
        // The checkpoints are read at the start, and when a publication may have been
        // missed (the idle look, a lag); publications say the rest.
        let mut refresh = true;
        loop {
            if refresh {
                if let Ok(checkpoints) = self.checkpoints().await {
                    for (projector, at) in checkpoints {
                        let known = reached.entry(projector).or_default();
                        *known = (*known).max(at);
                    }
                }
            }
            loop {
                match self.look(&reached, &mut ahead).await {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(error) => {
                        tracing::warn!(error = format!("{error:#}"), "the live feed could not read the feed");
                        // What was read ahead may have been half taken: read it again.
                        ahead = ReadAhead::default();
                        break;
                    }
                }
            }
            // Woken by a publication of a read model a push shows, or by the idle look
            // (the other projectors' publications change nothing here).
            refresh = loop {
                tokio::select! {
                    heard = publications.recv() => match heard {
                        Ok(published) => {
                            let mut shows = shown_by(&published.projector);
                            let at = reached.entry(published.projector).or_default();
                            *at = (*at).max(published.through);
                            while let Ok(more) = publications.try_recv() {
                                shows |= shown_by(&more.projector);
                                let at = reached.entry(more.projector).or_default();
                                *at = (*at).max(more.through);
                            }
                            if shows {
                                break false;
                            }
                        }
                        Err(RecvError::Lagged(_)) => break true,
                        Err(RecvError::Closed) => return,
                    },
                    _ = tokio::time::sleep(IDLE_LOOK) => break true,
                    _ = shutdown.cancelled() => return,
                }
            };
        }
    }

    /// Starts at the head: what happened before this process served is a resuming
    /// subscriber's backlog, read by itself.
    async fn start(&self) -> anyhow::Result<()> {
        let head = self.engine.head().await?;
        *self.sent_through.lock().expect("live feed position") = head;
        Ok(())
    }

    /// Broadcasts what every read model a push shows has committed after the position:
    /// the events read ahead at the last look first (their rows are all that is read
    /// now), then reads ahead what is committed but not shown yet, so that the next
    /// publication finds it in memory. Says whether there may be more to show at once.
    async fn look(&self, reached: &HashMap<String, FeedPosition>, ahead: &mut ReadAhead) -> anyhow::Result<bool> {
        let from = *self.sent_through.lock().expect("live feed position");
        if self.sender.receiver_count() == 0 {
            // Nobody listens: move past what is in every read model without reading it
            // (and forget what was read ahead: the position may move past it, or not).
            *ahead = ReadAhead::default();
            if let Some(floor) = reached.values().min() {
                let mut through = self.sent_through.lock().expect("live feed position");
                *through = (*through).max(*floor);
            }
            return Ok(false);
        }
        if ahead.through < from {
            // Started, or restarted after an error: read from what was broadcast.
            *ahead = ReadAhead { events: VecDeque::new(), through: from };
        }
        let showable = PUSHED_STREAMS.iter().any(|stream| shown_through(stream, reached) > from);
        if ahead.events.is_empty() && showable {
            self.read_ahead(ahead).await?;
        }
        let shown = ahead.events.iter().position(|e| !self.projected(e, reached)).unwrap_or(ahead.events.len());
        let all = shown == ahead.events.len();
        if shown > 0 {
            let events: Vec<FeedEvent> = ahead.events.drain(..shown).collect();
            let last = events.last().map(|e| e.position).unwrap_or(from);
            let loaded = self.load(events).await?;
            let mut through = self.sent_through.lock().expect("live feed position");
            for event in loaded {
                let _ = self.sender.send(Arc::new(event));
            }
            *through = last;
        }
        if ahead.events.len() < READ_BATCH as usize {
            self.read_ahead(ahead).await?;
        }
        // The whole buffer went out: what was just read may be shown already.
        Ok(shown > 0 && all)
    }

    /// Reads the committed events after those read ahead, up to a batch in memory.
    async fn read_ahead(&self, ahead: &mut ReadAhead) -> anyhow::Result<()> {
        let room = READ_BATCH - ahead.events.len() as i64;
        let mut conn = self.pool.acquire().await?;
        let events = read_sealed_after(&mut conn, None, Some(BODIES), ahead.through, room).await?;
        if let Some(last) = events.last() {
            ahead.through = last.position;
        }
        ahead.events.extend(events);
        Ok(())
    }

    /// Whether the read models a push of the event shows have committed it (the others,
    /// a dashboard's counters or notifications, are not waited for).
    fn projected(&self, event: &FeedEvent, reached: &HashMap<String, FeedPosition>) -> bool {
        backing(&event.aggregate_type).iter().all(|p| reached.get(*p).is_some_and(|at| *at >= event.position))
    }

    /// The events subscribers may receive, with their rows (read for the whole batch
    /// at once). An event whose conversation is gone from the read models is dropped.
    async fn load(&self, events: Vec<FeedEvent>) -> anyhow::Result<Vec<LiveEvent>> {
        let candidates: Vec<Candidate> = events.iter().filter_map(Candidate::of).collect();
        let mut conversations: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        let mut messages: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        for candidate in &candidates {
            if let Some(id) = candidate.conversation_id {
                conversations.entry(candidate.account_id).or_default().push(id);
            }
            if let Some(id) = candidate.message_id {
                messages.entry(candidate.account_id).or_default().push(id);
            }
        }
        // The three reads go at once: each waits on the database, not on the others.
        let conversation_rows =
            try_join_all(conversations.iter().map(|(account, ids)| inbox_list::get_many(&self.pool, *account, ids)));
        let message_rows =
            try_join_all(messages.iter().map(|(account, ids)| timeline::messages_by_id(&self.pool, *account, ids)));
        let contacts: Vec<Uuid> = candidates.iter().filter_map(|c| c.contact_id).collect();
        let contact_inboxes = async {
            if contacts.is_empty() {
                return Ok(Vec::new());
            }
            sqlx::query_as::<_, (Uuid, Vec<Uuid>)>(
                "SELECT contact_id, array_agg(DISTINCT inbox_id) FROM rm_conversations \
                 WHERE contact_id = ANY($1) GROUP BY contact_id",
            )
            .persistent(projections::ONE_OFF_PLAN)
            .bind(&contacts)
            .fetch_all(&self.pool)
            .await
        };
        let (conversation_rows, message_rows, contact_inboxes) =
            tokio::try_join!(conversation_rows, message_rows, contact_inboxes)?;
        let rows: HashMap<Uuid, ConversationRow> =
            conversation_rows.into_iter().flatten().map(|r| (r.conversation_id, r)).collect();
        let message_rows: HashMap<Uuid, MessageRow> =
            message_rows.into_iter().flatten().map(|r| (r.message_id, r)).collect();
        let contact_inboxes: HashMap<Uuid, Vec<Uuid>> = contact_inboxes.into_iter().collect();
        let mut loaded = Vec::with_capacity(candidates.len());
        for candidate in candidates {
            let conversation = match candidate.conversation_id {
                Some(id) => match rows.get(&id) {
                    Some(row) => Some(row.clone()),
                    None => continue,
                },
                None => None,
            };
            loaded.push(LiveEvent {
                position: candidate.position,
                account_id: candidate.account_id,
                public: candidate.public,
                conversation,
                message: candidate.message_id.and_then(|m| message_rows.get(&m).cloned()),
                contact_id: candidate.contact_id,
                contact_inboxes: candidate
                    .contact_id
                    .and_then(|c| contact_inboxes.get(&c).cloned())
                    .unwrap_or_default(),
            });
        }
        Ok(loaded)
    }

    /// Every projector's checkpoint.
    async fn checkpoints(&self) -> anyhow::Result<HashMap<String, FeedPosition>> {
        let rows: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT projector, last_txid::text::bigint, last_position FROM projector_checkpoints")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(p, t, g)| (p, FeedPosition { transaction_id: t, global_position: g })).collect())
    }
}

/// The read models a conversation's view comes from.
pub const CONVERSATION_VIEWS: &[&str] = &["inbox_list", "timeline"];

/// The streams whose events are pushed.
const PUSHED_STREAMS: [&str; 2] = ["conversation", "contact"];

/// The read models a push of a stream's event shows: the conversation and its
/// messages; a contact, and the inboxes it wrote to.
fn backing(aggregate_type: &str) -> &'static [&'static str] {
    match aggregate_type {
        "conversation" => CONVERSATION_VIEWS,
        "contact" => &["directory", "inbox_list"],
        _ => &[],
    }
}

/// Whether a push shows the projector's read model.
fn shown_by(projector: &str) -> bool {
    PUSHED_STREAMS.iter().any(|stream| backing(stream).contains(&projector))
}

/// Through where every read model a push of the stream's events shows has committed.
fn shown_through(aggregate_type: &str, reached: &HashMap<String, FeedPosition>) -> FeedPosition {
    backing(aggregate_type).iter().map(|p| reached.get(*p).copied().unwrap_or_default()).min().unwrap_or_default()
}

/// What an event of the feed would push, before its rows are read.
struct Candidate {
    position: FeedPosition,
    account_id: Uuid,
    public: PublicEvent,
    conversation_id: Option<Uuid>,
    message_id: Option<Uuid>,
    contact_id: Option<Uuid>,
}

impl Candidate {
    fn of(event: &FeedEvent) -> Option<Self> {
        let public = PublicEvent::of(&event.aggregate_type, &event.event_type)?;
        let account_id = event.account_id?;
        // A stream id that is no uuid is nothing a client can ask about.
        let id = event.aggregate_id.parse::<Uuid>().ok()?;
        let mut candidate = Candidate {
            position: event.position,
            account_id,
            public,
            conversation_id: None,
            message_id: None,
            contact_id: None,
        };
        match event.aggregate_type.as_str() {
            "conversation" => {
                candidate.conversation_id = Some(id);
                // The message's id is not sealed.
                candidate.message_id = matches!(public, PublicEvent::MessageCreated | PublicEvent::MessageUpdated)
                    .then(|| event.payload.get(&event.event_type)?.get("message_id")?.as_str()?.parse().ok())
                    .flatten();
            }
            "contact" => candidate.contact_id = Some(id),
            _ => return None,
        }
        Some(candidate)
    }
}
