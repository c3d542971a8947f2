//! The event store behind cqrs-es aggregates, over the `events` table.
//!
//! cqrs-es decides (`Aggregate::handle`), this module persists. It is our own rather
//! than postgres-es's repository because the write path needs what that one cannot
//! give (docs/adr/0001-own-event-repository.md): the positions it wrote (for
//! read-your-writes), several streams appended atomically in one round trip (inbound
//! routing writes a route, a contact and a conversation together), sealed personal
//! fields, and a per-stream hash chain.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use anyhow::Context;
use chrono::{DateTime, Utc};
use cqrs_es::{Aggregate, DomainEvent};
use domain::values::Role;
use domain::PersonalData;
use projections::engine::Wake;
use projections::feed::{open_payload, variant_body, FeedPosition, META_ACTOR, META_SEALED, META_SUBJECT};
use projections::keyring::{seal, Aes256Gcm, Keyring};
use serde_json::{json, Value};
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

use crate::cache::AggregateCache;
use crate::chain::{Chain, Hashed};
use crate::context::{CommandContext, Head, Staleness};
use crate::group_commit::GroupCommitter;
use crate::guard::Guard;
use crate::numbering::Numbering;

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended to one of the streams first: reload and retry.
    #[error("a stream was changed concurrently")]
    Conflict,
    /// A uniqueness rule outside the log refused the write (e.g. an e-mail in use).
    #[error("{0} already exists")]
    Duplicate(&'static str),
    /// Personal data of an erased contact cannot be written: their key is gone.
    #[error("the contact has been erased")]
    Erased,
    /// What the decision read (another stream, or the caller's access) has moved on
    /// since: the caller decides again on current state.
    #[error("the state this decision was made on has changed")]
    Stale(Staleness),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

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

/// Rows written outside the log in the same transaction as the events.
#[derive(Clone)]
pub enum SideWrite {
    /// A new data subject's key (see [`SideWrite::data_key`]): stored wrapped, and
    /// used to seal this unit's events.
    DataKey {
        subject: Uuid,
        wrapped: Vec<u8>,
        cipher: Arc<Aes256Gcm>,
    },
    ChannelIdentity {
        hash: String,
        account: Uuid,
        inbox: Uuid,
        contact: Uuid,
    },
    /// A new user's login; no password hash for an invited agent, until they accept.
    Credentials {
        user: Uuid,
        email: String,
        password_hash: Option<String>,
    },
    SetPassword {
        user: Uuid,
        password_hash: String,
    },
    AccessToken(NewAccessToken),
    RevokeAccessToken {
        token: Uuid,
        user: Uuid,
    },
    /// Ends the user's login sessions, but the one named, and their API tokens too
    /// with `api_tokens`.
    EndSessions {
        user: Uuid,
        except: Option<Uuid>,
        api_tokens: bool,
    },
    /// `joins`: the user has a login already and joins the account on accepting.
    Invitation {
        token_hash: Vec<u8>,
        user: Uuid,
        account: Uuid,
        expires_at: DateTime<Utc>,
        joins: Option<JoinAs>,
    },
    /// Consumes an invitation: conflicts if it was used meanwhile.
    InvitationAccepted {
        token_hash: Vec<u8>,
    },
    Membership {
        account: Uuid,
        user: Uuid,
        role: Role,
        custom_role: Option<Uuid>,
    },
    MembershipEnded {
        account: Uuid,
        user: Uuid,
    },
    CustomRole {
        role: Uuid,
        account: Uuid,
        name: String,
        permissions: Vec<&'static str>,
    },
    InboxMembership {
        account: Uuid,
        inbox: Uuid,
        user: Uuid,
        member: bool,
    },
    /// Shreds a contact's data key and forgets its channel identities.
    EraseContact {
        contact: Uuid,
    },
    /// Shreds data keys: every field they sealed reads as erased from now on.
    ShredDataKeys {
        subjects: Vec<Uuid>,
    },
    /// Deletes the user's invitations to the account (they may name the user).
    ForgetInvitations {
        account: Uuid,
        user: Uuid,
    },
    /// Ends a login: its credentials, invitations and every token. Conflicts if the
    /// user is a member of an account again (the erasure is decided anew).
    EraseLogin {
        user: Uuid,
    },
}

/// The place an invitation offers someone who has a login already.
#[derive(Debug, Clone)]
pub struct JoinAs {
    pub name: String,
    pub role: Role,
    pub custom_role: Option<Uuid>,
}

/// A bearer credential: a personal API token or a login session.
#[derive(Clone)]
pub struct NewAccessToken {
    pub token: Uuid,
    pub token_hash: Vec<u8>,
    pub user: Uuid,
    pub account: Uuid,
    pub name: String,
    pub kind: TokenKind,
    pub expires_at: Option<DateTime<Utc>>,
}

impl NewAccessToken {
    /// A fresh credential: the row to store, and the secret to show once.
    pub fn issue(
        user: Uuid,
        account: Uuid,
        name: impl Into<String>,
        kind: TokenKind,
        expires_at: Option<DateTime<Utc>>,
    ) -> (Self, String) {
        let secret = crate::access::new_secret(crate::access::TOKEN_PREFIX);
        let token = Self {
            token: Uuid::now_v7(),
            token_hash: crate::access::token_hash(&secret),
            user,
            account,
            name: name.into(),
            kind,
            expires_at,
        };
        (token, secret)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Api,
    Session,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Api => "api",
            TokenKind::Session => "session",
        }
    }
}

