//! Accounts and the people in them: bootstrap, API tokens, credentials.

use anyhow::Context;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64;
use base64::Engine;
use domain::account::{Account, AccountCommand};
use domain::ids::{AccountId, TokenId, UserId};
use domain::user::{User, UserCommand};
use domain::values::{EmailAddress, Name, Role};
use domain::DomainError;
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::context::{Actor, CommandContext};
use crate::store::{SideWrite, UnitOfWork};
use crate::{decide, retry, CommandError, Commands, Written};

/// Prefix of every API token, so leaked tokens are easy to recognise and scan for.
pub const TOKEN_PREFIX: &str = "ibx_";
/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// What bootstrap created.
#[derive(Debug, Clone)]
pub struct Bootstrapped {
    pub account_id: Uuid,
    pub user_id: Uuid,
    pub token: String,
}

/// A new API token: its id, and the secret shown once.
pub struct IssuedToken {
    pub token_id: Uuid,
    pub token: String,
}

/// The sha256 of a token, as stored: a leaked table does not leak tokens.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", BASE64.encode(bytes))
}

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

/// Checks a password against its argon2 hash, off the async runtime.
pub async fn verify_password(password: String, hash: String) -> anyhow::Result<bool> {
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash).map_err(|e| anyhow::anyhow!("stored password hash is malformed: {e}"))?;
        Ok(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .context("password verification task failed")?
}

fn check_password(password: &str) -> Result<(), DomainError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(DomainError::invalid(format!("the password must have at least {MIN_PASSWORD_CHARS} characters")));
    }
    Ok(())
}

impl Commands {
    /// Creates an account with an administrator and an API token for them. An e-mail
    /// that already has a user adds that user (password checked) to the new account.
    pub async fn bootstrap(
        &self,
        account_name: &str,
        email: &str,
        password: &str,
        admin_name: Option<&str>,
    ) -> Result<Bootstrapped, CommandError> {
        let account_name = Name::parse("account name", account_name)?;
        let email = EmailAddress::parse(email)?;
        check_password(password)?;
        let existing: Option<(Uuid, String)> =
            sqlx::query_as("SELECT user_id, password_hash FROM user_credentials WHERE email = $1")
                .bind(email.to_string())
                .fetch_optional(self.store().pool())
                .await
                .context("failed to look up a user")?;
        let (user_id, password_hash) = match &existing {
            Some((user, hash)) => {
                if !verify_password(password.to_string(), hash.clone()).await? {
                    return Err(
                        DomainError::invalid("a user with this e-mail exists and the password does not match").into()
                    );
                }
                (*user, None)
            }
            None => (Uuid::now_v7(), Some(hash_password(password.to_string()).await?)),
        };
        let default_name = email.to_string().split('@').next().unwrap_or("admin").to_string();
        let admin_name = Name::parse("name", admin_name.unwrap_or(&default_name))?;
        let account_id = Uuid::now_v7();
        let context = CommandContext::now(account_id, Actor::System);
        let token = new_token();
        let token_id = Uuid::now_v7();
        retry(|| async {
            let mut work = UnitOfWork::new(&context);
            let mut account = self.store().load_for_update::<Account>(&account_id.to_string()).await?;
            let mut events =
                decide(&mut account, AccountCommand::Create { name: account_name.clone(), at: context.at }).await?;
            events.extend(
                decide(
                    &mut account,
                    AccountCommand::AddMember {
                        user_id: UserId(user_id),
                        name: admin_name.clone(),
                        email: email.clone(),
                        role: Role::Administrator,
                        at: context.at,
                    },
                )
                .await?,
            );
            work.append(account, events)?;
            let mut user = self.store().load_for_update::<User>(&user_id.to_string()).await?;
            let mut events = Vec::new();
            if let Some(hash) = &password_hash {
                let register = UserCommand::Register { email: email.clone(), name: admin_name.clone(), at: context.at };
                events.extend(decide(&mut user, register).await?);
                work.side_write(SideWrite::Credentials {
                    user: user_id,
                    email: email.to_string(),
                    password_hash: hash.clone(),
                });
            }
            let issue = UserCommand::IssueApiToken {
                token_id: TokenId(token_id),
                account_id: AccountId(account_id),
                name: Name::parse("token name", "bootstrap")?,
                at: context.at,
            };
            events.extend(decide(&mut user, issue).await?);
            work.append(user, events)?;
            work.side_write(SideWrite::Membership {
                account: account_id,
                user: user_id,
                role: Role::Administrator.as_str(),
            });
            work.side_write(SideWrite::ApiToken {
                token: token_id,
                token_hash: token_hash(&token),
                user: user_id,
                account: account_id,
                name: "bootstrap".into(),
            });
            self.store().commit(work).await?;
            Ok(())
        })
        .await?;
        Ok(Bootstrapped { account_id, user_id, token })
    }

    /// Issues a personal API token for the acting user in the context's account.
    pub async fn issue_api_token(
        &self,
        context: &CommandContext,
        name: &str,
    ) -> Result<(IssuedToken, Written), CommandError> {
        let Actor::User(user_id) = context.actor else {
            return Err(DomainError::invalid("only a user can hold an API token").into());
        };
        let name = Name::parse("token name", name)?;
        let token = new_token();
        let token_id = Uuid::now_v7();
        let written = retry(|| async {
            let _guard = self.store().lock::<User>(&user_id.to_string()).await;
            let mut user = self.store().load_for_update::<User>(&user_id.to_string()).await?;
            let issue = UserCommand::IssueApiToken {
                token_id: TokenId(token_id),
                account_id: AccountId(context.account_id),
                name: name.clone(),
                at: context.at,
            };
            let events = decide(&mut user, issue).await?;
            let mut work = UnitOfWork::new(context);
            work.append(user, events)?;
            work.side_write(SideWrite::ApiToken {
                token: token_id,
                token_hash: token_hash(&token),
                user: user_id,
                account: context.account_id,
                name: name.clone().into_inner(),
            });
            Ok(Written { position: self.store().commit(work).await? })
        })
        .await?;
        Ok((IssuedToken { token_id, token }, written))
    }

    /// The account's state (members, roles, names) as the write side knows it.
    pub async fn account(&self, account_id: Uuid) -> Result<Account, CommandError> {
        let account = self.store().load::<Account>(&account_id.to_string()).await?.state;
        if !account.exists() {
            return Err(DomainError::NotFound("account").into());
        }
        Ok(account)
    }

    /// The display name of the context's actor ("by Ana" in activity lines).
    pub async fn actor_name(&self, context: &CommandContext, account: &Account) -> String {
        match context.actor {
            Actor::User(id) => account.member(UserId(id)).map_or_else(|| "an agent".into(), |m| m.name.clone()),
            Actor::Contact(_) => "the contact".into(),
            Actor::System => "the system".into(),
        }
    }
}
