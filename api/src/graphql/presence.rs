//! Who is here and what they are doing: agents' availability (chosen, and effective
//! given their presence), heartbeats, `presenceChanged`, and typing.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use async_graphql::{Context, InputObject, Object, Subscription, ID};
use commands::Written;
use domain::values;
use futures_util::Stream;
use projections::availability;
use projections::publication::Signal;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::subscriber::Subscriber;
use super::types::{stored, Agent, Availability, AvailabilityStatus};
use super::{mutate, parse_id, Acting};
use crate::error::{ApiError, Result};
use crate::state::AppState;

/// The read model availability is shown from.
const AVAILABILITY_VIEW: &[&str] = &[availability::NAME];
/// How often a quiet `presenceChanged` checks its credentials.
const IDLE_LOOK: Duration = Duration::from_secs(2);
/// Every so many quiet checks it reads the agents anyway (a publication lost between
/// processes): a read per subscriber every 30 s, not every 2.
const LOOKS_WHEN_IDLE: u32 = 15;

#[derive(InputObject)]
pub struct SetAvailabilityInput {
    pub status: AvailabilityStatus,
}

#[derive(InputObject)]
pub struct SetTypingInput {
    pub conversation_id: ID,
    pub on: bool,
}

/// Someone started or stopped typing in a conversation (never an event).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Typing {
    conversation_id: Uuid,
    /// Where the conversation is, to authorize each screen it is pushed to.
    inbox_id: Uuid,
    assignee_id: Option<Uuid>,
    user_id: Uuid,
    on: bool,
}

#[Object]
impl Typing {
    async fn conversation_id(&self) -> ID {
        ID(self.conversation_id.to_string())
    }
    async fn on(&self) -> bool {
        self.on
    }
    /// The agent typing.
    async fn agent(&self, ctx: &Context<'_>) -> Result<Agent> {
        Agent::load(ctx, self.user_id).await
    }
}

/// The kind of signal typing travels as between processes.
const TYPING: &str = "typing";

#[derive(Default)]
pub struct PresenceMutation;

#[Object]
impl PresenceMutation {
    /// Chooses the caller's availability (choosing counts as being here).
    async fn set_availability(&self, ctx: &Context<'_>, input: SetAvailabilityInput) -> Result<Availability> {
        mutate(ctx, move |Acting { principal, state, context }| async move {
            let agent = (principal.account_id, principal.user_id);
            let arrived = state.presence.heartbeat(agent).await.map_err(ApiError::unavailable)?;
            let chosen =
                state.commands.choose_availability(&context, principal.user_id, input.status.into(), true).await?;
            // The choice may record nothing (the arrival did, or nothing changed).
            state.settle(Written { position: chosen.position.max(arrived.position) }, AVAILABILITY_VIEW).await;
            Availability::of_agent(&state, principal.account_id, principal.user_id).await
        })
        .await
    }

    /// Tells the conversation's other screens that the caller started (`on`) or
    /// stopped typing; pushed as `typingChanged`, never stored.
    async fn set_typing(&self, ctx: &Context<'_>, input: SetTypingInput) -> Result<Typing> {
        let id = parse_id(&input.conversation_id, "conversation")?;
        mutate(ctx, move |Acting { principal, state, context }| async move {
            let conversation = state.commands.conversation(&context, id).await?;
            let inbox_id = conversation.inbox_id().ok_or_else(|| ApiError::not_found("conversation"))?.as_uuid();
            let assignee_id = conversation.assignee().map(|u| u.as_uuid());
            principal.require_conversation(inbox_id, assignee_id)?;
            let typing =
                Typing { conversation_id: id, inbox_id, assignee_id, user_id: principal.user_id, on: input.on };
            let body = serde_json::to_value(&typing).map_err(ApiError::internal)?;
            state.engine.publisher().signal(Signal { account_id: principal.account_id, kind: TYPING.into(), body });
            Ok(typing)
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
    /// Agents starting and stopping typing in the conversations the caller may see
    /// (or in one), the caller's own typing left out.
    async fn typing_changed(
        &self,
        ctx: &Context<'_>,
        conversation_id: Option<ID>,
    ) -> Result<impl Stream<Item = Typing>> {
        let only = conversation_id.as_ref().map(|id| parse_id(id, "conversation")).transpose()?;
        let subscriber = Subscriber::of(ctx)?;
        let signals = subscriber.state.engine.publisher().subscribe_signals();
        Ok(futures_util::stream::unfold((subscriber, signals), move |(mut subscriber, mut signals)| async move {
            loop {
                let signal = tokio::select! {
                    heard = signals.recv() => match heard {
                        Ok(signal) => signal,
                        // Typing is ephemeral: what was missed is gone.
                        Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => return None,
                    },
                    _ = tokio::time::sleep(IDLE_LOOK) => {
                        if !subscriber.still_allowed().await {
                            return None;
                        }
                        continue;
                    }
                };
                let principal = &subscriber.principal;
                if signal.kind != TYPING || signal.account_id != principal.account_id {
                    continue;
                }
                let Ok(typing) = serde_json::from_value::<Typing>(signal.body) else { continue };
                let wanted = only.is_none_or(|c| c == typing.conversation_id) && typing.user_id != principal.user_id;
                if wanted && principal.require_conversation(typing.inbox_id, typing.assignee_id).is_ok() {
                    return Some((typing, (subscriber, signals)));
                }
            }
        }))
    }

    /// Each change of a colleague's availability (as `Agent.availability` shows it).
    async fn presence_changed(&self, ctx: &Context<'_>) -> Result<impl Stream<Item = PresenceChange>> {
        let subscriber = Subscriber::of(ctx)?;
        let publications = subscriber.state.engine.publisher().subscribe();
        let account = subscriber.principal.account_id;
        let known = statuses(&subscriber.state, account).await?;
        let watch = Watch { subscriber, publications, known, pending: VecDeque::new(), idle: 0 };
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
    /// Quiet credential checks so far.
    idle: u32,
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
                    self.idle = self.idle.wrapping_add(1);
                    self.idle.is_multiple_of(LOOKS_WHEN_IDLE)
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
