//! Who may sign in, with what, into which account: sessions, API tokens,
//! passwords, invitations, agents' roles and custom roles.
//!
//! Secrets (password hashes, token hashes) live in their own tables, written in the
//! same transaction as the events that say a credential was issued or ended.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::Utc;
use domain::account::{Account, AccountCommand};
use domain::actor::Actor;
use domain::ids::{AccountId, RoleId, TokenId, UserId};
use domain::user::{User, UserCommand};
use domain::values::{EmailAddress, Name, Permission, Role};
use domain::DomainError;
use uuid::Uuid;

use crate::context::CommandContext;
use crate::side_write::SideWrites;
use crate::store::UnitOfWork;
use crate::{decide, retry, CommandError, Commands, Written};

pub mod tables;
pub mod token;

use tables::{
    CustomRole, EndSessions, Invitation, InvitationAccepted, IssueToken, JoinAs, Membership, MembershipEnded,
    RevokeToken, SetPassword,
};
use token::new_secret;
pub use token::{token_hash, NewAccessToken, TokenKind, TOKEN_PREFIX};

/// Prefix of invitation tokens (they cannot be used as bearer credentials).
const INVITATION_PREFIX: &str = "ibi_";
/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest password accepted: argon2 cost should not be the caller's to choose.
const MAX_PASSWORD_CHARS: usize = 256;
/// How long an invitation can be accepted.
const INVITATION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Hashes a password with argon2id, off the async runtime.
pub async fn hash_password(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string())
    })
    .await
    .context("password hashing task failed")?
    .map_err(|e| anyhow::anyhow!("failed to hash a password: {e}"))
}

/// Checks a password against its argon2 hash, off the async runtime. Without a hash
/// (unknown user, or one who never set a password) it checks against a stand-in, so
/// the answer takes as long either way.
pub async fn verify_password(password: String, hash: Option<String>) -> anyhow::Result<bool> {
    static STAND_IN: OnceLock<String> = OnceLock::new();
    let known = hash.is_some();
    let hash = match hash {
        Some(hash) => hash,
        None => match STAND_IN.get() {
            Some(hash) => hash.clone(),
            None => {
                let hash = hash_password(new_secret("")).await?;
                STAND_IN.get_or_init(|| hash).clone()
            }
        },
    };
    let matches = tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash).map_err(|e| anyhow::anyhow!("stored password hash is malformed: {e}"))?;
        anyhow::Ok(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .context("password verification task failed")??;
    Ok(known && matches)
}

pub fn check_password(password: &str) -> Result<(), DomainError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(DomainError::invalid(format!("the password must have at least {MIN_PASSWORD_CHARS} characters")));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(DomainError::invalid(format!("the password must have at most {MAX_PASSWORD_CHARS} characters")));
    }
    Ok(())
}

/// A new login session: the secret is shown once.
#[derive(Debug, Clone)]
pub struct Session {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub account_id: Uuid,
    pub token: String,
}

/// A new API token: its id, and the secret shown once.
pub struct IssuedToken {
    pub token_id: Uuid,
    pub token: String,
}

/// An agent to add to the context's account.
pub struct NewAgent {
    pub email: String,
    pub name: String,
    pub role: Role,
    pub custom_role: Option<Uuid>,
    /// None: the agent is invited and sets a password themselves.
    pub password: Option<String>,
}

pub struct CreatedAgent {
    pub user_id: Uuid,
    /// The invitation secret to hand to the agent (shown once).
    pub invitation: String,
}

/// The user behind an e-mail, and their password hash if they set one.
pub(crate) async fn credentials(
    commands: &Commands,
    email: &EmailAddress,
) -> anyhow::Result<Option<(Uuid, Option<String>)>> {
    sqlx::query_as("SELECT user_id, password_hash FROM user_credentials WHERE email = $1")
        .bind(email.to_string())
        .fetch_optional(commands.store().pool())
        .await
        .context("failed to look up a user's credentials")
}

