//! Projector `live_metrics`: the live figures of a supervisor's dashboard — open,
//! unattended, unassigned, pending and snoozed conversations, by inbox, team and
//! agent, and the oldest wait — kept as counters that each event moves, so a
//! dashboard reads them as they are instead of counting conversations per request.
//!
//! A conversation counts at its place (account, inbox, team, assignee) for what its
//! state is: open, unattended, pending or snoozed. An event that changes either moves
//! the conversation's count out of the old place and into the new one. Unattended: open,
//! and either never answered (no first public reply) or waiting for an answer since
//! the contact's last message.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::conversation::ConversationEvent as E;
use domain::values::Status;
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder, Transaction};
use uuid::Uuid;

use crate::engine::Projector;
use crate::feed::FeedEvent;

pub struct LiveMetrics;

/// The projector's name: its checkpoint's, and its publications'.
pub const NAME: &str = "live_metrics";

/// Where a conversation counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Place {
    account_id: Uuid,
    inbox_id: Uuid,
    team_id: Option<Uuid>,
    assignee_id: Option<Uuid>,
}

/// What a conversation adds at its place (or, negated, takes away).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    open: i32,
    unattended: i32,
    pending: i32,
    snoozed: i32,
}

impl Counts {
    fn add(&mut self, other: Counts, sign: i32) {
        self.open += sign * other.open;
        self.unattended += sign * other.unattended;
        self.pending += sign * other.pending;
        self.snoozed += sign * other.snoozed;
    }
}

/// A conversation as the projector keeps it (a row of `rm_live_conversations`).
#[derive(Debug, Clone, FromRow)]
struct Tracked {
    conversation_id: Uuid,
    account_id: Uuid,
    inbox_id: Uuid,
    team_id: Option<Uuid>,
    assignee_id: Option<Uuid>,
    status: String,
    replied: bool,
    waiting_since: Option<DateTime<Utc>>,
}

impl Tracked {
    fn started(id: Uuid, event: &E) -> Option<Self> {
        let E::ConversationStarted { account_id, inbox_id, status, at, .. } = event else { return None };
        Some(Self {
            conversation_id: id,
            account_id: account_id.as_uuid(),
            inbox_id: inbox_id.as_uuid(),
            team_id: None,
            assignee_id: None,
            status: status.as_str().into(),
            replied: false,
            waiting_since: Some(*at),
        })
    }

    fn place(&self) -> Place {
        Place {
            account_id: self.account_id,
            inbox_id: self.inbox_id,
            team_id: self.team_id,
            assignee_id: self.assignee_id,
        }
    }

    fn counts(&self) -> anyhow::Result<Counts> {
        let status: Status = self.status.parse().with_context(|| format!("conversation {}", self.conversation_id))?;
        let open = status == Status::Open;
        let unattended = open && (!self.replied || self.waiting_since.is_some());
        Ok(Counts {
            open: open.into(),
            unattended: unattended.into(),
            pending: (status == Status::Pending).into(),
            snoozed: (status == Status::Snoozed).into(),
        })
    }

    /// Copies the facts an event carries (the aggregate derived them), as the inbox
    /// list does for the same fields.
    fn apply(&mut self, event: E) {
        match event {
            E::MessageReceived { waiting_since, .. } => self.waiting_since = waiting_since,
            E::MessageSent { private, first_reply, .. } => {
                if !private {
                    self.waiting_since = None;
                }
                self.replied |= first_reply;
            }
            E::AssigneeChanged { to, .. } => self.assignee_id = to.map(|u| u.as_uuid()),
            E::TeamChanged { to, .. } => self.team_id = to.map(|t| t.as_uuid()),
            E::StatusChanged { to, .. } => {
                self.status = to.as_str().into();
                if to == Status::Resolved {
                    self.waiting_since = None;
                }
            }
            _ => {}
        }
    }
}

/// Conversation events that move no counter, left undecoded (the custom attributes
/// are sealed, and not opened here). An event type not known at all is decoded, and
/// stops the projector rather than be miscounted.
const UNCOUNTED: &[&str] = &["PriorityChanged", "LabelsChanged", "MuteChanged", "CustomAttributesChanged"];

