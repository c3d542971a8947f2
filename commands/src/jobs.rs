//! Durable jobs on PostgreSQL: work that must happen after something committed, and
//! may fail and be tried again (a webhook delivery, later a provider call, a timer).
//!
//! - A job is enqueued in the same transaction as what causes it ([`NewJob`] is a
//!   side write; a policy enqueues with [`enqueue`]), under a key naming the cause,
//!   so it is never lost between a commit and an enqueue, nor enqueued twice.
//! - Workers in every process claim due jobs with `FOR UPDATE SKIP LOCKED` and a
//!   lease; a job whose worker died runs again once its lease has passed. A worker
//!   whose lease passed cannot record an outcome over the next attempt's.
//! - A failed attempt is retried on a schedule of growing ceilings with full jitter
//!   ([`retry_delay`]); a `Retry-After` from the remote side wins. After the last
//!   attempt the job is dead, and stays visible to operators.
//! - Finished and dead jobs are kept for [`Jobs::prune`]'s retention.
//! - Time comes from a [`Clock`], so timers are tested without waiting.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::StoreError;
use crate::side_write::SideWrite;

/// Attempts before a job is dead, unless its kind says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 8;
/// The ceiling of the pause before the 2nd, 3rd, … attempt: about a day in all.
const RETRY_CEILINGS: [Duration; 7] = [
    Duration::from_secs(1),
    Duration::from_secs(3),
    Duration::from_secs(30),
    Duration::from_secs(5 * 60),
    Duration::from_secs(60 * 60),
    Duration::from_secs(4 * 60 * 60),
    Duration::from_secs(16 * 60 * 60),
];
/// The longest pause a remote `Retry-After` may ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);
/// Jobs claimed per round by one worker.
const CLAIM_BATCH: i64 = 16;

/// Where time comes from.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: &'static str,
    pub account: Option<Uuid>,
    /// What caused it and what it does about it (`webhook:<id>:<stream>/<seq>`): the
    /// same key is enqueued once.
    pub key: String,
    pub payload: Value,
    pub run_at: DateTime<Utc>,
    pub max_attempts: i32,
}

#[async_trait]
impl SideWrite for NewJob {
    async fn write(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        enqueue(conn, self).await.map(|_| ()).map_err(|e| StoreError::of_write(e, "", StoreError::Conflict))
    }
}

/// Enqueues `job` unless its key was enqueued before; says whether it was new.
pub async fn enqueue<'e>(db: impl PgExecutor<'e>, job: &NewJob) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO jobs (job_id, kind, account_id, job_key, payload, run_at, max_attempts) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (job_key) DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(job.kind)
    .bind(job.account)
    .bind(&job.key)
    .bind(&job.payload)
    .bind(job.run_at)
    .bind(job.max_attempts)
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Enqueues a policy's jobs for a batch in one transaction (each key once).
pub async fn enqueue_all(pool: &PgPool, jobs: &[NewJob]) -> anyhow::Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await.context("failed to begin")?;
    for job in jobs {
        enqueue(&mut *tx, job).await.with_context(|| format!("failed to enqueue a {} job", job.kind))?;
    }
    tx.commit().await.context("failed to commit jobs")?;
    Ok(())
}

/// A claimed job, as its handler sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    pub job_id: Uuid,
    pub kind: String,
    pub account_id: Option<Uuid>,
    pub job_key: String,
    pub payload: Value,
    /// This attempt's number, from 1.
    pub attempts: i32,
    pub max_attempts: i32,
}

impl Job {
    /// The job's payload as its handler reads it; one that does not parse is given up
    /// (trying again would not change it).
    pub fn payload<T: serde::de::DeserializeOwned>(&self) -> Result<T, Outcome> {
        serde_json::from_value(self.payload.clone())
            .map_err(|error| Outcome::Give { error: format!("a {} job that does not parse: {error}", self.kind) })
    }
}

impl Job {
    pub fn is_last_attempt(&self) -> bool {
        self.attempts >= self.max_attempts
    }
}

/// How an attempt ended.
#[derive(Debug)]
pub enum Outcome {
    Done,
    /// Try again on the schedule, or after `after` if the remote side said when.
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// Trying again cannot help: the job is dead now.
    Give {
        error: String,
    },
    /// What the job needs is not there yet (a read model behind the event): run it
    /// again after `after`, not counting this as an attempt.
    NotYet {
        after: Duration,
    },
}

/// Runs the jobs of one kind.
#[async_trait]
pub trait JobHandler: Send + Sync {
    fn kind(&self) -> &'static str;
    /// One attempt. Effects outside our database may happen twice (a crash between
    /// the effect and the recorded outcome): the handler says how the far side can
    /// tell (a stable id).
    async fn run(&self, job: &Job) -> Outcome;
}

