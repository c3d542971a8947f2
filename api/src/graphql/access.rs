//! Sign-in, credentials, agents and roles, the audit trail and tamper checks.

use async_graphql::connection::Connection;
use async_graphql::{ComplexObject, Context, Enum, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use commands::access::TokenKind;
use commands::access::{NewAgent, Session};
use commands::digest::Digest;
use domain::actor::Actor;
use domain::values;
use projections::directory;
use projections::feed::{read_audit_after, AuditScope};
use uuid::Uuid;

use super::types::{connection, Agent, Event, Role};
use super::{authorize_audit, feed_cursor, mutate, parse_id, principal, request_id, state, Acting, LONG_PAGE};
use crate::error::{ApiError, Result};
use crate::policy::Action;
use crate::rate_limit::{CREDENTIAL_FAILURES, LOGIN_ADDRESS_FAILURES, LOGIN_FAILURES, TOKENS_ISSUED};
use crate::state::ClientAddress;

/// Streams whose events are administrative changes.
const AUDITED_STREAMS: &[&str] = &["account", "user", "inbox", "team", "label", "webhook"];
/// Events of other streams that belong in the audit trail.
const AUDITED_EVENTS: &[&str] = &["ContactErased"];

#[derive(Default)]
pub struct AccessQuery;

#[derive(Default)]
pub struct AccessMutation;

/// The product's permission names, as custom roles grant them.
#[allow(clippy::enum_variant_names)]
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "values::Permission")]
pub enum Permission {
    ConversationManage,
    ConversationUnassignedManage,
    ConversationParticipatingManage,
    ContactManage,
    ReportManage,
}

#[derive(InputObject)]
pub struct LoginInput {
    pub email: String,
    pub password: String,
    /// The account to act in; the first one the user joined when absent.
    pub account_id: Option<ID>,
}

/// A session; the token is shown only in this answer.
#[derive(SimpleObject)]
pub struct SessionToken {
    pub token: String,
    pub user_id: ID,
    pub account_id: ID,
}

impl From<Session> for SessionToken {
    fn from(session: Session) -> Self {
        Self {
            token: session.token,
            user_id: ID(session.user_id.to_string()),
            account_id: ID(session.account_id.to_string()),
        }
    }
}

#[derive(InputObject)]
pub struct ChangePasswordInput {
    pub current_password: String,
    pub new_password: String,
    /// Revoke every personal API token too (they survive a password change otherwise:
    /// scripts keep working). Other sessions always end.
    pub revoke_api_tokens: Option<bool>,
}

#[derive(InputObject)]
pub struct CreateApiTokenInput {
    /// What the token is for ("CRM sync").
    pub name: String,
}

/// A new API token; the secret is shown only in this answer.
#[derive(SimpleObject)]
pub struct ApiToken {
    pub id: ID,
    pub token: String,
}

