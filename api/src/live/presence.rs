//! Presence: which agents are here now (a socket open, or heartbeats), shared by every
//! process — in Redis when `REDIS_URL` is set, else in a PostgreSQL table, never per
//! process.
//!
//! Each process touches the agents whose sockets it holds every [`TOUCH_EVERY`]; a
//! heartbeat touches its caller. A touch that finds the agent absent is an arrival;
//! an agent untouched for [`LAPSE`] has lapsed, claimed by exactly one process's
//! sweep (an atomic remove). Arrivals and lapses are reported to the agent's
//! availability (`commands::availability`), which records an event only when what
//! others see changes, so two processes reporting the same thing record it once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use commands::{Commands, Written};
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long an agent stays present without a socket or a heartbeat.
pub const LAPSE: Duration = Duration::from_secs(20);
/// How often a process touches its sockets' agents and sweeps lapsed ones.
pub const TOUCH_EVERY: Duration = Duration::from_secs(5);
/// Every so many sweeps, agents shown present whose lapse was claimed but not
/// recorded (the database was away) are recorded lapsed.
const REPAIR_EVERY: u32 = 12;

/// An agent of an account.
pub type AgentKey = (Uuid, Uuid);

/// Where presence is kept.
#[async_trait]
pub trait PresenceStore: Send + Sync {
    /// Marks the agents seen at `now`; answers those who were absent (arrivals).
    async fn touch(&self, agents: &[AgentKey], now: DateTime<Utc>) -> anyhow::Result<Vec<AgentKey>>;
    /// Removes and answers the agents last seen before `before` (each to one caller).
    async fn claim_lapsed(&self, before: DateTime<Utc>) -> anyhow::Result<Vec<AgentKey>>;
    async fn is_present(&self, agent: AgentKey) -> anyhow::Result<bool>;
}

/// Presence in the `presence` table.
pub struct PgPresence(pub PgPool);

#[async_trait]
impl PresenceStore for PgPresence {
    async fn touch(&self, agents: &[AgentKey], now: DateTime<Utc>) -> anyhow::Result<Vec<AgentKey>> {
        let (accounts, users): (Vec<Uuid>, Vec<Uuid>) = agents.iter().copied().unzip();
        // `xmax = 0`: the row was inserted, not updated — the agent was absent.
        let rows: Vec<(Uuid, Uuid, bool)> = sqlx::query_as(
            "INSERT INTO presence (account_id, user_id, seen_at) SELECT a, u, $3 FROM UNNEST($1::uuid[], $2::uuid[]) AS t(a, u) \
             ON CONFLICT (user_id) DO UPDATE SET seen_at = GREATEST(presence.seen_at, EXCLUDED.seen_at) \
             RETURNING account_id, user_id, xmax = 0",
        )
        .bind(accounts)
        .bind(users)
        .bind(now)
        .fetch_all(&self.0)
        .await?;
        Ok(rows.into_iter().filter(|(_, _, arrived)| *arrived).map(|(a, u, _)| (a, u)).collect())
    }

    async fn claim_lapsed(&self, before: DateTime<Utc>) -> anyhow::Result<Vec<AgentKey>> {
        Ok(sqlx::query_as("DELETE FROM presence WHERE seen_at < $1 RETURNING account_id, user_id")
            .bind(before)
            .fetch_all(&self.0)
            .await?)
    }

    async fn is_present(&self, (_, user): AgentKey) -> anyhow::Result<bool> {
        Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM presence WHERE user_id = $1)")
            .bind(user)
            .fetch_one(&self.0)
            .await?)
    }
}

/// Presence in a Redis sorted set (`presence:<database>`): members `account:user`,
/// scored by when last seen (ms).
pub struct RedisPresence {
    connection: ConnectionManager,
    key: String,
}

impl RedisPresence {
    pub async fn connect(url: &str, database: &str) -> anyhow::Result<Self> {
        let connection = ConnectionManager::new(redis::Client::open(url)?).await?;
        Ok(Self { connection, key: format!("presence:{database}") })
    }
}

/// Removes and answers the members scored below ARGV[1], atomically.
const CLAIM_LAPSED: &str = "local lapsed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1]) \
    if #lapsed > 0 then redis.call('ZREM', KEYS[1], unpack(lapsed)) end return lapsed";

fn member((account, user): AgentKey) -> String {
    format!("{account}:{user}")
}

fn agent_of(member: &str) -> Option<AgentKey> {
    let (account, user) = member.split_once(':')?;
    Some((account.parse().ok()?, user.parse().ok()?))
}

#[async_trait]
impl PresenceStore for RedisPresence {
    async fn touch(&self, agents: &[AgentKey], now: DateTime<Utc>) -> anyhow::Result<Vec<AgentKey>> {
        let mut pipe = redis::pipe();
        for agent in agents {
            // GT: a late touch never moves the score back; answers 1 for a new member.
            pipe.cmd("ZADD").arg(&self.key).arg("GT").arg(now.timestamp_millis()).arg(member(*agent));
        }
        let added: Vec<i64> = pipe.query_async(&mut self.connection.clone()).await?;
        Ok(agents.iter().zip(added).filter(|(_, added)| *added == 1).map(|(agent, _)| *agent).collect())
    }

