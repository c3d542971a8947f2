//! The GraphQL API: schema, and helpers every resolver uses.

use async_graphql::{Context, Schema, ID};
use uuid::Uuid;

use crate::auth::{Auth, Principal};
use crate::config::Config;
use crate::error::{ApiError, Result};
use crate::state::{AppState, RequestId};
use commands::context::{CommandContext, Staleness};
use commands::StoreError;
use projections::feed::FeedPosition;

mod access;
mod inboxes;
pub mod live;
mod live_metrics;
mod mutation;
mod notifications;
mod parse_cache;
mod presence;
mod query;
pub mod request_checks;
mod subscriber;
pub mod types;
mod upload;
mod webhooks;

use access::{AccessMutation, AccessQuery};
use inboxes::{InboxMutation, InboxQuery};
use live::ConversationSubscription;
use live_metrics::{LiveMetricsQuery, LiveMetricsSubscription};
use mutation::Mutation;
use notifications::{NotificationMutation, NotificationQuery, NotificationSubscription};
use presence::{PresenceMutation, PresenceSubscription};
use query::Query;
use webhooks::{WebhookMutation, WebhookQuery};

#[derive(async_graphql::MergedObject, Default)]
pub struct QueryRoot(Query, InboxQuery, AccessQuery, WebhookQuery, LiveMetricsQuery, NotificationQuery);

#[derive(async_graphql::MergedObject, Default)]
pub struct MutationRoot(
    Mutation,
    InboxMutation,
    AccessMutation,
    WebhookMutation,
    PresenceMutation,
    NotificationMutation,
);

#[derive(async_graphql::MergedSubscription, Default)]
pub struct SubscriptionRoot(
    ConversationSubscription,
    PresenceSubscription,
    LiveMetricsSubscription,
    NotificationSubscription,
);

pub use crate::live::feed::CONVERSATION_VIEWS;

pub type ApiSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// What a single request may ask for.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub depth: usize,
    /// Default: enough for the standard introspection query and a 50-conversation page
    /// with 100 messages each (a connection costs its items times `first`).
    pub complexity: usize,
    pub introspection: bool,
    /// Fields and aliases, with fragments expanded.
    pub checks: request_checks::RequestChecks,
}

impl From<&Config> for Limits {
    fn from(config: &Config) -> Self {
        Self {
            depth: config.graphql_depth_limit,
            complexity: config.graphql_complexity_limit,
            introspection: config.graphql_introspection,
            checks: request_checks::RequestChecks {
                max_fields: config.graphql_max_fields,
                max_aliases: config.graphql_max_aliases,
            },
        }
    }
}

pub fn schema(state: AppState, limits: Limits) -> ApiSchema {
    let builder = Schema::build(QueryRoot::default(), MutationRoot::default(), SubscriptionRoot::default())
        .data(state)
        // Before the cache: every request's variables and document are checked.
        .extension(limits.checks)
        .extension(parse_cache::ParseCache::default())
        .limit_depth(limits.depth)
        .limit_complexity(limits.complexity);
    if limits.introspection {
        builder.finish()
    } else {
        builder.disable_introspection().finish()
    }
}

/// The schema in SDL, as served (`api/schema.graphql` is this, committed: the contract
/// frontends build against; `inboxd schema` prints it).
pub fn sdl() -> String {
    Schema::build(QueryRoot::default(), MutationRoot::default(), SubscriptionRoot::default()).finish().sdl()
}

/// The caller, or UNAUTHENTICATED.
pub fn principal<'a>(ctx: &Context<'a>) -> Result<&'a Principal> {
    ctx.data::<Auth>().map_err(|_| ApiError::unauthenticated())?.principal()
}

/// The request's id (the HTTP layer always sets one; a fresh one otherwise).
pub fn request_id(ctx: &Context<'_>) -> RequestId {
    ctx.data::<RequestId>().copied().unwrap_or_else(|_| RequestId(Uuid::now_v7()))
}

/// How many times a mutation decides again when what it decided on (a stream it read,
/// the caller's access) moved on before it committed.
const DECISION_ATTEMPTS: usize = 4;

