//! Verifying the log as stored: each stream's chain by the rule its rows were made
//! with, without opening a sealed field, and (given a digest) against the stream heads
//! the digest committed to. Damage is an answer here, never an error.

use anyhow::Context;
use futures_util::TryStreamExt;
use serde_json::Value;
use sqlx::PgPool;

use projections::feed::FeedPosition;

use crate::digest::{Digest, Digests, LogTree, StreamHead};
use crate::store::EventStore;
use projections::envelope::chain::{Chain, Hashed, Link};
use projections::envelope::json_text;

/// One stored event, as the verifier reads it.
#[derive(sqlx::FromRow)]
pub(crate) struct StoredLink {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub transaction_id: i64,
    pub global_position: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
    pub hash: Option<Vec<u8>>,
}

const LINK_COLUMNS: &str = "aggregate_type, aggregate_id, sequence, transaction_id::text::bigint AS transaction_id, \
                            global_position, event_type, event_version, payload, metadata, hash";

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamCheck {
    pub events: usize,
    /// The first sequence that is changed or missing.
    pub first_broken: Option<i64>,
    /// The stream ends before the head the digest saw.
    pub truncated: bool,
    pub reason: Option<String>,
}

impl StreamCheck {
    pub fn intact(&self) -> bool {
        self.first_broken.is_none() && !self.truncated && self.reason.is_none()
    }

    fn broken(events: usize, sequence: i64, reason: String) -> Self {
        Self { events, first_broken: Some(sequence), truncated: false, reason: Some(reason) }
    }
}

/// Checks one stream's rows (in sequence order): every sequence present, every hash
/// right by its own rule, old-rule rows only before the keyed chain began (`cutover`,
/// a global position) and never after a keyed row; then, if a digest saw the stream,
/// that its head is still there unchanged.
pub(crate) fn check_links(
    chain: &Chain,
    rows: &[StoredLink],
    cutover: i64,
    head: Option<&StreamHead>,
) -> anyhow::Result<StreamCheck> {
    let events = rows.len();
    let mut previous: Option<&[u8]> = None;
    let mut keyed = false;
    for (index, row) in rows.iter().enumerate() {
        let expected = index as i64 + 1;
        if row.sequence != expected {
            return Ok(StreamCheck::broken(events, expected, format!("event {expected} is missing")));
        }
        let Some(hash) = row.hash.as_deref() else {
            return Ok(StreamCheck::broken(events, expected, format!("event {expected} has no hash")));
        };
        let link = Link::of(hash);
        if link == Link::Plain && (keyed || row.global_position > cutover) {
            let reason = format!("event {expected} is chained by the old unkeyed rule, after the keyed chain began");
            return Ok(StreamCheck::broken(events, expected, reason));
        }
        let (payload, metadata) = (json_text(&row.payload)?, json_text(&row.metadata)?);
        let hashed = Hashed {
            aggregate_type: &row.aggregate_type,
            aggregate_id: &row.aggregate_id,
            sequence: row.sequence,
            event_type: &row.event_type,
            event_version: &row.event_version,
            payload: &payload,
            metadata: &metadata,
        };
        if !chain.matches(hash, previous, &hashed) {
            return Ok(StreamCheck::broken(events, expected, format!("event {expected} does not match its hash")));
        }
        keyed |= matches!(link, Link::Keyed(_));
        previous = Some(hash);
    }
    let Some(head) = head else { return Ok(StreamCheck { events, ..StreamCheck::default() }) };
    let last = rows.len() as i64;
    if last < head.sequence {
        return Ok(StreamCheck {
            events,
            first_broken: Some(last + 1),
            truncated: true,
            reason: Some(format!("the stream ends at event {last}; the digest saw it at event {}", head.sequence)),
        });
    }
    let at_head = &rows[head.sequence as usize - 1];
    if at_head.hash.as_deref() != Some(head.hash.as_slice()) {
        let reason = format!("the stream differs from the digest at or before event {}", head.sequence);
        return Ok(StreamCheck::broken(events, head.sequence, reason));
    }
    Ok(StreamCheck { events, ..StreamCheck::default() })
}

/// The global position up to which rows may carry the old unkeyed chain.
pub(crate) async fn cutover(pool: &PgPool) -> anyhow::Result<i64> {
    sqlx::query_scalar("SELECT position FROM chain_cutover")
        .fetch_one(pool)
        .await
        .context("failed to read where the keyed chain began")
}

