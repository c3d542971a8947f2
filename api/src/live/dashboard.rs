//! What may have changed on the live dashboards of this process's `liveMetricsUpdated`
//! subscribers: one reader per process, however many supervisors watch.
//!
//! Woken by the `live_metrics` projector's publications (here or in another process),
//! the reader asks once which accounts had conversation events in what the projector
//! committed since its last look, and broadcasts them; an availability change (the
//! `availability` projector's publication) may change any dashboard. Each subscriber
//! reads its own figures again only when its account is named. A subscriber that falls
//! behind the broadcast reads its figures again: a dashboard is a snapshot, so nothing
//! is lost by skipping to the latest.

use std::sync::Arc;
use std::time::Duration;

use projections::engine::{committed_through, Engine};
use projections::feed::FeedPosition;
use projections::{availability, live_metrics};
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Changes kept for subscribers that have not taken them yet.
const RETAINED: usize = 1024;
/// How often the reader reads the projector's checkpoint anyway (a publication lost
/// while the fan-out reconnected).
const IDLE_LOOK: Duration = Duration::from_secs(5);

/// What may have moved some dashboards' figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DashboardChange {
    /// These accounts' conversations changed.
    Accounts(Arc<Vec<Uuid>>),
    /// Some agent's availability changed.
    Availability,
}

impl DashboardChange {
    /// Whether the account's figures may have moved.
    pub fn concerns(&self, account: Uuid) -> bool {
        match self {
            DashboardChange::Accounts(accounts) => accounts.contains(&account),
            DashboardChange::Availability => true,
        }
    }
}

/// The per-process reader and its broadcast.
#[derive(Clone)]
pub struct DashboardChanges {
    pool: PgPool,
    engine: Engine,
    sender: broadcast::Sender<DashboardChange>,
}

impl DashboardChanges {
    pub fn new(pool: PgPool, engine: Engine) -> Self {
        Self { pool, engine, sender: broadcast::channel(RETAINED).0 }
    }

    /// Every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<DashboardChange> {
        self.sender.subscribe()
    }

    /// Reads and broadcasts until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut publications = self.engine.publisher().subscribe();
        let mut seen = loop {
            match committed_through(&self.pool, live_metrics::NAME).await {
                Ok(at) => break at,
                Err(error) => {
                    tracing::warn!(%error, "the dashboard changes cannot start; retrying");
                    tokio::select! { _ = tokio::time::sleep(IDLE_LOOK) => {}, _ = shutdown.cancelled() => return }
                }
            }
        };
        let mut published = seen;
        loop {
            let read_checkpoint = tokio::select! {
                heard = publications.recv() => match heard {
                    Ok(first) => {
                        let queued = std::iter::from_fn(|| publications.try_recv().ok());
                        let mut availability_changed = false;
                        for heard in std::iter::once(first).chain(queued) {
                            if heard.projector == live_metrics::NAME {
                                published = published.max(heard.through);
                            }
                            availability_changed |= heard.projector == availability::NAME;
                        }
                        if availability_changed {
                            let _ = self.sender.send(DashboardChange::Availability);
                        }
                        false
                    }
                    Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => return,
                },
                _ = tokio::time::sleep(IDLE_LOOK) => true,
                _ = shutdown.cancelled() => return,
            };
            if read_checkpoint {
                match committed_through(&self.pool, live_metrics::NAME).await {
                    Ok(at) => published = published.max(at),
                    Err(error) => tracing::warn!(%error, "the dashboard changes could not read the checkpoint"),
                }
            }
            if published <= seen {
                continue;
            }
            if self.sender.receiver_count() == 0 {
                seen = published;
                continue;
            }
            match accounts_changed(&self.pool, seen, published).await {
                Ok(accounts) => {
                    seen = published;
                    if !accounts.is_empty() {
                        let _ = self.sender.send(DashboardChange::Accounts(Arc::new(accounts)));
                    }
                }
                Err(error) => tracing::warn!(%error, "the dashboard changes could not read the feed"),
            }
        }
    }
}

/// The accounts with conversation events after `after` through `through`.
async fn accounts_changed(pool: &PgPool, after: FeedPosition, through: FeedPosition) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT DISTINCT account_id FROM events WHERE aggregate_type = 'conversation' AND account_id IS NOT NULL \
         AND (transaction_id, global_position) > ($1::text::xid8, $2) \
         AND (transaction_id, global_position) <= ($3::text::xid8, $4)",
    )
    .bind(after.transaction_id.to_string())
    .bind(after.global_position)
    .bind(through.transaction_id.to_string())
    .bind(through.global_position)
    .fetch_all(pool)
    .await
}
