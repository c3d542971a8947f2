//! The projection engine: runs each projector over the feed, one runner per projector
//! across all processes, and lets writers wait until their events are projected.
//!
//! A runner owns its projector through a session advisory lock held on its own
//! connection, and applies batches on that same connection: if the connection dies the
//! lock goes with it and another process's runner takes over. Each batch and the
//! checkpoint move in one transaction, so a crash anywhere leaves the read model
//! exactly as a replay up to the checkpoint would.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPool};
use sqlx::{Connection, PgConnection, Postgres, Transaction};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::feed::{self, open_sealed_fields, read_sealed_after, FeedEvent, FeedPosition};
use crate::keyring::Keyring;
use crate::publication::{Fanout, PgFanout, Published, Publisher};
use crate::shared_feed::{SharedFeed, Wake};

/// The channel writers NOTIFY (after commit) to wake runners in other processes.
pub const WAKE_CHANNEL: &str = "inbox_events";
/// Events read per batch while serving.
pub const BATCH_SIZE: i64 = 1000;
/// Events read per batch by a rebuild, where nothing waits on a single event.
const REBUILD_BATCH_SIZE: i64 = 5000;

/// A read model built from the feed. It has no side effects: it writes only its own
/// tables, inside the transaction it is given.
#[async_trait]
pub trait Projector: Send + Sync {
    /// Stable name: the checkpoint row's key.
    fn name(&self) -> &'static str;
    /// The tables it owns, emptied by a rebuild.
    fn tables(&self) -> &'static [&'static str];
    /// The aggregate types whose events it reads (the others are skipped unread).
    fn consumes(&self) -> &'static [&'static str];
    /// Whether it needs the personal fields of this event type opened (decrypting
    /// what it never reads is wasted work).
    fn opens(&self, _event_type: &str) -> bool {
        true
    }
    /// Drops what the projector keeps in memory between batches, as stale: the engine
    /// calls it whenever its tables may differ from what it last wrote (the runner
    /// took the projector over, a batch did not commit, a rebuild reset it).
    fn forget(&self) {}
    /// Applies a batch of events (in feed order) inside the transaction that also
    /// moves the checkpoint.
    async fn apply(&self, tx: &mut Transaction<'_, Postgres>, events: &[Cow<'_, FeedEvent>]) -> anyhow::Result<()>;
}

/// What a runner in this process is doing, for `/readyz` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerState {
    /// Another process holds the projector.
    Standby,
    Running,
    /// Stopped by an error in the projector; needs an operator. Why is in the log and
    /// in the projector's checkpoint row (`error`).
    Failed,
}

#[derive(Debug, Clone)]
pub struct RunnerStatus {
    pub state: RunnerState,
    pub position: FeedPosition,
    pub events_applied: u64,
}

/// Shared state of the engine in this process.
#[derive(Clone)]
pub struct Engine {
    pool: PgPool,
    keyring: Arc<Keyring>,
    projectors: Vec<Arc<dyn Projector>>,
    /// How runners read the feed (with this process's policies) and are woken.
    feed: SharedFeed,
    status: Arc<RwLock<HashMap<&'static str, RunnerStatus>>>,
    progress: watch::Sender<u64>,
    poll: Duration,
    /// Where committed batches are published, and how publications reach other processes.
    publisher: Publisher,
    fanout: Arc<dyn Fanout>,
}

impl Engine {
    pub fn new(pool: PgPool, keyring: Arc<Keyring>, projectors: Vec<Arc<dyn Projector>>, poll: Duration) -> Self {
        let feed = SharedFeed::default();
        for projector in &projectors {
            feed.carry_bodies_of(projector.consumes());
        }
        Self {
            pool: pool.clone(),
            keyring,
            projectors,
            feed,
            status: Arc::default(),
            progress: watch::channel(0).0,
            poll,
            publisher: Publisher::default(),
            fanout: Arc::new(PgFanout::new(pool)),
        }
    }

    /// Publications cross processes through `fanout` (Redis) instead of NOTIFY.
    pub fn with_fanout(mut self, fanout: Arc<dyn Fanout>) -> Self {
        self.fanout = fanout;
        self
    }

