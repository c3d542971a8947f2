//! Policies: the second kind of feed consumer. Where a projector folds events into its
//! own tables and has no side effects, a policy reacts to events by acting: enqueueing
//! jobs, issuing commands. The policies themselves live on the write side; this runs
//! them over the feed.
//!
//! - Each policy has its own checkpoint (`policy_checkpoints`) and runs in exactly one
//!   process at a time: the runner owns it through a session advisory lock on its own
//!   connection, as projectors are owned, and another process takes over when that
//!   connection dies.
//! - The feed is read at least once: after a crash, the events since the checkpoint
//!   are reacted to again. So a policy's effects are keyed by the causing event (a job
//!   key, a command's causation), and reacting twice has the effect of reacting once.
//! - A batch of events a policy fails on is retried, with backoff, until it succeeds: the
//!   policy waits (its order matters), shows as failing in `/readyz` and `/metrics`,
//!   and no other consumer waits with it.
//! - `rebuild` runs projectors only: nothing a policy did is done again.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::postgres::PgPool;
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

use crate::feed::{open_sealed_fields, FeedEvent, FeedPosition};
use crate::keyring::Keyring;
use crate::shared_feed::SharedFeed;

/// Events read per batch.
const BATCH_SIZE: i64 = 200;
/// The longest pause between two tries of an event that fails.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often a policy that had nothing to react to records where it is (a commit of
/// its own per batch would cost every ingest batch one more; reading the skipped
/// events again after a crash costs nothing).
const IDLE_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// A reaction to events, with effects outside the read models.
#[async_trait]
pub trait Policy: Send + Sync {
    /// Stable name: the checkpoint row's key, and the actor it writes as
    /// (`system:<name>`).
    fn name(&self) -> &'static str;
    /// The aggregate types whose events it reacts to.
    fn consumes(&self) -> &'static [&'static str];
    /// Whether it reads personal fields (opening them costs a decryption each).
    fn opens(&self) -> bool {
        true
    }
    /// Whether it reacts to this event of a consumed stream at all, told from its
    /// type and metadata: the others are neither opened nor handed to it.
    fn wants(&self, _event: &FeedEvent) -> bool {
        true
    }
    /// Reacts to a batch of events, in feed order (personal fields opened, in their
    /// current shape): one query for a batch, not one per event. Every effect is keyed
    /// by its event, so that reacting to a batch again (after a failure or a crash
    /// before the checkpoint moved) has none twice.
    async fn react(&self, events: &[FeedEvent]) -> anyhow::Result<()>;
}

/// What a policy's runner in this process is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyState {
    /// Another process runs the policy.
    Standby,
    Running,
    /// An event fails; it is tried again after a pause.
    Retrying {
        attempts: u32,
    },
}

#[derive(Debug, Clone)]
pub struct PolicyStatus {
    pub state: PolicyState,
    pub position: FeedPosition,
    pub events_reacted: u64,
}

/// Runs the policies of this process.
#[derive(Clone)]
pub struct Policies {
    pool: PgPool,
    keyring: Arc<Keyring>,
    policies: Vec<Arc<dyn Policy>>,
    feed: SharedFeed,
    poll: Duration,
    status: Arc<RwLock<HashMap<&'static str, PolicyStatus>>>,
}

impl Policies {
    /// `feed`: the engine's, so that the policies and the projectors of a process read
    /// the feed once between them, and are woken alike.
    pub fn new(
        pool: PgPool,
        keyring: Arc<Keyring>,
        policies: Vec<Arc<dyn Policy>>,
        feed: SharedFeed,
        poll: Duration,
    ) -> Self {
        for policy in &policies {
            feed.carry_bodies_of(policy.consumes());
        }
        Self { pool, keyring, policies, feed, poll, status: Arc::default() }
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.policies.iter().map(|p| p.name()).collect()
    }

