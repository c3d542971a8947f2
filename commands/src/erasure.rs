//! The right to be forgotten: a data subject's key is shredded, so every sealed field
//! of theirs reads as erased everywhere, replays included, while the events and their
//! hash chains stay as they were. A contact's details, message text and custom
//! attributes; a former agent's name and e-mail (their activity lines then read "a
//! former agent"), and their login once no account has them.

use anyhow::Context;
use async_trait::async_trait;
use domain::account::{Account, AccountCommand, AccountEvent};
use domain::contact::{Contact, ContactCommand};
use domain::ids::UserId;
use domain::route::{Route, RouteCommand};
use domain::user::{User, UserCommand, UserEvent};
use domain::values::Name;
use domain::DomainError;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::access::tables::{EraseLogin, ForgetInvitations};
use crate::context::CommandContext;
use crate::error::StoreError;
use crate::inbound::uuid_from_hash;
use crate::side_write::SideWrite;
use crate::store::UnitOfWork;
use crate::{decide, retry, CommandError, Commands, Written};

/// The NOTIFY channel naming an erased data subject, whose key every process must forget.
pub const ERASURE_CHANNEL: &str = "inbox_erasure";

impl Commands {
    /// Erases a contact of the context's account, for `reason` (recorded with the actor).
    pub async fn erase_contact(
        &self,
        context: &CommandContext,
        contact_id: Uuid,
        reason: &str,
    ) -> Result<Written, CommandError> {
        let reason = Name::parse("reason", reason)?;
        let identities: Vec<String> = sqlx::query_scalar(
            "SELECT identity_hash FROM channel_identities WHERE contact_id = $1 AND account_id = $2",
        )
        .bind(contact_id)
        .bind(context.account_id)
        .fetch_all(self.store().pool())
        .await
        .context("failed to find the contact's channel identities")?;
        let routes: Vec<String> = identities.iter().map(|hash| uuid_from_hash(hash).to_string()).collect();
        let contact_key = contact_id.to_string();
        let written = retry(|| async {
            let _contact_guard = self.store().lock::<Contact>(&contact_key).await;
            let mut contact = self.store().load_for_update::<Contact>(&contact_key).await?;
            if contact.state.account_id().map(|a| a.as_uuid()) != Some(context.account_id) {
                self.store().keep(contact);
                return Err(DomainError::NotFound("contact").into());
            }
            let mut work = UnitOfWork::new(context);
            let mut conversations = Vec::new();
            let mut guards = Vec::new();
            for route_id in &routes {
                guards.push(self.store().lock::<Route>(route_id).await);
                let mut route = self.store().load_for_update::<Route>(route_id).await?;
                conversations.extend(route.state.conversation_id());
                let events = decide(&mut route, RouteCommand::Forget { at: context.at }).await?;
                work.append(route, events)?;
            }
            let erase = ContactCommand::Erase { reason: reason.clone(), conversations, at: context.at };
            let events = decide(&mut contact, erase).await?;
            work.append(contact, events)?;
            work.side_writes().add(EraseContact { contact: contact_id });
            Ok(Written { position: self.store().commit(work).await? })
        })
        .await?;
        self.forget_everywhere(&[contact_id]).await;
        Ok(written)
    }

    /// Erases a former member of the context's account, for `reason`: their name and
    /// e-mail as this account recorded them. When no account has them any more, their
    /// login goes too (credentials, invitations, tokens, and what it recorded).
    pub async fn erase_agent(
        &self,
        context: &CommandContext,
        user_id: Uuid,
        reason: &str,
    ) -> Result<Written, CommandError> {
        let reason = Name::parse("reason", reason)?;
        let (account_key, user_key) = (context.account_id.to_string(), user_id.to_string());
        let (written, shredded) = retry(|| async {
            let _account_guard = self.store().lock::<Account>(&account_key).await;
            let mut account = self.store().load_for_update::<Account>(&account_key).await?;
            let erase =
                AccountCommand::EraseMember { user_id: UserId(user_id), reason: reason.clone(), at: context.at };
            let events = decide(&mut account, erase).await?;
            let mut subjects: Vec<Uuid> = events
                .iter()
                .flat_map(|e| match e {
                    AccountEvent::MemberErased { subjects, .. } => subjects.clone(),
                    _ => Vec::new(),
                })
                .collect();
            let mut work = UnitOfWork::new(context);
            if !events.is_empty() {
                work.side_writes().add(ForgetInvitations { account: context.account_id, user: user_id });
            }
            work.append(account, events)?;
            // Decided again at commit: `EraseLogin` conflicts if they joined meanwhile.
            let elsewhere: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM account_memberships WHERE user_id = $1)")
                    .bind(user_id)
                    .fetch_one(self.store().pool())
                    .await
                    .context("failed to read the agent's memberships")?;
            let _user_guard = self.store().lock::<User>(&user_key).await;
            let mut user = self.store().load_for_update::<User>(&user_key).await?;
            if !elsewhere && user.state.exists() {
                let events = decide(&mut user, UserCommand::Erase { at: context.at }).await?;
                for event in &events {
                    if let UserEvent::UserErased { subjects: login, .. } = event {
                        subjects.extend(login);
                        work.side_writes().add(EraseLogin { user: user_id });
                    }
                }
                work.append(user, events)?;
            } else {
                self.store().keep(user);
            }
            if !subjects.is_empty() {
                work.side_writes().add(ShredDataKeys { subjects: subjects.clone() });
            }
            Ok((Written { position: self.store().commit(work).await? }, subjects))
        })
        .await?;
        self.forget_everywhere(&shredded).await;
        Ok(written)
    }

    /// This process forgets shredded keys now; the others when the NOTIFY reaches them.
    async fn forget_everywhere(&self, subjects: &[Uuid]) {
        for subject in subjects {
            self.store().keyring().forget(*subject);
            let notified = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(ERASURE_CHANNEL)
                .bind(subject.to_string())
                .execute(self.store().pool())
                .await;
            if let Err(error) = notified {
                tracing::warn!(%error, %subject, "could not tell other processes to forget an erased subject's key");
            }
        }
    }
}

/// Shreds a contact's data key and forgets its channel identities.
struct EraseContact {
    contact: Uuid,
}

#[async_trait]
impl SideWrite for EraseContact {
    async fn write(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        sqlx::query(
            "WITH shredded AS (DELETE FROM data_keys WHERE subject_id = $1) \
             DELETE FROM channel_identities WHERE contact_id = $1",
        )
        .bind(self.contact)
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(|e| StoreError::of_write(e, "", StoreError::Conflict))
    }
}

/// Shreds data keys: every field they sealed reads as erased from now on.
struct ShredDataKeys {
    subjects: Vec<Uuid>,
}

#[async_trait]
impl SideWrite for ShredDataKeys {
    async fn write(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM data_keys WHERE subject_id = ANY($1)")
            .bind(&self.subjects)
            .execute(conn)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::of_write(e, "", StoreError::Conflict))
    }
}