/// One attempt at a mutation: the caller as currently known, and a fresh context.
pub struct Acting {
    pub principal: Principal,
    pub state: AppState,
    pub context: CommandContext,
}

/// Runs a mutation's `body` so that its answer stands on current state: when the
/// commit (or, for a refusal, a check) finds that something the body read moved on
/// meanwhile, the body runs again, from fresh state, with the principal resolved
/// again if it was the caller's access that changed. The body's writes are all or
/// nothing per attempt: a stale attempt wrote nothing.
pub async fn mutate<T, F, Fut>(ctx: &Context<'_>, body: F) -> Result<T>
where
    F: Fn(Acting) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let state = state(ctx)?;
    let mut auth = ctx.data::<Auth>().map_err(|_| ApiError::unauthenticated())?.clone();
    let request = request_id(ctx);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let principal = auth.principal()?.clone();
        let context = state.context(&principal, request);
        let result = body(Acting { principal, state: state.clone(), context: context.clone() }).await;
        if result.is_ok() || attempt == DECISION_ATTEMPTS {
            return result;
        }
        let stale = match context.reads.stale() {
            Some(why) => why,
            // Asserted already (the store checks a command's own refusals).
            None if context.reads.current() => return result,
            // A refusal is a decision too: it stands only if what it read is current.
            None => match state.commands.store().confirm(&context, None).await {
                Err(StoreError::Stale(why)) => why,
                _ => return result,
            },
        };
        tracing::debug!(attempt, ?stale, "a decision's state moved on before commit; deciding again");
        state.decided_again.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if stale == Staleness::Access {
            auth = state.authenticator.reauthenticate(&auth).await?;
        }
    }
}

/// The caller, the shared state and a command context for this request.
pub fn acting<'a>(ctx: &Context<'a>) -> Result<(&'a Principal, &'a AppState, CommandContext)> {
    let (principal, state) = (principal(ctx)?, state(ctx)?);
    Ok((principal, state, state.context(principal, request_id(ctx))))
}

pub fn state<'a>(ctx: &Context<'a>) -> Result<&'a AppState> {
    ctx.data::<AppState>().map_err(|e| ApiError::internal(anyhow::anyhow!("application state missing: {}", e.message)))
}

/// The policy's word on a conversation of the caller's account, from the write side
/// (a conversation of another account is NOT_FOUND); answers the conversation as read
/// (its placement at least: account, inbox, contact).
pub async fn authorize_conversation(
    principal: &Principal,
    state: &AppState,
    context: &CommandContext,
    id: Uuid,
) -> Result<domain::conversation::Conversation> {
    // Which inbox it is in never changes; whom it is assigned to does, and matters
    // only when the principal's role narrows by it.
    let conversation = if principal.sees_by_assignee() {
        state.commands.conversation(context, id).await?
    } else {
        state.commands.conversation_placement(context, id).await?
    };
    let inbox = conversation.inbox_id().ok_or_else(|| ApiError::not_found("conversation"))?;
    principal.require_conversation(inbox.as_uuid(), conversation.assignee().map(|u| u.as_uuid()))?;
    Ok(conversation)
}

/// The access check of an auditor's reads, which must answer on a damaged log: where
/// the conversation is and whom it is assigned to, from the stored rows' unsealed
/// fields (nothing is opened or decoded whole), else from the inbox read model (a
/// stream removed from the log is still asked about).
pub async fn authorize_audit(principal: &Principal, state: &AppState, id: Uuid) -> Result<()> {
    let (started, assigned): (Option<String>, Option<Option<String>>) = sqlx::query_as(
        "SELECT (SELECT payload -> 'ConversationStarted' ->> 'inbox_id' FROM events \
                 WHERE aggregate_type = 'conversation' AND aggregate_id = $1 AND sequence = 1 AND account_id = $2), \
                (SELECT payload -> 'AssigneeChanged' ->> 'to' FROM events \
                 WHERE aggregate_type = 'conversation' AND aggregate_id = $1 AND account_id = $2 \
                   AND event_type = 'AssigneeChanged' ORDER BY sequence DESC LIMIT 1)",
    )
    .bind(id.to_string())
    .bind(principal.account_id)
    .fetch_one(&state.pool)
    .await?;
    let from_log = started.and_then(|inbox| inbox.parse::<Uuid>().ok()).map(|inbox| {
        let assignee = assigned.flatten().and_then(|user| user.parse::<Uuid>().ok());
        (inbox, assignee)
    });
    let placement = match from_log {
        Some(placement) => placement,
        None => {
            let row = projections::inbox_list::get(&state.pool, principal.account_id, id).await?;
            let row = row.ok_or_else(|| ApiError::not_found("conversation"))?;
            (row.inbox_id, row.assignee_id)
        }
    };
    principal.require_conversation(placement.0, placement.1)
}

