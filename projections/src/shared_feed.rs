//! One read of the feed for every consumer of a process: the projectors' runners and
//! the policies read the feed after the same commits, from nearly the same position, and
//! reading it once per beat for all of them (rather than once each) is most of what
//! following the log costs the database under load.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sqlx::PgConnection;
use tokio::sync::watch;

use crate::feed::{read_sealed_after, FeedEvent, FeedPosition};

/// The shortest time between two reads of a consumer that is keeping up, rounded up
/// to the process's beat of the same length (consumers woken together share one
/// read). Reads start just after a beat, so a busy consumer reads about every 10 ms
/// (measured under the benchmark's ingest load); a shorter cadence cost a fifth of
/// ingest throughput on two cores.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(5);

/// Wakes runners: in-process through a watch channel, across processes by NOTIFY.
#[derive(Clone)]
pub struct Wake {
    tx: watch::Sender<u64>,
}

impl Default for Wake {
    fn default() -> Self {
        Self { tx: watch::channel(0).0 }
    }
}

impl Wake {
    pub fn wake(&self) {
        self.tx.send_modify(|n| *n = n.wrapping_add(1));
    }
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
}

/// Events kept in memory for consumers that have not taken them yet.
const RECENT_EVENTS: usize = 2000;

/// The feed as this process's consumers read it, and what wakes them.
#[derive(Clone)]
pub struct SharedFeed {
    wake: Wake,
    recent: Arc<tokio::sync::Mutex<Recent>>,
    /// Consumers read on a common beat, so that one read can serve them all.
    epoch: tokio::time::Instant,
    /// Aggregate types some consumer here reads: the bodies a shared read carries.
    bodies: Arc<RwLock<Vec<&'static str>>>,
}

/// The feed's latest events as read from the database: every event after `after`
/// through the last one held, complete (the watermark holds back every transaction
/// that could still commit below it), as the feed was when the last read `started`.
#[derive(Default)]
struct Recent {
    after: FeedPosition,
    events: VecDeque<Arc<FeedEvent>>,
    started: Option<Instant>,
    /// Whether the last read reached the head (it held fewer events than it asked for):
    /// else more events wait in the database after the last one held.
    at_head: bool,
}

impl Recent {
    fn through(&self) -> FeedPosition {
        self.events.back().map_or(self.after, |e| e.position)
    }

    /// Whether it holds the feed from `position` on (what follows it, if anything).
    fn covers(&self, position: FeedPosition) -> bool {
        self.started.is_some() && self.after <= position && position <= self.through()
    }

    /// The events after `position`, at most `batch`.
    fn after(&self, position: FeedPosition, batch: usize) -> Vec<Arc<FeedEvent>> {
        let first = self.events.partition_point(|e| e.position <= position);
        self.events.range(first..).take(batch).cloned().collect()
    }

    /// Adds a read of at most `batch` events that started at `started` from
    /// [`Self::through`]; forgets the oldest events beyond [`RECENT_EVENTS`].
    fn extend(&mut self, read: Vec<FeedEvent>, batch: usize, started: Instant) {
        self.at_head = read.len() < batch;
        self.events.extend(read.into_iter().map(Arc::new));
        self.started = Some(started);
        while self.events.len() > RECENT_EVENTS {
            if let Some(forgotten) = self.events.pop_front() {
                self.after = forgotten.position;
            }
        }
    }
}

impl Default for SharedFeed {
    fn default() -> Self {
        Self {
            wake: Wake::default(),
            recent: Arc::default(),
            epoch: tokio::time::Instant::now(),
            bodies: Arc::default(),
        }
    }
}

impl SharedFeed {
    /// Signalled when events may have been appended (here, or in another process).
    pub fn wake(&self) -> &Wake {
        &self.wake
    }

