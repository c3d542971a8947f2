//! The access tables, written beside the events that record each change: logins,
//! tokens, invitations, memberships, roles. The log says what happened; these rows
//! are what a request is authenticated and authorized against.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::values::Role;
use sqlx::postgres::PgQueryResult;
use sqlx::PgConnection;
use uuid::Uuid;

use super::token::NewAccessToken;
use crate::error::StoreError;
use crate::side_write::SideWrite;

/// An ordinary write's outcome: a refusal or unique violation conflicts.
fn done(result: Result<PgQueryResult, sqlx::Error>) -> Result<(), StoreError> {
    result.map(|_| ()).map_err(|e| StoreError::of_write(e, "", StoreError::Conflict))
}

/// A write that must change a row: none changed means it no longer stands.
fn changed_one(result: Result<PgQueryResult, sqlx::Error>) -> Result<(), StoreError> {
    match result {
        Ok(done) if done.rows_affected() == 0 => Err(StoreError::Conflict),
        other => done(other),
    }
}

/// A new user's login; no password hash for an invited agent, until they accept.
pub struct Credentials {
    pub user: Uuid,
    pub email: String,
    pub password_hash: Option<String>,
}

#[async_trait]
impl SideWrite for Credentials {
    async fn write(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO user_credentials (user_id, email, password_hash) VALUES ($1, $2, $3)")
            .bind(self.user)
            .bind(&self.email)
            .bind(&self.password_hash)
            .execute(conn)
            .await
            .map(|_| ())
            .map_err(|e| {
                StoreError::of_write(e, "user_credentials_email_key", StoreError::Duplicate("a user with this e-mail"))
            })
    }
}

pub struct SetPassword {
    pub user: Uuid,
    pub password_hash: String,
}

#[async_trait]
impl SideWrite for SetPassword {
    async fn write(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        done(
            sqlx::query("UPDATE user_credentials SET password_hash = $2, updated_at = now() WHERE user_id = $1")
                .bind(self.user)
                .bind(&self.password_hash)
                .execute(conn)
                .await,
        )
    }
    fn changes_access_of(&self) -> Option<Uuid> {
        Some(self.user)
    }
}

pub struct IssueToken(pub NewAccessToken);