    /// What projectors' commits make queryable, in this and every other process.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    pub fn wake(&self) -> &Wake {
        self.feed.wake()
    }

    /// The feed as this process's consumers read it: policies read it with the runners.
    pub fn feed(&self) -> &SharedFeed {
        &self.feed
    }

    pub fn projector_names(&self) -> Vec<&'static str> {
        self.projectors.iter().map(|p| p.name()).collect()
    }

    pub fn status(&self) -> HashMap<&'static str, RunnerStatus> {
        self.status.read().expect("status lock").clone()
    }

    /// Creates the checkpoint rows of projectors that have none (a new projector
    /// starts from the beginning of the log).
    pub async fn register(&self) -> anyhow::Result<()> {
        for projector in &self.projectors {
            sqlx::query("INSERT INTO projector_checkpoints (projector) VALUES ($1) ON CONFLICT DO NOTHING")
                .bind(projector.name())
                .execute(&self.pool)
                .await
                .context("failed to register a projector")?;
        }
        Ok(())
    }

    /// Runs every projector until `shutdown` fires.
    pub async fn run(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.register().await?;
        let mut tasks = tokio::task::JoinSet::new();
        let listener = self.clone();
        let stop = shutdown.clone();
        tasks.spawn(async move { listener.listen_for_wakeups(stop).await });
        let (publisher, fanout, stop) = (self.publisher.clone(), self.fanout.clone(), shutdown.clone());
        tasks.spawn(async move { publisher.relay(fanout, stop).await });
        for projector in self.projectors.clone() {
            let engine = self.clone();
            let stop = shutdown.clone();
            tasks.spawn(async move { engine.run_projector(projector, stop).await });
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }

    /// Relays NOTIFYs from other processes to local runners.
    async fn listen_for_wakeups(&self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let mut listener = match PgListener::connect_with(&self.pool).await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, "event wake-up listener cannot connect; retrying");
                    tokio::select! { _ = tokio::time::sleep(Duration::from_secs(1)) => continue, _ = shutdown.cancelled() => return }
                }
            };
            if let Err(error) = listener.listen(WAKE_CHANNEL).await {
                tracing::warn!(%error, "event wake-up listener cannot LISTEN; retrying");
                continue;
            }
            // Commits notified while nobody listened: the runners look now.
            self.feed.wake().wake();
            loop {
                tokio::select! {
                    received = listener.recv() => match received {
                        Ok(_) => self.feed.wake().wake(),
                        Err(error) => { tracing::warn!(%error, "event wake-up listener lost"); break; }
                    },
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }

    fn set_status(&self, name: &'static str, update: impl FnOnce(&mut RunnerStatus)) {
        let mut status = self.status.write().expect("status lock");
        let entry = status.entry(name).or_insert(RunnerStatus {
            state: RunnerState::Standby,
            position: FeedPosition::START,
            events_applied: 0,
        });
        update(entry);
    }

    async fn run_projector(&self, projector: Arc<dyn Projector>, shutdown: CancellationToken) {
        let name = projector.name();
        self.set_status(name, |s| s.state = RunnerState::Standby);
        while !shutdown.is_cancelled() {
            match self.own_and_apply(projector.as_ref(), &shutdown).await {
                Ok(()) => {}
                Err(RunError::Transient(error)) => {
                    tracing::warn!(
                        projector = name,
                        error = format!("{error:#}"),
                        "projector connection lost; retrying"
                    );
                    self.set_status(name, |s| s.state = RunnerState::Standby);
                }
                Err(RunError::Fatal(error)) => {
                    let message = format!("{error:#}");
                    tracing::error!(projector = name, error = %message, "projector stopped");
                    self.set_status(name, |s| s.state = RunnerState::Failed);
                    // Recorded in the database too, so every process's /readyz shows it.
                    let recorded = sqlx::query(
                        "UPDATE projector_checkpoints SET error = $2, updated_at = now() WHERE projector = $1",
                    )
                    .bind(name)
                    .bind(&message)
                    .execute(&self.pool)
                    .await;
                    if let Err(error) = recorded {
                        tracing::error!(projector = name, %error, "failed to record the projector's error");
                    }
                    return;
                }
            }
            tokio::select! { _ = tokio::time::sleep(Duration::from_secs(1)) => {}, _ = shutdown.cancelled() => {} }
        }
    }

    /// A runner's own connection, whose commits do not wait for the WAL flush: a batch
    /// and its checkpoint are one transaction, so one lost in a database crash is
    /// simply applied again from the checkpoint, never half kept. The flush of the
    /// next durable commit (an append) covers it anyway.
    /// A connection of its own; `shadow` puts a rebuild's schema first on its path.
    async fn runner_connection(&self, shadow: Option<&str>) -> Result<PgConnection, sqlx::Error> {
        let mut options = self.pool.connect_options().as_ref().clone().options([("synchronous_commit", "off")]);
        if let Some(schema) = shadow {
            options = options.options([("search_path", format!("{schema},public"))]);
        }
        PgConnection::connect_with(&options).await
    }

    /// Takes the projector's lock (or returns if another process has it) and applies
    /// batches until shutdown or an error.
    async fn own_and_apply(&self, projector: &dyn Projector, shutdown: &CancellationToken) -> Result<(), RunError> {
        let name = projector.name();
        let mut conn = self.runner_connection(None).await.map_err(transient)?;
        if !lock_projector(&mut conn, name).await.map_err(transient)? {
            return Ok(());
        }
        // Another process may have applied batches since, or this one's last failed.
        projector.forget();
        tracing::info!(projector = name, "projector running in this process");
        let mut cursor = Cursor::load(&mut conn, name).await.map_err(transient)?;
        self.set_status(name, |s| {
            s.state = RunnerState::Running;
            s.position = cursor.scanned;
        });
        let mut woken = self.feed.wake().subscribe();
        let mut woke_at = std::time::Instant::now();
        // After a wake-up that found nothing (a transaction elsewhere in the cluster
        // holding the watermark back), look again soon rather than after the poll.
        let mut recheck_until: Option<std::time::Instant> = None;
        let mut recheck_pause = RECHECK_AFTER_WAKE;
        while !shutdown.is_cancelled() {
            let read_at = tokio::time::Instant::now();
            let scanned = self.apply_batch(&mut conn, projector, &mut cursor, BATCH_SIZE, Some(woke_at)).await?;
            if scanned > 0 {
                recheck_until = None;
                recheck_pause = RECHECK_AFTER_WAKE;
            }
            if scanned < BATCH_SIZE as usize {
                // Caught up: now and then record how far the feed was scanned (and
                // notice a reset), then wait.
                if cursor.persisted_at.elapsed() >= IDLE_CHECKPOINT_EVERY {
                    if cursor.persist(&mut conn, name).await.map_err(transient)? {
                        projector.forget();
                    }
                    self.set_status(name, |s| s.position = cursor.scanned);
                }
                if recheck_until.is_some_and(|until| until <= std::time::Instant::now()) {
                    // Committed events still held back (a long transaction elsewhere in
                    // the cluster): keep looking rather than wait for the poll.
                    let held = feed::held_back_after(&mut conn, cursor.scanned).await.map_err(transient)?;
                    recheck_until = held.then(|| std::time::Instant::now() + RECHECK_WINDOW);
                }
                let pause = match recheck_until {
                    Some(_) => {
                        let pause = self.poll.min(recheck_pause);
                        recheck_pause = (recheck_pause * 2).min(RECHECK_PAUSE_MAX);
                        pause
                    }
                    None => self.poll,
                };
                tokio::select! {
                    _ = woken.changed() => {
                        recheck_until = Some(std::time::Instant::now() + RECHECK_WINDOW);
                        recheck_pause = RECHECK_AFTER_WAKE;
                    }
                    _ = tokio::time::sleep(pause) => {},
                    _ = shutdown.cancelled() => {},
                }
                woke_at = std::time::Instant::now();
                // Under load, a batch per few milliseconds rather than per commit: the
                // statements a batch costs are shared by everything that landed meanwhile.
                tokio::time::sleep_until(self.feed.next_read(read_at)).await;
            } else if cursor.persisted_at.elapsed() > CHECKPOINT_EVERY
                && cursor.persist(&mut conn, name).await.map_err(transient)?
            {
                projector.forget();
            }
        }
        Ok(())
    }

    /// Reads one batch after the cursor and applies the events the projector consumes
    /// (in one transaction with the checkpoint); returns how many events it scanned.
    /// `fresh_since`: a runner that woke then may take another runner's read if it
    /// started later (a later read sees at least as much); `None` reads alone.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        projector: &dyn Projector,
        cursor: &mut Cursor,
        batch: i64,
        fresh_since: Option<std::time::Instant>,
    ) -> Result<usize, RunError> {
        let name = projector.name();
        let wanted = projector.consumes();
        let events = match fresh_since {
            Some(since) => self.feed.read(conn, cursor.scanned, batch, since).await.map_err(classify)?,
            None => read_sealed_after(conn, None, Some(wanted), cursor.scanned, batch)
                .await
                .map_err(classify)?
                .into_iter()
                .map(Arc::new)
                .collect(),
        };
        let Some(last) = events.last().map(|e| e.position) else { return Ok(0) };
        let scanned = events.len();
        // Shared with the other runners: copied only to be opened.
        let mut consumed: Vec<Cow<'_, FeedEvent>> = Vec::new();
        for event in events.iter().filter(|e| wanted.contains(&e.aggregate_type.as_str())) {
            if projector.opens(&event.event_type) && event.is_sealed() {
                let mut opened = FeedEvent::clone(event);
                open_sealed_fields(conn, &self.keyring, &mut opened).await.map_err(classify)?;
                consumed.push(Cow::Owned(opened));
            } else {
                consumed.push(Cow::Borrowed(&**event));
            }
        }
        if !consumed.is_empty() {
            let mut tx = conn.begin().await.map_err(transient)?;
            // The checkpoint row first (the order `rebuild` locks in), and only if it is
            // where this runner left it: a rebuild may have reset it meanwhile.
            if !cursor.advance(&mut tx, name, last).await.map_err(transient)? {
                tx.rollback().await.map_err(transient)?;
                *cursor = Cursor::load(conn, name).await.map_err(transient)?;
                projector.forget();
                tracing::info!(projector = name, "checkpoint was reset (rebuild): starting over");
                return Ok(BATCH_SIZE as usize);
            }
            projector.apply(&mut tx, &consumed).await.map_err(classify)?;
            tx.commit().await.map_err(transient)?;
            cursor.persisted = last;
            cursor.persisted_at = std::time::Instant::now();
            // A live batch (a rebuild's shadow tables are not queryable yet).
            if fresh_since.is_some() {
                self.publisher.publish(Published {
                    projector: name.to_string(),
                    after: cursor.scanned,
                    through: last,
                    events: consumed.len() as u32,
                });
            }
        }
        cursor.scanned = last;
        self.set_status(name, |s| {
            s.position = last;
            s.events_applied += consumed.len() as u64;
        });
        self.progress.send_modify(|n| *n = n.wrapping_add(1));
        Ok(scanned)
    }

    /// Waits (at most `timeout`) until each named projector has applied `position`.
    /// Returns whether they all did: a caller answers anyway, just possibly stale.
    pub async fn wait_for(&self, projectors: &[&'static str], position: FeedPosition, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut progress = self.progress.subscribe();
        loop {
            if self.reached(projectors, position).await {
                return true;
            }
            tokio::select! {
                _ = progress.changed() => {},
                // Runners in other processes: poll their checkpoints.
                _ = tokio::time::sleep(Duration::from_millis(10)) => {},
                _ = tokio::time::sleep_until(deadline) => return self.reached(projectors, position).await,
            }
        }
    }

    async fn reached(&self, projectors: &[&'static str], position: FeedPosition) -> bool {
        let mut remote = Vec::new();
        {
            let status = self.status.read().expect("status lock");
            for name in projectors {
                match status.get(name) {
                    Some(s) if s.state == RunnerState::Running => {
                        if s.position < position {
                            return false;
                        }
                    }
                    _ => remote.push(*name),
                }
            }
        }
        if remote.is_empty() {
            return true;
        }
        let done: Result<i64, _> = sqlx::query_scalar(
            "SELECT count(*) FROM projector_checkpoints WHERE projector = ANY($1) \
             AND (last_txid, last_position) >= ($2::text::xid8, $3)",
        )
        .bind(&remote)
        .bind(position.transaction_id.to_string())
        .bind(position.global_position)
        .fetch_one(&self.pool)
        .await;
        matches!(done, Ok(n) if n == remote.len() as i64)
    }

    /// Rebuilds a projector beside its live tables: the log is replayed into shadow
    /// copies in a schema of their own (`rebuild_<projector>`, found first on the
    /// replaying connection's search path), in ordinary batches, while the live tables
    /// keep serving. Once the shadow has caught up with the live checkpoint, one short
    /// transaction swaps the tables in (readers wait for it, never see them empty) and
    /// moves the checkpoint, which the live runner notices and follows. A rebuild that
    /// fails leaves the live tables as they were and records why (`rebuild_error`).
    /// Meant for the CLI, whose projectors are its own (their memory is the shadow's).
    pub async fn rebuild(&self, name: &str) -> anyhow::Result<u64> {
        let projector =
            self.projectors.iter().find(|p| p.name() == name).with_context(|| format!("no projector named {name}"))?;
        self.register().await?;
        let shadow = Shadow::of(projector.as_ref());
        let mut guard = self.runner_connection(None).await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended('rebuild:' || $1, 0))")
            .bind(name)
            .fetch_one(&mut guard)
            .await?;
        anyhow::ensure!(locked, "another rebuild of {name} is running");
        let outcome = self.rebuild_beside(projector.as_ref(), &shadow).await;
        let recorded = match &outcome {
            Ok(_) => {
                "UPDATE projector_checkpoints SET rebuild_error = NULL, rebuild_failed_at = NULL WHERE projector = $1"
            }
            Err(_) => {
                "UPDATE projector_checkpoints SET rebuild_error = $2, rebuild_failed_at = now() WHERE projector = $1"
            }
        };
        let error = outcome.as_ref().err().map(|e| format!("{e:#}"));
        if let Err(record) = sqlx::query(recorded).bind(name).bind(&error).execute(&self.pool).await {
            tracing::error!(error = %record, projector = name, "could not record how a rebuild ended");
        }
        if let Err(drop) =
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", shadow.schema)).execute(&self.pool).await
        {
            tracing::warn!(error = %drop, schema = %shadow.schema, "could not drop a rebuild's shadow schema");
        }
        if let Some(error) = &error {
            tracing::error!(projector = name, error, "rebuild failed; the live read model is unchanged");
        }
        outcome
    }

    async fn rebuild_beside(&self, projector: &dyn Projector, shadow: &Shadow) -> anyhow::Result<u64> {
        let name = projector.name();
        shadow.create(&self.pool, name).await?;
        let mut conn = self.runner_connection(Some(&shadow.schema)).await?;
        projector.forget();
        let mut cursor = Cursor::load(&mut conn, name).await?;
        let head = self.head().await?;
        let mut applied = self.replay_until(&mut conn, projector, &mut cursor, head).await?;
        // The switch: the live checkpoint row held, the shadow brought at least as far,
        // the tables exchanged and the checkpoint moved to the shadow's, at once.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL lock_timeout = '30s'").execute(&mut *tx).await?;
        let (txid, position): (i64, i64) = sqlx::query_as(
            "SELECT last_txid::text::bigint, last_position FROM public.projector_checkpoints WHERE projector = $1 \
             FOR UPDATE",
        )
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        let live = FeedPosition { transaction_id: txid, global_position: position };
        applied += self.replay_until(&mut conn, projector, &mut cursor, live).await?;
        cursor.persist(&mut conn, name).await?;
        shadow.swap_in(&mut tx).await?;
        sqlx::query(
            "UPDATE public.projector_checkpoints SET last_txid = $2::text::xid8, last_position = $3, error = NULL, \
             updated_at = now() WHERE projector = $1",
        )
        .bind(name)
        .bind(cursor.scanned.transaction_id.to_string())
        .bind(cursor.scanned.global_position)
        .execute(&mut *tx)
        .await?;
        tx.commit().await.context("failed to switch to the rebuilt tables")?;
        Ok(applied)
    }

    /// Applies batches on `conn` until the cursor has passed `target`.
    async fn replay_until(
        &self,
        conn: &mut PgConnection,
        projector: &dyn Projector,
        cursor: &mut Cursor,
        target: FeedPosition,
    ) -> anyhow::Result<u64> {
        let mut applied = 0u64;
        while cursor.scanned < target {
            let n = self
                .apply_batch(conn, projector, cursor, REBUILD_BATCH_SIZE, None)
                .await
                .map_err(RunError::into_inner)?;
            applied += n as u64;
            if n == 0 {
                // Events below the target still in flight (the watermark): wait for them.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(applied)
    }

    /// The last event committed so far, in feed order.
    pub async fn head(&self) -> anyhow::Result<FeedPosition> {
        let row: Option<(i64, i64)> = sqlx::query_as(HEAD_QUERY).fetch_optional(&self.pool).await?;
        Ok(row.map(|(t, p)| FeedPosition { transaction_id: t, global_position: p }).unwrap_or_default())
    }

    /// Wakes runners in every process (NOTIFY is sent outside any write transaction).
    pub async fn wake_remote(&self) {
        if let Err(error) = sqlx::query("SELECT pg_notify($1, '')").bind(WAKE_CHANNEL).execute(&self.pool).await {
            tracing::warn!(%error, "failed to send the event wake-up");
        }
    }
}

/// The log's last event in feed order. The ORDER BY names the table's columns: bare,
/// `transaction_id` would be the bigint it is selected as, which no index orders, and
/// each call (every redelivered message asks) would sort the whole log.
pub const HEAD_QUERY: &str = "SELECT transaction_id::text::bigint, global_position FROM events \
     ORDER BY events.transaction_id DESC, events.global_position DESC LIMIT 1";

/// How often a busy runner records how far it scanned past events it does not consume
/// (an idle one records it whenever it catches up).
const CHECKPOINT_EVERY: std::time::Duration = Duration::from_secs(1);
/// How soon a runner woken to nothing looks again (then at doubling pauses, at most a
/// second apart), and for how long before it asks whether committed events are still
/// held back by the watermark (then it keeps looking as long as they are).
const RECHECK_AFTER_WAKE: Duration = Duration::from_millis(50);
const RECHECK_PAUSE_MAX: Duration = Duration::from_secs(1);
const RECHECK_WINDOW: Duration = Duration::from_secs(30);
/// How often an idle runner records its scanned position and checks for a reset.
const IDLE_CHECKPOINT_EVERY: std::time::Duration = Duration::from_millis(100);

/// Where a runner is: how far it has scanned the feed (in memory), and what its
/// checkpoint row says. Events a projector does not consume change nothing, so the
/// row may lag behind them: after a crash they are scanned again, to no effect.
/// A rebuild's copies of a projector's tables (and of the checkpoint table, so the
/// replay's checkpoint is its own), in a schema named after the projector.
struct Shadow {
    schema: String,
    tables: &'static [&'static str],
}

impl Shadow {
    fn of(projector: &dyn Projector) -> Self {
        Self { schema: format!("rebuild_{}", projector.name()), tables: projector.tables() }
    }

    async fn create(&self, pool: &PgPool, name: &str) -> anyhow::Result<()> {
        let schema = &self.schema;
        let mut statements = vec![format!("DROP SCHEMA IF EXISTS {schema} CASCADE"), format!("CREATE SCHEMA {schema}")];
        for table in self.tables.iter().chain(&["projector_checkpoints"]) {
            statements.push(format!("CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL)"));
        }
        let mut tx = pool.begin().await?;
        for statement in statements {
            sqlx::query(&statement).execute(&mut *tx).await.with_context(|| format!("failed to run `{statement}`"))?;
        }
        sqlx::query(&format!("INSERT INTO {schema}.projector_checkpoints (projector) VALUES ($1)"))
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await.context("failed to create a rebuild's shadow tables")?;
        Ok(())
    }

    /// Replaces each live table by its shadow, keeping the live indexes' names.
    async fn swap_in(&self, tx: &mut Transaction<'_, Postgres>) -> anyhow::Result<()> {
        for table in self.tables {
            let named: Vec<(String, String)> = sqlx::query_as(
                "SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = $1",
            )
            .bind(table)
            .fetch_all(&mut **tx)
            .await?;
            let copies: Vec<(String, String)> = sqlx::query_as(
                "SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2",
            )
            .bind(&self.schema)
            .bind(table)
            .fetch_all(&mut **tx)
            .await?;
            sqlx::query(&format!("DROP TABLE public.{table}")).execute(&mut **tx).await?;
            sqlx::query(&format!("ALTER TABLE {}.{table} SET SCHEMA public", self.schema)).execute(&mut **tx).await?;
            for (copy, definition) in &copies {
                let original = named.iter().find(|(_, d)| same_index(d, definition)).map(|(n, _)| n);
                if let Some(original) = original.filter(|o| *o != copy) {
                    sqlx::query(&format!("ALTER INDEX public.{copy} RENAME TO {original}")).execute(&mut **tx).await?;
                }
            }
        }
        Ok(())
    }
}

/// Whether two index definitions differ only in the index's name and schema.
fn same_index(a: &str, b: &str) -> bool {
    let shape = |definition: &str| {
        let unique = definition.starts_with("CREATE UNIQUE");
        (unique, definition.split_once(" USING ").map(|(_, rest)| rest.to_string()))
    };
    shape(a) == shape(b)
}

/// How far the projector has committed, in whichever process runs it (the start,
/// before it registered).
pub async fn committed_through(pool: &PgPool, projector: &str) -> sqlx::Result<FeedPosition> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT last_txid::text::bigint, last_position FROM projector_checkpoints WHERE projector = $1")
            .bind(projector)
            .fetch_optional(pool)
            .await?;
    Ok(row.map_or(FeedPosition::START, |(transaction_id, global_position)| FeedPosition {
        transaction_id,
        global_position,
    }))
}

