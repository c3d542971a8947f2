//! The notifications policy: a notification that goes out by e-mail gets one delivery
//! job, one that goes out by push one job per browser its recipient registered; each
//! keyed by the notification and the channel, so reacting again enqueues nothing more.
//!
//! Who is notified is the projector's decision (`projections::notifications`), not
//! repeated here: the policy waits until the projector has committed the batch, then
//! enqueues for the notifications the batch's events caused.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use async_trait::async_trait;
use projections::feed::FeedEvent;
use projections::feed::FeedPosition;
use projections::notifications::{projected_through, to_deliver, NOTIFYING_EVENTS, PROJECTOR};
use projections::policy::Policy;
use projections::publication::Publisher;
use sqlx::PgPool;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::delivery::{Channel, DeliveryJob};
use crate::jobs::{enqueue, Clock};

/// The policy's name (its checkpoint, and its actor `system:notifications`).
pub const POLICY: &str = "notifications";
/// How long a batch waits for the projector before it fails (and is retried).
const PROJECTOR_WAIT: Duration = Duration::from_secs(5);
/// How often a wait reads the projector's checkpoint anyway (a publication lost
/// while the fan-out reconnected).
const CHECKPOINT_LOOK: Duration = Duration::from_secs(1);

pub struct NotificationsPolicy {
    pool: PgPool,
    clock: Arc<dyn Clock>,
    /// Whether this deployment sends e-mail (`SMTP_URL` set).
    email: bool,
    /// Where the projector's commits are heard, whichever process makes them.
    publisher: Publisher,
}

impl NotificationsPolicy {
    pub fn new(pool: PgPool, clock: Arc<dyn Clock>, email: bool, publisher: Publisher) -> Self {
        Self { pool, clock, email, publisher }
    }

    /// Waits, briefly, until the projector has committed through `position`: told by
    /// its publications, with a look at its checkpoint now and then.
    async fn projected(&self, position: FeedPosition) -> anyhow::Result<()> {
        let mut publications = self.publisher.subscribe();
        let deadline = tokio::time::Instant::now() + PROJECTOR_WAIT;
        loop {
            if projected_through(&self.pool).await? >= position {
                return Ok(());
            }
            let look = tokio::time::Instant::now() + CHECKPOINT_LOOK;
            loop {
                tokio::select! {
                    heard = publications.recv() => match heard {
                        Ok(published) if published.projector == PROJECTOR && published.through >= position => {
                            return Ok(());
                        }
                        Ok(_) => continue,
                        Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => bail!("the publications ended"),
                    },
                    _ = tokio::time::sleep_until(look.min(deadline)) => break,
                }
            }
            if tokio::time::Instant::now() >= deadline && projected_through(&self.pool).await? < position {
                bail!("the notifications projector has not reached {position:?} yet");
            }
        }
    }
}

#[async_trait]
impl Policy for NotificationsPolicy {
    fn name(&self) -> &'static str {
        POLICY
    }

    fn consumes(&self) -> &'static [&'static str] {
        &["conversation"]
    }

    /// Deliveries read (and open) what they send when they send it.
    fn opens(&self) -> bool {
        false
    }

    async fn react(&self, events: &[FeedEvent]) -> anyhow::Result<()> {
        let sources: Vec<String> =
            events.iter().filter(|e| NOTIFYING_EVENTS.contains(&e.event_type.as_str())).map(FeedEvent::id).collect();
        let Some(last) = events.last() else { return Ok(()) };
        if sources.is_empty() {
            return Ok(());
        }
        self.projected(last.position).await?;
        let notifications = to_deliver(&self.pool, &sources).await.context("failed to read notifications")?;
        if notifications.is_empty() {
            return Ok(());
        }
        let users: Vec<Uuid> = notifications.iter().filter(|n| n.push).map(|n| n.user_id).collect();
        let browsers: Vec<(Uuid, Uuid, Uuid)> = sqlx::query_as(
            "SELECT subscription_id, account_id, user_id FROM push_subscriptions WHERE user_id = ANY($1) \
             ORDER BY created_at, subscription_id",
        )
        .bind(&users)
        .fetch_all(&self.pool)
        .await
        .context("failed to read push subscriptions")?;
        let mut tx = self.pool.begin().await.context("failed to begin")?;
        for notification in &notifications {
            let mut channels = Vec::new();
            if notification.email && self.email {
                channels.push(Channel::Email);
            }
            if notification.push {
                channels.extend(
                    browsers
                        .iter()
                        .filter(|(_, account, user)| {
                            *account == notification.account_id && *user == notification.user_id
                        })
                        .map(|(subscription_id, ..)| Channel::Push { subscription_id: *subscription_id }),
                );
            }
            for channel in channels {
                let job = DeliveryJob { notification_id: notification.notification_id, channel };
                enqueue(&mut *tx, &job.new_job(notification.account_id, self.clock.now())?)
                    .await
                    .context("failed to enqueue a notification delivery")?;
            }
        }
        tx.commit().await.context("failed to commit notification deliveries")?;
        Ok(())
    }
}
