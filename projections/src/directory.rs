//! Projector `directory`: the account's people and places — agents, inboxes and their
//! members, teams and their members, labels, contacts — and the queries over them.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::account::AccountEvent;
use domain::channel::ChannelAddress;
use domain::contact::ContactEvent;
use domain::inbox::InboxEvent;
use domain::label::LabelEvent;
use domain::team::TeamEvent;
use sqlx::{FromRow, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::contact_search;
use crate::engine::Projector;
use crate::feed::FeedEvent;
use crate::keyring::Keyring;

pub struct Directory {
    /// Keys the contacts' search index.
    pub keyring: Arc<Keyring>,
}

#[async_trait]
impl Projector for Directory {
    fn name(&self) -> &'static str {
        "directory"
    }

    fn consumes(&self) -> &'static [&'static str] {
        &["account", "inbox", "team", "label", "contact"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "rm_accounts",
            "rm_agents",
            "rm_people",
            "rm_inboxes",
            "rm_inbox_members",
            "rm_teams",
            "rm_team_members",
            "rm_labels",
            "rm_contacts",
            "rm_contact_terms",
        ]
    }

    /// Contacts arrive with inbound traffic: the batch's new ones are written in one
    /// statement. Other directory changes are rare: one statement per event.
    async fn apply(&self, tx: &mut Transaction<'_, Postgres>, events: &[Cow<'_, FeedEvent>]) -> anyhow::Result<()> {
        let mut contacts = NewContacts::default();
        for event in events {
            if event.aggregate_type != "contact" {
                contacts.write(tx).await?;
                apply_one(tx, event).await?;
                continue;
            }
            match event.decode::<ContactEvent>()? {
                ContactEvent::ContactCreated { contact_id, account_id, name, email, phone, at, .. } => {
                    for term in
                        contact_search::terms_of(&self.keyring, name.as_deref(), email.as_deref(), phone.as_deref())
                    {
                        contacts.term_contact.push(contact_id.as_uuid());
                        contacts.term_account.push(account_id.as_uuid());
                        contacts.term.push(term);
                    }
                    contacts.contact_id.push(contact_id.as_uuid());
                    contacts.account_id.push(account_id.as_uuid());
                    contacts.name.push(name);
                    contacts.email.push(email);
                    contacts.phone.push(phone);
                    contacts.created_at.push(at);
                }
                ContactEvent::ContactUpdated { contact_id, name, email, phone, .. } => {
                    contacts.write(tx).await?;
                    let terms =
                        contact_search::terms_of(&self.keyring, name.as_deref(), email.as_deref(), phone.as_deref());
                    // The old terms go first: a term kept would collide in one statement.
                    sqlx::query("DELETE FROM rm_contact_terms WHERE contact_id = $1")
                        .bind(contact_id.as_uuid())
                        .execute(&mut **tx)
                        .await?;
                    sqlx::query(
                        "WITH terms AS (INSERT INTO rm_contact_terms (contact_id, account_id, term) \
                                        SELECT $1, account_id, unnest($5::text[]) FROM rm_contacts WHERE contact_id = $1) \
                         UPDATE rm_contacts SET name = $2, email = $3, phone = $4 WHERE contact_id = $1",
                    )
                    .bind(contact_id.as_uuid())
                    .bind(name)
                    .bind(email)
                    .bind(phone)
                    .bind(terms)
                    .execute(&mut **tx)
                    .await?;
                }
                ContactEvent::ContactErased { .. } => {
                    contacts.write(tx).await?;
                    sqlx::query(
                        "WITH terms AS (DELETE FROM rm_contact_terms WHERE contact_id = $1) \
                         UPDATE rm_contacts SET name = NULL, email = NULL, phone = NULL WHERE contact_id = $1",
                    )
                    .bind(event.aggregate_id.parse::<Uuid>()?)
                    .execute(&mut **tx)
                    .await?;
                }
            }
        }
        contacts.write(tx).await
    }
}

