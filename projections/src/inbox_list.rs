//! Projector `inbox_list`: one row per conversation, shaped for the agent's inbox, and
//! the filtered, sorted, keyset-paginated list query over it.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::Mutex;

use anyhow::Context;
use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64;
use base64::Engine;
use chrono::{DateTime, Utc};
use domain::conversation::ConversationEvent as E;
use domain::values::{Priority, Status};
use lru::LruCache;
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder, Transaction};
use uuid::Uuid;

use crate::engine::Projector;
use crate::feed::FeedEvent;

/// Rows kept in memory between batches, at most: the conversations active lately.
const REMEMBERED_ROWS: usize = 20_000;

/// The projector. It remembers the rows it wrote (it alone writes its table while it
/// holds the projector), so a batch reads only rows it has not seen.
pub struct InboxList {
    remembered: Mutex<LruCache<Uuid, Entry>>,
}

impl Default for InboxList {
    fn default() -> Self {
        let capacity = NonZeroUsize::new(REMEMBERED_ROWS).expect("a positive capacity");
        Self { remembered: Mutex::new(LruCache::new(capacity)) }
    }
}

/// One conversation's row as the projector keeps it (the stored columns).
#[derive(Debug, Clone, FromRow)]
struct Entry {
    conversation_id: Uuid,
    account_id: Uuid,
    display_id: i64,
    inbox_id: Uuid,
    contact_id: Uuid,
    status: String,
    priority: String,
    priority_rank: i16,
    assignee_id: Option<Uuid>,
    team_id: Option<Uuid>,
    labels: Vec<String>,
    snoozed_until: Option<DateTime<Utc>>,
    waiting_since: Option<DateTime<Utc>>,
    first_reply_at: Option<DateTime<Utc>>,
    muted: bool,
    custom_attributes: Option<serde_json::Value>,
    messages_count: i32,
    /// The contact's messages: what an agent has not read of them is unread for them.
    messages_received: i32,
    created_at: DateTime<Utc>,
    last_activity_at: DateTime<Utc>,
    /// When the contact last wrote, by the provider's clock where it says: a
    /// provider's reply window runs from it.
    last_received_at: Option<DateTime<Utc>>,
}

impl Entry {
    fn started(id: Uuid, event: E) -> Option<Self> {
        let E::ConversationStarted { account_id, inbox_id, contact_id, display_id, status, at, .. } = event else {
            return None;
        };
        Some(Self {
            conversation_id: id,
            account_id: account_id.as_uuid(),
            display_id,
            inbox_id: inbox_id.as_uuid(),
            contact_id: contact_id.as_uuid(),
            status: status.as_str().into(),
            priority: Priority::None.as_str().into(),
            priority_rank: Priority::None.rank(),
            assignee_id: None,
            team_id: None,
            labels: Vec::new(),
            snoozed_until: None,
            waiting_since: Some(at),
            first_reply_at: None,
            muted: false,
            custom_attributes: Some(serde_json::Value::Object(Default::default())),
            messages_count: 0,
            messages_received: 0,
            created_at: at,
            last_activity_at: at,
            last_received_at: None,
        })
    }

