//! The event store behind cqrs-es aggregates, over the `events` table.
//!
//! cqrs-es decides (`Aggregate::handle`), this module persists. It is our own rather
//! than postgres-es's repository because the write path needs what that one cannot
//! give (docs/adr/0001-own-event-repository.md): the positions it wrote (for
//! read-your-writes), several streams appended atomically in one round trip (inbound
//! routing writes a route, a contact and a conversation together), sealed personal
//! fields, and a per-stream hash chain.

use std::sync::Arc;

use anyhow::Context;
use cqrs_es::{Aggregate, DomainEvent};
use domain::PersonalData;
use projections::envelope::chain::{Chain, Hashed};
use projections::envelope::{self, json_text, Metadata, Unsealed};
use projections::feed::FeedPosition;
use projections::keyring::{Aes256Gcm, Keyring};
use projections::shared_feed::Wake;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

use crate::append::{GroupCommitter, Rows};
use crate::cache::AggregateCache;
use crate::context::{CommandContext, Head};
use crate::error::StoreError;
use crate::guard::Guard;
use crate::numbering::Numbering;
use crate::side_write::SideWrites;
use crate::stream_lock::StreamLocks;

/// A stream as loaded: its state, how many events it has, and its last hash.
#[derive(Clone)]
pub struct Loaded<A: Aggregate> {
    pub id: String,
    pub state: A,
    pub version: i64,
    last_hash: Option<Vec<u8>>,
}

impl<A: Aggregate> Loaded<A> {
    /// A stream known to be new (no read needed); appending to one that exists
    /// conflicts on its first sequence.
    pub fn new_stream(id: impl Into<String>) -> Self {
        Self { id: id.into(), state: A::default(), version: 0, last_hash: None }
    }

    pub fn head(&self) -> Head {
        Head { aggregate_type: A::TYPE, id: self.id.clone(), version: self.version }
    }
}

struct PendingEvent {
    event_type: String,
    event_version: String,
    payload: Value,
    personal_fields: &'static [&'static str],
    subject: Option<Uuid>,
}

/// Puts a stream back in the cache at its new head (version, hash) after commit.
type Keep = Box<dyn FnOnce(&AggregateCache, i64, Option<Vec<u8>>) + Send + Sync>;

struct Append {
    aggregate_type: &'static str,
    aggregate_id: String,
    version: i64,
    last_hash: Option<Vec<u8>>,
    events: Vec<PendingEvent>,
    keep: Keep,
}

/// Everything one command writes, committed in one transaction or not at all.
pub struct UnitOfWork<'c> {
    context: &'c CommandContext,
    appends: Vec<Append>,
    side_writes: SideWrites,
}

impl<'c> UnitOfWork<'c> {
    pub fn new(context: &'c CommandContext) -> Self {
        Self { context, appends: Vec::new(), side_writes: SideWrites::default() }
    }