/// The pause before attempt `next` (2 for the first retry): a random time up to that
/// attempt's ceiling (full jitter, so retries of many jobs do not arrive together),
/// or what the remote side asked for.
pub fn retry_delay(next: i32, retry_after: Option<Duration>) -> Duration {
    if let Some(after) = retry_after {
        return after.min(MAX_RETRY_AFTER);
    }
    let index = usize::try_from(next - 2).unwrap_or(0).min(RETRY_CEILINGS.len() - 1);
    let ceiling = RETRY_CEILINGS[index].as_millis() as u64;
    Duration::from_millis(rand::thread_rng().gen_range(0..=ceiling))
}

/// Counts of jobs by kind and state, for `/metrics`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueueDepth {
    pub kind: String,
    pub state: String,
    pub jobs: i64,
    pub attempts: i64,
}

/// The job workers of this process.
#[derive(Clone)]
pub struct Jobs {
    pool: PgPool,
    clock: Arc<dyn Clock>,
    handlers: Arc<HashMap<&'static str, Arc<dyn JobHandler>>>,
    lease: Duration,
    poll: Duration,
}

impl Jobs {
    /// `lease`: how long an attempt may run before another worker may take the job.
    pub fn new(
        pool: PgPool,
        clock: Arc<dyn Clock>,
        handlers: Vec<Arc<dyn JobHandler>>,
        lease: Duration,
        poll: Duration,
    ) -> Self {
        let handlers = handlers.into_iter().map(|h| (h.kind(), h)).collect();
        Self { pool, clock, handlers: Arc::new(handlers), lease, poll }
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Runs due jobs until `shutdown`, `workers` at a time (none: this process leaves
    /// jobs to the others).
    pub async fn run(&self, workers: usize, shutdown: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let jobs = self.clone();
            let stop = shutdown.clone();
            tasks.spawn(async move {
                while !stop.is_cancelled() {
                    let ran = match jobs.run_due().await {
                        Ok(ran) => ran,
                        Err(error) => {
                            tracing::warn!(error = format!("{error:#}"), "job worker could not claim jobs");
                            0
                        }
                    };
                    if ran == 0 {
                        tokio::select! { _ = tokio::time::sleep(jobs.poll) => {}, _ = stop.cancelled() => {} }
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Claims the jobs due now (at most a batch) and runs them one after another;
    /// returns how many ran.
    pub async fn run_due(&self) -> anyhow::Result<usize> {
        let claimed = self.claim().await?;
        let count = claimed.len();
        for job in claimed {
            // The lease runs from when the attempt starts, not from the claim (the
            // batch's earlier jobs may have taken long); a job taken over meanwhile is
            // the other worker's now.
            if !self.renew(&job).await? {
                continue;
            }
            // Claimed by kind, so a handler is there; were it not, the job waits.
            let outcome = match self.handlers.get(job.kind.as_str()) {
                Some(handler) => handler.run(&job).await,
                None => Outcome::NotYet { after: Duration::from_secs(60) },
            };
            if let Err(error) = self.finish(&job, outcome).await {
                // The lease runs out and the job runs again: at least once.
                tracing::warn!(error = format!("{error:#}"), job = %job.job_id, "could not record a job's outcome");
            }
        }
        Ok(count)
    }

    /// Leases due jobs (and those whose lease has passed) of the kinds this process
    /// runs to this worker: a process without a kind's handler (an older release,
    /// during a rolling deploy) leaves its jobs to the others.
    async fn claim(&self) -> anyhow::Result<Vec<Job>> {
        let kinds: Vec<&str> = self.handlers.keys().copied().collect();
        let now = self.clock.now();
        let until = now + chrono::Duration::from_std(self.lease).context("lease out of range")?;
        let jobs: Vec<Job> = sqlx::query_as(
            // Run in the order they came due (RETURNING alone keeps no order).
            "WITH claimed AS (UPDATE jobs SET state = 'running', attempts = attempts + 1, leased_until = $2 \
             WHERE job_id IN (SELECT job_id FROM jobs \
                              WHERE ((state = 'pending' AND run_at <= $1) OR (state = 'running' AND leased_until <= $1)) \
                                AND kind = ANY($4) \
                              ORDER BY run_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING job_id, kind, account_id, job_key, payload, attempts, max_attempts, run_at) \
             SELECT job_id, kind, account_id, job_key, payload, attempts, max_attempts FROM claimed \
             ORDER BY run_at, job_id",
        )
        .bind(now)
        .bind(until)
        .bind(CLAIM_BATCH)
        .bind(&kinds)
        .fetch_all(&self.pool)
        .await
        .context("failed to claim jobs")?;
        Ok(jobs)
    }

    /// Renews this attempt's lease; false if the job is no longer this attempt's.
    async fn renew(&self, job: &Job) -> anyhow::Result<bool> {
        let until = self.clock.now() + chrono::Duration::from_std(self.lease).context("lease out of range")?;
        let renewed =
            sqlx::query("UPDATE jobs SET leased_until = $3 WHERE job_id = $1 AND attempts = $2 AND state = 'running'")
                .bind(job.job_id)
                .bind(job.attempts)
                .bind(until)
                .execute(&self.pool)
                .await
                .context("failed to renew a job's lease")?;
        Ok(renewed.rows_affected() == 1)
    }

    /// Records how an attempt ended, unless the job was claimed again meanwhile.
    async fn finish(&self, job: &Job, outcome: Outcome) -> anyhow::Result<()> {
        let now = self.clock.now();
        let mut uncounted = 0i32;
        let (state, run_at, error) = match outcome {
            Outcome::Done => ("done", None, None),
            Outcome::NotYet { after } => {
                uncounted = 1;
                ("pending", Some(now + chrono::Duration::from_std(after).unwrap_or_default()), None)
            }
            Outcome::Retry { error, after } if !job.is_last_attempt() => {
                let delay = chrono::Duration::from_std(retry_delay(job.attempts + 1, after)).unwrap_or_default();
                ("pending", Some(now + delay), Some(error))
            }
            Outcome::Retry { error, .. } | Outcome::Give { error } => ("dead", None, Some(error)),
        };
        if state == "dead" {
            tracing::warn!(job = %job.job_id, kind = %job.kind, attempts = job.attempts, "a job is dead");
        }
        sqlx::query(
            "UPDATE jobs SET state = $3, run_at = COALESCE($4, run_at), last_error = $5, \
             leased_until = NULL, attempts = attempts - $7, \
             finished_at = CASE WHEN $3 IN ('done', 'dead') THEN $6 END \
             WHERE job_id = $1 AND attempts = $2 AND state = 'running'",
        )
        .bind(job.job_id)
        .bind(job.attempts)
        .bind(state)
        .bind(run_at)
        .bind(error)
        .bind(now)
        .bind(uncounted)
        .execute(&self.pool)
        .await
        .context("failed to record a job's outcome")?;
        Ok(())
    }

    /// Deletes finished and dead jobs older than `retention`; returns how many.
    pub async fn prune(&self, retention: Duration) -> anyhow::Result<u64> {
        let before = self.clock.now() - chrono::Duration::from_std(retention).context("retention out of range")?;
        let pruned = sqlx::query("DELETE FROM jobs WHERE state IN ('done', 'dead') AND finished_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .context("failed to prune finished jobs")?;
        Ok(pruned.rows_affected())
    }

    /// Jobs by kind and state.
    pub async fn depth(pool: &PgPool) -> anyhow::Result<Vec<QueueDepth>> {
        sqlx::query_as(
            "SELECT kind, state, count(*) AS jobs, coalesce(sum(attempts), 0)::bigint AS attempts FROM jobs \
             GROUP BY kind, state ORDER BY kind, state",
        )
        .fetch_all(pool)
        .await
        .context("failed to count jobs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_a_jittered_time_under_growing_ceilings_and_a_retry_after_wins() {
        for _ in 0..200 {
            assert!(retry_delay(2, None) <= Duration::from_secs(1));
            assert!(retry_delay(3, None) <= Duration::from_secs(3));
            assert!(retry_delay(DEFAULT_MAX_ATTEMPTS, None) <= Duration::from_secs(16 * 3600));
        }
        let spread: Vec<Duration> = (0..200).map(|_| retry_delay(3, None)).collect();
        assert!(spread.iter().any(|d| *d < Duration::from_millis(1500)), "jitter spans the whole range");
        assert!(spread.iter().any(|d| *d > Duration::from_millis(1500)));
        let total: Duration = (2..=DEFAULT_MAX_ATTEMPTS).map(|n| RETRY_CEILINGS[(n - 2) as usize]).sum();
        assert!(total > Duration::from_secs(20 * 3600) && total < Duration::from_secs(26 * 3600), "{total:?}");
        assert_eq!(retry_delay(2, Some(Duration::from_secs(42))), Duration::from_secs(42));
        assert_eq!(retry_delay(2, Some(Duration::from_secs(10 * 24 * 3600))), MAX_RETRY_AFTER);
    }
}