    /// Copies the facts an event carries into the row; decides nothing.
    fn apply(&mut self, event: E) {
        match event {
            E::ConversationStarted { .. } => {}
            E::MessageReceived { waiting_since, sent_at, at, .. } => {
                self.messages_count += 1;
                self.messages_received += 1;
                self.waiting_since = waiting_since;
                self.last_activity_at = at;
                self.last_received_at = Some(sent_at.unwrap_or(at));
            }
            E::MessageSent { private, first_reply, at, .. } => {
                self.messages_count += 1;
                self.last_activity_at = at;
                if !private {
                    self.waiting_since = None;
                }
                if first_reply {
                    self.first_reply_at = Some(at);
                }
            }
            E::AssigneeChanged { to, .. } => self.assignee_id = to.map(|u| u.as_uuid()),
            E::TeamChanged { to, .. } => self.team_id = to.map(|t| t.as_uuid()),
            E::StatusChanged { to, snoozed_until, at, .. } => {
                self.status = to.as_str().into();
                self.snoozed_until = snoozed_until;
                self.last_activity_at = at;
                if to == Status::Resolved {
                    self.waiting_since = None;
                }
            }
            E::PriorityChanged { to, .. } => {
                self.priority = to.as_str().into();
                self.priority_rank = to.rank();
            }
            E::LabelsChanged { added, removed, .. } => {
                self.labels.retain(|l| !removed.contains(l));
                self.labels.extend(added);
                self.labels.sort();
                self.labels.dedup();
            }
            E::MuteChanged { muted, .. } => self.muted = muted,
            E::CustomAttributesChanged { attributes, .. } => {
                self.custom_attributes = attributes.map(serde_json::Value::Object);
            }
            // Kept per reader, beside the row (`Reads`).
            E::ConversationRead { .. } => {}
            // A message's delivery shows on the message (`timeline`), not in the list.
            E::MessageDeliveryAttempted { .. }
            | E::MessageAcceptedByProvider { .. }
            | E::MessageStatusUpdated { .. }
            | E::MessageDeliveryFailed { .. } => {}
        }
    }
}

#[async_trait]
impl Projector for InboxList {
    fn name(&self) -> &'static str {
        "inbox_list"
    }

    fn consumes(&self) -> &'static [&'static str] {
        &["conversation", "contact"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_conversations", "rm_conversation_reads"]
    }

    fn forget(&self) {
        self.remembered.lock().expect("inbox list rows lock").clear();
    }

    /// Message content is not shown in the list; custom attributes are.
    fn opens(&self, event_type: &str) -> bool {
        event_type == "CustomAttributesChanged"
    }

    /// Folds the batch into the rows it touches (read once), then writes each row
    /// once: two statements per batch, whatever its size.
    async fn apply(&self, tx: &mut Transaction<'_, Postgres>, events: &[Cow<'_, FeedEvent>]) -> anyhow::Result<()> {
        let mut decoded = Vec::new();
        for event in events.iter().filter(|e| e.aggregate_type == "conversation") {
            let id: Uuid = event.aggregate_id.parse().context("conversation id is not a uuid")?;
            decoded.push((id, event.decode::<E>()?));
        }
        let erased: Vec<Uuid> = events
            .iter()
            .filter(|e| e.event_type == "ContactErased")
            .map(|e| e.aggregate_id.parse().context("contact id is not a uuid"))
            .collect::<anyhow::Result<_>>()?;
        if !decoded.is_empty() {
            self.fold(tx, decoded).await?;
        }
        if !erased.is_empty() {
            // The custom attributes were sealed with the shredded key.
            self.forget();
            sqlx::query("UPDATE rm_conversations SET custom_attributes = '{}' WHERE contact_id = ANY($1)")
                .bind(erased)
                .execute(&mut **tx)
                .await
                .context("failed to erase custom attributes")?;
        }
        Ok(())
    }
}

impl InboxList {
    async fn fold(&self, tx: &mut Transaction<'_, Postgres>, decoded: Vec<(Uuid, E)>) -> anyhow::Result<()> {
        let mut rows: HashMap<Uuid, Entry> = HashMap::new();
        let mut unseen = Vec::new();
        {
            let mut remembered = self.remembered.lock().expect("inbox list rows lock");
            let mut looked_up = HashSet::new();
            // Each conversation by its first event in the batch.
            for (id, event) in decoded.iter().filter(|(id, _)| looked_up.insert(*id)) {
                match remembered.get(id) {
                    Some(row) => {
                        rows.insert(*id, row.clone());
                    }
                    // A conversation started in this batch has no row yet.
                    None if !matches!(event, E::ConversationStarted { .. }) => unseen.push(*id),
                    None => {}
                }
            }
        }
        if !unseen.is_empty() {
            let stored: Vec<Entry> = sqlx::query_as("SELECT * FROM rm_conversations WHERE conversation_id = ANY($1)")
                .bind(&unseen)
                .fetch_all(&mut **tx)
                .await
                .context("failed to read inbox list rows")?;
            rows.extend(stored.into_iter().map(|e| (e.conversation_id, e)));
        }
        let mut reads = Reads::default();
        for (id, event) in decoded {
            if let E::ConversationRead { reader, messages_read, at } = &event {
                reads.push(id, reader.as_uuid(), *messages_read, *at);
            }
            match rows.get_mut(&id) {
                Some(row) => row.apply(event),
                None => {
                    let row = Entry::started(id, event)
                        .with_context(|| format!("conversation {id} has events before it was started"))?;
                    rows.insert(id, row);
                }
            }
        }
        let rows: Vec<Entry> = rows.into_values().collect();
        upsert(tx, &rows).await?;
        reads.upsert(tx).await?;
        // As written: the engine calls `forget` if the transaction does not commit.
        let mut remembered = self.remembered.lock().expect("inbox list rows lock");
        for row in rows {
            remembered.put(row.conversation_id, row);
        }
        Ok(())
    }
}

