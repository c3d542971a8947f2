//! Queries: the inbox, timelines, the directory and the event log.

use async_graphql::connection::Connection;
use async_graphql::{Context, InputObject, Object, ID};
use projections::directory;
use projections::feed::{read_after, read_stream};
use projections::inbox_list::{self, AssigneeFilter, BadCursor};

use super::types::*;
use super::{
    authorize_audit, feed_cursor, parse_id, principal, state, time_cursor, visible_contact, LONG_PAGE, SHORT_PAGE,
};
use crate::auth::Principal;
use crate::error::{ApiError, Result};
use crate::policy::Action;

#[derive(Default)]
pub struct Query;

/// Inbox list filters; every field narrows the list.
#[derive(InputObject, Default)]
pub struct ConversationFilter {
    pub status: Option<ConversationStatus>,
    pub inbox_id: Option<ID>,
    /// A given agent's conversations.
    pub assignee_id: Option<ID>,
    /// Me, unassigned, assigned or all (ignored when assigneeId is given).
    pub assignee: Option<AssigneeScope>,
    pub team_id: Option<ID>,
    pub label: Option<String>,
    pub priority: Option<Priority>,
}

impl ConversationFilter {
    /// The filter as asked, narrowed to what the principal may see.
    fn parse(&self, principal: &Principal) -> Result<inbox_list::ConversationFilter> {
        let me = principal.user_id;
        let assignee = match (&self.assignee_id, self.assignee) {
            (Some(id), _) => Some(AssigneeFilter::Agent(parse_id(id, "agent")?)),
            (None, Some(AssigneeScope::Me)) => Some(AssigneeFilter::Agent(me)),
            (None, Some(AssigneeScope::Unassigned)) => Some(AssigneeFilter::Unassigned),
            (None, Some(AssigneeScope::Assigned)) => Some(AssigneeFilter::Assigned),
            (None, Some(AssigneeScope::All) | None) => None,
        };
        Ok(inbox_list::ConversationFilter {
            status: self.status.map(Into::into),
            inbox_id: self.inbox_id.as_ref().map(|id| parse_id(id, "inbox")).transpose()?,
            assignee,
            team_id: self.team_id.as_ref().map(|id| parse_id(id, "team")).transpose()?,
            label: self.label.clone(),
            priority: self.priority.map(Into::into),
            visible: principal.visibility(),
        })
    }
}

#[Object]
impl Query {
    /// The caller, as an agent of the account they act in.
    async fn me(&self, ctx: &Context<'_>) -> Result<Agent> {
        let principal = principal(ctx)?;
        let row = directory::agent(&state(ctx)?.pool, principal.account_id, principal.user_id).await?;
        Ok(Agent(row.ok_or_else(|| ApiError::not_found("agent"))?))
    }

    /// The inbox list: filtered, sorted, keyset-paginated.
    #[graphql(complexity = "SHORT_PAGE.cost(first, child_complexity)")]
    async fn conversations(
        &self,
        ctx: &Context<'_>,
        filter: Option<ConversationFilter>,
        sort_by: Option<ConversationSort>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Conversation>> {
        let principal = principal(ctx)?;
        let filter = filter.unwrap_or_default().parse(principal)?;
        let limit = SHORT_PAGE.size(first)?;
        let order: inbox_list::ConversationSort = sort_by.map(Into::into).unwrap_or_default();
        let rows =
            inbox_list::list(&state(ctx)?.pool, principal.account_id, &filter, order, after.as_deref(), limit + 1)
                .await
                .map_err(|e| match e.downcast_ref::<BadCursor>() {
                    Some(bad) => ApiError::bad_input(bad.to_string()),
                    None => ApiError::internal(e),
                })?;
        Ok(connection(rows, limit, |row| order.cursor(row), Conversation::loaded))
    }

    /// How many conversations each inbox tab holds under the filter.
    async fn conversation_counts(
        &self,
        ctx: &Context<'_>,
        filter: Option<ConversationFilter>,
    ) -> Result<ConversationCounts> {
        let principal = principal(ctx)?;
        let filter = filter.unwrap_or_default().parse(principal)?;
        let c = inbox_list::counts(&state(ctx)?.pool, principal.account_id, principal.user_id, &filter).await?;
        Ok(ConversationCounts { mine: c.mine, unassigned: c.unassigned, assigned: c.assigned, all: c.all })
    }

    async fn conversation(&self, ctx: &Context<'_>, id: ID) -> Result<Conversation> {
        let principal = principal(ctx)?;
        let id = parse_id(&id, "conversation")?;
        let row = inbox_list::get(&state(ctx)?.pool, principal.account_id, id).await?;
        let row = row.ok_or_else(|| ApiError::not_found("conversation"))?;
        principal.require_conversation(row.inbox_id, row.assignee_id)?;
        Ok(Conversation::loaded(row))
    }

    /// Every event of one conversation, in order, with its actor: the auditor's
    /// timeline, read from the log itself.
    async fn conversation_history(&self, ctx: &Context<'_>, id: ID) -> Result<Vec<Event>> {
        let (principal, state) = (principal(ctx)?, state(ctx)?);
        let id = parse_id(&id, "conversation")?;
        authorize_audit(principal, state, id).await?;
        let mut conn = state.pool.acquire().await?;
        let events = read_stream(&mut conn, &state.keyring, "conversation", &id.to_string())
            .await
            .map_err(ApiError::internal)?;
        if events.first().and_then(|e| e.account_id) != Some(principal.account_id) {
            return Err(ApiError::not_found("conversation"));
        }
        Ok(events.into_iter().map(Event).collect())
    }

    /// The account's event log in feed (commit) order, for analysts.
    #[graphql(complexity = "LONG_PAGE.cost(first, child_complexity)")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        first: Option<i32>,
    ) -> Result<Connection<String, Event>> {
        let principal = principal(ctx)?;
        principal.require(Action::ReadEventLog)?;
        let limit = LONG_PAGE.size(first)?;
        let after = feed_cursor(after)?;
        let state = state(ctx)?;
        let mut conn = state.pool.acquire().await?;
        let events = read_after(&mut conn, &state.keyring, Some(principal.account_id), after, limit + 1)
            .await
            .map_err(ApiError::internal)?;
        Ok(connection(events, limit, |e| e.position.to_string(), Event))
    }

