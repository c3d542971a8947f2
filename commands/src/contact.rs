//! Contacts as agents correct them (their first details come with their first message).

use domain::contact::{Contact, ContactCommand, ContactDetails};
use domain::DomainError;
use uuid::Uuid;

use crate::context::CommandContext;
use crate::{CommandError, Commands, Written};

impl Commands {
    /// Replaces a contact's name, e-mail and phone, sealed like the first ones.
    pub async fn update_contact(
        &self,
        context: &CommandContext,
        contact_id: Uuid,
        details: ContactDetails,
    ) -> Result<Written, CommandError> {
        self.execute::<Contact>(context, &contact_id.to_string(), |contact| {
            if contact.account_id().map(|a| a.as_uuid()) != Some(context.account_id) {
                return Err(DomainError::NotFound("contact").into());
            }
            Ok(ContactCommand::Update { details: details.clone(), at: context.at })
        })
        .await
    }
}