#[async_trait]
impl SideWrite for IssueToken {
    async fn write(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        let t = &self.0;
        done(
            sqlx::query(
                "INSERT INTO access_tokens (token_id, token_hash, user_id, account_id, name, kind, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(t.token)
            .bind(&t.token_hash)
            .bind(t.user)
            .bind(t.account)
            .bind(&t.name)
            .bind(t.kind.as_str())
            .bind(t.expires_at)
            .execute(conn)
            .await,
        )
    }
}

pub struct RevokeToken {
    pub token: Uuid,
    pub user: Uuid,
}

#[async_trait]
impl SideWrite for RevokeToken {
    async fn write(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        done(
            sqlx::query(
                "UPDATE access_tokens SET revoked_at = now() \
                 WHERE token_id = $1 AND user_id = $2 AND revoked_at IS NULL",
            )
            .bind(self.token)
            .bind(self.user)
            .execute(conn)
            .await,
        )
    }
    fn changes_access_of(&self) -> Option<Uuid> {
        Some(self.user)
    }
}

/// Ends the user's login sessions, but the one named, and their API tokens too
/// with `api_tokens`.
pub struct EndSessions {
    pub user: Uuid,
    pub except: Option<Uuid>,
    pub api_tokens: bool,
}

#[async_trait]
impl SideWrite for EndSessions {
    async fn write(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        done(
            sqlx::query(
                "UPDATE access_tokens SET revoked_at = now() WHERE user_id = $1 AND (kind = 'session' OR $3) \
                 AND revoked_at IS NULL AND token_id IS DISTINCT FROM $2",
            )
            .bind(self.user)
            .bind(self.except)
            .bind(self.api_tokens)
            .execute(conn)
            .await,
        )
    }
    fn changes_access_of(&self) -> Option<Uuid> {
        Some(self.user)
    }
}

/// The place an invitation offers someone who has a login already.
#[derive(Debug, Clone)]
pub struct JoinAs {
    pub name: String,
    pub role: Role,
    pub custom_role: Option<Uuid>,
}

/// `joins`: the user has a login already and joins the account on accepting.
pub struct Invitation {
    pub token_hash: Vec<u8>,
    pub user: Uuid,
    pub account: Uuid,
    pub expires_at: DateTime<Utc>,
    pub joins: Option<JoinAs>,
}

#[async_trait]
impl SideWrite for Invitation {
    async fn write(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        let joins = self.joins.as_ref();
        done(
            sqlx::query(
                "INSERT INTO invitations (token_hash, user_id, account_id, expires_at, join_name, join_role, \
                 join_custom_role) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&self.token_hash)
            .bind(self.user)
            .bind(self.account)
            .bind(self.expires_at)
            .bind(joins.map(|j| j.name.clone()))
            .bind(joins.map(|j| j.role.as_str()))
            .bind(joins.and_then(|j| j.custom_role))
            .execute(conn)
            .await,
        )
    }
}

/// Consumes an invitation: conflicts if it was used (or expired) meanwhile.
pub struct InvitationAccepted {
    pub token_hash: Vec<u8>,
}

#[async_trait]
impl SideWrite for InvitationAccepted {
    async fn write(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        changed_one(
            sqlx::query(
                "UPDATE invitations SET accepted_at = now() \
                 WHERE token_hash = $1 AND accepted_at IS NULL AND expires_at > now()",
            )
            .bind(&self.token_hash)
            .execute(conn)
            .await,
        )
    }
}

/// Deletes the user's invitations to the account (they may name the user).
pub struct ForgetInvitations {
    pub account: Uuid,
    pub user: Uuid,
}

#[async_trait]
impl SideWrite for ForgetInvitations {
    async fn write(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        done(
            sqlx::query("DELETE FROM invitations WHERE account_id = $1 AND user_id = $2")
                .bind(self.account)
                .bind(self.user)
                .execute(conn)
                .await,
        )
    }
}

/// A member of an account, in a role (a new member, or a changed role).
pub struct Membership {
    pub account: Uuid,
    pub user: Uuid,
    pub role: Role,
    pub custom_role: Option<Uuid>,
}

#[async_trait]
impl SideWrite for Membership {
    async fn write(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        done(
            sqlx::query(
                "INSERT INTO account_memberships (account_id, user_id, role, custom_role_id) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (account_id, user_id) DO UPDATE \
                 SET role = EXCLUDED.role, custom_role_id = EXCLUDED.custom_role_id",
            )
            .bind(self.account)
            .bind(self.user)
            .bind(self.role.as_str())
            .bind(self.custom_role)
            .execute(conn)
            .await,
        )
    }
    fn changes_access_of(&self) -> Option<Uuid> {
        Some(self.user)
    }
}

/// The user leaves the account, and every inbox of it.
pub struct MembershipEnded {
    pub account: Uuid,
    pub user: Uuid,
}

#[async_trait]
impl SideWrite for MembershipEnded {
    async fn write(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        done(
            sqlx::query(
                "WITH gone AS (DELETE FROM inbox_memberships WHERE account_id = $1 AND user_id = $2) \
                 DELETE FROM account_memberships WHERE account_id = $1 AND user_id = $2",
            )
            .bind(self.account)
            .bind(self.user)
            .execute(conn)
            .await,
        )
    }
    fn changes_access_of(&self) -> Option<Uuid> {
        Some(self.user)
    }
}

pub struct CustomRole {
    pub role: Uuid,
    pub account: Uuid,
    pub name: String,
    pub permissions: Vec<&'static str>,
}

#[async_trait]
impl SideWrite for CustomRole {
    async fn write(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        done(
            sqlx::query("INSERT INTO custom_roles (role_id, account_id, name, permissions) VALUES ($1, $2, $3, $4)")
                .bind(self.role)
                .bind(self.account)
                .bind(&self.name)
                .bind(&self.permissions)
                .execute(conn)
                .await,
        )
    }
}

/// The user joins (`member`) or leaves an inbox.
pub struct InboxMembership {
    pub account: Uuid,
    pub inbox: Uuid,
    pub user: Uuid,
    pub member: bool,
}

#[async_trait]
impl SideWrite for InboxMembership {
    async fn write(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        let query = if self.member {
            sqlx::query(
                "INSERT INTO inbox_memberships (account_id, inbox_id, user_id) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
        } else {
            sqlx::query("DELETE FROM inbox_memberships WHERE account_id = $1 AND inbox_id = $2 AND user_id = $3")
        };
        done(query.bind(self.account).bind(self.inbox).bind(self.user).execute(conn).await)
    }
    fn changes_access_of(&self) -> Option<Uuid> {
        Some(self.user)
    }
}

/// Ends a login: its credentials, invitations and every token. Conflicts if the user
/// is a member of an account again (the erasure is decided anew).
pub struct EraseLogin {
    pub user: Uuid,
}

#[async_trait]
impl SideWrite for EraseLogin {
    async fn write(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        changed_one(
            sqlx::query(
                "WITH member AS (SELECT 1 FROM account_memberships WHERE user_id = $1 LIMIT 1), \
                      tokens AS (UPDATE access_tokens SET revoked_at = now() \
                                 WHERE user_id = $1 AND revoked_at IS NULL AND NOT EXISTS (SELECT 1 FROM member)), \
                      invitations AS (DELETE FROM invitations \
                                      WHERE user_id = $1 AND NOT EXISTS (SELECT 1 FROM member)) \
                 DELETE FROM user_credentials WHERE user_id = $1 AND NOT EXISTS (SELECT 1 FROM member)",
            )
            .bind(self.user)
            .execute(conn)
            .await,
        )
    }
    fn changes_access_of(&self) -> Option<Uuid> {
        Some(self.user)
    }
}
