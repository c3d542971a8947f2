//! Fixed-window attempt counters for login and credential endpoints: in Redis when
//! `REDIS_URL` is set (shared by every server process), in this process otherwise.
//!
//! An attempt is counted *before* it runs, atomically (one `INCR`), and refused once
//! the count passes the limit: parallel attempts cannot all pass a check made before
//! any of them was counted. Keys are keyed hashes (no e-mail in Redis or in logs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use projections::keyring::Keyring;
use redis::aio::ConnectionManager;

use commands::CommandError;

use crate::error::{ApiError, ErrorCode};

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Attempts that fail: a success gives its count back.
    Failures,
    /// Every attempt that succeeds: a failure gives its count back.
    Successes,
}

/// One limit: at most `attempts` per `window` for one key.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub name: &'static str,
    pub attempts: u32,
    pub window: Duration,
    pub counted: Counted,
}

/// Wrong passwords for one e-mail from one address.
pub const LOGIN_FAILURES: Limit =
    Limit { name: "login", attempts: 10, window: Duration::from_secs(60), counted: Counted::Failures };
/// Wrong passwords from one address, whatever the e-mail (password spraying).
pub const LOGIN_ADDRESS_FAILURES: Limit =
    Limit { name: "login-address", attempts: 30, window: Duration::from_secs(60), counted: Counted::Failures };
/// Invitation and password-change failures, per user or address.
pub const CREDENTIAL_FAILURES: Limit =
    Limit { name: "credential", attempts: 10, window: Duration::from_secs(60), counted: Counted::Failures };
/// API tokens created by one user from one address.
pub const TOKENS_ISSUED: Limit =
    Limit { name: "token", attempts: 20, window: Duration::from_secs(3600), counted: Counted::Successes };

/// Local counters beyond this many keys drop the expired ones.
const LOCAL_SWEEP_AT: usize = 10_000;

enum Counters {
    Redis(ConnectionManager),
    Local(Mutex<HashMap<String, (Instant, u32)>>),
}

pub struct RateLimiter {
    counters: Counters,
    keyring: Arc<Keyring>,
}

impl RateLimiter {
    pub async fn connect(redis_url: Option<&str>, keyring: Arc<Keyring>) -> anyhow::Result<Self> {
        let counters = match redis_url {
            None => Counters::Local(Mutex::default()),
            Some(url) => {
                let client = redis::Client::open(url).context("REDIS_URL is not a valid Redis URL")?;
                let manager = ConnectionManager::new(client).await.context("failed to connect to Redis (REDIS_URL)")?;
                Counters::Redis(manager)
            }
        };
        Ok(Self { counters, keyring })
    }

    /// Counts `attempt` against every `(limit, key)`, then runs it unless one of them
    /// is used up (RATE_LIMITED; a refused attempt is not counted). What the limit does
    /// not count (a success, or a failure) is given back afterwards.
    pub async fn guard<T>(
        &self,
        limits: &[(Limit, &str)],
        attempt: impl std::future::Future<Output = Result<T, CommandError>>,
    ) -> Result<T, ApiError> {
        let keys: Vec<(Limit, String)> = limits
            .iter()
            .map(|(limit, key)| {
                (*limit, format!("ratelimit:{}:{}", limit.name, self.keyring.keyed_hash(&[limit.name, key])))
            })
            .collect();
        let mut counted = Vec::with_capacity(keys.len());
        let mut exhausted = None;
        for (limit, key) in &keys {
            match self.add(key, limit.window, 1).await {
                Ok(count) => {
                    counted.push((limit, key));
                    if count > limit.attempts {
                        exhausted = Some((limit, key));
                    }
                }
                Err(error) => {
                    self.give_back(&counted).await;
                    return Err(error);
                }
            }
        }
        if let Some((limit, key)) = exhausted {
            self.give_back(&counted).await;
            tracing::warn!(limit = limit.name, key = short(key), "rate limit reached; refusing the attempt");
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                format!("too many attempts; try again in {} s", limit.window.as_secs()),
            ));
        }
        let result = attempt.await;
        let refund: Vec<_> = counted
            .into_iter()
            .filter(|(limit, _)| match limit.counted {
                Counted::Failures => result.is_ok(),
                Counted::Successes => result.is_err(),
            })
            .collect();
        self.give_back(&refund).await;
        result.map_err(|error| {
            if let Some((limit, key)) = keys.first() {
                tracing::info!(limit = limit.name, key = short(key), "attempt refused");
            }
            error.into()
        })
    }

    async fn give_back(&self, counted: &[(&Limit, &String)]) {
        for (limit, key) in counted {
            if let Err(error) = self.add(key, limit.window, -1).await {
                tracing::warn!(limit = limit.name, error = %error.message, "could not give back a counted attempt");
            }
        }
    }

    /// Adds `delta` to `key`'s count in the current window; returns the new count.
    async fn add(&self, key: &str, window: Duration, delta: i64) -> Result<u32, ApiError> {
        match &self.counters {
            Counters::Redis(manager) => {
                let mut conn = manager.clone();
                let (count,): (i64,) = redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(key)
                    .arg(0)
                    .arg("EX")
                    .arg(window.as_secs().max(1))
                    .arg("NX")
                    .ignore()
                    .cmd("INCRBY")
                    .arg(key)
                    .arg(delta)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| ApiError::unavailable(anyhow::Error::new(e).context("rate limit update failed")))?;
                Ok(u32::try_from(count.max(0)).unwrap_or(u32::MAX))
            }
            Counters::Local(counters) => {
                let mut counters = counters.lock().expect("rate limit counters");
                if counters.len() > LOCAL_SWEEP_AT {
                    counters.retain(|_, (start, _)| start.elapsed() < window);
                }
                let entry = counters.entry(key.to_string()).or_insert((Instant::now(), 0));
                if entry.0.elapsed() >= window {
                    *entry = (Instant::now(), 0);
                }
                entry.1 = u32::try_from((i64::from(entry.1) + delta).max(0)).unwrap_or(u32::MAX);
                Ok(entry.1)
            }
        }
    }
}