#[async_trait]
impl Projector for LiveMetrics {
    fn name(&self) -> &'static str {
        NAME
    }

    fn consumes(&self) -> &'static [&'static str] {
        &["conversation"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_live_conversations", "rm_live_counts"]
    }

    /// Counts need no content.
    fn opens(&self, _event_type: &str) -> bool {
        false
    }

    /// Folds the batch into the conversations it touches (read once), then writes
    /// them and the counters' net changes: four statements per batch.
    async fn apply(&self, tx: &mut Transaction<'_, Postgres>, events: &[Cow<'_, FeedEvent>]) -> anyhow::Result<()> {
        let mut decoded = Vec::with_capacity(events.len());
        let counted =
            |e: &&Cow<'_, FeedEvent>| e.aggregate_type == "conversation" && !UNCOUNTED.contains(&e.event_type.as_str());
        for event in events.iter().filter(counted) {
            let id: Uuid = event.aggregate_id.parse().context("conversation id is not a uuid")?;
            decoded.push((id, event.decode::<E>()?));
        }
        if decoded.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = decoded.iter().map(|(id, _)| *id).collect();
        let mut tracked: HashMap<Uuid, Tracked> =
            sqlx::query_as::<_, Tracked>("SELECT * FROM rm_live_conversations WHERE conversation_id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut **tx)
                .await
                .context("failed to read live conversations")?
                .into_iter()
                .map(|t| (t.conversation_id, t))
                .collect();
        let mut moved: HashMap<Place, Counts> = HashMap::new();
        for (id, event) in decoded {
            match tracked.get_mut(&id) {
                Some(conversation) => {
                    moved.entry(conversation.place()).or_default().add(conversation.counts()?, -1);
                    conversation.apply(event);
                    moved.entry(conversation.place()).or_default().add(conversation.counts()?, 1);
                }
                None => {
                    let conversation = Tracked::started(id, &event)
                        .with_context(|| format!("conversation {id} has events before it was started"))?;
                    moved.entry(conversation.place()).or_default().add(conversation.counts()?, 1);
                    tracked.insert(id, conversation);
                }
            }
        }
        moved.retain(|_, counts| *counts != Counts::default());
        write_conversations(tx, tracked.values()).await?;
        write_counts(tx, &moved).await
    }
}

async fn write_conversations<'a>(
    tx: &mut Transaction<'_, Postgres>,
    rows: impl Iterator<Item = &'a Tracked>,
) -> anyhow::Result<()> {
    let rows: Vec<&Tracked> = rows.collect();
    macro_rules! column {
        ($field:ident) => {
            rows.iter().map(|r| r.$field.clone()).collect::<Vec<_>>()
        };
    }
    sqlx::query(
        "INSERT INTO rm_live_conversations (conversation_id, account_id, inbox_id, team_id, assignee_id, status, \
         replied, waiting_since) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::text[], $7::bool[], \
         $8::timestamptz[]) \
         ON CONFLICT (conversation_id) DO UPDATE SET team_id = EXCLUDED.team_id, assignee_id = EXCLUDED.assignee_id, \
         status = EXCLUDED.status, replied = EXCLUDED.replied, waiting_since = EXCLUDED.waiting_since",
    )
    .bind(column!(conversation_id))
    .bind(column!(account_id))
    .bind(column!(inbox_id))
    .bind(column!(team_id))
    .bind(column!(assignee_id))
    .bind(column!(status))
    .bind(column!(replied))
    .bind(column!(waiting_since))
    .execute(&mut **tx)
    .await
    .context("failed to write live conversations")?;
    Ok(())
}