/// One of the caller's API tokens (never its secret).
#[derive(SimpleObject, sqlx::FromRow)]
#[graphql(complex)]
pub struct ApiTokenInfo {
    #[graphql(skip)]
    pub token_id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[ComplexObject]
impl ApiTokenInfo {
    async fn id(&self) -> ID {
        ID(self.token_id.to_string())
    }
}

#[derive(InputObject)]
pub struct CreateAgentInput {
    pub email: String,
    pub name: String,
    pub role: Role,
    /// Narrows an agent to a custom role's permissions.
    pub custom_role_id: Option<ID>,
    /// Without one, the agent sets it with `acceptInvitation`. Ignored for someone
    /// who has a login already: they accept with their own.
    pub password: Option<String>,
}

#[derive(SimpleObject)]
pub struct CreatedAgent {
    pub id: ID,
    /// The invitation secret to hand to the person (shown once), whoever they are:
    /// `acceptInvitation` with it and their password (or a new one) signs them in,
    /// and joins someone who has a login already to the account.
    pub invitation_token: String,
}

#[derive(InputObject)]
pub struct AcceptInvitationInput {
    pub token: String,
    pub password: String,
}

#[derive(InputObject)]
pub struct EraseContactInput {
    pub contact_id: ID,
    /// Why (e.g. "LGPD request #123"); recorded with the erasure.
    pub reason: String,
}

#[derive(InputObject)]
pub struct RevokeApiTokenInput {
    pub id: ID,
}

#[derive(InputObject)]
pub struct RemoveAgentInput {
    pub user_id: ID,
}

/// What `logout` did (an object, so later fields can join).
#[derive(SimpleObject)]
pub struct LogoutPayload {
    pub logged_out: bool,
}

#[derive(SimpleObject)]
pub struct ChangePasswordPayload {
    pub changed: bool,
}

#[derive(SimpleObject)]
pub struct RevokeApiTokenPayload {
    pub id: ID,
    pub revoked: bool,
}

#[derive(SimpleObject)]
pub struct RemoveAgentPayload {
    pub user_id: ID,
    pub removed: bool,
}

#[derive(SimpleObject)]
pub struct EraseContactPayload {
    pub contact_id: ID,
    pub erased: bool,
}

#[derive(SimpleObject)]
pub struct EraseAgentPayload {
    pub user_id: ID,
    pub erased: bool,
}

#[derive(InputObject)]
pub struct EraseAgentInput {
    /// A former agent: removed from the account first (`removeAgent`).
    pub user_id: ID,
    /// Why (e.g. "LGPD request #123"); recorded with the erasure.
    pub reason: String,
}

#[derive(InputObject)]
pub struct SetAgentRoleInput {
    pub user_id: ID,
    pub role: Role,
    pub custom_role_id: Option<ID>,
}

#[derive(InputObject)]
pub struct CreateCustomRoleInput {
    pub name: String,
    pub permissions: Vec<Permission>,
}

#[derive(SimpleObject, Clone)]
pub struct CustomRole {
    pub id: ID,
    pub name: String,
    pub permissions: Vec<Permission>,
}

/// Narrows the audit log; every field given must match.
#[derive(InputObject, Default)]
pub struct AuditLogFilter {
    /// Only these event types (e.g. `MemberRoleChanged`, `ContactErased`).
    pub event_types: Option<Vec<String>>,
    /// Only changes made by this user.
    pub actor_id: Option<ID>,
}

/// Whether a conversation's events still form an unbroken hash chain.
#[derive(SimpleObject)]
pub struct HistoryVerification {
    pub intact: bool,
    pub events: i32,
    /// The first sequence that is changed or missing, if any.
    pub first_broken_sequence: Option<i64>,
    /// The conversation ends before where the digest saw it.
    pub truncated: bool,
    /// What broke, in words.
    pub reason: Option<String>,
}

fn client(ctx: &Context<'_>) -> String {
    ctx.data::<ClientAddress>().map(|c| c.0.clone()).unwrap_or_default()
}

async fn custom_roles(pool: &sqlx::PgPool, account: Uuid) -> Result<Vec<CustomRole>> {
    let rows: Vec<(Uuid, String, Vec<String>)> =
        sqlx::query_as("SELECT role_id, name, permissions FROM custom_roles WHERE account_id = $1 ORDER BY name")
            .bind(account)
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, permissions)| CustomRole {
            id: ID(id.to_string()),
            name,
            permissions: permissions
                .iter()
                .filter_map(|p| p.parse::<values::Permission>().ok())
                .map(Permission::from)
                .collect(),
        })
        .collect())
}

#[Object]
impl AccessQuery {
    /// The caller's API tokens in the account they act in.
    async fn api_tokens(&self, ctx: &Context<'_>) -> Result<Vec<ApiTokenInfo>> {
        let principal = principal(ctx)?;
        principal.require(Action::ManageOwnCredentials)?;
        let rows: Vec<ApiTokenInfo> = sqlx::query_as(
            "SELECT token_id, name, created_at FROM access_tokens \
             WHERE user_id = $1 AND account_id = $2 AND kind = 'api' AND revoked_at IS NULL ORDER BY created_at",
        )
        .bind(principal.user_id)
        .bind(principal.account_id)
        .fetch_all(&state(ctx)?.pool)
        .await?;
        Ok(rows)
    }