/// The batch's read markers, written in one statement.
#[derive(Default)]
struct Reads {
    conversation: Vec<Uuid>,
    reader: Vec<Uuid>,
    messages_read: Vec<i32>,
    at: Vec<DateTime<Utc>>,
}

impl Reads {
    fn push(&mut self, conversation: Uuid, reader: Uuid, messages_read: u32, at: DateTime<Utc>) {
        self.conversation.push(conversation);
        self.reader.push(reader);
        self.messages_read.push(i32::try_from(messages_read).unwrap_or(i32::MAX));
        self.at.push(at);
    }

    async fn upsert(self, tx: &mut Transaction<'_, Postgres>) -> anyhow::Result<()> {
        if self.conversation.is_empty() {
            return Ok(());
        }
        // A reader may read twice in one batch: the later mark wins (it reads more).
        sqlx::query(
            "INSERT INTO rm_conversation_reads (conversation_id, user_id, messages_read, read_at) \
             SELECT DISTINCT ON (c, u) c, u, n, at FROM UNNEST($1::uuid[], $2::uuid[], $3::int[], $4::timestamptz[]) \
             AS t(c, u, n, at) ORDER BY c, u, n DESC \
             ON CONFLICT (conversation_id, user_id) DO UPDATE SET \
             messages_read = GREATEST(rm_conversation_reads.messages_read, EXCLUDED.messages_read), \
             read_at = GREATEST(rm_conversation_reads.read_at, EXCLUDED.read_at)",
        )
        .bind(self.conversation)
        .bind(self.reader)
        .bind(self.messages_read)
        .bind(self.at)
        .execute(&mut **tx)
        .await
        .context("failed to write read markers")?;
        Ok(())
    }
}

/// Unread messages of a conversation for an agent: what the contact wrote since the
/// agent last read it.
pub async fn unread_count(pool: &PgPool, conversation: &ConversationRow, user: Uuid) -> sqlx::Result<i32> {
    let read: Option<i32> = sqlx::query_scalar(
        "SELECT messages_read FROM rm_conversation_reads WHERE conversation_id = $1 AND user_id = $2",
    )
    .bind(conversation.conversation_id)
    .bind(user)
    .fetch_optional(pool)
    .await?;
    Ok((conversation.messages_received - read.unwrap_or(0)).max(0))
}