impl Commands {
    /// Signs a user in with e-mail and password, into `account` (or the first account
    /// they joined). A wrong e-mail and a wrong password get the same answer.
    pub async fn sign_in(
        &self,
        email: &str,
        password: &str,
        account: Option<Uuid>,
        ttl: Duration,
        correlation_id: Uuid,
    ) -> Result<Session, CommandError> {
        let email = EmailAddress::parse(email).map_err(|_| CommandError::BadCredentials)?;
        let found = credentials(self, &email).await?;
        let (user_id, hash) = match found {
            Some((user, hash)) => (Some(user), hash),
            None => (None, None),
        };
        if !verify_password(password.to_string(), hash).await? {
            return Err(CommandError::BadCredentials);
        }
        let user_id = user_id.ok_or(CommandError::BadCredentials)?;
        // Without a choice, the account the user joined first.
        let account_id: Option<Uuid> = sqlx::query_scalar(
            "SELECT account_id FROM account_memberships WHERE user_id = $1 AND ($2::uuid IS NULL OR account_id = $2) \
             ORDER BY joined_at, account_id LIMIT 1",
        )
        .bind(user_id)
        .bind(account)
        .fetch_optional(self.store().pool())
        .await
        .context("failed to find the user's accounts")?;
        let account_id = account_id.ok_or(DomainError::NotFound("account membership"))?;
        self.start_session(user_id, account_id, ttl, correlation_id).await
    }

    async fn start_session(
        &self,
        user_id: Uuid,
        account_id: Uuid,
        ttl: Duration,
        correlation_id: Uuid,
    ) -> Result<Session, CommandError> {
        let mut context = CommandContext::now(account_id, Actor::User(user_id));
        context.correlation_id = correlation_id;
        let ttl = chrono::Duration::from_std(ttl).context("session lifetime out of range")?;
        let (row, token) =
            NewAccessToken::issue(user_id, account_id, "session", TokenKind::Session, Some(Utc::now() + ttl));
        let session_id = row.token;
        let at = context.at;
        self.execute_with::<User>(
            &context,
            &user_id.to_string(),
            |_| Ok(UserCommand::SignIn { session_id: TokenId(session_id), account_id: AccountId(account_id), at }),
            &SideWrites::of(IssueToken(row)),
        )
        .await?;
        Ok(Session { session_id, user_id, account_id, token })
    }

    /// Ends the session the request came with.
    pub async fn sign_out(&self, context: &CommandContext, session_id: Uuid) -> Result<Written, CommandError> {
        let user = acting_user(context)?;
        let revoke = SideWrites::of(RevokeToken { token: session_id, user });
        self.execute_with::<User>(
            context,
            &user.to_string(),
            |_| Ok(UserCommand::SignOut { session_id: TokenId(session_id), at: context.at }),
            &revoke,
        )
        .await
    }

    /// Changes the acting user's password and ends all their other sessions.
    pub async fn change_password(
        &self,
        context: &CommandContext,
        current: &str,
        new: &str,
        kept_session: Option<Uuid>,
        revoke_api_tokens: bool,
    ) -> Result<Written, CommandError> {
        let user = acting_user(context)?;
        check_password(new)?;
        let hash: Option<String> = sqlx::query_scalar("SELECT password_hash FROM user_credentials WHERE user_id = $1")
            .bind(user)
            .fetch_optional(self.store().pool())
            .await
            .context("failed to read the user's credentials")?
            .flatten();
        if !verify_password(current.to_string(), hash).await? {
            return Err(CommandError::BadCredentials);
        }
        let mut writes = SideWrites::of(SetPassword { user, password_hash: hash_password(new.to_string()).await? });
        writes.add(EndSessions { user, except: kept_session, api_tokens: revoke_api_tokens });
        self.execute_with::<User>(
            context,
            &user.to_string(),
            |_| {
                Ok(UserCommand::ChangePassword {
                    kept_session: kept_session.map(TokenId),
                    revoke_api_tokens,
                    at: context.at,
                })
            },
            &writes,
        )
        .await
    }

    /// Issues a personal API token for the acting user in the context's account.
    pub async fn issue_api_token(
        &self,
        context: &CommandContext,
        name: &str,
    ) -> Result<(IssuedToken, Written), CommandError> {
        let user = acting_user(context)?;
        let name = Name::parse("token name", name)?;
        let (row, token) = NewAccessToken::issue(user, context.account_id, name.as_str(), TokenKind::Api, None);
        let token_id = row.token;
        let write = SideWrites::of(IssueToken(row));
        let written = self
            .execute_with::<User>(
                context,
                &user.to_string(),
                |_| {
                    Ok(UserCommand::IssueApiToken {
                        token_id: TokenId(token_id),
                        account_id: AccountId(context.account_id),
                        name: name.clone(),
                        at: context.at,
                    })
                },
                &write,
            )
            .await?;
        Ok((IssuedToken { token_id, token }, written))
    }