struct Cursor {
    scanned: FeedPosition,
    persisted: FeedPosition,
    persisted_at: std::time::Instant,
}

impl Cursor {
    async fn load(conn: &mut PgConnection, name: &str) -> sqlx::Result<Self> {
        let (txid, position): (i64, i64) = sqlx::query_as(
            "SELECT last_txid::text::bigint, last_position FROM projector_checkpoints WHERE projector = $1",
        )
        .bind(name)
        .fetch_one(&mut *conn)
        .await?;
        let at = FeedPosition { transaction_id: txid, global_position: position };
        Ok(Self { scanned: at, persisted: at, persisted_at: std::time::Instant::now() })
    }

    /// Moves the checkpoint row from where this runner left it to `to`; false if the
    /// row was elsewhere (reset by a rebuild).
    async fn advance(&self, conn: &mut PgConnection, name: &str, to: FeedPosition) -> sqlx::Result<bool> {
        let moved = sqlx::query(
            "UPDATE projector_checkpoints SET last_txid = $2::text::xid8, last_position = $3, updated_at = now(), \
             error = NULL WHERE projector = $1 AND last_txid = $4::text::xid8 AND last_position = $5",
        )
        .bind(name)
        .bind(to.transaction_id.to_string())
        .bind(to.global_position)
        .bind(self.persisted.transaction_id.to_string())
        .bind(self.persisted.global_position)
        .execute(&mut *conn)
        .await?;
        Ok(moved.rows_affected() == 1)
    }