    /// The inboxes the caller works in (every inbox, for an administrator).
    async fn inboxes(&self, ctx: &Context<'_>) -> Result<Vec<Inbox>> {
        let principal = principal(ctx)?;
        let rows = directory::inboxes(&state(ctx)?.pool, principal.account_id).await?;
        Ok(rows.into_iter().filter(|inbox| principal.require_inbox(inbox.inbox_id).is_ok()).map(Inbox).collect())
    }

    async fn inbox(&self, ctx: &Context<'_>, id: ID) -> Result<Inbox> {
        let principal = principal(ctx)?;
        let id = parse_id(&id, "inbox")?;
        let row = directory::inbox(&state(ctx)?.pool, principal.account_id, id).await?;
        let row = row.ok_or_else(|| ApiError::not_found("inbox"))?;
        principal.require_inbox(row.inbox_id)?;
        Ok(Inbox(row))
    }

    async fn agents(&self, ctx: &Context<'_>) -> Result<Vec<Agent>> {
        let principal = principal(ctx)?;
        principal.require(Action::ReadDirectory)?;
        let rows = directory::agents(&state(ctx)?.pool, principal.account_id).await?;
        Ok(rows.into_iter().map(Agent).collect())
    }

    async fn teams(&self, ctx: &Context<'_>) -> Result<Vec<Team>> {
        let principal = principal(ctx)?;
        principal.require(Action::ReadDirectory)?;
        let rows = directory::teams(&state(ctx)?.pool, principal.account_id).await?;
        Ok(rows.into_iter().map(Team).collect())
    }

    async fn labels(&self, ctx: &Context<'_>) -> Result<Vec<Label>> {
        let principal = principal(ctx)?;
        principal.require(Action::ReadDirectory)?;
        let rows = directory::labels(&state(ctx)?.pool, principal.account_id).await?;
        Ok(rows.into_iter().map(Label).collect())
    }

    async fn contact(&self, ctx: &Context<'_>, id: ID) -> Result<Contact> {
        let principal = principal(ctx)?;
        principal.require(Action::ReadContacts)?;
        let id = parse_id(&id, "contact")?;
        Ok(Contact(visible_contact(principal, &state(ctx)?.pool, id).await?))
    }

    /// Contacts, newest first.
    #[graphql(complexity = "SHORT_PAGE.cost(first, child_complexity)")]
    /// `search`: a name (every word must match a word of theirs, whole), an e-mail
    /// address or a phone number (whole); matched through a keyed index, never a copy
    /// in clear.
    async fn contacts(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        search: Option<String>,
    ) -> Result<Connection<String, Contact>> {
        let principal = principal(ctx)?;
        principal.require(Action::ReadContacts)?;
        let limit = SHORT_PAGE.size(first)?;
        let after = after.map(|c| time_cursor(&c)).transpose()?;
        let state = state(ctx)?;
        let terms = search
            .map(|text| {
                projections::contact_search::query(&state.keyring, &text)
                    .ok_or_else(|| ApiError::bad_input("search for a name, an e-mail address or a phone number"))
            })
            .transpose()?;
        let inboxes = principal.visibility().inboxes;
        let rows = directory::contacts(
            &state.pool,
            principal.account_id,
            inboxes.as_deref(),
            terms.as_deref(),
            after,
            limit + 1,
        )
        .await?;
        Ok(connection(rows, limit, |c| format!("{}|{}", c.created_at.to_rfc3339(), c.contact_id), Contact))
    }
}