/// Adds the net changes to the counters, creating the places new to them.
async fn write_counts(tx: &mut Transaction<'_, Postgres>, moved: &HashMap<Place, Counts>) -> anyhow::Result<()> {
    if moved.is_empty() {
        return Ok(());
    }
    let (places, counts): (Vec<&Place>, Vec<&Counts>) = moved.iter().unzip();
    sqlx::query(
        "INSERT INTO rm_live_counts AS c (account_id, inbox_id, team_id, assignee_id, open, unattended, pending, \
         snoozed) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::int[], $6::int[], $7::int[], \
         $8::int[]) \
         ON CONFLICT (account_id, inbox_id, team_id, assignee_id) DO UPDATE SET open = c.open + EXCLUDED.open, \
         unattended = c.unattended + EXCLUDED.unattended, pending = c.pending + EXCLUDED.pending, \
         snoozed = c.snoozed + EXCLUDED.snoozed",
    )
    .bind(places.iter().map(|p| p.account_id).collect::<Vec<_>>())
    .bind(places.iter().map(|p| p.inbox_id).collect::<Vec<_>>())
    .bind(places.iter().map(|p| p.team_id).collect::<Vec<_>>())
    .bind(places.iter().map(|p| p.assignee_id).collect::<Vec<_>>())
    .bind(counts.iter().map(|c| c.open).collect::<Vec<_>>())
    .bind(counts.iter().map(|c| c.unattended).collect::<Vec<_>>())
    .bind(counts.iter().map(|c| c.pending).collect::<Vec<_>>())
    .bind(counts.iter().map(|c| c.snoozed).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await
    .context("failed to move live counters")?;
    // A place left empty goes: the table holds what the conversations add up to now,
    // whatever batches brought them there (a rebuild's are larger).
    sqlx::query(
        "DELETE FROM rm_live_counts WHERE account_id = ANY($1) AND inbox_id = ANY($2) AND open = 0 \
         AND unattended = 0 AND pending = 0 AND snoozed = 0",
    )
    .bind(places.iter().map(|p| p.account_id).collect::<Vec<_>>())
    .bind(places.iter().map(|p| p.inbox_id).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await
    .context("failed to drop empty live counters")?;
    Ok(())
}

/// Which part of an account the figures cover.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Only these inboxes; `None`: every inbox.
    pub inboxes: Option<Vec<Uuid>>,
    /// Only this team's conversations.
    pub team: Option<Uuid>,
}

/// Counts of one part of the dashboard (the whole, an inbox, a team, an agent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    pub open: i64,
    pub unattended: i64,
    /// Open, assigned to nobody.
    pub unassigned: i64,
    pub pending: i64,
    pub snoozed: i64,
}

/// The dashboard's figures for a scope. Inboxes, teams and agents are listed (by id)
/// when they have open conversations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dashboard {
    pub totals: Figures,
    /// The longest-waiting open conversation's wait started then.
    pub oldest_waiting_since: Option<DateTime<Utc>>,
    pub by_inbox: BTreeMap<Uuid, Figures>,
    pub by_team: BTreeMap<Uuid, Figures>,
    /// Open conversations assigned to each agent.
    pub by_agent: BTreeMap<Uuid, i64>,
    /// The effective availability of the agents in scope (members of its inboxes and
    /// team; every agent for the whole account) and of those with open conversations.
    pub availability: BTreeMap<Uuid, AgentAvailability>,
}

/// An agent's availability on the dashboard (from the availability read model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentAvailability {
    pub status: String,
    /// Counted in `agentsOnline` and the like (an agent of the inboxes in view).
    pub in_scope: bool,
}

impl Figures {
    fn add(&mut self, other: Figures) {
        self.open += other.open;
        self.unattended += other.unattended;
        self.unassigned += other.unassigned;
        self.pending += other.pending;
        self.snoozed += other.snoozed;
    }
}

#[derive(FromRow)]
struct CountsRow {
    inbox_id: Uuid,
    team_id: Option<Uuid>,
    assignee_id: Option<Uuid>,
    open: i32,
    unattended: i32,
    pending: i32,
    snoozed: i32,
}

