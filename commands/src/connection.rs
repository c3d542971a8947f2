//! A connection a long-lived task keeps for itself, outside the pool.
//!
//! sqlx pings every pooled connection when it is returned: one more round trip per
//! use, on both ends. The write path's hot statements run on connections of their own.

use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

/// A connection idle longer than this is checked with a round trip before use (the
/// server or the network may have dropped it meanwhile); the pool's follow this too.
pub const CHECK_IDLE_AFTER: Duration = Duration::from_secs(5);

/// Opened on first use, and again after [`OwnConnection::discard`] or a failed check.
pub(crate) struct OwnConnection {
    options: PgConnectOptions,
    open: Option<(PgConnection, Instant)>,
}

impl OwnConnection {
    pub fn new(options: PgConnectOptions) -> Self {
        Self { options, open: None }
    }

    pub async fn get(&mut self) -> anyhow::Result<&mut PgConnection> {
        if let Some((conn, used)) = &mut self.open {
            if used.elapsed() > CHECK_IDLE_AFTER && conn.ping().await.is_err() {
                self.open = None;
            }
        }
        if self.open.is_none() {
            let conn = PgConnection::connect_with(&self.options).await.context("failed to connect to PostgreSQL")?;
            self.open = Some((conn, Instant::now()));
        }
        let (conn, used) = self.open.as_mut().context("no connection")?;
        *used = Instant::now();
        Ok(conn)
    }

    /// After an error that may have left the connection unusable.
    pub fn discard(&mut self) {
        self.open = None;
    }
}
