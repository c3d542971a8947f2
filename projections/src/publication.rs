//! What a commit made queryable, published: after a projector's batch commits, the
//! engine publishes which part of the feed it applied (its projector, and the feed
//! positions after which and through which it read), in this process at once and to
//! every other process through a fan-out (PostgreSQL NOTIFY sent after the commit, or
//! Redis pub/sub when configured). Real-time subscriptions push from this: a client
//! told of a range reads it from read models that already show it.
//!
//! Each projector runs in one process at a time and publishes in commit order, so its
//! publications arrive in order; a range starts where the previous one ended, or
//! later (events the projector does not consume are skipped).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::feed::FeedPosition;

/// The PostgreSQL channel publications travel on between processes.
pub const PUBLICATION_CHANNEL: &str = "inbox_published";
/// Publications a slow subscriber of this process may fall behind by before it is
/// told it lagged (and should read from the feed).
const LOCAL_BUFFER: usize = 4096;
/// Publications waiting to be sent to other processes.
const OUTGOING_BUFFER: usize = 4096;

/// One projector's committed batch: the events after `after` through `through`, in
/// feed order, are in its read model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub projector: String,
    pub after: FeedPosition,
    pub through: FeedPosition,
    /// Events of the range the projector applied.
    pub events: u32,
}

/// Something ephemeral for an account's screens (an agent typing): carried to every
/// process like a publication, never stored, and lost by a process that is not
/// listening when it passes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    pub account_id: Uuid,
    pub kind: String,
    pub body: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum Message {
    Published(Published),
    Signal(Signal),
}

/// Messages between processes, in order, and the process they come from.
#[derive(Serialize, Deserialize)]
struct Envelope {
    origin: Uuid,
    messages: Vec<Message>,
}

/// The largest payload sent at once: PostgreSQL refuses a NOTIFY payload of 8,000
/// bytes or more.
const MAX_PAYLOAD: usize = 7_900;

/// Carries messages to every process, this one included.
#[async_trait]
pub trait Fanout: Send + Sync {
    async fn send(&self, payload: String) -> anyhow::Result<()>;
    /// Hands every message received to `deliver` until the connection ends or
    /// `shutdown` fires; the caller connects again.
    async fn receive(
        &self,
        deliver: &(dyn Fn(String) + Send + Sync),
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()>;
}

/// Fan-out through PostgreSQL: NOTIFY on a connection of its own (never inside a
/// write transaction, never waiting behind the requests for a pooled connection),
/// LISTEN on another.
pub struct PgFanout {
    pool: PgPool,
    sender: tokio::sync::Mutex<Option<sqlx::PgConnection>>,
}

impl PgFanout {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, sender: tokio::sync::Mutex::new(None) }
    }
}

#[async_trait]
impl Fanout for PgFanout {
    async fn send(&self, payload: String) -> anyhow::Result<()> {
        use sqlx::Connection;
        let mut sender = self.sender.lock().await;
        if sender.is_none() {
            *sender = Some(sqlx::PgConnection::connect_with(&self.pool.connect_options()).await?);
        }
        let Some(conn) = sender.as_mut() else { return Ok(()) };
        let sent = sqlx::query("SELECT pg_notify($1, $2)").bind(PUBLICATION_CHANNEL).bind(payload).execute(conn).await;
        if sent.is_err() {
            // Connect again next time.
            *sender = None;
        }
        sent.map(|_| ())?;
        Ok(())
    }