    /// Records the scanned position if it moved past the recorded one, and takes the
    /// row's position if someone else moved it (a rebuild resetting it); returns
    /// whether it was reset.
    async fn persist(&mut self, conn: &mut PgConnection, name: &str) -> sqlx::Result<bool> {
        let mut reset = false;
        if self.scanned > self.persisted && self.advance(conn, name, self.scanned).await? {
            self.persisted = self.scanned;
        } else {
            let row = Cursor::load(conn, name).await?;
            if row.persisted != self.persisted {
                tracing::info!(projector = name, "checkpoint was reset (rebuild): starting over");
                *self = row;
                reset = true;
            }
        }
        self.persisted_at = std::time::Instant::now();
        Ok(reset)
    }
}

/// Takes the projector's session advisory lock on this connection, if free.
async fn lock_projector(conn: &mut PgConnection, name: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended('projector:' || $1, 0))")
        .bind(name)
        .fetch_one(conn)
        .await
}

/// Whether a runner should retry (the database went away) or stop (the projector
/// cannot apply an event: retrying would fail the same way).
enum RunError {
    Transient(anyhow::Error),
    Fatal(anyhow::Error),
}

impl RunError {
    fn into_inner(self) -> anyhow::Error {
        match self {
            RunError::Transient(e) | RunError::Fatal(e) => e,
        }
    }
}

fn transient(error: sqlx::Error) -> RunError {
    RunError::Transient(error.into())
}

fn classify(error: anyhow::Error) -> RunError {
    // The server ended the session (an administrator, a restart, a failover) or lost
    // the connection: nothing is wrong with the projector.
    if crate::transient::is_transient(&error) {
        RunError::Transient(error)
    } else {
        RunError::Fatal(error)
    }
}