impl SideWrite {
    /// A key for a data subject that is new in this unit of work (a contact, or a
    /// member's or login's fresh subject id), which seals its fields from the start.
    pub fn data_key(keyring: &Keyring, subject: Uuid) -> anyhow::Result<Self> {
        let key = keyring.new_data_key(subject)?;
        Ok(SideWrite::DataKey { subject, wrapped: key.wrapped, cipher: key.cipher })
    }

    /// The user whose access (credentials, role, memberships) the write changes:
    /// their access version moves on with it, and cached principals are dropped.
    fn changes_access_of(&self) -> Option<Uuid> {
        match self {
            SideWrite::SetPassword { user, .. }
            | SideWrite::RevokeAccessToken { user, .. }
            | SideWrite::EndSessions { user, .. }
            | SideWrite::Membership { user, .. }
            | SideWrite::MembershipEnded { user, .. }
            | SideWrite::InboxMembership { user, .. }
            | SideWrite::EraseLogin { user } => Some(*user),
            _ => None,
        }
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
    side_writes: Vec<SideWrite>,
}

impl<'c> UnitOfWork<'c> {
    pub fn new(context: &'c CommandContext) -> Self {
        Self { context, appends: Vec::new(), side_writes: Vec::new() }
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

    pub fn side_write(&mut self, write: SideWrite) {
        self.side_writes.push(write);
    }

    /// Nothing to write (streams may still go back to the cache).
    pub fn writes_nothing(&self) -> bool {
        self.appends.iter().all(|a| a.events.is_empty()) && self.side_writes.is_empty()
    }
}

/// Serialises commands per stream inside this process, so a burst on one
/// conversation queues instead of conflicting. Locks are per stream (not striped):
/// a command that takes two (route, then conversation) can never deadlock another.
#[derive(Default)]
pub struct StreamLocks {
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl StreamLocks {
    pub async fn lock(&self, aggregate_type: &str, id: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().expect("stream lock table");
            if locks.len() > 10_000 {
                locks.retain(|_, lock| lock.strong_count() > 0);
            }
            let key = format!("{aggregate_type}/{id}");
            match locks.get(&key).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(key, Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
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
            open_payload(&mut conn, &self.keyring, &mut payload, &metadata).await?;
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
        for user in work.side_writes.iter().filter_map(SideWrite::changes_access_of) {
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
                let (payload, metadata) =
                    seal_payload(event.payload, event.personal_fields, event.subject, cipher.as_deref(), context)?;
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
        let changes_access = work.side_writes.iter().any(|w| w.changes_access_of().is_some());
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
    async fn data_key(&self, side_writes: &[SideWrite], subject: Uuid) -> Result<Arc<Aes256Gcm>, StoreError> {
        let created = side_writes.iter().find_map(|w| match w {
            SideWrite::DataKey { subject: created, cipher, .. } if *created == subject => Some(cipher.clone()),
            _ => None,
        });
        if let Some(cipher) = created {
            return Ok(cipher);
        }
        // The pool is asked for a connection only if the key is not in memory.
        let key = self.keyring.data_key(&self.pool, subject).await?;
        key.ok_or(StoreError::Erased)
    }
}

/// Seals the personal fields of a payload and builds its metadata.
fn seal_payload(
    mut payload: Value,
    fields: &[&str],
    subject: Option<Uuid>,
    cipher: Option<&Aes256Gcm>,
    context: &CommandContext,
) -> Result<(Value, Value), StoreError> {
    let mut metadata = json!({
        META_ACTOR: context.actor.to_string(),
        "correlation_id": context.correlation_id.to_string(),
        "occurred_at": context.at.to_rfc3339(),
    });
    if let Some(causation) = context.causation_id {
        metadata["causation_id"] = json!(causation.to_string());
    }
    if let Some(channel) = &context.channel {
        metadata["channel"] = json!(channel);
    }
    let (Some(subject), Some(cipher)) = (subject, cipher) else { return Ok((payload, metadata)) };
    let body = variant_body(&mut payload).context("event payload is not an externally tagged object")?;
    let mut sealed = Vec::new();
    for field in fields {
        if let Some(slot) = body.get_mut(*field) {
            if !slot.is_null() {
                *slot = Value::String(seal(cipher, subject, slot)?);
                sealed.push(*field);
            }
        }
    }
    if !sealed.is_empty() {
        metadata[META_SEALED] = json!(sealed.join(","));
        metadata[META_SUBJECT] = json!(subject.to_string());
    }
    Ok((payload, metadata))
}

/// Events ready to insert, column by column (for one `INSERT … SELECT FROM UNNEST`);
/// payload and metadata as JSON text.
#[derive(Default)]
pub(crate) struct Rows {
    pub aggregate_type: Vec<String>,
    pub aggregate_id: Vec<String>,
    pub sequence: Vec<i64>,
    pub event_type: Vec<String>,
    pub event_version: Vec<String>,
    pub payload: Vec<String>,
    pub metadata: Vec<String>,
    pub account_id: Vec<Uuid>,
    pub hash: Vec<Vec<u8>>,
}

impl Rows {
    pub fn extend(&mut self, other: &Rows) {
        self.aggregate_type.extend_from_slice(&other.aggregate_type);
        self.aggregate_id.extend_from_slice(&other.aggregate_id);
        self.sequence.extend_from_slice(&other.sequence);
        self.event_type.extend_from_slice(&other.event_type);
        self.event_version.extend_from_slice(&other.event_version);
        self.payload.extend_from_slice(&other.payload);
        self.metadata.extend_from_slice(&other.metadata);
        self.account_id.extend_from_slice(&other.account_id);
        self.hash.extend_from_slice(&other.hash);
    }
}

/// The JSON text an event is stored and hashed as. `serde_json::to_string` writes
/// the same text as `Value`'s `Display`, without its per-token `fmt` round trips.
pub(crate) fn json_text(value: &Value) -> anyhow::Result<String> {
    serde_json::to_string(value).context("failed to serialise an event")
}

pub(crate) async fn side_write(tx: &mut Transaction<'_, Postgres>, write: &SideWrite) -> Result<(), StoreError> {
    let conn = &mut **tx;
    let result = match write {
        // The group committer writes these with the events, in the same statement.
        SideWrite::ChannelIdentity { .. } => {
            return Err(StoreError::Internal(anyhow::anyhow!("a new contact's rows are written with its events")));
        }
        SideWrite::DataKey { subject, wrapped, .. } => {
            sqlx::query("INSERT INTO data_keys (subject_id, wrapped_key) VALUES ($1, $2)")
                .bind(subject)
                .bind(wrapped)
                .execute(conn)
                .await
        }
        SideWrite::ShredDataKeys { subjects } => {
            sqlx::query("DELETE FROM data_keys WHERE subject_id = ANY($1)").bind(subjects).execute(conn).await
        }
        SideWrite::ForgetInvitations { account, user } => {
            sqlx::query("DELETE FROM invitations WHERE account_id = $1 AND user_id = $2")
                .bind(account)
                .bind(user)
                .execute(conn)
                .await
        }
        SideWrite::EraseLogin { user } => {
            let erased = sqlx::query(
                "WITH member AS (SELECT 1 FROM account_memberships WHERE user_id = $1 LIMIT 1), \
                      tokens AS (UPDATE access_tokens SET revoked_at = now() \
                                 WHERE user_id = $1 AND revoked_at IS NULL AND NOT EXISTS (SELECT 1 FROM member)), \
                      invitations AS (DELETE FROM invitations \
                                      WHERE user_id = $1 AND NOT EXISTS (SELECT 1 FROM member)) \
                 DELETE FROM user_credentials WHERE user_id = $1 AND NOT EXISTS (SELECT 1 FROM member)",
            )
            .bind(user)
            .execute(&mut *conn)
            .await;
            match erased {
                Ok(done) if done.rows_affected() == 0 => return Err(StoreError::Conflict),
                erased => erased,
            }
        }
        SideWrite::Credentials { user, email, password_hash } => {
            sqlx::query("INSERT INTO user_credentials (user_id, email, password_hash) VALUES ($1, $2, $3)")
                .bind(user)
                .bind(email)
                .bind(password_hash)
                .execute(conn)
                .await
        }
        SideWrite::SetPassword { user, password_hash } => {
            sqlx::query("UPDATE user_credentials SET password_hash = $2, updated_at = now() WHERE user_id = $1")
                .bind(user)
                .bind(password_hash)
                .execute(conn)
                .await
        }
        SideWrite::AccessToken(t) => sqlx::query(
            "INSERT INTO access_tokens (token_id, token_hash, user_id, account_id, name, kind, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(t.token)
        .bind(&t.token_hash)
        .bind(t.user)
        .bind(t.account)
        .bind(&t.name)
        .bind(t.kind.as_str())
        .bind(t.expires_at)
        .execute(conn)
        .await,
        SideWrite::RevokeAccessToken { token, user } => sqlx::query(
            "UPDATE access_tokens SET revoked_at = now() WHERE token_id = $1 AND user_id = $2 AND revoked_at IS NULL",
        )
        .bind(token)
        .bind(user)
        .execute(conn)
        .await,
        SideWrite::EndSessions { user, except, api_tokens } => sqlx::query(
            "UPDATE access_tokens SET revoked_at = now() \
             WHERE user_id = $1 AND (kind = 'session' OR $3) AND revoked_at IS NULL AND token_id IS DISTINCT FROM $2",
        )
        .bind(user)
        .bind(except)
        .bind(api_tokens)
        .execute(conn)
        .await,
        SideWrite::Invitation { token_hash, user, account, expires_at, joins } => sqlx::query(
            "INSERT INTO invitations (token_hash, user_id, account_id, expires_at, join_name, join_role, join_custom_role) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(token_hash)
        .bind(user)
        .bind(account)
        .bind(expires_at)
        .bind(joins.as_ref().map(|j| j.name.clone()))
        .bind(joins.as_ref().map(|j| j.role.as_str()))
        .bind(joins.as_ref().and_then(|j| j.custom_role))
        .execute(conn)
        .await,
        SideWrite::InvitationAccepted { token_hash } => {
            let used = sqlx::query(
                "UPDATE invitations SET accepted_at = now() \
                 WHERE token_hash = $1 AND accepted_at IS NULL AND expires_at > now()",
            )
            .bind(token_hash)
            .execute(conn)
            .await;
            match used {
                Ok(done) if done.rows_affected() == 0 => return Err(StoreError::Conflict),
                other => other,
            }
        }
        SideWrite::Membership { account, user, role, custom_role } => sqlx::query(
            "INSERT INTO account_memberships (account_id, user_id, role, custom_role_id) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (account_id, user_id) DO UPDATE SET role = EXCLUDED.role, custom_role_id = EXCLUDED.custom_role_id",
        )
        .bind(account)
        .bind(user)
        .bind(role.as_str())
        .bind(custom_role)
        .execute(conn)
        .await,
        SideWrite::MembershipEnded { account, user } => sqlx::query(
            "WITH gone AS (DELETE FROM inbox_memberships WHERE account_id = $1 AND user_id = $2) \
             DELETE FROM account_memberships WHERE account_id = $1 AND user_id = $2",
        )
        .bind(account)
        .bind(user)
        .execute(conn)
        .await,
        SideWrite::CustomRole { role, account, name, permissions } => sqlx::query(
            "INSERT INTO custom_roles (role_id, account_id, name, permissions) VALUES ($1, $2, $3, $4)",
        )
        .bind(role)
        .bind(account)
        .bind(name)
        .bind(permissions)
        .execute(conn)
        .await,
        SideWrite::InboxMembership { account, inbox, user, member: true } => sqlx::query(
            "INSERT INTO inbox_memberships (account_id, inbox_id, user_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(account)
        .bind(inbox)
        .bind(user)
        .execute(conn)
        .await,
        SideWrite::EraseContact { contact } => sqlx::query(
            "WITH shredded AS (DELETE FROM data_keys WHERE subject_id = $1) \
             DELETE FROM channel_identities WHERE contact_id = $1",
        )
        .bind(contact)
        .execute(conn)
        .await,
        SideWrite::InboxMembership { inbox, user, member: false, .. } => {
            sqlx::query("DELETE FROM inbox_memberships WHERE inbox_id = $1 AND user_id = $2")
                .bind(inbox)
                .bind(user)
                .execute(conn)
                .await
        }
    };
    let result = match (result, write.changes_access_of()) {
        (Ok(_), Some(user)) => {
            sqlx::query(
                "INSERT INTO access_versions (user_id, version) VALUES ($1, 1) \
                 ON CONFLICT (user_id) DO UPDATE SET version = access_versions.version + 1",
            )
            .bind(user)
            .execute(&mut **tx)
            .await
        }
        (result, _) => result,
    };
    result.map(|_| ()).map_err(|e| match write {
        SideWrite::Credentials { .. } => {
            unique_violation(e, "user_credentials_email_key", StoreError::Duplicate("a user with this e-mail"))
        }
        _ => unique_violation(e, "", StoreError::Conflict),
    })
}

/// Maps a unique violation on `constraint` (any, if empty) to `as_error`.
pub(crate) fn unique_violation(error: sqlx::Error, constraint: &str, as_error: StoreError) -> StoreError {
    if let Some(stale) = crate::guard::violation(&error) {
        return stale;
    }
    match &error {
        sqlx::Error::Database(db)
            if db.code().as_deref() == Some("23505")
                && (constraint.is_empty() || db.constraint() == Some(constraint)) =>
        {
            as_error
        }
        _ => StoreError::Internal(anyhow::Error::new(error).context("failed to append events")),
    }
}