/// Writes rows in one statement: each column as an array, unnested.
async fn upsert(tx: &mut Transaction<'_, Postgres>, rows: &[Entry]) -> anyhow::Result<()> {
    macro_rules! column {
        ($field:ident) => {
            rows.iter().map(|r| r.$field.clone()).collect::<Vec<_>>()
        };
    }
    // Labels travel as JSON arrays: a text[][] must be rectangular.
    let labels: Vec<serde_json::Value> = rows.iter().map(|r| serde_json::json!(r.labels)).collect();
    sqlx::query(
        "INSERT INTO rm_conversations (conversation_id, account_id, display_id, inbox_id, contact_id, status, priority, \
         priority_rank, assignee_id, team_id, labels, snoozed_until, waiting_since, first_reply_at, muted, \
         custom_attributes, messages_count, created_at, last_activity_at, messages_received, last_received_at) \
         SELECT c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, ARRAY(SELECT jsonb_array_elements_text(c11)), c12, c13, c14, \
         c15, c16, c17, c18, c19, c20, c21 FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::uuid[], $5::uuid[], \
         $6::text[], $7::text[], $8::smallint[], $9::uuid[], $10::uuid[], $11::jsonb[], $12::timestamptz[], \
         $13::timestamptz[], $14::timestamptz[], $15::bool[], $16::jsonb[], $17::int[], $18::timestamptz[], \
         $19::timestamptz[], $20::int[], $21::timestamptz[]) \
         AS t(c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16, c17, c18, c19, c20, c21) \
         ON CONFLICT (conversation_id) DO UPDATE SET status = EXCLUDED.status, priority = EXCLUDED.priority, \
         priority_rank = EXCLUDED.priority_rank, assignee_id = EXCLUDED.assignee_id, team_id = EXCLUDED.team_id, \
         labels = EXCLUDED.labels, snoozed_until = EXCLUDED.snoozed_until, waiting_since = EXCLUDED.waiting_since, \
         first_reply_at = EXCLUDED.first_reply_at, muted = EXCLUDED.muted, \
         custom_attributes = EXCLUDED.custom_attributes, messages_count = EXCLUDED.messages_count, \
         last_activity_at = EXCLUDED.last_activity_at, messages_received = EXCLUDED.messages_received, \
         last_received_at = EXCLUDED.last_received_at",
    )
    .bind(column!(conversation_id))
    .bind(column!(account_id))
    .bind(column!(display_id))
    .bind(column!(inbox_id))
    .bind(column!(contact_id))
    .bind(column!(status))
    .bind(column!(priority))
    .bind(column!(priority_rank))
    .bind(column!(assignee_id))
    .bind(column!(team_id))
    .bind(labels)
    .bind(column!(snoozed_until))
    .bind(column!(waiting_since))
    .bind(column!(first_reply_at))
    .bind(column!(muted))
    .bind(column!(custom_attributes))
    .bind(column!(messages_count))
    .bind(column!(created_at))
    .bind(column!(last_activity_at))
    .bind(column!(messages_received))
    .bind(column!(last_received_at))
    .execute(&mut **tx)
    .await
    .context("failed to write inbox list rows")?;
    Ok(())
}

/// Which assignee the list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssigneeFilter {
    All,
    Unassigned,
    Assigned,
    Agent(Uuid),
}

#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    pub status: Option<Status>,
    pub inbox_id: Option<Uuid>,
    pub assignee: Option<AssigneeFilter>,
    pub team_id: Option<Uuid>,
    pub label: Option<String>,
    pub priority: Option<Priority>,
    /// What the caller may see at all, whatever they asked for (the access policy's).
    pub visible: Visibility,
}

