//! The global event feed: the log read in commit-safe order.
//!
//! Events are read by `(transaction_id, global_position)` and only below the xmin
//! watermark (`pg_snapshot_xmin`): a transaction still in flight may hold a lower
//! position than one already committed, and a bare position cursor would skip it for
//! good. Sealed fields are opened here, so projectors and exports see plain values.

use std::fmt;
use std::str::FromStr;

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64;
use base64::Engine;
use chrono::{DateTime, Utc};
use domain::actor::Actor;
use serde::Deserialize;
use serde_json::Value;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::envelope::{self, META_ACTOR};
use crate::keyring::Keyring;

/// A point in the feed: every event at or before it has been seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash, serde::Serialize, Deserialize)]
pub struct FeedPosition {
    pub transaction_id: i64,
    pub global_position: i64,
}

impl FeedPosition {
    pub const START: FeedPosition = FeedPosition { transaction_id: 0, global_position: 0 };
}

/// Opaque cursor form, as the `events` query hands it out.
impl fmt::Display for FeedPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64.encode(format!("{}:{}", self.transaction_id, self.global_position)))
    }
}

impl FromStr for FeedPosition {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = String::from_utf8(BASE64.decode(s).context("not a feed cursor")?).context("not a feed cursor")?;
        let (txid, position) = text.split_once(':').context("not a feed cursor")?;
        Ok(Self {
            transaction_id: txid.parse().context("not a feed cursor")?,
            global_position: position.parse().context("not a feed cursor")?,
        })
    }
}

/// One event as readers see it, personal fields opened (or `null` once erased).
#[derive(Debug, Clone)]
pub struct FeedEvent {
    pub position: FeedPosition,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub account_id: Option<Uuid>,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
}

impl FeedEvent {
    /// The payload as the domain's event enum, in its current shape.
    pub fn decode<E: for<'de> Deserialize<'de>>(&self) -> anyhow::Result<E> {
        let context = || format!("failed to decode {} event {}/{}", self.event_type, self.aggregate_id, self.sequence);
        if domain::upcast::is_current(&self.aggregate_type, &self.event_version) {
            return E::deserialize(&self.payload).with_context(context);
        }
        let mut current = self.clone();
        current.upcast();
        E::deserialize(&current.payload).with_context(context)
    }

    /// Brings the payload (and its version) to the current shape: what readers that
    /// show payloads (export, the auditor's views) hand out.
    pub fn upcast(&mut self) {
        domain::upcast::upcast(&self.aggregate_type, &self.event_type, &mut self.event_version, &mut self.payload);
    }

    /// Whether some payload fields are sealed (and need opening to be read).
    pub fn is_sealed(&self) -> bool {
        envelope::is_sealed(&self.metadata)
    }

    /// Whether the payload's `field` is sealed (so it was there, and not null, when the
    /// event was written), known without opening it.
    pub fn seals(&self, field: &str) -> bool {
        self.metadata
            .get(envelope::META_SEALED)
            .and_then(serde_json::Value::as_str)
            .is_some_and(|sealed| sealed.split(',').any(|f| f == field))
    }

    /// The event's identity: `<aggregate type>/<aggregate id>/<sequence>`, what the
    /// events a policy or job writes in reaction name as their cause.
    pub fn id(&self) -> String {
        envelope::event_id(&self.aggregate_type, &self.aggregate_id, self.sequence)
    }

    /// The correlation the event belongs to, if its metadata names one.
    pub fn correlation_id(&self) -> Option<Uuid> {
        self.metadata.get(envelope::META_CORRELATION).and_then(Value::as_str).and_then(|c| c.parse().ok())
    }

    /// Who caused the event, as recorded (what an auditor and an export show).
    pub fn recorded_actor(&self) -> &str {
        envelope::recorded_actor(&self.metadata)
    }

    /// Who caused the event; `None` if the recorded text names no one (a damaged row,
    /// which verification reports).
    pub fn actor(&self) -> Option<Actor> {
        self.recorded_actor().parse().ok()
    }
}

const SELECT_EVENTS: &str = "SELECT aggregate_type, aggregate_id, sequence, account_id, event_type, event_version, \
     payload, metadata, global_position, transaction_id::text::bigint AS txid, recorded_at FROM events";