/// Enough of a hashed key to tell attempts apart in logs.
fn short(key: &str) -> &str {
    let hash = key.rsplit(':').next().unwrap_or(key);
    &hash[..hash.len().min(16)]
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn limiter() -> RateLimiter {
        RateLimiter { counters: Counters::Local(Mutex::default()), keyring: Arc::new(Keyring::new([7; 32])) }
    }

    #[tokio::test]
    async fn parallel_failures_are_counted_before_they_run_so_only_the_limit_runs() {
        let limiter = Arc::new(limiter());
        let ran = Arc::new(AtomicU32::new(0));
        let mut attempts = tokio::task::JoinSet::new();
        for _ in 0..40 {
            let (limiter, ran) = (limiter.clone(), ran.clone());
            attempts.spawn(async move {
                let attempt = async {
                    ran.fetch_add(1, Ordering::SeqCst);
                    // Every attempt is in flight before any has failed.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Err::<(), _>(CommandError::BadCredentials)
                };
                limiter.guard(&[(LOGIN_FAILURES, "ana@acme.test|10.0.0.1")], attempt).await
            });
        }
        let mut limited = 0;
        while let Some(answer) = attempts.join_next().await {
            if matches!(answer.unwrap(), Err(e) if e.code == ErrorCode::RateLimited) {
                limited += 1;
            }
        }
        assert_eq!(ran.load(Ordering::SeqCst), LOGIN_FAILURES.attempts, "only as many run as the limit allows");
        assert_eq!(limited, 30);
    }

    #[tokio::test]
    async fn a_success_gives_its_count_back_and_an_issued_token_keeps_it() {
        let limiter = limiter();
        for _ in 0..15 {
            limiter.guard(&[(LOGIN_FAILURES, "k")], async { Ok::<_, CommandError>(()) }).await.unwrap();
        }
        for _ in 0..TOKENS_ISSUED.attempts {
            limiter.guard(&[(TOKENS_ISSUED, "k")], async { Ok::<_, CommandError>(()) }).await.unwrap();
        }
        let over = limiter.guard(&[(TOKENS_ISSUED, "k")], async { Ok::<_, CommandError>(()) }).await;
        assert_eq!(over.unwrap_err().code, ErrorCode::RateLimited);
    }

    #[tokio::test]
    async fn an_address_trying_many_e_mails_is_limited_across_them() {
        let limiter = limiter();
        let mut refused = 0;
        for n in 0..40 {
            let email = format!("user{n}@acme.test|10.0.0.1");
            let limits = [(LOGIN_FAILURES, email.as_str()), (LOGIN_ADDRESS_FAILURES, "10.0.0.1")];
            let answer = limiter.guard(&limits, async { Err::<(), _>(CommandError::BadCredentials) }).await;
            if matches!(answer, Err(e) if e.code == ErrorCode::RateLimited) {
                refused += 1;
            }
        }
        assert_eq!(refused, 40 - LOGIN_ADDRESS_FAILURES.attempts as usize);
    }
}
