//! The GraphQL API: schema, and helpers every resolver uses.

use async_graphql::{Context, EmptySubscription, Schema, ID};
use uuid::Uuid;

use crate::auth::{Auth, Principal};
use crate::error::ApiError;
use crate::state::{AppState, RequestId};
use commands::context::CommandContext;

mod mutation;
mod query;
pub mod types;

pub use mutation::Mutation;
pub use query::Query;

/// The read models a conversation's view comes from.
pub const CONVERSATION_VIEWS: &[&str] = &["inbox_list", "timeline"];

pub type ApiSchema = Schema<Query, Mutation, EmptySubscription>;

pub fn schema(state: AppState) -> ApiSchema {
    Schema::build(Query, Mutation, EmptySubscription).data(state).limit_depth(20).finish()
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

/// Parses an id argument; a malformed one is the caller's mistake.
pub fn parse_id(id: &ID, what: &str) -> Result<Uuid, ApiError> {
    id.parse::<Uuid>().map_err(|_| ApiError::bad_input(format!("'{}' is not a valid {what} id", id.as_str())))
}

/// `first` bounded to 1..=max, `default` when absent.
pub fn page_size(first: Option<i32>, default: i64, max: i64) -> Result<i64, ApiError> {
    match first {
        None => Ok(default),
        Some(n) if n >= 1 && i64::from(n) <= max => Ok(i64::from(n)),
        Some(n) => Err(ApiError::bad_input(format!("first must be between 1 and {max}, not {n}"))),
    }
}