/// Reads up to `limit` events after `after`, in feed order, below the watermark;
/// only one account's when `account` is given.
pub async fn read_after(
    conn: &mut PgConnection,
    keyring: &Keyring,
    account: Option<Uuid>,
    after: FeedPosition,
    limit: i64,
) -> anyhow::Result<Vec<FeedEvent>> {
    let events = read_sealed_after(conn, account, None, after, limit).await?;
    opened(conn, keyring, events).await
}

/// The feed after `$1, $2` (transaction id, position) below the watermark, `$3` at
/// most: a transaction still in flight cannot commit below what this returns.
const IN_FEED_ORDER_AFTER: &str = "(transaction_id, global_position) > ($1::text::xid8, $2) \
     AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY transaction_id, global_position LIMIT $3";

/// Whether committed events after `after` wait above the watermark: a transaction
/// in flight anywhere in the cluster (the watermark is the cluster's) holds them back,
/// and a reader that was told of them should keep looking until they show.
pub async fn held_back_after(conn: &mut PgConnection, after: FeedPosition) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM events WHERE (transaction_id, global_position) > ($1::text::xid8, $2) \
         AND transaction_id >= pg_snapshot_xmin(pg_current_snapshot()))",
    )
    .bind(after.transaction_id.to_string())
    .bind(after.global_position)
    .fetch_one(&mut *conn)
    .await
}

/// As [`read_after`], personal fields still sealed: for readers that open only the
/// events they use. With `bodies_of`, events of other aggregate types come without
/// payload and metadata (`null`): a projector scans past them, and neither the
/// database nor this process pays for encoding and parsing what it skips.
pub async fn read_sealed_after(
    conn: &mut PgConnection,
    account: Option<Uuid>,
    bodies_of: Option<&[&str]>,
    after: FeedPosition,
    limit: i64,
) -> anyhow::Result<Vec<FeedEvent>> {
    let scope = if account.is_some() { "account_id = $4 AND" } else { "$4::uuid IS NULL AND" };
    let sql = format!(
        "SELECT aggregate_type, aggregate_id, sequence, account_id, event_type, event_version, \
         CASE WHEN $5::text[] IS NULL OR aggregate_type = ANY($5) THEN payload ELSE 'null' END AS payload, \
         CASE WHEN $5::text[] IS NULL OR aggregate_type = ANY($5) THEN metadata ELSE 'null' END AS metadata, \
         global_position, transaction_id::text::bigint AS txid, recorded_at FROM events \
         WHERE {scope} {IN_FEED_ORDER_AFTER}"
    );
    let rows = sqlx::query(&sql)
        .bind(after.transaction_id.to_string())
        .bind(after.global_position)
        .bind(limit)
        .bind(account)
        .bind(bodies_of)
        .fetch_all(&mut *conn)
        .await
        .context("failed to read the event feed")?;
    rows.iter().map(event_of).collect()
}

/// Which events of one account form its administrative trail, as an auditor narrows it.
pub struct AuditScope<'a> {
    pub account: Uuid,
    /// Streams whose every event is audited…
    pub streams: &'a [&'a str],
    /// …and audited events of other streams.
    pub events: &'a [&'a str],
    /// Only these event types, if given.
    pub only_event_types: Option<&'a [String]>,
    /// Only events by this actor (its recorded text), if given.
    pub actor: Option<&'a str>,
}

/// The audit trail in feed order after `after`.
pub async fn read_audit_after(
    conn: &mut PgConnection,
    keyring: &Keyring,
    scope: &AuditScope<'_>,
    after: FeedPosition,
    limit: i64,
) -> anyhow::Result<Vec<FeedEvent>> {
    let sql = format!(
        "{SELECT_EVENTS} WHERE account_id = $4 AND (aggregate_type = ANY($5) OR event_type = ANY($6)) \
         AND ($7::text[] IS NULL OR event_type = ANY($7)) AND ($8::text IS NULL OR metadata ->> '{META_ACTOR}' = $8) \
         AND {IN_FEED_ORDER_AFTER}"
    );
    let rows = sqlx::query(&sql)
        .bind(after.transaction_id.to_string())
        .bind(after.global_position)
        .bind(limit)
        .bind(scope.account)
        .bind(scope.streams)
        .bind(scope.events)
        .bind(scope.only_event_types)
        .bind(scope.actor)
        .fetch_all(&mut *conn)
        .await
        .context("failed to read the audit trail")?;
    let events = rows.iter().map(event_of).collect::<anyhow::Result<_>>()?;
    opened_for_audit(conn, keyring, events).await
}

