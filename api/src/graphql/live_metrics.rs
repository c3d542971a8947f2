//! The live dashboard: a supervisor's figures (`liveMetrics`), and the same pushed
//! when they change (`liveMetricsUpdated`), read from the `live_metrics` counters.
//!
//! Who reads them: administrators, the whole account; an agent, the inboxes they are
//! a member of, provided they see every conversation there (the figures count them
//! all) or may read reports (`Action::ReadLiveMetrics`).
//!
//! A subscriber is woken by the process's reader of dashboard changes
//! (`crate::live::dashboard`) when the caller's account had conversation events in
//! what the projector committed (in any process), or an availability changed, and reads
//! the figures again at most every [`COALESCE`]; it pushes only figures that differ from
//! the last pushed (`longestWaitSeconds` aside: it follows from `oldestWaitingSince`).

use std::collections::HashMap;
use std::time::Duration;

use async_graphql::{Context, Object, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use domain::values;
use futures_util::Stream;
use projections::directory;
use projections::live_metrics::{self, Dashboard, Figures, Scope};
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;
use uuid::Uuid;

use super::live::IDLE_LOOK;
use super::subscriber::Subscriber;
use super::types::{stored, Agent, AvailabilityStatus, Inbox, Team};
use super::{parse_id, principal, state};
use crate::auth::Principal;
use crate::error::{ApiError, Result};
use crate::live::dashboard::DashboardChange;
use crate::policy::Action;

/// The shortest time between two pushes to one subscriber.
pub const COALESCE: Duration = Duration::from_millis(250);

#[derive(Default)]
pub struct LiveMetricsQuery;

#[Object]
impl LiveMetricsQuery {
    /// The live dashboard of the caller's inboxes (every inbox, for an administrator),
    /// narrowed to an inbox or a team.
    async fn live_metrics(&self, ctx: &Context<'_>, inbox_id: Option<ID>, team_id: Option<ID>) -> Result<LiveMetrics> {
        let (principal, state) = (principal(ctx)?, state(ctx)?);
        let narrowed = Narrowed::parse(inbox_id, team_id)?;
        narrowed.exists(&state.pool, principal.account_id).await?;
        let dashboard = live_metrics::dashboard(&state.pool, principal.account_id, &narrowed.scope(principal)?).await?;
        Ok(LiveMetrics { account_id: principal.account_id, dashboard })
    }
}

/// What the caller asked to narrow to.
#[derive(Clone, Copy)]
struct Narrowed {
    inbox: Option<Uuid>,
    team: Option<Uuid>,
}

impl Narrowed {
    fn parse(inbox_id: Option<ID>, team_id: Option<ID>) -> Result<Self> {
        Ok(Self {
            inbox: inbox_id.as_ref().map(|id| parse_id(id, "inbox")).transpose()?,
            team: team_id.as_ref().map(|id| parse_id(id, "team")).transpose()?,
        })
    }

    /// An inbox or team of another account, or none, is NOT_FOUND.
    async fn exists(&self, pool: &PgPool, account: Uuid) -> Result<()> {
        if let Some(inbox) = self.inbox {
            directory::inbox(pool, account, inbox).await?.ok_or_else(|| ApiError::not_found("inbox"))?;
        }
        if let Some(team) = self.team {
            if directory::team_names(pool, account, &[team]).await?.is_empty() {
                return Err(ApiError::not_found("team"));
            }
        }
        Ok(())
    }

    /// The part of the account the principal's figures cover, as they stand now.
    fn scope(&self, principal: &Principal) -> Result<Scope> {
        principal.require(Action::ReadLiveMetrics)?;
        let inboxes = match self.inbox {
            Some(inbox) => {
                principal.require_inbox(inbox)?;
                Some(vec![inbox])
            }
            None => principal.visibility().inboxes,
        };
        Ok(Scope { inboxes, team: self.team })
    }
}

pub struct LiveMetrics {
    account_id: Uuid,
    dashboard: Dashboard,
}

impl LiveMetrics {
    fn agents_with(&self, status: &str) -> i64 {
        self.dashboard.availability.values().filter(|a| a.in_scope && a.status == status).count() as i64
    }
}

/// The live figures of a dashboard, kept as counters as events happen.
#[Object]
impl LiveMetrics {
    /// Conversations with status OPEN.
    async fn open(&self) -> i64 {
        self.dashboard.totals.open
    }
    /// Open conversations not yet answered, or waiting for an answer since the
    /// contact's last message.
    async fn unattended(&self) -> i64 {
        self.dashboard.totals.unattended
    }
    /// Open conversations assigned to nobody.
    async fn unassigned(&self) -> i64 {
        self.dashboard.totals.unassigned
    }
    async fn pending(&self) -> i64 {
        self.dashboard.totals.pending
    }
    async fn snoozed(&self) -> i64 {
        self.dashboard.totals.snoozed
    }
    /// When the wait of the longest-waiting open conversation began; null when none
    /// waits for an answer.
    async fn oldest_waiting_since(&self) -> Option<DateTime<Utc>> {
        self.dashboard.oldest_waiting_since
    }
    /// Seconds from `oldestWaitingSince` to when this answer was made.
    async fn longest_wait_seconds(&self) -> Option<i64> {
        self.dashboard.oldest_waiting_since.map(|since| (Utc::now() - since).num_seconds().max(0))
    }
    /// Inboxes with open conversations.
    async fn by_inbox(&self, ctx: &Context<'_>) -> Result<Vec<InboxLiveMetrics>> {
        let rows = directory::inboxes(&state(ctx)?.pool, self.account_id).await?;
        let mut rows: HashMap<Uuid, _> = rows.into_iter().map(|row| (row.inbox_id, row)).collect();
        Ok(self
            .dashboard
            .by_inbox
            .iter()
            .filter_map(|(id, figures)| Some(InboxLiveMetrics::of(Inbox(rows.remove(id)?), figures)))
            .collect())
    }
    /// Teams with open conversations.
    async fn by_team(&self, ctx: &Context<'_>) -> Result<Vec<TeamLiveMetrics>> {
        let rows = directory::teams(&state(ctx)?.pool, self.account_id).await?;
        let mut rows: HashMap<Uuid, _> = rows.into_iter().map(|row| (row.team_id, row)).collect();
        Ok(self
            .dashboard
            .by_team
            .iter()
            .filter_map(|(id, figures)| Some(TeamLiveMetrics::of(Team(rows.remove(id)?), figures)))
            .collect())
    }
    /// Agents of the inboxes (and team) in view that are ONLINE now.
    async fn agents_online(&self) -> i64 {
        self.agents_with("online")
    }
    /// … BUSY now.
    async fn agents_busy(&self) -> i64 {
        self.agents_with("busy")
    }
    /// … OFFLINE now (chosen, or not present).
    async fn agents_offline(&self) -> i64 {
        self.agents_with("offline")
    }
    /// Agents with open conversations assigned to them, with their availability.
    async fn by_agent(&self, ctx: &Context<'_>) -> Result<Vec<AgentLiveMetrics>> {
        let rows = directory::agents(&state(ctx)?.pool, self.account_id).await?;
        let mut rows: HashMap<Uuid, _> = rows.into_iter().map(|row| (row.user_id, row)).collect();
        self.dashboard
            .by_agent
            .iter()
            .map(|(id, open)| {
                let status = self.dashboard.availability.get(id).map_or("offline", |a| a.status.as_str());
                Ok(AgentLiveMetrics {
                    agent: rows.remove(id).map_or_else(|| Agent::unknown(*id), Agent),
                    open: *open,
                    availability: stored::<values::AvailabilityStatus>(status)?.into(),
                })
            })
            .collect()
    }
}

/// An inbox's figures (as the totals').
#[derive(SimpleObject)]
pub struct InboxLiveMetrics {
    inbox: Inbox,
    open: i64,
    unattended: i64,
    unassigned: i64,
}

impl InboxLiveMetrics {
    fn of(inbox: Inbox, figures: &Figures) -> Self {
        Self { inbox, open: figures.open, unattended: figures.unattended, unassigned: figures.unassigned }
    }
}

/// A team's figures (as the totals').
#[derive(SimpleObject)]
pub struct TeamLiveMetrics {
    team: Team,
    open: i64,
    unattended: i64,
    unassigned: i64,
}

impl TeamLiveMetrics {
    fn of(team: Team, figures: &Figures) -> Self {
        Self { team, open: figures.open, unattended: figures.unattended, unassigned: figures.unassigned }
    }
}

/// An agent's open conversations, and availability.
#[derive(SimpleObject)]
pub struct AgentLiveMetrics {
    agent: Agent,
    open: i64,
    availability: AvailabilityStatus,
}

#[derive(Default)]
pub struct LiveMetricsSubscription;

#[Subscription]
impl LiveMetricsSubscription {
    /// `liveMetrics` with the same arguments, now and then whenever it changes (at
    /// most every 250 ms), whichever process wrote the change. It ends when the
    /// caller may no longer read it.
    async fn live_metrics_updated(
        &self,
        ctx: &Context<'_>,
        inbox_id: Option<ID>,
        team_id: Option<ID>,
    ) -> Result<impl Stream<Item = LiveMetrics>> {
        let subscriber = Subscriber::of(ctx)?;
        let narrowed = Narrowed::parse(inbox_id, team_id)?;
        narrowed.exists(&subscriber.state.pool, subscriber.principal.account_id).await?;
        // Refused now, in the answer to the subscribe.
        narrowed.scope(&subscriber.principal)?;
        let changes = subscriber.state.dashboard_changes.subscribe();
        let watcher = Watcher {
            changes,
            looked_at: Instant::now() - COALESCE,
            stale: true,
            scope: None,
            pushed: None,
            narrowed,
            subscriber,
        };
        Ok(futures_util::stream::unfold(watcher, |mut watcher| async move {
            watcher.next().await.map(|pushed| (pushed, watcher))
        }))
    }
}

/// One subscriber's dashboard.
struct Watcher {
    /// What may have moved some dashboards, from the process's reader.
    changes: broadcast::Receiver<DashboardChange>,
    looked_at: Instant,
    /// The figures may differ from those pushed: read them at the next look.
    stale: bool,
    /// The scope of the last read, and the figures last pushed.
    scope: Option<Scope>,
    pushed: Option<Dashboard>,
    narrowed: Narrowed,
    subscriber: Subscriber,
}

impl Watcher {
    /// The next figures that differ from the last pushed, or `None` when the
    /// subscription ends.
    async fn next(&mut self) -> Option<LiveMetrics> {
        loop {
            if !self.stale {
                self.wait().await?;
            }
            // Coalesced: what is published meanwhile is looked at together.
            tokio::time::sleep_until(self.looked_at + COALESCE).await;
            self.looked_at = Instant::now();
            loop {
                match self.changes.try_recv() {
                    Ok(more) => self.heard(&more),
                    Err(TryRecvError::Lagged(_)) => self.stale = true,
                    Err(_) => break,
                }
            }
            if !self.subscriber.still_allowed().await {
                return None;
            }
            // The caller may no longer read it (a role or membership changed).
            let scope = self.narrowed.scope(&self.subscriber.principal).ok()?;
            self.stale |= self.scope.as_ref() != Some(&scope);
            if !self.stale {
                continue;
            }
            let account = self.subscriber.principal.account_id;
            let dashboard = match live_metrics::dashboard(&self.subscriber.state.pool, account, &scope).await {
                Ok(dashboard) => dashboard,
                Err(error) => {
                    tracing::warn!(%error, "could not read the live metrics for a subscriber");
                    continue;
                }
            };
            self.stale = false;
            self.scope = Some(scope);
            if self.pushed.as_ref() == Some(&dashboard) {
                continue;
            }
            self.pushed = Some(dashboard.clone());
            return Some(LiveMetrics { account_id: account, dashboard });
        }
    }

    /// Waits for a change that may concern the caller's figures, or for the idle look
    /// (credentials).
    async fn wait(&mut self) -> Option<()> {
        tokio::select! {
            heard = self.changes.recv() => match heard {
                Ok(change) => self.heard(&change),
                // Missed some: read the figures again.
                Err(RecvError::Lagged(_)) => self.stale = true,
                Err(RecvError::Closed) => return None,
            },
            _ = tokio::time::sleep(IDLE_LOOK) => {}
        }
        Some(())
    }

    fn heard(&mut self, change: &DashboardChange) {
        self.stale |= change.concerns(self.subscriber.principal.account_id);
    }
}