impl EventStore {
    /// Verifies one stream as stored, against the head a digest saw if given.
    pub async fn verify_stream(
        &self,
        aggregate_type: &str,
        id: &str,
        head: Option<&StreamHead>,
    ) -> anyhow::Result<StreamCheck> {
        let rows: Vec<StoredLink> = sqlx::query_as(&format!(
            "SELECT {LINK_COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
        ))
        .bind(aggregate_type)
        .bind(id)
        .fetch_all(self.pool())
        .await
        .context("failed to read a stream to verify")?;
        check_links(self.chain(), &rows, cutover(self.pool()).await?, head)
    }

    /// Reads every stream of the log, one pass in key order, handing each stream's
    /// rows (in sequence order) to `visit`.
    pub(crate) async fn each_stream(
        &self,
        mut visit: impl FnMut(&[StoredLink]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let sql = format!("SELECT {LINK_COLUMNS} FROM events ORDER BY aggregate_type, aggregate_id, sequence");
        let mut rows = sqlx::query_as::<_, StoredLink>(&sql).fetch(self.pool());
        let mut stream: Vec<StoredLink> = Vec::new();
        while let Some(row) = rows.try_next().await.context("failed to read the log to verify")? {
            let same = stream
                .first()
                .is_some_and(|s| s.aggregate_type == row.aggregate_type && s.aggregate_id == row.aggregate_id);
            if !same && !stream.is_empty() {
                visit(&stream)?;
                stream.clear();
            }
            stream.push(row);
        }
        if !stream.is_empty() {
            visit(&stream)?;
        }
        Ok(())
    }
}

/// What the whole-log check found.
#[derive(Debug, Default)]
pub struct LogReport {
    pub streams: usize,
    pub events: usize,
    /// One line per thing that broke, naming the stream.
    pub problems: Vec<String>,
}

impl EventStore {
    /// Verifies every stream's chain; with a digest, also that everything it covered
    /// is still there unchanged: the root recomputed from the rows alone must be the
    /// signed one, and each stream is compared with the head the digest recorded, so
    /// what differs is named (a stream cut short, changed, or removed).
    pub async fn verify_whole_log(&self, digests: &Digests, digest: Option<&Digest>) -> anyhow::Result<LogReport> {
        let cutover = cutover(self.pool()).await?;
        let mut seen = match digest {
            Some(digest) => digests.heads_seen(digest).await?,
            None => Default::default(),
        };
        let mut tree = digest.map(|_| LogTree::new());
        let through = digest.map(Digest::through);
        let mut report = LogReport::default();
        self.each_stream(|rows| {
            let first = &rows[0];
            let head = seen.remove(&(first.aggregate_type.clone(), first.aggregate_id.clone()));
            let check = check_links(self.chain(), rows, cutover, head.as_ref())?;
            report.streams += 1;
            report.events += rows.len();
            if !check.intact() {
                let reason = check.reason.unwrap_or_else(|| "broken".into());
                report.problems.push(format!("{} {}: {reason}", first.aggregate_type, first.aggregate_id));
            }
            if let (Some(tree), Some(through)) = (tree.as_mut(), through) {
                let position = |r: &StoredLink| FeedPosition {
                    transaction_id: r.transaction_id,
                    global_position: r.global_position,
                };
                if let Some(at) = rows.iter().rev().find(|r| position(r) <= through) {
                    tree.add(&at.aggregate_type, &at.aggregate_id, at.sequence, at.hash.as_deref().unwrap_or(&[]));
                }
            }
            Ok(())
        })
        .await?;
        for ((kind, id), head) in seen {
            report.problems.push(format!("{kind} {id}: removed (the digest saw it at event {})", head.sequence));
        }
        if let (Some(digest), Some(tree)) = (digest, tree) {
            if digest.chain_cutover != cutover {
                report
                    .problems
                    .push(format!("the keyed chain's cut-over was moved from {} to {cutover}", digest.chain_cutover));
            }
            if tree.root() != digest.root && report.problems.is_empty() {
                report.problems.push(
                    "the log does not match the digest's root, and the digest's records in the database were altered \
                     so that what differs cannot be named"
                        .into(),
                );
            }
        }
        Ok(report)
    }
}