    /// Adds the events a command produced on a loaded stream; the stream goes back to
    /// the cache, at its new head, once they are committed.
    pub fn append<A>(&mut self, stream: Loaded<A>, events: Vec<A::Event>) -> anyhow::Result<()>
    where
        A: Aggregate + 'static,
        A::Event: PersonalData,
    {
        let events = events
            .into_iter()
            .map(|event| {
                Ok(PendingEvent {
                    event_type: event.event_type(),
                    event_version: event.event_version(),
                    personal_fields: event.personal_fields(),
                    subject: event.data_subject(),
                    payload: serde_json::to_value(&event).context("failed to serialise an event")?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.appends.push(Append {
            aggregate_type: A::TYPE,
            aggregate_id: stream.id.clone(),
            version: stream.version,
            last_hash: stream.last_hash.clone(),
            events,
            keep: Box::new(move |cache: &AggregateCache, version, last_hash| {
                let mut stream = stream;
                stream.version = version;
                stream.last_hash = last_hash;
                cache.put(A::TYPE, &stream.id.clone(), version, stream);
            }),
        });
        Ok(())
    }

    /// What the unit writes besides its events, in the same transaction.
    pub fn side_writes(&mut self) -> &mut SideWrites {
        &mut self.side_writes
    }

    /// Nothing to write (streams may still go back to the cache).
    pub fn writes_nothing(&self) -> bool {
        self.appends.iter().all(|a| a.events.is_empty()) && self.side_writes.is_empty()
    }
}

pub struct EventStore {
    pool: PgPool,
    keyring: Arc<Keyring>,
    locks: StreamLocks,
    cache: AggregateCache,
    committer: GroupCommitter,
    numbering: Numbering,
    access_changed: Wake,
    chain: Chain,
}

impl EventStore {
    /// `cache_capacity`: how many streams stay in memory between commands. Starts
    /// the group committer, which signals `committed` after every transaction.
    pub fn new(pool: PgPool, chain: Chain, committed: Wake, cache_capacity: usize) -> Self {
        Self {
            keyring: chain.keyring().clone(),
            chain,
            committer: GroupCommitter::start(pool.clone(), committed),
            numbering: Numbering::new(&pool.connect_options()),
            access_changed: Wake::default(),
            pool,
            locks: StreamLocks::default(),
            cache: AggregateCache::new(cache_capacity),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) fn numbering(&self) -> &Numbering {
        &self.numbering
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// Signalled after a commit that changed credentials, roles or memberships.
    pub fn access_changed(&self) -> &Wake {
        &self.access_changed
    }

    pub async fn lock<A: Aggregate>(&self, id: &str) -> OwnedMutexGuard<()> {
        self.locks.lock(A::TYPE, id).await
    }

    /// A stream's state, to read for a decision (a copy of the cached one, or
    /// replayed). The version seen is recorded in the context: the commit asserts it
    /// is still the stream's head.
    pub async fn load<A: Aggregate + Clone + 'static>(
        &self,
        context: &CommandContext,
        id: &str,
    ) -> Result<Loaded<A>, StoreError> {
        let stream = self.peek::<A>(id).await?;
        context.reads.record(A::TYPE, id, stream.version);
        Ok(stream)
    }

    /// A stream's state for what never changes of it (its account, a conversation's
    /// inbox): not recorded, so a decision on it is never stale.
    pub async fn peek<A: Aggregate + Clone + 'static>(&self, id: &str) -> Result<Loaded<A>, StoreError> {
        if let Some(stream) = self.cache.copy::<Loaded<A>>(A::TYPE, id) {
            return Ok(stream);
        }
        let stream = self.replay::<A>(id).await?;
        self.cache.put(A::TYPE, id, stream.version, stream.clone());
        Ok(stream)
    }

    /// Whether what `context` read and was authorized with, and `decided_on` (a stream
    /// the command leaves as it is), are still current: before a refusal is answered,
    /// since a refusal is a decision too.
    pub async fn confirm(&self, context: &CommandContext, decided_on: Option<Head>) -> Result<(), StoreError> {
        let mut guard = Guard::of(context, &[]);
        if let Some(head) = &decided_on {
            guard.unchanged(head);
        }
        self.check(context, &guard).await
    }

    /// Runs `guard`'s assertions on their own; what they find is recorded in `context`.
    async fn check(&self, context: &CommandContext, guard: &Guard) -> Result<(), StoreError> {
        if !guard.is_empty() {
            let mut conn = self.pool.acquire().await.context("failed to get a connection")?;
            if let Err(error) = guard.check(&mut conn).await {
                self.forget(context, &error);
                return Err(error);
            }
        }
        context.reads.mark_current();
        Ok(())
    }

    /// After a commit or check refused as stale or conflicting: the streams the
    /// decision read leave the cache (the next read replays them), and the context
    /// says why, so its caller decides again.
    fn forget(&self, context: &CommandContext, error: &StoreError) {
        if !matches!(error, StoreError::Stale(_) | StoreError::Conflict) {
            return;
        }
        if let StoreError::Stale(why) = error {
            context.reads.mark_stale(*why);
        }
        for head in context.reads.heads() {
            self.cache.evict(head.aggregate_type, &head.id);
        }
    }

    /// A stream to decide on and append to: taken from the cache (no copy) or
    /// replayed. The caller holds the stream's lock, or the stream is new.
    pub async fn load_for_update<A: Aggregate + 'static>(&self, id: &str) -> Result<Loaded<A>, StoreError> {
        match self.cache.take::<Loaded<A>>(A::TYPE, id) {
            Some(stream) => Ok(stream),
            None => self.replay(id).await,
        }
    }

    /// Puts back a stream a command loaded for update and then did not change.
    pub fn keep<A: Aggregate + 'static>(&self, stream: Loaded<A>) {
        self.cache.put(A::TYPE, &stream.id.clone(), stream.version, stream);
    }

    /// Replays a stream from the log (an empty stream is the default state).
    #[tracing::instrument(skip(self), fields(aggregate = A::TYPE))]
    async fn replay<A: Aggregate>(&self, id: &str) -> Result<Loaded<A>, StoreError> {
        let mut conn = self.pool.acquire().await.context("failed to get a connection")?;
        #[derive(sqlx::FromRow)]
        struct Stored {
            sequence: i64,
            event_type: String,
            event_version: String,
            payload: Value,
            metadata: Value,
            hash: Option<Vec<u8>>,
        }
        let rows: Vec<Stored> = sqlx::query_as(
            "SELECT sequence, event_type, event_version, payload, metadata, hash FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
        )
        .bind(A::TYPE)
        .bind(id)
        .fetch_all(&mut *conn)
        .await
        .context("failed to load a stream")?;
        let mut stream = Loaded::<A>::new_stream(id);
        for Stored { sequence, event_type, event_version: mut version, mut payload, metadata, hash } in rows {
            envelope::open(&mut conn, &self.keyring, &mut payload, &metadata).await?;
            domain::upcast::upcast(A::TYPE, &event_type, &mut version, &mut payload);
            let event: A::Event = serde_json::from_value(payload)
                .with_context(|| format!("failed to decode event {id}/{sequence} of {}", A::TYPE))?;
            stream.state.apply(event);
            stream.version = sequence;
            stream.last_hash = hash;
        }
        Ok(stream)
    }

    /// Appends everything in `work` atomically; returns the feed position to wait for
    /// to see it projected (or `None` if there was nothing to write).
    ///
    /// Sealing and hashing happen here, in the caller's task; the write itself goes
    /// to the group committer, which appends concurrent units in one transaction.
    #[tracing::instrument(skip_all, fields(streams = work.appends.len()))]
    pub async fn commit(&self, work: UnitOfWork<'_>) -> Result<Option<FeedPosition>, StoreError> {
        let context = work.context;
        let appended: Vec<Head> = work
            .appends
            .iter()
            .filter(|a| !a.events.is_empty())
            .map(|a| Head { aggregate_type: a.aggregate_type, id: a.aggregate_id.clone(), version: a.version })
            .collect();
        let mut guard = Guard::of(context, &appended);
        for user in work.side_writes.access_changed() {
            guard.changes_access_of(user);
        }
        for append in work.appends.iter().filter(|a| a.events.is_empty()) {
            guard.unchanged(&Head {
                aggregate_type: append.aggregate_type,
                id: append.aggregate_id.clone(),
                version: append.version,
            });
        }
        if work.writes_nothing() {
            // Nothing to append is an answer too: given only once the state it was
            // decided on is known to be current. A stale stream is not put back.
            self.check(context, &guard).await?;
            for append in work.appends {
                (append.keep)(&self.cache, append.version, append.last_hash);
            }
            return Ok(None);
        }
        let metadata = Metadata {
            actor: &context.actor,
            correlation_id: context.correlation_id,
            causation_id: context.causation_id.as_deref(),
            channel: context.channel.as_deref(),
            occurred_at: context.at,
        };
        let mut rows = Rows::default();
        let mut heads = Vec::with_capacity(work.appends.len());
        for append in work.appends {
            let mut previous = append.last_hash;
            let version = append.version + append.events.len() as i64;
            for (offset, event) in append.events.into_iter().enumerate() {
                let sequence = append.version + 1 + offset as i64;
                let cipher = match (event.subject, event.personal_fields.is_empty()) {
                    (Some(subject), false) => Some(self.data_key(&work.side_writes, subject).await?),
                    _ => None,
                };
                let unsealed =
                    Unsealed { payload: event.payload, personal_fields: event.personal_fields, subject: event.subject };
                let (payload, metadata) = envelope::seal(unsealed, cipher.as_deref(), &metadata)?;
                // Serialised once: the hash covers, and the database parses, this text.
                let (payload, metadata) = (json_text(&payload)?, json_text(&metadata)?);
                let hash = self.chain.hash(
                    previous.as_deref(),
                    &Hashed {
                        aggregate_type: append.aggregate_type,
                        aggregate_id: &append.aggregate_id,
                        sequence,
                        event_type: &event.event_type,
                        event_version: &event.event_version,
                        payload: &payload,
                        metadata: &metadata,
                    },
                );
                rows.aggregate_type.push(append.aggregate_type.to_string());
                rows.aggregate_id.push(append.aggregate_id.clone());
                rows.sequence.push(sequence);
                rows.event_type.push(event.event_type);
                rows.event_version.push(event.event_version);
                rows.payload.push(payload);
                rows.metadata.push(metadata);
                rows.account_id.push(context.account_id);
                rows.hash.push(hash.clone());
                previous = Some(hash);
            }
            heads.push((append.keep, version, previous));
        }
        let changes_access = work.side_writes.access_changed().next().is_some();
        let position = match self.committer.write(rows, work.side_writes, guard).await {
            Ok(position) => position,
            Err(error) => {
                self.forget(context, &error);
                return Err(error);
            }
        };
        context.reads.mark_current();
        for (keep, version, hash) in heads {
            keep(&self.cache, version, hash);
        }
        if changes_access {
            self.access_changed.wake();
        }
        Ok(Some(position))
    }

    /// The key sealing `subject`'s fields: one this unit of work creates, or a stored one.
    async fn data_key(&self, side_writes: &SideWrites, subject: Uuid) -> Result<Arc<Aes256Gcm>, StoreError> {
        if let Some(cipher) = side_writes.created_key(subject) {
            return Ok(cipher);
        }
        // The pool is asked for a connection only if the key is not in memory.
        let key = self.keyring.data_key(&self.pool, subject).await?;
        key.ok_or(StoreError::Erased)
    }
}
