//! Accounts: bootstrap (an account, its administrator and a first API token), and
//! the account's state as the write side knows it.

use domain::account::{Account, AccountCommand};
use domain::actor::Actor;
use domain::ids::{AccountId, TokenId, UserId};
use domain::user::{User, UserCommand};
use domain::values::{EmailAddress, Name, Role};
use domain::DomainError;
use uuid::Uuid;

use crate::access::tables::{Credentials, IssueToken, Membership};
use crate::access::{check_password, credentials, hash_password, verify_password};
use crate::access::{NewAccessToken, TokenKind};
use crate::context::CommandContext;
use crate::store::UnitOfWork;
use crate::{decide, retry, CommandError, Commands};

/// What bootstrap created.
#[derive(Debug, Clone)]
pub struct Bootstrapped {
    pub account_id: Uuid,
    pub user_id: Uuid,
    pub token: String,
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
        let existing = credentials(self, &email).await?;
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
        let (token_row, token) = NewAccessToken::issue(user_id, account_id, "bootstrap", TokenKind::Api, None);
        let token_id = token_row.token;
        retry(|| async {
            let mut work = UnitOfWork::new(&context);
            let member_subject = Uuid::now_v7();
            work.side_writes().data_key(self.store().keyring(), member_subject)?;
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
                        custom_role: None,
                        subject: member_subject,
                        at: context.at,
                    },
                )
                .await?,
            );
            work.append(account, events)?;
            let mut user = self.store().load_for_update::<User>(&user_id.to_string()).await?;
            let mut events = Vec::new();
            if let Some(hash) = &password_hash {
                let subject = Uuid::now_v7();
                work.side_writes().data_key(self.store().keyring(), subject)?;
                let register = UserCommand::Register {
                    email: email.clone(),
                    name: admin_name.clone(),
                    invited: false,
                    subject,
                    at: context.at,
                };
                events.extend(decide(&mut user, register).await?);
                work.side_writes().add(Credentials {
                    user: user_id,
                    email: email.to_string(),
                    password_hash: Some(hash.clone()),
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
            work.side_writes().add(Membership {
                account: account_id,
                user: user_id,
                role: Role::Administrator,
                custom_role: None,
            });
            work.side_writes().add(IssueToken(token_row.clone()));
            self.store().commit(work).await?;
            Ok(())
        })
        .await?;
        Ok(Bootstrapped { account_id, user_id, token })
    }

    /// The account's state (members, roles, names) as the write side knows it.
    pub async fn account(&self, context: &CommandContext) -> Result<Account, CommandError> {
        let account = self.store().load::<Account>(context, &context.account_id.to_string()).await?.state;
        if !account.exists() {
            return Err(DomainError::NotFound("account").into());
        }
        Ok(account)
    }
}