    /// Revokes one of the acting user's API tokens in the context's account.
    pub async fn revoke_api_token(&self, context: &CommandContext, token_id: Uuid) -> Result<Written, CommandError> {
        let user = acting_user(context)?;
        let revoke = SideWrites::of(RevokeToken { token: token_id, user });
        self.execute_with::<User>(
            context,
            &user.to_string(),
            |state: &User| match state.api_token_account(TokenId(token_id)) {
                Some(account) if account.as_uuid() == context.account_id => {
                    Ok(UserCommand::RevokeApiToken { token_id: TokenId(token_id), at: context.at })
                }
                _ => Err(DomainError::NotFound("API token").into()),
            },
            &revoke,
        )
        .await
    }

    /// Adds an agent to the context's account: a new user (with a password, or to set
    /// one on accepting the invitation), or — only once they accept with their own
    /// password — someone who has a login already. The answer is alike either way
    /// (an invitation secret), so it does not tell whether the e-mail is known.
    pub async fn create_agent(
        &self,
        context: &CommandContext,
        agent: NewAgent,
    ) -> Result<(CreatedAgent, Written), CommandError> {
        let email = EmailAddress::parse(&agent.email)?;
        let name = Name::parse("name", &agent.name)?;
        if let Some(password) = &agent.password {
            check_password(password)?;
        }
        let existing = credentials(self, &email).await?.map(|(user, _)| user);
        let password_hash = match (&existing, agent.password) {
            (None, Some(password)) => Some(hash_password(password).await?),
            _ => None,
        };
        let user_id = existing.unwrap_or_else(Uuid::now_v7);
        let invitation = new_secret(INVITATION_PREFIX);
        let account_key = context.account_id.to_string();
        let ttl = chrono::Duration::from_std(INVITATION_TTL).context("invitation lifetime out of range")?;
        let written = retry(|| async {
            let _guard = self.store().lock::<Account>(&account_key).await;
            let mut work = UnitOfWork::new(context);
            let mut account = self.store().load_for_update::<Account>(&account_key).await?;
            let joins = existing.map(|_| JoinAs {
                name: name.as_str().to_string(),
                role: agent.role,
                custom_role: agent.custom_role,
            });
            let command = match &joins {
                // Nobody joins an account without saying so.
                Some(_) => AccountCommand::InviteMember {
                    user_id: UserId(user_id),
                    role: agent.role,
                    custom_role: agent.custom_role.map(RoleId),
                    at: context.at,
                },
                None => {
                    let subject = Uuid::now_v7();
                    work.side_writes().data_key(self.store().keyring(), subject)?;
                    AccountCommand::AddMember {
                        user_id: UserId(user_id),
                        name: name.clone(),
                        email: email.clone(),
                        role: agent.role,
                        custom_role: agent.custom_role.map(RoleId),
                        subject,
                        at: context.at,
                    }
                }
            };
            let events = decide(&mut account, command).await?;
            work.append(account, events)?;
            if existing.is_none() {
                let mut user = crate::store::Loaded::<User>::new_stream(user_id.to_string());
                let subject = Uuid::now_v7();
                work.side_writes().data_key(self.store().keyring(), subject)?;
                let register = UserCommand::Register {
                    email: email.clone(),
                    name: name.clone(),
                    invited: password_hash.is_none(),
                    subject,
                    at: context.at,
                };
                let events = decide(&mut user, register).await?;
                work.append(user, events)?;
                work.side_writes().add(tables::Credentials {
                    user: user_id,
                    email: email.to_string(),
                    password_hash: password_hash.clone(),
                });
                work.side_writes().add(Membership {
                    account: context.account_id,
                    user: user_id,
                    role: agent.role,
                    custom_role: agent.custom_role,
                });
            }
            work.side_writes().add(Invitation {
                token_hash: token_hash(&invitation),
                user: user_id,
                account: context.account_id,
                expires_at: context.at + ttl,
                joins,
            });
            Ok(Written { position: self.store().commit(work).await? })
        })
        .await?;
        Ok((CreatedAgent { user_id, invitation }, written))
    }

