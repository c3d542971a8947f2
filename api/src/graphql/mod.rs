//! The GraphQL API: schema, and helpers every resolver uses.

use async_graphql::{Context, EmptySubscription, Schema, ID};
use uuid::Uuid;

use crate::auth::{Auth, Principal};
use crate::config::Config;
use crate::error::ApiError;
use crate::state::{AppState, RequestId};
use commands::context::CommandContext;
use projections::feed::FeedPosition;

mod access;
mod mutation;
mod parse_cache;
mod query;
pub mod types;

use access::{AccessMutation, AccessQuery};
use mutation::Mutation;
use query::Query;

#[derive(async_graphql::MergedObject, Default)]
pub struct QueryRoot(Query, AccessQuery);

#[derive(async_graphql::MergedObject, Default)]
pub struct MutationRoot(Mutation, AccessMutation);

/// The read models a conversation's view comes from.
pub const CONVERSATION_VIEWS: &[&str] = &["inbox_list", "timeline"];

pub type ApiSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// What a single request may ask for.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub depth: usize,
    /// Default: enough for the standard introspection query and a 50-conversation page
    /// with 100 messages each.
    pub complexity: usize,
    pub introspection: bool,
}

impl From<&Config> for Limits {
    fn from(config: &Config) -> Self {
        Self {
            depth: config.graphql_depth_limit,
            complexity: config.graphql_complexity_limit,
            introspection: config.graphql_introspection,
        }
    }
}

pub fn schema(state: AppState, limits: Limits) -> ApiSchema {
    let builder = Schema::build(QueryRoot::default(), MutationRoot::default(), EmptySubscription)
        .data(state)
        .extension(parse_cache::ParseCache::default())
        .limit_depth(limits.depth)
        .limit_complexity(limits.complexity);
    if limits.introspection {
        builder.finish()
    } else {
        builder.disable_introspection().finish()
    }
}

/// The caller, or UNAUTHENTICATED.
pub fn principal<'a>(ctx: &Context<'a>) -> Result<&'a Principal, ApiError> {
    ctx.data::<Auth>().map_err(|_| ApiError::unauthenticated())?.principal()
}

/// The caller, the shared state and a command context for this request.
pub fn acting<'a>(ctx: &Context<'a>) -> Result<(&'a Principal, &'a AppState, CommandContext), ApiError> {
    let (principal, state) = (principal(ctx)?, state(ctx)?);
    let request = ctx.data::<RequestId>().copied().unwrap_or(RequestId(Uuid::now_v7()));
    Ok((principal, state, state.context(principal, request)))
}

pub fn state<'a>(ctx: &Context<'a>) -> Result<&'a AppState, ApiError> {
    ctx.data::<AppState>().map_err(|e| ApiError::internal(anyhow::anyhow!("application state missing: {}", e.message)))
}

/// The policy's word on a conversation of the caller's account, from the write side
/// (a conversation of another account is NOT_FOUND).
pub async fn authorize_conversation(
    principal: &Principal,
    state: &AppState,
    context: &CommandContext,
    id: Uuid,
) -> Result<(), ApiError> {
    let conversation = state.commands.conversation(context, id).await?;
    let inbox = conversation.inbox_id().ok_or_else(|| ApiError::not_found("conversation"))?;
    principal.require_conversation(inbox.as_uuid(), conversation.assignee().map(|u| u.as_uuid()))
}

/// Parses an id argument; a malformed one is the caller's mistake.
pub fn parse_id(id: &ID, what: &str) -> Result<Uuid, ApiError> {
    id.parse::<Uuid>().map_err(|_| ApiError::bad_input(format!("'{}' is not a valid {what} id", id.as_str())))
}

/// A feed cursor argument (`position` of an event), or the start of the log.
pub fn feed_cursor(after: Option<String>) -> Result<FeedPosition, ApiError> {
    match after {
        Some(cursor) => cursor.parse().map_err(|_| ApiError::bad_input("the cursor is not a position")),
        None => Ok(FeedPosition::START),
    }
}

/// `first` bounded to 1..=max, `default` when absent.
pub fn page_size(first: Option<i32>, default: i64, max: i64) -> Result<i64, ApiError> {
    match first {
        None => Ok(default),
        Some(n) if n >= 1 && i64::from(n) <= max => Ok(i64::from(n)),
        Some(n) => Err(ApiError::bad_input(format!("first must be between 1 and {max}, not {n}"))),
    }
}
