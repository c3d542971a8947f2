//! New notifications as this process's `notificationCreated` subscribers see them:
//! one reader per process, however many users are subscribed.
//!
//! Woken by the notifications projector's publications (here or in another process),
//! the reader reads the in-app notifications the projector committed since its last
//! read, for every user at once, and broadcasts each; a subscriber keeps its own. So a
//! busy projector costs one query per commit per process, not one per subscriber. As
//! with the live feed, the broadcast keeps the last [`RETAINED`] notifications and a
//! subscriber further behind is told it lagged (and is closed), so memory stays bounded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use projections::engine::Engine;
use projections::notifications::{self, NotificationRow, Reached, PROJECTOR};
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// Notifications kept for subscribers that have not taken them yet.
pub const RETAINED: usize = 4096;
/// Notifications read per look.
const READ_BATCH: i64 = 500;
/// How often the reader reads the projector's checkpoint anyway (a publication lost
/// while the fan-out reconnected).
const IDLE_LOOK: Duration = Duration::from_secs(5);

/// The per-process reader and its broadcast.
#[derive(Clone)]
pub struct NotificationFeed {
    pool: PgPool,
    engine: Engine,
    sender: broadcast::Sender<Arc<NotificationRow>>,
    /// Every notification through this place has been broadcast (or passed while
    /// nobody listened); held while broadcasting, so a new subscriber misses nothing.
    sent_through: Arc<Mutex<Reached>>,
}

impl NotificationFeed {
    pub fn new(pool: PgPool, engine: Engine) -> Self {
        Self {
            pool,
            engine,
            sender: broadcast::channel(RETAINED).0,
            sent_through: Arc::new(Mutex::new(Reached::START)),
        }
    }

    /// Every notification committed after now, as it is broadcast.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<NotificationRow>> {
        let _through = self.sent_through.lock().expect("notification feed position");
        self.sender.subscribe()
    }

    /// Reads and broadcasts until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut publications = self.engine.publisher().subscribe();
        // From the projector's checkpoint: what came before is in the user's list.
        let mut published = loop {
            match notifications::projected_through(&self.pool).await {
                Ok(at) => break at,
                Err(error) => {
                    tracing::warn!(%error, "the notification feed cannot start; retrying");
                    tokio::select! { _ = tokio::time::sleep(IDLE_LOOK) => {}, _ = shutdown.cancelled() => return }
                }
            }
        };
        *self.sent_through.lock().expect("notification feed position") = Reached::through(published);
        loop {
            let read_checkpoint = tokio::select! {
                heard = publications.recv() => match heard {
                    Ok(first) => {
                        // With what queued meanwhile; the other projectors' change nothing here.
                        let mut mine = false;
                        let queued = std::iter::from_fn(|| publications.try_recv().ok());
                        for heard in std::iter::once(first).chain(queued) {
                            if heard.projector == PROJECTOR {
                                mine = true;
                                published = published.max(heard.through);
                            }
                        }
                        if !mine {
                            continue;
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
                match notifications::projected_through(&self.pool).await {
                    Ok(at) => published = published.max(at),
                    Err(error) => tracing::warn!(%error, "the notification feed could not read the checkpoint"),
                }
            }
            loop {
                match self.look(published).await {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(error) => {
                        tracing::warn!(error = format!("{error:#}"), "the notification feed could not read");
                        break;
                    }
                }
            }
        }
    }

    /// Broadcasts the notifications committed through `through`; says whether a full
    /// batch was read (there may be more).
    async fn look(&self, through: projections::feed::FeedPosition) -> anyhow::Result<bool> {
        let from = *self.sent_through.lock().expect("notification feed position");
        if Reached::through(through) <= from {
            return Ok(false);
        }
        if self.sender.receiver_count() == 0 {
            let mut sent = self.sent_through.lock().expect("notification feed position");
            *sent = (*sent).max(Reached::through(through));
            return Ok(false);
        }
        let rows = notifications::created_after(&self.pool, from, through, READ_BATCH).await?;
        let full = rows.len() as i64 == READ_BATCH;
        let reached = match rows.last() {
            Some(last) if full => Reached::at(last),
            _ => Reached::through(through),
        };
        let mut sent = self.sent_through.lock().expect("notification feed position");
        for row in rows {
            let _ = self.sender.send(Arc::new(row));
        }
        *sent = (*sent).max(reached);
        Ok(full)
    }
}
