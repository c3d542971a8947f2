//! Projection lag: from a message's acknowledgement until the inbox read model shows
//! it. One task polls for every sampled message at once, so the probe costs one query
//! per millisecond however many messages are sampled, on the same cores as what it
//! measures.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How often the read model is polled: the lag's resolution.
const POLL_EVERY: Duration = Duration::from_millis(1);
/// How long [`LagProbe::finish`] waits for the last sampled messages to show.
const FINISH_WITHIN: Duration = Duration::from_secs(30);

type Pending = Arc<Mutex<Vec<(Uuid, Instant)>>>;

pub struct LagProbe {
    finishing: CancellationToken,
    poller: JoinHandle<anyhow::Result<Vec<f64>>>,
}

/// The clients' handle on a [`LagProbe`].
#[derive(Clone)]
pub struct Watch {
    pending: Pending,
}

impl Watch {
    /// Times `message` from `acknowledged` until the read model shows it.
    pub fn message(&self, message: Uuid, acknowledged: Instant) {
        self.pending.lock().expect("lag probe lock").push((message, acknowledged));
    }
}

impl LagProbe {
    pub fn start(pool: PgPool) -> (Self, Watch) {
        let pending = Pending::default();
        let finishing = CancellationToken::new();
        let poller = tokio::spawn(poll(pool, pending.clone(), finishing.clone()));
        (Self { finishing, poller }, Watch { pending })
    }

    /// Waits until every watched message shows; returns the lags in milliseconds.
    pub async fn finish(self) -> anyhow::Result<Vec<f64>> {
        self.finishing.cancel();
        self.poller.await?
    }
}

async fn poll(pool: PgPool, pending: Pending, finishing: CancellationToken) -> anyhow::Result<Vec<f64>> {
    // One connection throughout: sqlx pings a pooled connection each time it goes back.
    let mut conn = pool.acquire().await?;
    let mut lags = Vec::new();
    let mut deadline = None;
    loop {
        let watched: Vec<Uuid> = pending.lock().expect("lag probe lock").iter().map(|(id, _)| *id).collect();
        if !watched.is_empty() {
            // Planned each time: a plan cached while the table was nearly empty would
            // go on scanning all of it as it grows.
            let shown: HashSet<Uuid> =
                sqlx::query_scalar("SELECT message_id FROM rm_messages WHERE message_id = ANY($1)")
                    .persistent(false)
                    .bind(&watched)
                    .fetch_all(&mut *conn)
                    .await?
                    .into_iter()
                    .collect();
            let seen_at = Instant::now();
            pending.lock().expect("lag probe lock").retain(|(id, acknowledged)| {
                let shows = shown.contains(id);
                if shows {
                    lags.push(seen_at.duration_since(*acknowledged).as_secs_f64() * 1000.0);
                }
                !shows
            });
        }
        if finishing.is_cancelled() {
            if pending.lock().expect("lag probe lock").is_empty() {
                return Ok(lags);
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + FINISH_WITHIN);
            if Instant::now() > deadline {
                bail!("sampled messages did not show in the inbox read model within {FINISH_WITHIN:?}");
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
