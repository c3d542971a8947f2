//! Per-account conversation numbers (`display_id` 1, 2, 3…), from a counter row of
//! each account rather than an aggregate every new conversation would queue on.

use anyhow::Context;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::connection::OwnConnection;

/// Reserves numbers on a connection of its own whose commits do not wait for the WAL
/// flush. That is safe: a conversation carrying a number is appended after the
/// reservation committed, so its durable commit flushes the reservation with it; if
/// the database loses a reservation, it lost every conversation that used it too.
pub(crate) struct Numbering {
    conn: Mutex<OwnConnection>,
}

impl Numbering {
    pub fn new(options: &PgConnectOptions) -> Self {
        let options = options.clone().options([("synchronous_commit", "off")]);
        Self { conn: Mutex::new(OwnConnection::new(options)) }
    }

    /// Reserves the account's next `count` numbers and returns the last. A failed
    /// command leaves a gap, as a sequence would.
    pub async fn reserve(&self, account_id: Uuid, count: i64) -> anyhow::Result<i64> {
        let mut conn = self.conn.lock().await;
        let reserved = sqlx::query_scalar(
            "INSERT INTO account_sequences (account_id, last_conversation_no) VALUES ($1, $2) \
             ON CONFLICT (account_id) DO UPDATE SET last_conversation_no = account_sequences.last_conversation_no + $2 \
             RETURNING last_conversation_no",
        )
        .bind(account_id)
        .bind(count)
        .fetch_one(conn.get().await?)
        .await;
        if reserved.is_err() {
            conn.discard();
        }
        reserved.context("failed to number a conversation")
    }
}