    pub fn status(&self) -> HashMap<&'static str, PolicyStatus> {
        self.status.read().expect("policy status").clone()
    }

    /// Creates the checkpoint rows of policies that have none, at the head of the log:
    /// a new policy reacts to what happens from now on.
    pub async fn register(&self) -> anyhow::Result<()> {
        for policy in &self.policies {
            sqlx::query(
                "INSERT INTO policy_checkpoints (policy, last_txid, last_position) \
                 SELECT $1, COALESCE(max(transaction_id), '0'), COALESCE(max(global_position), 0) FROM events \
                 ON CONFLICT DO NOTHING",
            )
            .bind(policy.name())
            .execute(&self.pool)
            .await
            .context("failed to register a policy")?;
        }
        Ok(())
    }

    /// Runs every policy until `shutdown` fires.
    pub async fn run(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.register().await?;
        let mut tasks = tokio::task::JoinSet::new();
        for policy in self.policies.clone() {
            let runner = self.clone();
            let stop = shutdown.clone();
            tasks.spawn(async move { runner.run_policy(policy, stop).await });
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }

    fn set_status(&self, name: &'static str, update: impl FnOnce(&mut PolicyStatus)) {
        let mut status = self.status.write().expect("policy status");
        let entry = status.entry(name).or_insert(PolicyStatus {
            state: PolicyState::Standby,
            position: FeedPosition::START,
            events_reacted: 0,
        });
        update(entry);
    }

    async fn run_policy(&self, policy: Arc<dyn Policy>, shutdown: CancellationToken) {
        let name = policy.name();
        self.set_status(name, |s| s.state = PolicyState::Standby);
        while !shutdown.is_cancelled() {
            if let Err(error) = self.own_and_react(policy.as_ref(), &shutdown).await {
                tracing::warn!(
                    policy = name,
                    error = format!("{error:#}"),
                    "policy runner lost its connection; retrying"
                );
                self.set_status(name, |s| s.state = PolicyState::Standby);
            }
            tokio::select! { _ = tokio::time::sleep(Duration::from_secs(1)) => {}, _ = shutdown.cancelled() => {} }
        }
    }

    /// Takes the policy's lock (or returns if another process has it) and reacts to
    /// the feed until shutdown, or until its connection fails.
    async fn own_and_react(&self, policy: &dyn Policy, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let name = policy.name();
        let options = self.pool.connect_options().as_ref().clone();
        let mut conn = PgConnection::connect_with(&options).await.context("failed to connect")?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended('policy:' || $1, 0))")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
        if !locked {
            return Ok(());
        }
        tracing::info!(policy = name, "policy running in this process");
        let (txid, position): (i64, i64) =
            sqlx::query_as("SELECT last_txid::text::bigint, last_position FROM policy_checkpoints WHERE policy = $1")
                .bind(name)
                .fetch_one(&mut conn)
                .await?;
        let mut at = FeedPosition { transaction_id: txid, global_position: position };
        self.set_status(name, |s| {
            s.state = PolicyState::Running;
            s.position = at;
        });
        let mut woken = self.feed.wake().subscribe();
        let mut woke_at = std::time::Instant::now();
        let mut checkpointed = (at, std::time::Instant::now());
        while !shutdown.is_cancelled() {
            let read_at = tokio::time::Instant::now();
            let events = self.feed.read(&mut conn, at, BATCH_SIZE, woke_at).await?;
            let Some(last) = events.last().map(|e| e.position) else {
                // Caught up: what was skipped since the last record is recorded now.
                if checkpointed.0 != at && checkpointed.1.elapsed() >= IDLE_CHECKPOINT_EVERY {
                    checkpoint(&mut conn, name, at).await?;
                    checkpointed = (at, std::time::Instant::now());
                }
                tokio::select! {
                    _ = woken.changed() => {},
                    _ = tokio::time::sleep(self.poll) => {},
                    _ = shutdown.cancelled() => {},
                }
                woke_at = std::time::Instant::now();
                tokio::time::sleep_until(self.feed.next_read(read_at)).await;
                continue;
            };
            let scanned = events.len();
            let consumed: Vec<FeedEvent> = events
                .iter()
                .filter(|e| policy.consumes().contains(&e.aggregate_type.as_str()) && policy.wants(e))
                .map(|e| FeedEvent::clone(e))
                .collect();
            let reacted = !consumed.is_empty();
            if reacted {
                self.react_until_done(&mut conn, policy, &consumed, shutdown).await?;
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                self.set_status(name, |s| s.events_reacted += consumed.len() as u64);
            }
            if reacted || checkpointed.1.elapsed() >= IDLE_CHECKPOINT_EVERY || scanned as i64 >= BATCH_SIZE {
                checkpoint(&mut conn, name, last).await?;
                checkpointed = (last, std::time::Instant::now());
            }
            at = last;
            self.set_status(name, |s| {
                s.state = PolicyState::Running;
                s.position = last;
            });
            if (scanned as i64) < BATCH_SIZE {
                tokio::time::sleep_until(self.feed.next_read(read_at)).await;
            }
        }
        Ok(())
    }

    /// Opens a batch and reacts to it, trying again with growing pauses until it
    /// succeeds (or shutdown). The failure is recorded where every process's `/readyz`
    /// sees it.
    async fn react_until_done(
        &self,
        conn: &mut PgConnection,
        policy: &dyn Policy,
        events: &[FeedEvent],
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let name = policy.name();
        let mut attempts = 0u32;
        loop {
            let opened = if policy.opens() { self.opened(conn, events).await } else { Ok(events.to_vec()) };
            let reacted = match opened {
                Ok(opened) => policy.react(&opened).await,
                Err(error) => Err(error),
            };
            match reacted {
                Ok(()) => {
                    if attempts > 0 {
                        tracing::info!(policy = name, attempts, "policy recovered");
                        sqlx::query(
                            "UPDATE policy_checkpoints SET error = NULL, failing_since = NULL WHERE policy = $1",
                        )
                        .bind(name)
                        .execute(&mut *conn)
                        .await?;
                    }
                    return Ok(());
                }
                Err(error) => {
                    attempts += 1;
                    let message = format!("{error:#}");
                    tracing::warn!(
                        policy = name,
                        first_event = events.first().map(FeedEvent::id),
                        events = events.len(),
                        attempts,
                        error = %message,
                        "policy failed on a batch of events; retrying"
                    );
                    self.set_status(name, |s| s.state = PolicyState::Retrying { attempts });
                    sqlx::query(
                        "UPDATE policy_checkpoints SET error = $2, failing_since = COALESCE(failing_since, now()), \
                         updated_at = now() WHERE policy = $1",
                    )
                    .bind(name)
                    .bind(&message)
                    .execute(&mut *conn)
                    .await?;
                    let pause = Duration::from_millis(250u64.saturating_mul(1 << attempts.min(10))).min(MAX_BACKOFF);
                    tokio::select! { _ = tokio::time::sleep(pause) => {}, _ = shutdown.cancelled() => return Ok(()) }
                }
            }
        }
    }

    /// The batch with its personal fields opened.
    async fn opened(&self, conn: &mut PgConnection, events: &[FeedEvent]) -> anyhow::Result<Vec<FeedEvent>> {
        let mut opened = events.to_vec();
        for event in opened.iter_mut().filter(|e| e.is_sealed()) {
            open_sealed_fields(conn, &self.keyring, event).await?;
        }
        Ok(opened)
    }
}

async fn checkpoint(conn: &mut PgConnection, name: &str, to: FeedPosition) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE policy_checkpoints SET last_txid = $2::text::xid8, last_position = $3, updated_at = now() \
         WHERE policy = $1",
    )
    .bind(name)
    .bind(to.transaction_id.to_string())
    .bind(to.global_position)
    .execute(conn)
    .await
    .map(|_| ())
}