/// Contacts created in a batch, column by column, until written.
#[derive(Default)]
struct NewContacts {
    contact_id: Vec<Uuid>,
    account_id: Vec<Uuid>,
    name: Vec<Option<String>>,
    email: Vec<Option<String>>,
    phone: Vec<Option<String>>,
    created_at: Vec<DateTime<Utc>>,
    term_contact: Vec<Uuid>,
    term_account: Vec<Uuid>,
    term: Vec<String>,
}

impl NewContacts {
    async fn write(&mut self, tx: &mut Transaction<'_, Postgres>) -> anyhow::Result<()> {
        if self.contact_id.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "WITH terms AS (INSERT INTO rm_contact_terms (contact_id, account_id, term) \
                            SELECT * FROM UNNEST($7::uuid[], $8::uuid[], $9::text[])) \
             INSERT INTO rm_contacts (contact_id, account_id, name, email, phone, created_at) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])",
        )
        .bind(&self.contact_id)
        .bind(&self.account_id)
        .bind(&self.name)
        .bind(&self.email)
        .bind(&self.phone)
        .bind(&self.created_at)
        .bind(&self.term_contact)
        .bind(&self.term_account)
        .bind(&self.term)
        .execute(&mut **tx)
        .await?;
        *self = Self::default();
        Ok(())
    }
}

