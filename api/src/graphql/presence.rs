//! Who is here: agents' availability (chosen, and effective given their presence),
//! heartbeats, and `presenceChanged` pushes.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use async_graphql::{Context, InputObject, Object, Subscription};
use domain::values;
use futures_util::Stream;
use projections::availability;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::subscriber::Subscriber;
use super::types::{stored, Availability, AvailabilityStatus};
use super::{mutate, Acting};
use crate::error::{ApiError, Result};
use crate::state::AppState;

/// The read model availability is shown from.
const AVAILABILITY_VIEW: &[&str] = &["availability"];
/// How often a quiet `presenceChanged` looks anyway (a publication lost between
/// processes, a revoked credential).
const IDLE_LOOK: Duration = Duration::from_secs(2);

#[derive(InputObject)]
pub struct SetAvailabilityInput {
    pub status: AvailabilityStatus,
}

#[derive(Default)]
pub struct PresenceMutation;

#[Object]
impl PresenceMutation {
    /// Chooses the caller's availability (choosing counts as being here).
    async fn set_availability(&self, ctx: &Context<'_>, input: SetAvailabilityInput) -> Result<Availability> {
        mutate(ctx, move |Acting { principal, state, context }| async move {
            let agent = (principal.account_id, principal.user_id);
            state.presence.heartbeat(agent).await.map_err(ApiError::unavailable)?;
            let written =
                state.commands.choose_availability(&context, principal.user_id, input.status.into(), true).await?;
            state.settle(written, AVAILABILITY_VIEW).await;
            Availability::of_agent(&state, principal.account_id, principal.user_id).await
        })
        .await
    }

    /// The caller is here (for clients without a subscription open): without a
    /// socket or a heartbeat for about 20 s, an agent shows OFFLINE.
    async fn heartbeat(&self, ctx: &Context<'_>) -> Result<Availability> {
        mutate(ctx, move |Acting { principal, state, .. }| async move {
            let written = state
                .presence
                .heartbeat((principal.account_id, principal.user_id))
                .await
                .map_err(ApiError::unavailable)?;
            state.settle(written, AVAILABILITY_VIEW).await;
            Availability::of_agent(&state, principal.account_id, principal.user_id).await
        })
        .await
    }
}

/// A colleague's availability changed.
pub struct PresenceChange {
    user_id: Uuid,
    status: AvailabilityStatus,
}

#[Object]
impl PresenceChange {
    async fn agent(&self, ctx: &Context<'_>) -> Result<super::types::Agent> {
        super::types::Agent::load(ctx, self.user_id).await
    }
    async fn status(&self) -> AvailabilityStatus {
        self.status
    }
}

#[derive(Default)]
pub struct PresenceSubscription;

#[Subscription]
impl PresenceSubscription {
    /// Each change of a colleague's availability (as `Agent.availability` shows it).
    async fn presence_changed(&self, ctx: &Context<'_>) -> Result<impl Stream<Item = PresenceChange>> {
        let subscriber = Subscriber::of(ctx)?;
        let publications = subscriber.state.engine.publisher().subscribe();
        let account = subscriber.principal.account_id;
        let known = statuses(&subscriber.state, account).await?;
        let watch = Watch { subscriber, publications, known, pending: VecDeque::new() };
        Ok(futures_util::stream::unfold(
            watch,
            |mut watch| async move { watch.next().await.map(|change| (change, watch)) },
        ))
    }
}

/// The account's agents as last pushed, and the changes not pushed yet.
struct Watch {
    subscriber: Subscriber,
    publications: tokio::sync::broadcast::Receiver<projections::publication::Published>,
    known: HashMap<Uuid, AvailabilityStatus>,
    pending: VecDeque<PresenceChange>,
}

impl Watch {
    async fn next(&mut self) -> Option<PresenceChange> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                return Some(change);
            }
            let look = tokio::select! {
                heard = self.publications.recv() => match heard {
                    Ok(published) => published.projector == AVAILABILITY_VIEW[0],
                    Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => return None,
                },
                _ = tokio::time::sleep(IDLE_LOOK) => {
                    if !self.subscriber.still_allowed().await {
                        return None;
                    }
                    true
                }
            };
            if look {
                self.look().await;
            }
        }
    }

    /// Queues what changed since the last look.
    async fn look(&mut self) {
        let account = self.subscriber.principal.account_id;
        let now = match statuses(&self.subscriber.state, account).await {
            Ok(now) => now,
            Err(error) => {
                tracing::warn!(error = error.message, "could not read agents' availability");
                return;
            }
        };
        for (user, status) in &now {
            if self.known.get(user).unwrap_or(&AvailabilityStatus::Offline) != status {
                self.pending.push_back(PresenceChange { user_id: *user, status: *status });
            }
        }
        self.known = now;
    }
}

async fn statuses(state: &AppState, account: Uuid) -> Result<HashMap<Uuid, AvailabilityStatus>> {
    let rows = availability::of_account(&state.pool, account).await?;
    rows.into_iter().map(|row| Ok((row.user_id, stored::<values::AvailabilityStatus>(&row.status)?.into()))).collect()
}