    /// Adds a consumer's aggregate types to those whose bodies a shared read carries.
    pub fn carry_bodies_of(&self, aggregate_types: &[&'static str]) {
        let mut bodies = self.bodies.write().expect("shared feed bodies");
        bodies.extend_from_slice(aggregate_types);
        bodies.sort_unstable();
        bodies.dedup();
    }

    /// The events after `after`, in feed order, at most `batch`, as the feed was at
    /// least at `since` (when the caller was woken: what it was woken for is there).
    /// Served from the recent events when they hold `after` and were read since then
    /// (and hold something after it, or reached the head); else the events after the
    /// latest held are read once, for every consumer at or behind them. A consumer
    /// further behind than the recent events reads alone.
    pub async fn read(
        &self,
        conn: &mut PgConnection,
        after: FeedPosition,
        batch: i64,
        since: Instant,
    ) -> anyhow::Result<Vec<Arc<FeedEvent>>> {
        let limit = usize::try_from(batch).unwrap_or(0);
        // Held across the read: consumers arriving meanwhile wait for it rather than
        // send the same query.
        let mut recent = self.recent.lock().await;
        if !recent.covers(after) {
            let started = Instant::now();
            let read = read_sealed_after(conn, None, Some(&self.bodies()), after, batch).await?;
            if after < recent.after {
                // Behind what is kept: read alone, keep what the others are reading.
                return Ok(read.into_iter().map(Arc::new).collect());
            }
            *recent = Recent { after, ..Recent::default() };
            recent.extend(read, limit, started);
        } else if recent.started.is_some_and(|read_at| read_at < since)
            || (after == recent.through() && !recent.at_head)
        {
            // Read before the caller was woken, or the caller has taken all of it and
            // more is waiting: what follows the last event held, once for everyone.
            let started = Instant::now();
            let through = recent.through();
            let read = read_sealed_after(conn, None, Some(&self.bodies()), through, batch).await?;
            recent.extend(read, limit, started);
        }
        Ok(recent.after(after, limit))
    }

    fn bodies(&self) -> Vec<&'static str> {
        self.bodies.read().expect("shared feed bodies").clone()
    }
    /// When a consumer that read at `read_at` reads next: the first beat at least
    /// [`BATCH_INTERVAL`] later.
    pub fn next_read(&self, read_at: tokio::time::Instant) -> tokio::time::Instant {
        let interval = BATCH_INTERVAL.as_nanos();
        let since_epoch = (read_at + BATCH_INTERVAL).saturating_duration_since(self.epoch).as_nanos();
        let beats = since_epoch.div_ceil(interval);
        self.epoch + Duration::from_nanos(u64::try_from(beats * interval).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(global_position: i64) -> FeedEvent {
        FeedEvent {
            position: FeedPosition { transaction_id: global_position / 10, global_position },
            aggregate_type: "conversation".into(),
            aggregate_id: "c".into(),
            sequence: global_position,
            account_id: None,
            event_type: "MessageReceived".into(),
            event_version: "1".into(),
            payload: serde_json::Value::Null,
            metadata: serde_json::Value::Null,
            recorded_at: chrono::Utc::now(),
        }
    }

    fn at(global_position: i64) -> FeedPosition {
        event(global_position).position
    }

    fn positions(events: &[Arc<FeedEvent>]) -> Vec<i64> {
        events.iter().map(|e| e.position.global_position).collect()
    }

    #[test]
    fn recent_events_serve_every_position_they_hold_and_nothing_before() {
        let mut recent = Recent { after: at(10), ..Recent::default() };
        assert!(!recent.covers(at(10)), "nothing was read yet");
        recent.extend((11..=15).map(event).collect(), 100, Instant::now());
        assert!(recent.at_head, "a read shorter than its batch reached the head");
        assert!(recent.covers(at(10)) && recent.covers(at(13)) && recent.covers(at(15)));
        assert!(!recent.covers(at(9)) && !recent.covers(at(16)));
        assert_eq!(positions(&recent.after(at(10), 100)), vec![11, 12, 13, 14, 15]);
        assert_eq!(positions(&recent.after(at(12), 2)), vec![13, 14]);
        assert!(recent.after(at(15), 100).is_empty());
        recent.extend(vec![event(16)], 1, Instant::now());
        assert!(!recent.at_head, "a full read may have left events in the database");
        assert_eq!(positions(&recent.after(at(15), 100)), vec![16]);
    }

    #[test]
    fn recent_events_forget_the_oldest_beyond_their_bound() {
        let mut recent = Recent { after: at(0), ..Recent::default() };
        let count = RECENT_EVENTS as i64 + 5;
        recent.extend((1..=count).map(event).collect(), RECENT_EVENTS * 2, Instant::now());
        assert_eq!(recent.events.len(), RECENT_EVENTS);
        assert_eq!(recent.after, at(5), "the forgotten events are no longer covered");
        assert!(!recent.covers(at(4)) && recent.covers(at(5)));
        assert_eq!(positions(&recent.after(at(5), 1)), vec![6]);
    }
}