    /// Accepts an invitation and signs in: with the password the user has (joining
    /// the account if they were invited from another), or setting their first one.
    pub async fn accept_invitation(
        &self,
        invitation: &str,
        password: &str,
        ttl: Duration,
        correlation_id: Uuid,
    ) -> Result<Session, CommandError> {
        let hash = token_hash(invitation);
        #[derive(sqlx::FromRow)]
        struct Found {
            user_id: Uuid,
            account_id: Uuid,
            join_name: Option<String>,
            join_role: Option<String>,
            join_custom_role: Option<Uuid>,
            email: String,
            password_hash: Option<String>,
        }
        let found: Option<Found> = sqlx::query_as(
            "SELECT i.user_id, i.account_id, i.join_name, i.join_role, i.join_custom_role, c.email, c.password_hash \
             FROM invitations i JOIN user_credentials c ON c.user_id = i.user_id \
             WHERE i.token_hash = $1 AND i.accepted_at IS NULL AND i.expires_at > now()",
        )
        .bind(&hash)
        .fetch_optional(self.store().pool())
        .await
        .context("failed to look up an invitation")?;
        let found = found.ok_or(CommandError::BadCredentials)?;
        let mut context = CommandContext::now(found.account_id, Actor::User(found.user_id));
        context.correlation_id = correlation_id;
        let mut writes = SideWrites::of(InvitationAccepted { token_hash: hash });
        match &found.password_hash {
            Some(stored) => {
                if !verify_password(password.to_string(), Some(stored.clone())).await? {
                    return Err(CommandError::BadCredentials);
                }
            }
            None => {
                check_password(password)?;
                let password_hash = hash_password(password.to_string()).await?;
                writes.add(SetPassword { user: found.user_id, password_hash });
            }
        }
        let accepted = match (found.join_name, found.join_role) {
            (Some(name), Some(role)) => {
                let role: Role = role.parse().context("an invitation holds an unknown role")?;
                let email = EmailAddress::parse(&found.email)?;
                writes.add(Membership {
                    account: found.account_id,
                    user: found.user_id,
                    role,
                    custom_role: found.join_custom_role,
                });
                let name = Name::parse("name", &name)?;
                let subject = Uuid::now_v7();
                writes.data_key(self.store().keyring(), subject)?;
                self.execute_with::<Account>(
                    &context,
                    &found.account_id.to_string(),
                    |_| {
                        Ok(AccountCommand::AddMember {
                            user_id: UserId(found.user_id),
                            name: name.clone(),
                            email: email.clone(),
                            role,
                            custom_role: found.join_custom_role.map(RoleId),
                            subject,
                            at: context.at,
                        })
                    },
                    &writes,
                )
                .await
            }
            _ => {
                self.execute_with::<User>(
                    &context,
                    &found.user_id.to_string(),
                    |_| Ok(UserCommand::AcceptInvitation { at: context.at }),
                    &writes,
                )
                .await
            }
        };
        accepted.map_err(|e| match e {
            // Accepted meanwhile by another request.
            CommandError::Conflict => CommandError::BadCredentials,
            other => other,
        })?;
        self.start_session(found.user_id, found.account_id, ttl, correlation_id).await
    }

    /// Changes an agent's role (and custom role) in the context's account.
    pub async fn change_role(
        &self,
        context: &CommandContext,
        user: Uuid,
        role: Role,
        custom_role: Option<Uuid>,
    ) -> Result<Written, CommandError> {
        let write = SideWrites::of(Membership { account: context.account_id, user, role, custom_role });
        self.execute_with::<Account>(
            context,
            &context.account_id.to_string(),
            |_| {
                Ok(AccountCommand::ChangeRole {
                    user_id: UserId(user),
                    role,
                    custom_role: custom_role.map(RoleId),
                    at: context.at,
                })
            },
            &write,
        )
        .await
    }

    /// Removes an agent from the context's account (and from its inboxes).
    pub async fn remove_agent(&self, context: &CommandContext, user: Uuid) -> Result<Written, CommandError> {
        let write = SideWrites::of(MembershipEnded { account: context.account_id, user });
        self.execute_with::<Account>(
            context,
            &context.account_id.to_string(),
            |_| Ok(AccountCommand::RemoveMember { user_id: UserId(user), at: context.at }),
            &write,
        )
        .await
    }

    pub async fn create_custom_role(
        &self,
        context: &CommandContext,
        name: &str,
        permissions: Vec<Permission>,
    ) -> Result<(Uuid, Written), CommandError> {
        let name = Name::parse("role name", name)?;
        let role = Uuid::now_v7();
        let mut stored: Vec<&'static str> = permissions.iter().map(|p| p.as_str()).collect();
        stored.sort_unstable();
        stored.dedup();
        let write = SideWrites::of(CustomRole {
            role,
            account: context.account_id,
            name: name.as_str().to_string(),
            permissions: stored,
        });
        let written = self
            .execute_with::<Account>(
                context,
                &context.account_id.to_string(),
                |_| {
                    Ok(AccountCommand::CreateCustomRole {
                        role_id: RoleId(role),
                        name: name.clone(),
                        permissions: permissions.clone(),
                        at: context.at,
                    })
                },
                &write,
            )
            .await?;
        Ok((role, written))
    }
}

fn acting_user(context: &CommandContext) -> Result<Uuid, CommandError> {
    match context.actor {
        Actor::User(user) => Ok(user),
        _ => Err(DomainError::invalid("only a signed-in user can do this").into()),
    }
}