/// The part of an account's conversations a caller may see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Visibility {
    /// Only these inboxes' conversations; `None`: every inbox.
    pub inboxes: Option<Vec<Uuid>>,
    pub assignees: VisibleAssignees,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VisibleAssignees {
    #[default]
    Any,
    /// Conversations assigned to this agent.
    Own(Uuid),
    /// Conversations assigned to this agent, or to nobody.
    OwnOrUnassigned(Uuid),
    Nothing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConversationSort {
    #[default]
    LastActivity,
    CreatedAt,
    Priority,
    WaitingSince,
}

#[derive(Debug, Clone, FromRow)]
pub struct ConversationRow {
    pub conversation_id: Uuid,
    pub account_id: Uuid,
    pub display_id: i64,
    pub inbox_id: Uuid,
    pub contact_id: Uuid,
    pub contact_name: Option<String>,
    pub status: String,
    pub priority: String,
    pub priority_rank: i16,
    pub assignee_id: Option<Uuid>,
    pub team_id: Option<Uuid>,
    pub labels: Vec<String>,
    pub snoozed_until: Option<DateTime<Utc>>,
    pub waiting_since: Option<DateTime<Utc>>,
    pub first_reply_at: Option<DateTime<Utc>>,
    pub muted: bool,
    pub custom_attributes: Option<serde_json::Value>,
    pub messages_count: i32,
    pub messages_received: i32,
    pub created_at: DateTime<Utc>,
    pub last_activity_at: DateTime<Utc>,
    pub last_received_at: Option<DateTime<Utc>>,
}

const SELECT: &str = "SELECT c.*, ct.name AS contact_name FROM rm_conversations c \
                      LEFT JOIN rm_contacts ct ON ct.contact_id = c.contact_id WHERE c.account_id = ";

impl ConversationSort {
    /// Sort keys (expression, SQL type), all in one direction, the id breaking ties.
    fn keys(self) -> (&'static [(&'static str, &'static str)], &'static str) {
        match self {
            Self::LastActivity => (&[("c.last_activity_at", "timestamptz")], "<"),
            Self::CreatedAt => (&[("c.created_at", "timestamptz")], "<"),
            Self::Priority => (&[("c.priority_rank", "smallint"), ("c.last_activity_at", "timestamptz")], "<"),
            Self::WaitingSince => (&[("coalesce(c.waiting_since, 'infinity')", "timestamptz")], ">"),
        }
    }

    /// The opaque cursor of a row under this sort.
    pub fn cursor(self, row: &ConversationRow) -> String {
        let mut values: Vec<String> = match self {
            Self::LastActivity => vec![row.last_activity_at.to_rfc3339()],
            Self::CreatedAt => vec![row.created_at.to_rfc3339()],
            Self::Priority => vec![row.priority_rank.to_string(), row.last_activity_at.to_rfc3339()],
            Self::WaitingSince => vec![row.waiting_since.map_or("infinity".to_string(), |t| t.to_rfc3339())],
        };
        values.push(row.conversation_id.to_string());
        BASE64.encode(serde_json::to_vec(&values).expect("strings serialise"))
    }
}

/// A cursor that does not decode is the caller's mistake, not ours.
#[derive(Debug, thiserror::Error)]
#[error("the cursor is not valid for this list")]
pub struct BadCursor;

/// One page of the inbox list: up to `limit` rows after `after` (a cursor from
/// [`ConversationSort::cursor`]).
#[tracing::instrument(skip_all)]
pub async fn list(
    pool: &PgPool,
    account: Uuid,
    filter: &ConversationFilter,
    sort: ConversationSort,
    after: Option<&str>,
    limit: i64,
) -> anyhow::Result<Vec<ConversationRow>> {
    let (keys, op) = sort.keys();
    let mut query = QueryBuilder::<Postgres>::new(SELECT);
    query.push_bind(account);
    push_filter(&mut query, filter);
    if let Some(cursor) = after {
        let values: Vec<String> = BASE64
            .decode(cursor)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .filter(|v: &Vec<String>| v.len() == keys.len() + 1)
            .ok_or(BadCursor)?;
        let id: Uuid = values[keys.len()].parse().map_err(|_| BadCursor)?;
        query.push(" AND (");
        for (expr, _) in keys {
            query.push(*expr).push(", ");
        }
        query.push("c.conversation_id) ").push(op).push(" (");
        for ((_, ty), value) in keys.iter().zip(&values) {
            query.push_bind(value.clone()).push(format!("::{ty}, "));
        }
        query.push_bind(id).push(")");
    }
    let dir = if op == "<" { " DESC" } else { " ASC" };
    query.push(" ORDER BY ");
    for (expr, _) in keys {
        query.push(*expr).push(dir).push(", ");
    }
    query.push("c.conversation_id").push(dir).push(" LIMIT ").push_bind(limit);
    query.build_query_as().fetch_all(pool).await.map_err(|e| {
        if matches!(&e, sqlx::Error::Database(db) if db.code().as_deref() == Some("22007") || db.code().as_deref() == Some("22P02")) {
            anyhow::Error::new(BadCursor)
        } else {
            anyhow::Error::new(e).context("failed to list conversations")
        }
    })
}

fn push_filter(query: &mut QueryBuilder<'_, Postgres>, filter: &ConversationFilter) {
    if let Some(status) = filter.status {
        query.push(" AND c.status = ").push_bind(status.as_str());
    }
    if let Some(inbox) = filter.inbox_id {
        query.push(" AND c.inbox_id = ").push_bind(inbox);
    }
    match filter.assignee {
        None | Some(AssigneeFilter::All) => {}
        Some(AssigneeFilter::Unassigned) => {
            query.push(" AND c.assignee_id IS NULL");
        }
        Some(AssigneeFilter::Assigned) => {
            query.push(" AND c.assignee_id IS NOT NULL");
        }
        Some(AssigneeFilter::Agent(user)) => {
            query.push(" AND c.assignee_id = ").push_bind(user);
        }
    }
    if let Some(team) = filter.team_id {
        query.push(" AND c.team_id = ").push_bind(team);
    }
    if let Some(label) = &filter.label {
        // `labels <> '{}'` lets the planner use the index of labelled conversations.
        query.push(" AND c.labels <> '{}' AND c.labels @> ARRAY[").push_bind(label.clone()).push("]::text[]");
    }
    if let Some(priority) = filter.priority {
        query.push(" AND c.priority = ").push_bind(priority.as_str());
    }
    if let Some(inboxes) = &filter.visible.inboxes {
        query.push(" AND c.inbox_id = ANY(").push_bind(inboxes.clone()).push(")");
    }
    match filter.visible.assignees {
        VisibleAssignees::Any => {}
        VisibleAssignees::Own(user) => {
            query.push(" AND c.assignee_id = ").push_bind(user);
        }
        VisibleAssignees::OwnOrUnassigned(user) => {
            query.push(" AND (c.assignee_id IS NULL OR c.assignee_id = ").push_bind(user).push(")");
        }
        VisibleAssignees::Nothing => {
            query.push(" AND false");
        }
    }
}

/// Counts per assignee bucket under the same filter (the inbox tabs: mine, unassigned, all).
#[derive(Debug, Clone, Copy, Default)]
pub struct AssigneeCounts {
    pub mine: i64,
    pub unassigned: i64,
    pub assigned: i64,
    pub all: i64,
}

#[tracing::instrument(skip_all)]
pub async fn counts(
    pool: &PgPool,
    account: Uuid,
    me: Uuid,
    filter: &ConversationFilter,
) -> sqlx::Result<AssigneeCounts> {
    let filter = ConversationFilter { assignee: None, ..filter.clone() };
    let mut query = QueryBuilder::<Postgres>::new("SELECT count(*) FILTER (WHERE c.assignee_id = ");
    query.push_bind(me);
    query.push("), count(*) FILTER (WHERE c.assignee_id IS NULL), count(*) FILTER (WHERE c.assignee_id IS NOT NULL), count(*) FROM rm_conversations c WHERE c.account_id = ");
    query.push_bind(account);
    push_filter(&mut query, &filter);
    let (mine, unassigned, assigned, all): (i64, i64, i64, i64) = query.build_query_as().fetch_one(pool).await?;
    Ok(AssigneeCounts { mine, unassigned, assigned, all })
}

/// Several conversations of the account at once (those that exist), in no order.
#[tracing::instrument(skip_all)]
pub async fn get_many(pool: &PgPool, account: Uuid, conversations: &[Uuid]) -> sqlx::Result<Vec<ConversationRow>> {
    let mut query = QueryBuilder::<Postgres>::new(SELECT);
    query.push_bind(account).push(" AND c.conversation_id = ANY(").push_bind(conversations).push(")");
    query.build_query_as().persistent(crate::ONE_OFF_PLAN).fetch_all(pool).await
}

#[tracing::instrument(skip_all)]
pub async fn get(pool: &PgPool, account: Uuid, conversation: Uuid) -> sqlx::Result<Option<ConversationRow>> {
    let mut query = QueryBuilder::<Postgres>::new(SELECT);
    query.push_bind(account).push(" AND c.conversation_id = ").push_bind(conversation);
    query.build_query_as().fetch_optional(pool).await
}