    async fn claim_lapsed(&self, before: DateTime<Utc>) -> anyhow::Result<Vec<AgentKey>> {
        let lapsed: Vec<String> = redis::cmd("EVAL")
            .arg(CLAIM_LAPSED)
            .arg(1)
            .arg(&self.key)
            .arg(before.timestamp_millis())
            .query_async(&mut self.connection.clone())
            .await?;
        Ok(lapsed.iter().filter_map(|m| agent_of(m)).collect())
    }

    async fn is_present(&self, agent: AgentKey) -> anyhow::Result<bool> {
        let score: Option<f64> =
            redis::cmd("ZSCORE").arg(&self.key).arg(member(agent)).query_async(&mut self.connection.clone()).await?;
        Ok(score.is_some())
    }
}

/// This process's side of presence: its sockets' agents, touched and swept.
#[derive(Clone)]
pub struct Presence {
    store: Arc<dyn PresenceStore>,
    commands: Commands,
    pool: PgPool,
    /// Open sockets per agent.
    connected: Arc<Mutex<HashMap<AgentKey, usize>>>,
}

/// Held while an agent's socket is open.
pub struct Connected {
    agent: AgentKey,
    connected: Arc<Mutex<HashMap<AgentKey, usize>>>,
}

impl Drop for Connected {
    fn drop(&mut self) {
        let mut connected = self.connected.lock().expect("presence registry");
        if let Some(count) = connected.get_mut(&self.agent) {
            *count -= 1;
            if *count == 0 {
                connected.remove(&self.agent);
            }
        }
    }
}

impl Presence {
    pub fn new(store: Arc<dyn PresenceStore>, commands: Commands, pool: PgPool) -> Self {
        Self { store, commands, pool, connected: Arc::default() }
    }

    /// Counts the agent present while the returned guard lives (their socket).
    pub async fn connect(&self, agent: AgentKey) -> Connected {
        *self.connected.lock().expect("presence registry").entry(agent).or_default() += 1;
        let guard = Connected { agent, connected: self.connected.clone() };
        if let Err(error) = self.touch(&[agent]).await {
            tracing::warn!(error = format!("{error:#}"), "could not record a socket's presence");
        }
        guard
    }

    /// A heartbeat: the agent is here now. Answers what it recorded (an arrival).
    pub async fn heartbeat(&self, agent: AgentKey) -> anyhow::Result<Written> {
        self.touch(&[agent]).await
    }

    pub async fn is_present(&self, agent: AgentKey) -> anyhow::Result<bool> {
        self.store.is_present(agent).await
    }

    /// Touches this process's sockets' agents and sweeps lapsed ones, until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut rounds = 0u32;
        loop {
            rounds = rounds.wrapping_add(1);
            tokio::select! {
                _ = tokio::time::sleep(TOUCH_EVERY) => {}
                _ = shutdown.cancelled() => return,
            }
            let agents: Vec<AgentKey> = self.connected.lock().expect("presence registry").keys().copied().collect();
            if !agents.is_empty() {
                if let Err(error) = self.touch(&agents).await {
                    tracing::warn!(error = format!("{error:#}"), "could not touch the present agents");
                }
            }
            if let Err(error) = self.sweep().await {
                tracing::warn!(error = format!("{error:#}"), "could not sweep lapsed agents");
            }
            if rounds.is_multiple_of(REPAIR_EVERY) {
                if let Err(error) = self.repair().await {
                    tracing::warn!(error = format!("{error:#}"), "could not look for lingering presence");
                }
            }
        }
    }

    async fn repair(&self) -> anyhow::Result<()> {
        let shown: Vec<AgentKey> =
            sqlx::query_as("SELECT account_id, user_id FROM rm_agent_availability WHERE status <> 'offline'")
                .fetch_all(&self.pool)
                .await?;
        for agent in shown {
            if !self.store.is_present(agent).await? {
                self.commands.observe_presence(agent.0, agent.1, false).await?;
            }
        }
        Ok(())
    }

    async fn touch(&self, agents: &[AgentKey]) -> anyhow::Result<Written> {
        let mut written = Written::default();
        for (account, user) in self.store.touch(agents, Utc::now()).await? {
            written = self.commands.observe_presence(account, user, true).await?;
        }
        Ok(written)
    }

    /// Records the lapse of each agent this process claimed. One touched again while
    /// the lapse was being recorded (its arrival may have been recorded first) is
    /// recorded present again.
    async fn sweep(&self) -> anyhow::Result<()> {
        let before = Utc::now() - chrono::Duration::from_std(LAPSE)?;
        for (account, user) in self.store.claim_lapsed(before).await? {
            self.commands.observe_presence(account, user, false).await?;
            if self.store.is_present((account, user)).await? {
                self.commands.observe_presence(account, user, true).await?;
            }
        }
        Ok(())
    }
}