/// Every event of one stream, in order: an auditor's timeline.
pub async fn read_stream(
    conn: &mut PgConnection,
    keyring: &Keyring,
    aggregate_type: &str,
    aggregate_id: &str,
) -> anyhow::Result<Vec<FeedEvent>> {
    let sql = format!("{SELECT_EVENTS} WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence");
    let rows = sqlx::query(&sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_all(&mut *conn)
        .await
        .context("failed to read an event stream")?;
    let events = rows.iter().map(event_of).collect::<anyhow::Result<_>>()?;
    opened_for_audit(conn, keyring, events).await
}

/// One event, personal fields opened (`null` once erased), in its current shape.
pub async fn read_event(
    conn: &mut PgConnection,
    keyring: &Keyring,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
) -> anyhow::Result<Option<FeedEvent>> {
    let sql = format!("{SELECT_EVENTS} WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3");
    let row = sqlx::query(&sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(sequence)
        .fetch_optional(&mut *conn)
        .await
        .context("failed to read an event")?;
    let Some(row) = row else { return Ok(None) };
    let events = opened(conn, keyring, vec![event_of(&row)?]).await?;
    Ok(events.into_iter().next())
}

/// The events with their personal fields opened (in their current shape), for an auditor, who reads a damaged
/// stream too: a field that does not open reads as null (verification names the
/// damage), where a projector would stop.
async fn opened_for_audit(
    conn: &mut PgConnection,
    keyring: &Keyring,
    mut events: Vec<FeedEvent>,
) -> anyhow::Result<Vec<FeedEvent>> {
    for event in &mut events {
        if let Err(error) = open_sealed_fields(conn, keyring, event).await {
            tracing::warn!(error = format!("{error:#}"), "a sealed field does not open; shown as null");
            envelope::blank_sealed_fields(&mut event.payload, &event.metadata);
        }
        event.upcast();
    }
    Ok(events)
}

/// The events with their personal fields opened, in their current shape.
async fn opened(
    conn: &mut PgConnection,
    keyring: &Keyring,
    mut events: Vec<FeedEvent>,
) -> anyhow::Result<Vec<FeedEvent>> {
    for event in &mut events {
        open_sealed_fields(conn, keyring, event).await?;
        event.upcast();
    }
    Ok(events)
}

fn event_of(row: &sqlx::postgres::PgRow) -> anyhow::Result<FeedEvent> {
    Ok(FeedEvent {
        position: FeedPosition {
            transaction_id: row.try_get("txid")?,
            global_position: row.try_get("global_position")?,
        },
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        account_id: row.try_get("account_id")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload: row.try_get("payload")?,
        metadata: row.try_get("metadata")?,
        recorded_at: row.try_get("recorded_at")?,
    })
}

/// Replaces each sealed field with its plain value, or `null` if the key is shredded.
pub async fn open_sealed_fields(
    conn: &mut PgConnection,
    keyring: &Keyring,
    event: &mut FeedEvent,
) -> anyhow::Result<()> {
    envelope::open(conn, keyring, &mut event.payload, &event.metadata)
        .await
        .with_context(|| format!("failed to open event {}/{}", event.aggregate_id, event.sequence))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_cursors_round_trip_and_reject_garbage() {
        let position = FeedPosition { transaction_id: 812, global_position: 90_001 };
        assert_eq!(position.to_string().parse::<FeedPosition>().unwrap(), position);
        assert!("not-a-cursor".parse::<FeedPosition>().is_err());
        assert!(
            FeedPosition { transaction_id: 2, global_position: 1 }
                > FeedPosition { transaction_id: 1, global_position: 9 }
        );
    }
}