async fn apply_one(tx: &mut Transaction<'_, Postgres>, event: &FeedEvent) -> anyhow::Result<()> {
    let id = || event.aggregate_id.parse::<Uuid>();
    match event.aggregate_type.as_str() {
        "account" => match event.decode::<AccountEvent>()? {
            AccountEvent::AccountCreated { name, at } => {
                sqlx::query("INSERT INTO rm_accounts (account_id, name, created_at) VALUES ($1, $2, $3)")
                    .bind(id()?)
                    .bind(name)
                    .bind(at)
                    .execute(&mut **tx)
                    .await?;
            }
            // Replayed after the member was erased, name and e-mail open as `None`;
            // the member left before that, so the row goes with `MemberRemoved`.
            AccountEvent::MemberAdded { user_id, name, email, role, custom_role, at, .. } => {
                sqlx::query(
                    "WITH person AS (INSERT INTO rm_people (account_id, user_id, name) \
                                     SELECT $1, $2, $3 WHERE $3 IS NOT NULL \
                                     ON CONFLICT (account_id, user_id) DO UPDATE SET name = EXCLUDED.name) \
                     INSERT INTO rm_agents (account_id, user_id, name, email, role, custom_role_id, created_at) \
                     VALUES ($1, $2, coalesce($3, ''), coalesce($4, ''), $5, $6, $7)",
                )
                .bind(id()?)
                .bind(user_id.as_uuid())
                .bind(name)
                .bind(email)
                .bind(role.as_str())
                .bind(custom_role.map(|r| r.as_uuid()))
                .bind(at)
                .execute(&mut **tx)
                .await?;
            }
            AccountEvent::MemberRoleChanged { user_id, role, custom_role, .. } => {
                sqlx::query(
                    "UPDATE rm_agents SET role = $3, custom_role_id = $4 WHERE account_id = $1 AND user_id = $2",
                )
                .bind(id()?)
                .bind(user_id.as_uuid())
                .bind(role.as_str())
                .bind(custom_role.map(|r| r.as_uuid()))
                .execute(&mut **tx)
                .await?;
            }
            AccountEvent::MemberRemoved { user_id, .. } => {
                sqlx::query(
                    "WITH inboxes AS (DELETE FROM rm_inbox_members WHERE account_id = $1 AND user_id = $2), \
                          teams AS (DELETE FROM rm_team_members WHERE account_id = $1 AND user_id = $2) \
                     DELETE FROM rm_agents WHERE account_id = $1 AND user_id = $2",
                )
                .bind(id()?)
                .bind(user_id.as_uuid())
                .execute(&mut **tx)
                .await?;
            }
            AccountEvent::MemberErased { user_id, .. } => {
                sqlx::query("DELETE FROM rm_people WHERE account_id = $1 AND user_id = $2")
                    .bind(id()?)
                    .bind(user_id.as_uuid())
                    .execute(&mut **tx)
                    .await?;
            }
            // Custom roles are listed from their own table, written with the event.
            // Not an agent of the account until accepted (then `MemberAdded`).
            AccountEvent::CustomRoleCreated { .. } | AccountEvent::MemberInvited { .. } => {}
        },
        "inbox" => match event.decode::<InboxEvent>()? {
            InboxEvent::InboxCreated { account_id, name, channel, at } => {
                sqlx::query(
                        "INSERT INTO rm_inboxes (inbox_id, account_id, name, channel, created_at) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(id()?)
                    .bind(account_id.as_uuid())
                    .bind(name)
                    .bind(channel.as_str())
                    .bind(at)
                    .execute(&mut **tx)
                    .await?;
            }
            InboxEvent::InboxMemberAdded { account_id, user_id, .. } => {
                sqlx::query("INSERT INTO rm_inbox_members (inbox_id, user_id, account_id) VALUES ($1, $2, $3)")
                    .bind(id()?)
                    .bind(user_id.as_uuid())
                    .bind(account_id.as_uuid())
                    .execute(&mut **tx)
                    .await?;
            }
            InboxEvent::InboxRenamed { name, .. } => {
                sqlx::query("UPDATE rm_inboxes SET name = $2 WHERE inbox_id = $1")
                    .bind(id()?)
                    .bind(name)
                    .execute(&mut **tx)
                    .await?;
            }
            InboxEvent::InboxChannelConfigured { address, secrets_changed, .. } => {
                let changed: Vec<&str> = secrets_changed.iter().map(|s| s.as_str()).collect();
                sqlx::query(
                    "UPDATE rm_inboxes SET address = $2, secrets_set = \
                     ARRAY(SELECT DISTINCT s FROM unnest(secrets_set || $3::text[]) s ORDER BY s) \
                     WHERE inbox_id = $1",
                )
                .bind(id()?)
                .bind(sqlx::types::Json(address))
                .bind(changed)
                .execute(&mut **tx)
                .await?;
            }
            InboxEvent::InboxMemberRemoved { user_id, .. } => {
                sqlx::query("DELETE FROM rm_inbox_members WHERE inbox_id = $1 AND user_id = $2")
                    .bind(id()?)
                    .bind(user_id.as_uuid())
                    .execute(&mut **tx)
                    .await?;
            }
        },
        "team" => match event.decode::<TeamEvent>()? {
            TeamEvent::TeamCreated { account_id, name, at } => {
                sqlx::query("INSERT INTO rm_teams (team_id, account_id, name, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(id()?)
                    .bind(account_id.as_uuid())
                    .bind(name)
                    .bind(at)
                    .execute(&mut **tx)
                    .await?;
            }
            TeamEvent::TeamMemberAdded { account_id, user_id, .. } => {
                sqlx::query("INSERT INTO rm_team_members (team_id, user_id, account_id) VALUES ($1, $2, $3)")
                    .bind(id()?)
                    .bind(user_id.as_uuid())
                    .bind(account_id.as_uuid())
                    .execute(&mut **tx)
                    .await?;
            }
            TeamEvent::TeamMemberRemoved { user_id, .. } => {
                sqlx::query("DELETE FROM rm_team_members WHERE team_id = $1 AND user_id = $2")
                    .bind(id()?)
                    .bind(user_id.as_uuid())
                    .execute(&mut **tx)
                    .await?;
            }
            TeamEvent::TeamDeleted { .. } => {
                sqlx::query("WITH members AS (DELETE FROM rm_team_members WHERE team_id = $1) DELETE FROM rm_teams WHERE team_id = $1")
                    .bind(id()?)
                    .execute(&mut **tx)
                    .await?;
            }
        },
        "label" => match event.decode::<LabelEvent>()? {
            LabelEvent::LabelCreated { account_id, title, color, .. } => {
                sqlx::query("INSERT INTO rm_labels (label_id, account_id, title, color) VALUES ($1, $2, $3, $4)")
                    .bind(id()?)
                    .bind(account_id.as_uuid())
                    .bind(title)
                    .bind(color)
                    .execute(&mut **tx)
                    .await?;
            }
            LabelEvent::LabelDeleted { .. } => {
                sqlx::query("DELETE FROM rm_labels WHERE label_id = $1").bind(id()?).execute(&mut **tx).await?;
            }
        },
        _ => {}
    }
    Ok(())
}

#[derive(Debug, Clone, FromRow)]
pub struct InboxRow {
    pub inbox_id: Uuid,
    pub account_id: Uuid,
    pub name: String,
    pub channel: String,
    pub created_at: DateTime<Utc>,
    /// A provider channel's address.
    pub address: Option<sqlx::types::Json<ChannelAddress>>,
    /// The names of the channel's secrets that are set (never their values).
    pub secrets_set: Vec<String>,
}

#[derive(Debug, Clone, FromRow)]
pub struct AgentRow {
    pub user_id: Uuid,
    pub name: String,
    pub email: String,
    pub role: String,
}

#[derive(Debug, Clone, FromRow)]
pub struct TeamRow {
    pub team_id: Uuid,
    pub account_id: Uuid,
    pub name: String,
}

#[derive(Debug, Clone, FromRow)]
pub struct LabelRow {
    pub label_id: Uuid,
    pub title: String,
    pub color: String,
}

#[derive(Debug, Clone, FromRow)]
pub struct ContactRow {
    pub contact_id: Uuid,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[tracing::instrument(skip_all)]
pub async fn inboxes(pool: &PgPool, account: Uuid) -> sqlx::Result<Vec<InboxRow>> {
    sqlx::query_as("SELECT * FROM rm_inboxes WHERE account_id = $1 ORDER BY created_at, inbox_id")
        .bind(account)
        .fetch_all(pool)
        .await
}

#[tracing::instrument(skip_all)]
pub async fn inbox(pool: &PgPool, account: Uuid, inbox: Uuid) -> sqlx::Result<Option<InboxRow>> {
    sqlx::query_as("SELECT * FROM rm_inboxes WHERE account_id = $1 AND inbox_id = $2")
        .bind(account)
        .bind(inbox)
        .fetch_optional(pool)
        .await
}

/// A group of agents: an inbox's members or a team's.
#[derive(Debug, Clone, Copy)]
pub enum Group {
    Inbox(Uuid),
    Team(Uuid),
}

/// The names, in the account, of the people activity lines mention (current
/// members and former ones not erased).
#[tracing::instrument(skip_all)]
pub async fn people(pool: &PgPool, account: Uuid, users: &[Uuid]) -> sqlx::Result<Vec<(Uuid, String)>> {
    sqlx::query_as("SELECT user_id, name FROM rm_people WHERE account_id = $1 AND user_id = ANY($2)")
        .bind(account)
        .bind(users)
        .fetch_all(pool)
        .await
}

/// The names of teams of the account.
#[tracing::instrument(skip_all)]
pub async fn team_names(pool: &PgPool, account: Uuid, teams: &[Uuid]) -> sqlx::Result<Vec<(Uuid, String)>> {
    sqlx::query_as("SELECT team_id, name FROM rm_teams WHERE account_id = $1 AND team_id = ANY($2)")
        .bind(account)
        .bind(teams)
        .fetch_all(pool)
        .await
}

/// The agents of an inbox or a team, by name.
#[tracing::instrument(skip_all)]
pub async fn members(pool: &PgPool, account: Uuid, group: Group) -> sqlx::Result<Vec<AgentRow>> {
    let (table, column, id) = match group {
        Group::Inbox(id) => ("rm_inbox_members", "inbox_id", id),
        Group::Team(id) => ("rm_team_members", "team_id", id),
    };
    sqlx::query_as(&format!(
        "SELECT a.user_id, a.name, a.email, a.role FROM {table} m \
         JOIN rm_agents a ON a.account_id = m.account_id AND a.user_id = m.user_id \
         WHERE m.account_id = $1 AND m.{column} = $2 ORDER BY a.name, a.user_id"
    ))
    .bind(account)
    .bind(id)
    .fetch_all(pool)
    .await
}

#[tracing::instrument(skip_all)]
pub async fn agents(pool: &PgPool, account: Uuid) -> sqlx::Result<Vec<AgentRow>> {
    sqlx::query_as("SELECT user_id, name, email, role FROM rm_agents WHERE account_id = $1 ORDER BY name, user_id")
        .bind(account)
        .fetch_all(pool)
        .await
}

#[tracing::instrument(skip_all)]
pub async fn agent(pool: &PgPool, account: Uuid, user: Uuid) -> sqlx::Result<Option<AgentRow>> {
    sqlx::query_as("SELECT user_id, name, email, role FROM rm_agents WHERE account_id = $1 AND user_id = $2")
        .bind(account)
        .bind(user)
        .fetch_optional(pool)
        .await
}

#[tracing::instrument(skip_all)]
pub async fn teams(pool: &PgPool, account: Uuid) -> sqlx::Result<Vec<TeamRow>> {
    sqlx::query_as("SELECT team_id, account_id, name FROM rm_teams WHERE account_id = $1 ORDER BY name, team_id")
        .bind(account)
        .fetch_all(pool)
        .await
}

#[tracing::instrument(skip_all)]
pub async fn labels(pool: &PgPool, account: Uuid) -> sqlx::Result<Vec<LabelRow>> {
    sqlx::query_as("SELECT label_id, title, color FROM rm_labels WHERE account_id = $1 ORDER BY title")
        .bind(account)
        .fetch_all(pool)
        .await
}

#[tracing::instrument(skip_all)]
/// A contact; with `inboxes`, only if they wrote to one of them.
pub async fn contact(
    pool: &PgPool,
    account: Uuid,
    contact: Uuid,
    inboxes: Option<&[Uuid]>,
) -> sqlx::Result<Option<ContactRow>> {
    sqlx::query_as(&format!(
        "SELECT contact_id, name, email, phone, created_at FROM rm_contacts k WHERE account_id = $1 AND contact_id = $2 \
         AND {IN_INBOXES}"
    ))
    .bind(account)
    .bind(contact)
    .bind(inboxes)
    .fetch_optional(pool)
    .await
}

/// Contacts seen in one of the inboxes bound as `$3` (all when null): agents see the
/// customers of the inboxes they work in.
const IN_INBOXES: &str = "($3::uuid[] IS NULL OR EXISTS (SELECT 1 FROM rm_conversations c \
     WHERE c.contact_id = k.contact_id AND c.inbox_id = ANY($3)))";

/// Contacts newest first, keyset-paginated on (created_at, id); fetches `limit` rows.
#[tracing::instrument(skip_all)]
/// Contacts newest first; with `terms` (see [`contact_search::query`]), only those
/// having every one of them.
pub async fn contacts(
    pool: &PgPool,
    account: Uuid,
    inboxes: Option<&[Uuid]>,
    terms: Option<&[String]>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<ContactRow>> {
    sqlx::query_as(&format!(
        "SELECT contact_id, name, email, phone, created_at FROM rm_contacts k WHERE account_id = $1 \
         AND {IN_INBOXES} AND ($4::timestamptz IS NULL OR (created_at, contact_id) < ($4, $5)) \
         AND ($6::text[] IS NULL OR (SELECT count(*) FROM rm_contact_terms t WHERE t.account_id = $1 \
              AND t.contact_id = k.contact_id AND t.term = ANY($6)) = cardinality($6)) \
         ORDER BY created_at DESC, contact_id DESC LIMIT $2"
    ))
    .bind(account)
    .bind(limit)
    .bind(inboxes)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(terms)
    .fetch_all(pool)
    .await
}
