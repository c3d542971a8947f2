//! Authentication: who is calling, in which account. Checked per operation (each
//! resolver asks for the principal), so public operations can sit beside the rest.

use axum::http::HeaderMap;
use commands::account::{token_hash, TOKEN_PREFIX};
use domain::values::Role;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::ApiError;

/// The caller: a user acting in one account with that account's role. The account
/// comes from the credential, never from request input.
#[derive(Debug, Clone)]
pub struct Principal {
    pub account_id: Uuid,
    pub user_id: Uuid,
    pub role: Role,
}

/// The request's credentials as resolved once per request.
#[derive(Debug, Clone, Default)]
pub struct Auth(pub Option<Principal>);

impl Auth {
    pub fn principal(&self) -> Result<&Principal, ApiError> {
        self.0.as_ref().ok_or_else(ApiError::unauthenticated)
    }
}

/// Resolves `Authorization: Bearer <token>`; a missing, malformed, unknown or revoked
/// token gives no principal (operations that need one answer UNAUTHENTICATED).
pub async fn authenticate(pool: &PgPool, headers: &HeaderMap) -> Result<Auth, ApiError> {
    let Some(token) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| t.starts_with(TOKEN_PREFIX) && t.len() < 200)
    else {
        return Ok(Auth(None));
    };
    let row: Option<(Uuid, Uuid, String)> = sqlx::query_as(
        "SELECT t.account_id, t.user_id, m.role FROM api_tokens t \
         JOIN account_memberships m ON m.account_id = t.account_id AND m.user_id = t.user_id \
         WHERE t.token_hash = $1 AND t.revoked_at IS NULL",
    )
    .bind(token_hash(token))
    .fetch_optional(pool)
    .await?;
    Ok(Auth(row.map(|(account_id, user_id, role)| Principal {
        account_id,
        user_id,
        role: role.parse().unwrap_or(Role::Agent),
    })))
}