    async fn custom_roles(&self, ctx: &Context<'_>) -> Result<Vec<CustomRole>> {
        let principal = principal(ctx)?;
        principal.require(Action::ReadDirectory)?;
        custom_roles(&state(ctx)?.pool, principal.account_id).await
    }

    /// Administrative changes (roles, memberships, inboxes, teams, labels, credentials,
    /// erasures) with their actors, oldest first.
    #[graphql(complexity = "LONG_PAGE.cost(first, child_complexity)")]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        filter: Option<AuditLogFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Event>> {
        let principal = principal(ctx)?;
        principal.require(Action::ReadAuditLog)?;
        let limit = LONG_PAGE.size(first)?;
        let after = feed_cursor(after)?;
        let filter = filter.unwrap_or_default();
        let actor =
            filter.actor_id.as_ref().map(|id| parse_id(id, "agent")).transpose()?.map(|id| Actor::User(id).to_string());
        let scope = AuditScope {
            account: principal.account_id,
            streams: AUDITED_STREAMS,
            events: AUDITED_EVENTS,
            only_event_types: filter.event_types.as_deref(),
            actor: actor.as_deref(),
        };
        let state = state(ctx)?;
        let mut conn = state.pool.acquire().await?;
        let events =
            read_audit_after(&mut conn, &state.keyring, &scope, after, limit + 1).await.map_err(ApiError::internal)?;
        Ok(connection(events, limit, |e| e.position.to_string(), Event))
    }

    /// An auditor's tamper check of the conversation's history, on the rows as stored
    /// (nothing sealed is opened): every event present and matching its keyed hash and,
    /// given a digest (the JSON line `inboxd digest` prints), still reaching as far as
    /// the digest saw it.
    async fn verify_conversation_history(
        &self,
        ctx: &Context<'_>,
        id: ID,
        digest: Option<String>,
    ) -> Result<HistoryVerification> {
        let principal = principal(ctx)?;
        let state = state(ctx)?;
        let id = parse_id(&id, "conversation")?;
        authorize_audit(principal, state, id).await?;
        let digest = digest
            .map(|line| Digest::parse(&line, state.digests.key()).map_err(|e| ApiError::bad_input(format!("{e:#}"))))
            .transpose()?;
        let (aggregate_id, store) = (id.to_string(), state.commands.store());
        let seen = match &digest {
            Some(digest) => {
                state.digests.head_seen(digest, "conversation", &aggregate_id).await.map_err(ApiError::internal)?
            }
            None => Ok(None),
        };
        let head = seen.as_ref().ok().and_then(Option::as_ref);
        let mut check = store.verify_stream("conversation", &aggregate_id, head).await.map_err(ApiError::internal)?;
        if let Err(altered) = seen {
            check.reason.get_or_insert(altered);
        }
        Ok(HistoryVerification {
            intact: check.intact(),
            events: i32::try_from(check.events).unwrap_or(i32::MAX),
            first_broken_sequence: check.first_broken,
            truncated: check.truncated,
            reason: check.reason,
        })
    }
}

#[Object]
impl AccessMutation {
    /// Signs in with e-mail and password. Ten failures in a minute for one e-mail from
    /// one address lock further attempts (RATE_LIMITED) until the minute is over.
    async fn login(&self, ctx: &Context<'_>, input: LoginInput) -> Result<SessionToken> {
        let state = state(ctx)?;
        let address = client(ctx);
        let key = format!("{}|{address}", input.email.trim().to_lowercase());
        let account = input.account_id.as_ref().map(|id| parse_id(id, "account")).transpose()?;
        let sign_in =
            state.commands.sign_in(&input.email, &input.password, account, state.session_ttl, request_id(ctx).0);
        let limits = [(LOGIN_FAILURES, key.as_str()), (LOGIN_ADDRESS_FAILURES, address.as_str())];
        Ok(state.rate_limiter.guard(&limits, sign_in).await?.into())
    }