    async fn receive(
        &self,
        deliver: &(dyn Fn(String) + Send + Sync),
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(PUBLICATION_CHANNEL).await?;
        loop {
            tokio::select! {
                received = listener.recv() => deliver(received?.payload().to_string()),
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }
}

/// Publications of this process's projectors, and of the other processes'.
#[derive(Clone)]
pub struct Publisher {
    origin: Uuid,
    local: broadcast::Sender<Published>,
    signals: broadcast::Sender<Signal>,
    outgoing: mpsc::Sender<Message>,
    queued: Arc<tokio::sync::Mutex<mpsc::Receiver<Message>>>,
}

impl Default for Publisher {
    fn default() -> Self {
        let (outgoing, queued) = mpsc::channel(OUTGOING_BUFFER);
        Self {
            origin: Uuid::now_v7(),
            local: broadcast::channel(LOCAL_BUFFER).0,
            signals: broadcast::channel(LOCAL_BUFFER).0,
            outgoing,
            queued: Arc::new(tokio::sync::Mutex::new(queued)),
        }
    }
}

impl Publisher {
    /// Every publication from now on, whichever process's projector made it.
    pub fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.local.subscribe()
    }

    /// Every signal from now on, whichever process sent it.
    pub fn subscribe_signals(&self) -> broadcast::Receiver<Signal> {
        self.signals.subscribe()
    }

    /// Publishes a committed batch here at once, and queues it for the others.
    pub(crate) fn publish(&self, published: Published) {
        let _ = self.local.send(published.clone());
        if self.outgoing.try_send(Message::Published(published)).is_err() {
            tracing::warn!("the publication fan-out is behind; other processes miss a publication");
        }
    }

    /// Sends a signal here at once, and queues it for the others.
    pub fn signal(&self, signal: Signal) {
        let _ = self.signals.send(signal.clone());
        if self.outgoing.try_send(Message::Signal(signal)).is_err() {
            tracing::warn!("the publication fan-out is behind; other processes miss a signal");
        }
    }

    /// Sends this process's publications to the others, and hands theirs to this
    /// process's subscribers, until `shutdown`.
    pub async fn relay(&self, fanout: Arc<dyn Fanout>, shutdown: CancellationToken) {
        let sender = {
            let (fanout, queued, origin, stop) = (fanout.clone(), self.queued.clone(), self.origin, shutdown.clone());
            tokio::spawn(async move {
                let mut queued = queued.lock().await;
                loop {
                    let first = tokio::select! {
                        next = queued.recv() => match next { Some(p) => p, None => return },
                        _ = stop.cancelled() => return,
                    };
                    // What queued up while the last send was on its way goes as one
                    // range per projector: the others learn as much, with fewer sends.
                    let mut batch = vec![first];
                    while let Ok(more) = queued.try_recv() {
                        batch.push(more);
                    }
                    // One send for all of it (a round trip each was the relay's pace
                    // under load), split only where a payload would be too large.
                    for payload in payloads(origin, coalesced(batch)) {
                        if let Err(error) = fanout.send(payload).await {
                            tracing::warn!(
                                error = format!("{error:#}"),
                                "could not send a publication to other processes"
                            );
                        }
                    }
                }
            })
        };
        let (local, signals, origin) = (self.local.clone(), self.signals.clone(), self.origin);
        let deliver = move |payload: String| match serde_json::from_str::<Envelope>(&payload) {
            Ok(envelope) if envelope.origin != origin => {
                for message in envelope.messages {
                    match message {
                        Message::Published(published) => {
                            let _ = local.send(published);
                        }
                        Message::Signal(signal) => {
                            let _ = signals.send(signal);
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "a publication from another process does not parse"),
        };
        while !shutdown.is_cancelled() {
            if let Err(error) = fanout.receive(&deliver, &shutdown).await {
                tracing::warn!(error = format!("{error:#}"), "publication listener lost; reconnecting");
                tokio::select! { _ = tokio::time::sleep(Duration::from_secs(1)) => {}, _ = shutdown.cancelled() => {} }
            }
        }
        sender.abort();
    }
}

/// The messages as envelopes of at most [`MAX_PAYLOAD`] bytes each (a single larger
/// message goes alone), in order.
fn payloads(origin: Uuid, messages: Vec<Message>) -> Vec<String> {
    let envelope = |messages| serde_json::to_string(&Envelope { origin, messages }).unwrap_or_default();
    let mut payloads = Vec::new();
    let mut pending: Vec<Message> = Vec::new();
    let mut size = envelope(Vec::new()).len();
    for message in messages {
        let length = serde_json::to_string(&message).map_or(0, |m| m.len()) + 1;
        if !pending.is_empty() && size + length > MAX_PAYLOAD {
            payloads.push(envelope(std::mem::take(&mut pending)));
            size = envelope(Vec::new()).len();
        }
        size += length;
        pending.push(message);
    }
    if !pending.is_empty() {
        payloads.push(envelope(pending));
    }
    payloads
}

/// Consecutive publications of each projector merged into one range, in order;
/// signals as they are.
fn coalesced(batch: Vec<Message>) -> Vec<Message> {
    let mut merged: Vec<Message> = Vec::new();
    for message in batch {
        let Message::Published(published) = message else {
            merged.push(message);
            continue;
        };
        let range = merged.iter_mut().find_map(|m| match m {
            Message::Published(range) if range.projector == published.projector => Some(range),
            _ => None,
        });
        match range {
            Some(range) => {
                range.through = range.through.max(published.through);
                range.events += published.events;
            }
            None => merged.push(Message::Published(published)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(n: i64) -> FeedPosition {
        FeedPosition { transaction_id: n, global_position: n }
    }

    #[test]
    fn queued_publications_go_as_one_range_per_projector() {
        let published = |projector: &str, after, through, events| Published {
            projector: projector.into(),
            after: at(after),
            through: at(through),
            events,
        };
        let signal = Signal { account_id: Uuid::nil(), kind: "typing".into(), body: serde_json::json!({}) };
        let merged = coalesced(vec![
            Message::Published(published("timeline", 0, 5, 2)),
            Message::Published(published("inbox_list", 0, 5, 2)),
            Message::Signal(signal.clone()),
            Message::Published(published("timeline", 5, 9, 3)),
        ]);
        let merged: Vec<String> = merged.iter().map(|m| serde_json::to_string(m).unwrap()).collect();
        let expected: Vec<String> = [
            Message::Published(published("timeline", 0, 9, 5)),
            Message::Published(published("inbox_list", 0, 5, 2)),
            Message::Signal(signal),
        ]
        .iter()
        .map(|m| serde_json::to_string(m).unwrap())
        .collect();
        assert_eq!(merged, expected);
    }

    #[test]
    fn publications_and_signals_are_told_apart_between_processes() {
        let signal = Signal { account_id: Uuid::nil(), kind: "typing".into(), body: serde_json::json!({ "on": true }) };
        let published = Published { projector: "timeline".into(), after: at(1), through: at(2), events: 1 };
        let sent = vec![Message::Signal(signal.clone()), Message::Published(published.clone())];
        let [text] = payloads(Uuid::nil(), sent).try_into().expect("one payload");
        match serde_json::from_str::<Envelope>(&text).unwrap().messages.as_slice() {
            [Message::Signal(first), Message::Published(second)] => {
                assert_eq!((first, second), (&signal, &published));
            }
            other => panic!("{text} read back as {other:?}"),
        }
    }

    #[test]
    fn a_backlog_goes_in_as_few_payloads_as_notify_takes_in_order() {
        let sent: Vec<Message> = (0..200)
            .map(|n| {
                let projector = format!("projector_{n}");
                Message::Published(Published { projector, after: at(n), through: at(n + 1), events: 1 })
            })
            .collect();
        let expected: Vec<String> = sent.iter().map(|m| serde_json::to_string(m).unwrap()).collect();
        let payloads = payloads(Uuid::nil(), sent);
        assert!(payloads.len() > 1, "200 publications do not fit one NOTIFY");
        assert!(payloads.iter().all(|p| p.len() < 8000), "every payload fits NOTIFY");
        let total: usize = payloads.iter().map(String::len).sum();
        assert!(total / payloads.len() > MAX_PAYLOAD / 2, "payloads are filled, not one message each");
        let received: Vec<String> = payloads
            .iter()
            .flat_map(|p| serde_json::from_str::<Envelope>(p).unwrap().messages)
            .map(|m| serde_json::to_string(&m).unwrap())
            .collect();
        assert_eq!(received, expected);
    }
}
