//! Fixed-window attempt counters for login and credential endpoints: in Redis when
//! `REDIS_URL` is set (shared by every server process), in this process otherwise.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use redis::aio::ConnectionManager;

use commands::CommandError;

use crate::error::{ApiError, ErrorCode};

/// One limit: at most `attempts` per `window` for one key.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub name: &'static str,
    pub attempts: u32,
    pub window: Duration,
}

/// Wrong passwords for one e-mail from one address.
pub const LOGIN_FAILURES: Limit = Limit { name: "login", attempts: 10, window: Duration::from_secs(60) };
/// Invitation and password-change failures, per user or address.
pub const CREDENTIAL_FAILURES: Limit = Limit { name: "credential", attempts: 10, window: Duration::from_secs(60) };
/// API tokens created by one user from one address.
pub const TOKENS_ISSUED: Limit = Limit { name: "token", attempts: 20, window: Duration::from_secs(3600) };

/// Local counters beyond this many keys drop the expired ones.
const LOCAL_SWEEP_AT: usize = 10_000;

pub enum RateLimiter {
    Redis(ConnectionManager),
    Local(Mutex<HashMap<String, (Instant, u32)>>),
}

impl RateLimiter {
    pub async fn connect(redis_url: Option<&str>) -> anyhow::Result<Self> {
        match redis_url {
            None => Ok(Self::Local(Mutex::default())),
            Some(url) => {
                let client = redis::Client::open(url).context("REDIS_URL is not a valid Redis URL")?;
                let manager = ConnectionManager::new(client).await.context("failed to connect to Redis (REDIS_URL)")?;
                Ok(Self::Redis(manager))
            }
        }
    }

    /// RATE_LIMITED once `key` has used up its attempts in the current window.
    pub async fn check(&self, limit: Limit, key: &str) -> Result<(), ApiError> {
        if self.count(limit, key).await? >= limit.attempts {
            tracing::warn!(limit = limit.name, key, "rate limit reached; refusing the attempt");
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                format!("too many attempts; try again in {} s", limit.window.as_secs()),
            ));
        }
        Ok(())
    }

    /// Runs `attempt` unless `key` is locked out, and counts it against `key` if it fails.
    pub async fn guard<T>(
        &self,
        limit: Limit,
        key: &str,
        attempt: impl std::future::Future<Output = Result<T, CommandError>>,
    ) -> Result<T, ApiError> {
        self.check(limit, key).await?;
        match attempt.await {
            Ok(done) => Ok(done),
            Err(error) => {
                tracing::info!(limit = limit.name, key, "attempt refused");
                self.record(limit, key).await?;
                Err(error.into())
            }
        }
    }

    /// Counts one attempt against `key`.
    pub async fn record(&self, limit: Limit, key: &str) -> Result<(), ApiError> {
        let key = format!("ratelimit:{}:{key}", limit.name);
        match self {
            Self::Redis(manager) => {
                let mut conn = manager.clone();
                let _: () = redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(&key)
                    .arg(0)
                    .arg("EX")
                    .arg(limit.window.as_secs().max(1))
                    .arg("NX")
                    .ignore()
                    .cmd("INCR")
                    .arg(&key)
                    .ignore()
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| ApiError::internal(anyhow::Error::new(e).context("rate limit update failed")))?;
            }
            Self::Local(counters) => {
                let mut counters = counters.lock().expect("rate limit counters");
                if counters.len() > LOCAL_SWEEP_AT {
                    counters.retain(|_, (start, _)| start.elapsed() < limit.window);
                }
                let entry = counters.entry(key).or_insert((Instant::now(), 0));
                if entry.0.elapsed() >= limit.window {
                    *entry = (Instant::now(), 0);
                }
                entry.1 += 1;
            }
        }
        Ok(())
    }

    async fn count(&self, limit: Limit, key: &str) -> Result<u32, ApiError> {
        let key = format!("ratelimit:{}:{key}", limit.name);
        match self {
            Self::Redis(manager) => {
                let mut conn = manager.clone();
                let count: Option<u32> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| ApiError::internal(anyhow::Error::new(e).context("rate limit lookup failed")))?;
                Ok(count.unwrap_or(0))
            }
            Self::Local(counters) => {
                let counters = counters.lock().expect("rate limit counters");
                Ok(counters.get(&key).filter(|(start, _)| start.elapsed() < limit.window).map_or(0, |(_, n)| *n))
            }
        }
    }
}
