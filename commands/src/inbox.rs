//! Inboxes and who works in them.

use domain::channel::{ChannelAddress, ChannelSecret};
use domain::ids::{AccountId, UserId};
use domain::inbox::{ChannelSettings, Inbox, InboxCommand};
use domain::values::{Channel, Name};
use domain::DomainError;
use uuid::Uuid;

use crate::access::tables::InboxMembership;
use crate::channel::settings::ChannelSettingsWrite;
use crate::channel::templates::SyncJob;
use crate::context::CommandContext;
use crate::side_write::SideWrites;
use crate::{CommandError, Commands, Written};

/// A provider channel's settings as an administrator gives them: the secrets in
/// clear, sealed before they are written.
#[derive(Clone, Default)]
pub struct ChannelInput {
    pub address: Option<ChannelAddress>,
    pub secrets: Vec<(ChannelSecret, String)>,
}

impl ChannelInput {
    fn settings(&self) -> Result<ChannelSettings, DomainError> {
        for (name, value) in &self.secrets {
            name.check(value)?;
        }
        let address = self.address.clone().map(ChannelAddress::parse).transpose()?;
        Ok(ChannelSettings { address, secrets: self.secrets.iter().map(|(name, _)| *name).collect() })
    }
}

impl Commands {
    pub async fn create_inbox(
        &self,
        context: &CommandContext,
        name: &str,
        channel: Channel,
        settings: Option<ChannelInput>,
    ) -> Result<(Uuid, Written), CommandError> {
        let name = Name::parse("inbox name", name)?;
        let id = Uuid::now_v7();
        let account_id = AccountId(context.account_id);
        let parsed = settings.as_ref().map(ChannelInput::settings).transpose()?;
        let writes = match (&settings, &parsed) {
            (Some(input), Some(ChannelSettings { address: Some(address), .. })) => {
                let mut writes = self.settings_write(context, id, address, &input.secrets)?;
                // A new WhatsApp number's templates are listed from the provider.
                if let ChannelAddress::Whatsapp { business_account_id, .. } = address {
                    writes.add(SyncJob::enqueue(id, context.account_id, business_account_id)?);
                }
                writes
            }
            _ => SideWrites::default(),
        };
        let written = self
            .execute_with::<Inbox>(
                context,
                &id.to_string(),
                |_| {
                    let settings = parsed.clone();
                    Ok(InboxCommand::Create { account_id, name: name.clone(), channel, settings, at: context.at })
                },
                &writes,
            )
            .await?;
        Ok((id, written))
    }

    /// Changes a provider inbox's settings: the address if given, and the secrets
    /// given (the others stay as they are).
    pub async fn configure_inbox(
        &self,
        context: &CommandContext,
        inbox_id: Uuid,
        input: ChannelInput,
    ) -> Result<Written, CommandError> {
        let settings = input.settings()?;
        // Read through the context: if the inbox moves on before the commit, the
        // decision (and the address written beside) is taken again.
        let inbox = self.inbox(context, inbox_id).await?;
        // The address written beside is the one the event will record.
        let address = match (&settings.address, inbox.address()) {
            (Some(address), _) | (None, Some(address)) => address.clone(),
            (None, None) => {
                let channel = inbox.channel().unwrap_or(Channel::Api);
                return Err(
                    DomainError::invalid(format!("{} inboxes have no channel settings", channel.as_str())).into()
                );
            }
        };
        let writes = self.settings_write(context, inbox_id, &address, &input.secrets)?;
        self.execute_with::<Inbox>(
            context,
            &inbox_id.to_string(),
            |inbox| {
                in_account(context, inbox.account_id())?;
                Ok(InboxCommand::Configure { settings: settings.clone(), at: context.at })
            },
            &writes,
        )
        .await
    }

    fn settings_write(
        &self,
        context: &CommandContext,
        inbox_id: Uuid,
        address: &ChannelAddress,
        secrets: &[(ChannelSecret, String)],
    ) -> Result<SideWrites, CommandError> {
        let write = ChannelSettingsWrite::new(
            self.store().keyring(),
            context.account_id,
            inbox_id,
            address.channel(),
            address.routing_id(),
            secrets,
        )?;
        Ok(SideWrites::of(write))
    }

    /// The inbox's state, if it exists in the context's account.
    pub async fn inbox(&self, context: &CommandContext, inbox_id: Uuid) -> Result<Inbox, CommandError> {
        let inbox = self.store().load::<Inbox>(context, &inbox_id.to_string()).await?.state;
        in_account(context, inbox.account_id())?;
        Ok(inbox)
    }

    /// Changes the inbox's settings (its name).
    pub async fn rename_inbox(
        &self,
        context: &CommandContext,
        inbox_id: Uuid,
        name: &str,
    ) -> Result<Written, CommandError> {
        let name = Name::parse("inbox name", name)?;
        self.execute::<Inbox>(context, &inbox_id.to_string(), |inbox| {
            in_account(context, inbox.account_id())?;
            Ok(InboxCommand::Rename { name: name.clone(), at: context.at })
        })
        .await
    }

    pub async fn add_inbox_member(
        &self,
        context: &CommandContext,
        inbox_id: Uuid,
        user_id: Uuid,
    ) -> Result<Written, CommandError> {
        let account = self.account(context).await?;
        if account.member(UserId(user_id)).is_none() {
            return Err(DomainError::NotFound("agent").into());
        }
        self.change_inbox(context, inbox_id, InboxChange::Add(UserId(user_id))).await
    }

    pub async fn remove_inbox_member(
        &self,
        context: &CommandContext,
        inbox_id: Uuid,
        user_id: Uuid,
    ) -> Result<Written, CommandError> {
        self.change_inbox(context, inbox_id, InboxChange::Remove(UserId(user_id))).await
    }

    async fn change_inbox(
        &self,
        context: &CommandContext,
        inbox_id: Uuid,
        change: InboxChange,
    ) -> Result<Written, CommandError> {
        let (user, member) = match change {
            InboxChange::Add(user) => (user, true),
            InboxChange::Remove(user) => (user, false),
        };
        let write = SideWrites::of(InboxMembership {
            account: context.account_id,
            inbox: inbox_id,
            user: user.as_uuid(),
            member,
        });
        self.execute_with::<Inbox>(
            context,
            &inbox_id.to_string(),
            |inbox| {
                in_account(context, inbox.account_id())?;
                Ok(match change {
                    InboxChange::Add(user_id) => InboxCommand::AddMember { user_id, at: context.at },
                    InboxChange::Remove(user_id) => InboxCommand::RemoveMember { user_id, at: context.at },
                })
            },
            &write,
        )
        .await
    }
}

#[derive(Clone, Copy)]
enum InboxChange {
    Add(UserId),
    Remove(UserId),
}

/// Something of another account (or of none) is reported as not found, never as
/// forbidden: its existence is not the caller's business.
pub(crate) fn in_account(context: &CommandContext, owner: Option<AccountId>) -> Result<(), DomainError> {
    match owner {
        Some(owner) if owner.as_uuid() == context.account_id => Ok(()),
        _ => Err(DomainError::NotFound("inbox")),
    }
}
