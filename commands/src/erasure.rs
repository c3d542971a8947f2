//! The right to be forgotten: a contact's data key is shredded, so every sealed field
//! of theirs (details, message text, custom attributes) reads as erased everywhere,
//! replays included, while the events and their hash chains stay as they were.

use anyhow::Context;
use domain::contact::{Contact, ContactCommand};
use domain::route::{Route, RouteCommand};
use domain::values::Name;
use domain::DomainError;
use uuid::Uuid;

use crate::context::CommandContext;
use crate::inbound::uuid_from_hash;
use crate::store::{SideWrite, UnitOfWork};
use crate::{decide, retry, CommandError, Commands, Written};

/// The NOTIFY channel naming an erased contact, whose key every process must forget.
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
            work.side_write(SideWrite::EraseContact { contact: contact_id });
            Ok(Written { position: self.store().commit(work).await? })
        })
        .await?;
        // This process forgets the key now; the others when the NOTIFY reaches them.
        self.store().keyring().forget(contact_id);
        let notified = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(ERASURE_CHANNEL)
            .bind(contact_id.to_string())
            .execute(self.store().pool())
            .await;
        if let Err(error) = notified {
            tracing::warn!(%error, contact = %contact_id, "could not tell other processes to forget an erased contact's key");
        }
        Ok(written)
    }
}