    /// Ends the session the request came with.
    async fn logout(&self, ctx: &Context<'_>) -> Result<LogoutPayload> {
        mutate(ctx, move |Acting { principal, state, context }| async move {
            let (principal, state) = (&principal, &state);
            if principal.credential != TokenKind::Session {
                return Err(ApiError::bad_input("logout ends a session; revoke an API token with revokeApiToken"));
            }
            state.commands.sign_out(&context, principal.credential_id).await?;
            Ok(LogoutPayload { logged_out: true })
        })
        .await
    }

    /// Changes the caller's password; every other session of theirs ends.
    async fn change_password(&self, ctx: &Context<'_>, input: ChangePasswordInput) -> Result<ChangePasswordPayload> {
        let input = &input;
        mutate(ctx, move |Acting { principal, state, context }| async move {
            let (principal, state) = (&principal, &state);
            principal.require(Action::ManageOwnCredentials)?;
            let key = principal.user_id.to_string();
            let kept = (principal.credential == TokenKind::Session).then_some(principal.credential_id);
            let revoke = input.revoke_api_tokens.unwrap_or(false);
            let change =
                state.commands.change_password(&context, &input.current_password, &input.new_password, kept, revoke);
            state.rate_limiter.guard(&[(CREDENTIAL_FAILURES, &key)], change).await?;
            Ok(ChangePasswordPayload { changed: true })
        })
        .await
    }

    /// A personal API token for the caller, in the account they act in.
    async fn create_api_token(&self, ctx: &Context<'_>, input: CreateApiTokenInput) -> Result<ApiToken> {
        let input = &input;
        mutate(ctx, move |Acting { principal, state, context }| async move {
            let (principal, state) = (&principal, &state);
            principal.require(Action::ManageOwnCredentials)?;
            let key = format!("{}|{}", principal.user_id, client(ctx));
            let issue = state.commands.issue_api_token(&context, &input.name);
            let (issued, _) = state.rate_limiter.guard(&[(TOKENS_ISSUED, &key)], issue).await?;
            Ok(ApiToken { id: ID(issued.token_id.to_string()), token: issued.token })
        })
        .await
    }

    async fn revoke_api_token(&self, ctx: &Context<'_>, input: RevokeApiTokenInput) -> Result<RevokeApiTokenPayload> {
        let input = &input;
        mutate(ctx, move |Acting { principal, state, context }| async move {
            let (principal, state) = (&principal, &state);
            principal.require(Action::ManageOwnCredentials)?;
            let id = parse_id(&input.id, "API token")?;
            state.commands.revoke_api_token(&context, id).await?;
            Ok(RevokeApiTokenPayload { id: input.id.clone(), revoked: true })
        })
        .await
    }

    /// Adds an agent to the account, with a password or invited to set one.
    async fn create_agent(&self, ctx: &Context<'_>, input: CreateAgentInput) -> Result<CreatedAgent> {
        let input = &input;
        mutate(ctx, move |Acting { principal, state, context }| async move {
            let (principal, state) = (&principal, &state);
            principal.require(Action::ManageAccount)?;
            let agent = NewAgent {
                email: input.email.clone(),
                name: input.name.clone(),
                role: input.role.into(),
                custom_role: input.custom_role_id.as_ref().map(|id| parse_id(id, "custom role")).transpose()?,
                password: input.password.clone(),
            };
            let (created, written) = state.commands.create_agent(&context, agent).await?;
            state.settle(written, &["directory"]).await;
            Ok(CreatedAgent { id: ID(created.user_id.to_string()), invitation_token: created.invitation })
        })
        .await
    }

    /// An invited agent sets their password, and is signed in.
    async fn accept_invitation(&self, ctx: &Context<'_>, input: AcceptInvitationInput) -> Result<SessionToken> {
        let state = state(ctx)?;
        let key = client(ctx);
        let accept =
            state.commands.accept_invitation(&input.token, &input.password, state.session_ttl, request_id(ctx).0);
        Ok(state.rate_limiter.guard(&[(CREDENTIAL_FAILURES, &key)], accept).await?.into())
    }