/// A contact of the caller's account they may see: one that wrote to one of their
/// inboxes (every contact, for roles that see every inbox).
pub async fn visible_contact(
    principal: &Principal,
    pool: &sqlx::PgPool,
    id: Uuid,
) -> Result<projections::directory::ContactRow> {
    let inboxes = principal.visibility().inboxes;
    let row = projections::directory::contact(pool, principal.account_id, id, inboxes.as_deref()).await?;
    if row.is_none()
        && inboxes.is_some()
        && projections::directory::contact(pool, principal.account_id, id, None).await?.is_some()
    {
        return Err(ApiError::forbidden("this contact wrote to none of your inboxes"));
    }
    row.ok_or_else(|| ApiError::not_found("contact"))
}

/// Parses an id argument; a malformed one is the caller's mistake.
pub fn parse_id(id: &ID, what: &str) -> Result<Uuid> {
    id.parse::<Uuid>().map_err(|_| ApiError::bad_input(format!("'{}' is not a valid {what} id", id.as_str())))
}

/// A feed cursor argument (`position` of an event), or the start of the log.
pub fn feed_cursor(after: Option<String>) -> Result<FeedPosition> {
    match after {
        Some(cursor) => cursor.parse().map_err(|_| ApiError::bad_input("the cursor is not a position")),
        None => Ok(FeedPosition::START),
    }
}

/// A keyset cursor of a list newest first: `<rfc3339 time>|<id>`.
pub fn time_cursor(cursor: &str) -> Result<(chrono::DateTime<chrono::Utc>, Uuid)> {
    let bad = || ApiError::bad_input("the cursor is not valid for this list");
    let (at, id) = cursor.split_once('|').ok_or_else(bad)?;
    let at = chrono::DateTime::parse_from_rfc3339(at).map_err(|_| bad())?.with_timezone(&chrono::Utc);
    Ok((at, id.parse().map_err(|_| bad())?))
}

/// A connection's page bounds: `first` defaults to `default`, at most `max`.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub default: i64,
    pub max: i64,
}

/// Inbox lists and contacts.
pub const SHORT_PAGE: Page = Page { default: 25, max: 100 };
/// Messages of a conversation, the event and audit logs.
pub const LONG_PAGE: Page = Page { default: 100, max: 1000 };

impl Page {
    /// `first` bounded to 1..=max, the default when absent.
    pub fn size(self, first: Option<i32>) -> Result<i64> {
        match first {
            None => Ok(self.default),
            Some(n) if n >= 1 && i64::from(n) <= self.max => Ok(i64::from(n)),
            Some(n) => Err(ApiError::bad_input(format!("first must be between 1 and {}, not {n}", self.max))),
        }
    }

    /// The complexity of a page: what each item selects, times as many items as it
    /// may hold (a `first` out of bounds is refused when run, and costed at the bound).
    pub fn cost(self, first: Option<i32>, child_complexity: usize) -> usize {
        let items = first.map_or(self.default, |n| i64::from(n).clamp(1, self.max));
        usize::try_from(items).unwrap_or(1).saturating_mul(child_complexity).saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_committed_schema_is_the_one_served() {
        let committed = include_str!("../../schema.graphql");
        assert!(
            committed == super::sdl(),
            "api/schema.graphql is out of date: run `cargo run -p api --bin inboxd -- schema > api/schema.graphql`"
        );
    }
}