/// The figures of `scope` in `account`: a sum of its counters, and the oldest wait by
/// an index (one probe per inbox when narrowed to inboxes).
#[tracing::instrument(skip_all)]
pub async fn dashboard(pool: &PgPool, account: Uuid, scope: &Scope) -> sqlx::Result<Dashboard> {
    let mut query = QueryBuilder::<Postgres>::new(
        "SELECT inbox_id, team_id, assignee_id, open, unattended, pending, snoozed FROM rm_live_counts \
         WHERE account_id = ",
    );
    query.push_bind(account);
    if let Some(inboxes) = &scope.inboxes {
        query.push(" AND inbox_id = ANY(").push_bind(inboxes.clone()).push(")");
    }
    if let Some(team) = scope.team {
        query.push(" AND team_id = ").push_bind(team);
    }
    let rows: Vec<CountsRow> = query.build_query_as().fetch_all(pool).await?;
    let oldest_waiting_since = oldest_waiting(pool, account, scope).await?;
    let mut dashboard = Dashboard { oldest_waiting_since, ..Default::default() };
    for row in rows {
        let figures = Figures {
            open: row.open.into(),
            unattended: row.unattended.into(),
            unassigned: if row.assignee_id.is_none() { row.open.into() } else { 0 },
            pending: row.pending.into(),
            snoozed: row.snoozed.into(),
        };
        dashboard.totals.add(figures);
        // Without open conversations a place adds nothing to an inbox's, team's or
        // agent's figures (unattended and unassigned are open too).
        if row.open > 0 {
            dashboard.by_inbox.entry(row.inbox_id).or_default().add(figures);
            if let Some(team) = row.team_id {
                dashboard.by_team.entry(team).or_default().add(figures);
            }
            if let Some(agent) = row.assignee_id {
                *dashboard.by_agent.entry(agent).or_default() += figures.open;
            }
        }
    }
    dashboard.availability = availability(pool, account, scope, &dashboard.by_agent).await?;
    Ok(dashboard)
}

/// The availability of the agents in scope, and of the agents with open
/// conversations (never recorded: offline).
async fn availability(
    pool: &PgPool,
    account: Uuid,
    scope: &Scope,
    assigned: &BTreeMap<Uuid, i64>,
) -> sqlx::Result<BTreeMap<Uuid, AgentAvailability>> {
    let assigned: Vec<Uuid> = assigned.keys().copied().collect();
    // Every agent of the account is read (a few hundred at most), whether in scope a column.
    let mut query = QueryBuilder::<Postgres>::new("SELECT a.user_id, coalesce(v.status, 'offline') AS status, (true");
    if let Some(inboxes) = &scope.inboxes {
        query
            .push(
                " AND EXISTS (SELECT 1 FROM rm_inbox_members m WHERE m.account_id = a.account_id \
                   AND m.user_id = a.user_id AND m.inbox_id = ANY(",
            )
            .push_bind(inboxes.clone())
            .push("))");
    }
    if let Some(team) = scope.team {
        query
            .push(
                " AND EXISTS (SELECT 1 FROM rm_team_members t WHERE t.account_id = a.account_id \
                   AND t.user_id = a.user_id AND t.team_id = ",
            )
            .push_bind(team)
            .push(")");
    }
    query
        .push(
            ") AS in_scope FROM rm_agents a LEFT JOIN rm_agent_availability v ON v.user_id = a.user_id \
               WHERE a.account_id = ",
        )
        .push_bind(account);
    let rows: Vec<(Uuid, String, bool)> = query.build_query_as().fetch_all(pool).await?;
    Ok(rows
        .into_iter()
        .filter(|(user, _, in_scope)| *in_scope || assigned.contains(user))
        .map(|(user, status, in_scope)| (user, AgentAvailability { status, in_scope }))
        .collect())
}

async fn oldest_waiting(pool: &PgPool, account: Uuid, scope: &Scope) -> sqlx::Result<Option<DateTime<Utc>>> {
    const WAITING: &str = " AND status = 'open' AND waiting_since IS NOT NULL";
    let mut query = QueryBuilder::<Postgres>::new("");
    match &scope.inboxes {
        Some(inboxes) => {
            query
                .push("SELECT min(oldest) FROM unnest(")
                .push_bind(inboxes.clone())
                .push("::uuid[]) AS i(id) CROSS JOIN LATERAL (SELECT waiting_since AS oldest FROM rm_live_conversations WHERE inbox_id = i.id AND account_id = ")
                .push_bind(account)
                .push(WAITING);
            if let Some(team) = scope.team {
                query.push(" AND team_id = ").push_bind(team);
            }
            query.push(" ORDER BY waiting_since LIMIT 1) AS o");
        }
        None => {
            query.push("SELECT min(waiting_since) FROM rm_live_conversations WHERE account_id = ").push_bind(account);
            if let Some(team) = scope.team {
                query.push(" AND team_id = ").push_bind(team);
            }
            query.push(WAITING);
        }
    }
    query.build_query_scalar().fetch_one(pool).await
}