    async fn set_agent_role(&self, ctx: &Context<'_>, input: SetAgentRoleInput) -> Result<Agent> {
        let input = &input;
        mutate(ctx, move |Acting { principal, state, context }| async move {
            let (principal, state) = (&principal, &state);
            principal.require(Action::ManageAccount)?;
            let user = parse_id(&input.user_id, "agent")?;
            let custom_role = input.custom_role_id.as_ref().map(|id| parse_id(id, "custom role")).transpose()?;
            let written = state.commands.change_role(&context, user, input.role.into(), custom_role).await?;
            state.settle(written, &["directory"]).await;
            let row = directory::agent(&state.pool, principal.account_id, user).await?;
            Ok(Agent(row.ok_or_else(|| ApiError::not_found("agent"))?))
        })
        .await
    }

    /// Removes an agent from the account and its inboxes; their credentials for it stop working.
    async fn remove_agent(&self, ctx: &Context<'_>, input: RemoveAgentInput) -> Result<RemoveAgentPayload> {
        let input = &input;
        mutate(ctx, move |Acting { principal, state, context }| async move {
            let (principal, state) = (&principal, &state);
            principal.require(Action::ManageAccount)?;
            let user = parse_id(&input.user_id, "agent")?;
            state.commands.remove_agent(&context, user).await?;
            Ok(RemoveAgentPayload { user_id: input.user_id.clone(), removed: true })
        })
        .await
    }

    /// The right to be forgotten: shreds the contact's key, so their details and the
    /// text of their conversations read as erased everywhere, replays included; the
    /// conversations, their metrics and the history's hash chain remain.
    async fn erase_contact(&self, ctx: &Context<'_>, input: EraseContactInput) -> Result<EraseContactPayload> {
        let input = &input;
        mutate(ctx, move |Acting { principal, state, context }| async move {
            let (principal, state) = (&principal, &state);
            principal.require(Action::ErasePersonalData)?;
            let contact = parse_id(&input.contact_id, "contact")?;
            let written = state.commands.erase_contact(&context, contact, &input.reason).await?;
            state.settle(written, &["directory", "inbox_list", "timeline"]).await;
            Ok(EraseContactPayload { contact_id: input.contact_id.clone(), erased: true })
        })
        .await
    }

    /// The right to be forgotten for a former agent: shreds the name and e-mail this
    /// account's history holds, so their activity lines read "a former agent"; once no
    /// account has them, their login goes too. Conversations and chains remain.
    async fn erase_agent(&self, ctx: &Context<'_>, input: EraseAgentInput) -> Result<EraseAgentPayload> {
        let input = &input;
        mutate(ctx, move |Acting { principal, state, context }| async move {
            let (principal, state) = (&principal, &state);
            principal.require(Action::ErasePersonalData)?;
            let user = parse_id(&input.user_id, "agent")?;
            let written = state.commands.erase_agent(&context, user, &input.reason).await?;
            state.settle(written, &["directory"]).await;
            Ok(EraseAgentPayload { user_id: input.user_id.clone(), erased: true })
        })
        .await
    }

    async fn create_custom_role(&self, ctx: &Context<'_>, input: CreateCustomRoleInput) -> Result<CustomRole> {
        let input = &input;
        mutate(ctx, move |Acting { principal, state, context }| async move {
            let (principal, state) = (&principal, &state);
            principal.require(Action::ManageAccount)?;
            let permissions: Vec<values::Permission> = input.permissions.iter().copied().map(Into::into).collect();
            let (id, _) = state.commands.create_custom_role(&context, &input.name, permissions).await?;
            let roles = custom_roles(&state.pool, principal.account_id).await?;
            let role = roles.into_iter().find(|r| r.id.as_str() == id.to_string());
            role.ok_or_else(|| ApiError::internal(anyhow::anyhow!("custom role {id} not stored")))
        })
        .await
    }
}
