//! Inboxes' settings, for administrators: creating an inbox of any channel, and a
//! provider channel's address and secrets. Secrets are write-only: the API says
//! whether each is set, never its value.

use async_graphql::{Context, InputObject, Json, Object, SimpleObject, ID};
use commands::channel::templates;
use commands::inbox::ChannelInput;
use domain::channel::{ChannelAddress, ChannelSecret};
use projections::directory;

use super::types::{ChannelType, Inbox};
use super::{mutate, parse_id, principal, state, Acting};
use crate::error::{ApiError, Result};
use crate::policy::Action;

#[derive(Default)]
pub struct InboxMutation;

#[derive(Default)]
pub struct InboxQuery;

/// A WhatsApp message template as the provider lists it (synced).
#[derive(SimpleObject)]
pub struct MessageTemplate {
    pub name: String,
    pub language: String,
    /// `MARKETING`, `UTILITY`, `AUTHENTICATION`.
    pub category: String,
    /// `APPROVED` templates can be sent; `PENDING`, `REJECTED`, … cannot.
    pub status: String,
    /// The provider's components (header, body with `{{1}}` placeholders, buttons).
    pub components: Json<serde_json::Value>,
}

impl From<templates::MessageTemplate> for MessageTemplate {
    fn from(t: templates::MessageTemplate) -> Self {
        Self {
            name: t.name,
            language: t.language,
            category: t.category,
            status: t.status,
            components: Json(t.components.0),
        }
    }
}

#[derive(InputObject)]
pub struct SyncMessageTemplatesInput {
    pub inbox_id: ID,
}

#[derive(SimpleObject)]
pub struct SyncMessageTemplatesPayload {
    pub templates: Vec<MessageTemplate>,
}

#[Object]
impl InboxQuery {
    /// A WhatsApp inbox's message templates as last synced (on creation, and by
    /// `syncMessageTemplates`); for the inbox's members and administrators.
    async fn message_templates(&self, ctx: &Context<'_>, inbox_id: ID) -> Result<Vec<MessageTemplate>> {
        let inbox = parse_id(&inbox_id, "inbox")?;
        let (principal, state) = (principal(ctx)?, state(ctx)?);
        // An inbox of another account is not found, whoever asks.
        if directory::inbox(&state.pool, principal.account_id, inbox).await?.is_none() {
            return Err(ApiError::not_found("inbox"));
        }
        principal.require_inbox(inbox)?;
        let listed = state.commands.templates(inbox).await.map_err(ApiError::internal)?;
        Ok(listed.into_iter().map(MessageTemplate::from).collect())
    }
}

#[derive(InputObject)]
pub struct CreateInboxInput {
    pub name: String,
    pub channel: ChannelType,
    /// Required for a `WHATSAPP` inbox, every field.
    pub whatsapp: Option<WhatsappSettingsInput>,
    /// Required for a `MESSENGER` inbox, every field.
    pub messenger: Option<MessengerSettingsInput>,
}

/// An inbox's settings; what is absent stays as it is.
#[derive(InputObject)]
pub struct UpdateInboxInput {
    pub inbox_id: ID,
    pub name: Option<String>,
    pub whatsapp: Option<WhatsappSettingsInput>,
    pub messenger: Option<MessengerSettingsInput>,
}

/// A WhatsApp Cloud API number. On update, absent fields stay as they are.
#[derive(InputObject)]
pub struct WhatsappSettingsInput {
    pub phone_number_id: Option<String>,
    pub business_account_id: Option<String>,
    /// Write-only.
    pub access_token: Option<String>,
    /// Write-only: webhooks are signed with it.
    pub app_secret: Option<String>,
    /// Write-only: what the provider's verify handshake presents.
    pub verify_token: Option<String>,
}

/// A Facebook page on the Messenger Platform. On update, absent fields stay as they are.
#[derive(InputObject)]
pub struct MessengerSettingsInput {
    pub page_id: Option<String>,
    /// Write-only.
    pub page_access_token: Option<String>,
    /// Write-only: webhooks are signed with it.
    pub app_secret: Option<String>,
    /// Write-only: what the provider's verify handshake presents.
    pub verify_token: Option<String>,
    /// Lets agents answer up to 7 days after the user's last message (`HUMAN_AGENT`).
    pub human_agent_tag: Option<bool>,
}

/// The secrets given, by name.
fn secrets(given: &[(ChannelSecret, &Option<String>)]) -> Vec<(ChannelSecret, String)> {
    given.iter().filter_map(|(name, value)| value.as_ref().map(|v| (*name, v.clone()))).collect()
}

/// A field of an address: given, else the current one, else missing.
fn field(given: &Option<String>, current: Option<&str>, name: &str) -> Result<String> {
    given
        .clone()
        .or_else(|| current.map(str::to_string))
        .ok_or_else(|| ApiError::bad_input(format!("{name} is required")))
}

/// The channel input of the settings given, completed by the inbox's current address.
fn channel_input(
    whatsapp: Option<&WhatsappSettingsInput>,
    messenger: Option<&MessengerSettingsInput>,
    current: Option<&ChannelAddress>,
) -> Result<Option<ChannelInput>> {
    match (whatsapp, messenger) {
        (Some(_), Some(_)) => Err(ApiError::bad_input("give the settings of one channel: `whatsapp` or `messenger`")),
        (Some(w), None) => {
            let (phone, account) = match current {
                Some(ChannelAddress::Whatsapp { phone_number_id, business_account_id }) => {
                    (Some(phone_number_id.as_str()), Some(business_account_id.as_str()))
                }
                _ => (None, None),
            };
            let address = if w.phone_number_id.is_some() || w.business_account_id.is_some() || current.is_none() {
                Some(ChannelAddress::Whatsapp {
                    phone_number_id: field(&w.phone_number_id, phone, "whatsapp.phoneNumberId")?,
                    business_account_id: field(&w.business_account_id, account, "whatsapp.businessAccountId")?,
                })
            } else {
                None
            };
            let secrets = secrets(&[
                (ChannelSecret::AccessToken, &w.access_token),
                (ChannelSecret::AppSecret, &w.app_secret),
                (ChannelSecret::VerifyToken, &w.verify_token),
            ]);
            Ok(Some(ChannelInput { address, secrets }))
        }
        (None, Some(m)) => {
            let (page, tag) = match current {
                Some(ChannelAddress::Messenger { page_id, human_agent_tag }) => {
                    (Some(page_id.as_str()), *human_agent_tag)
                }
                _ => (None, false),
            };
            let address = if m.page_id.is_some() || m.human_agent_tag.is_some() || current.is_none() {
                Some(ChannelAddress::Messenger {
                    page_id: field(&m.page_id, page, "messenger.pageId")?,
                    human_agent_tag: m.human_agent_tag.unwrap_or(tag),
                })
            } else {
                None
            };
            let secrets = secrets(&[
                (ChannelSecret::PageAccessToken, &m.page_access_token),
                (ChannelSecret::AppSecret, &m.app_secret),
                (ChannelSecret::VerifyToken, &m.verify_token),
            ]);
            Ok(Some(ChannelInput { address, secrets }))
        }
        (None, None) => Ok(None),
    }
}

#[Object]
impl InboxMutation {
    /// Lists a WhatsApp inbox's templates from the provider now, replacing the synced list.
    async fn sync_message_templates(
        &self,
        ctx: &Context<'_>,
        input: SyncMessageTemplatesInput,
    ) -> Result<SyncMessageTemplatesPayload> {
        let inbox_id = parse_id(&input.inbox_id, "inbox")?;
        principal(ctx)?.require(Action::ManageAccount)?;
        let state = state(ctx)?;
        let context = state.context(principal(ctx)?, super::request_id(ctx));
        let inbox = state.commands.inbox(&context, inbox_id).await?;
        let Some(ChannelAddress::Whatsapp { business_account_id, .. }) = inbox.address() else {
            return Err(ApiError::bad_input("message templates are a WhatsApp inbox's"));
        };
        let synced = state.commands.sync_templates(&state.outbound, &state.graph, inbox_id, business_account_id).await;
        match synced {
            Ok(templates) => {
                Ok(SyncMessageTemplatesPayload { templates: templates.into_iter().map(Into::into).collect() })
            }
            Err(error) if error.transient => Err(ApiError::unavailable(anyhow::anyhow!("the provider: {error}"))),
            Err(error) => Err(ApiError::bad_input(format!("the provider refused to list the templates: {error}"))),
        }
    }

    /// Creates an inbox; a WhatsApp or Messenger inbox with all its settings. Its
    /// webhooks are `/webhooks/whatsapp/{id}` or `/webhooks/messenger/{id}` (or the
    /// app-level `/webhooks/whatsapp`, `/webhooks/messenger`).
    async fn create_inbox(&self, ctx: &Context<'_>, input: CreateInboxInput) -> Result<Inbox> {
        let input = &input;
        let settings = channel_input(input.whatsapp.as_ref(), input.messenger.as_ref(), None)?;
        let settings = &settings;
        mutate(ctx, move |Acting { principal, state, context }| async move {
            principal.require(Action::ManageAccount)?;
            let created = state.commands.create_inbox(&context, &input.name, input.channel.into(), settings.clone());
            let (id, written) = created.await?;
            state.settle(written, &["directory"]).await;
            let row = directory::inbox(&state.pool, principal.account_id, id).await?;
            Ok(Inbox(row.ok_or_else(|| ApiError::internal(anyhow::anyhow!("inbox {id} not projected")))?))
        })
        .await
    }

    /// Changes an inbox's settings (its name, its channel's address and secrets); an
    /// audited administrative change: the log records which secrets changed, never
    /// their values.
    async fn update_inbox(&self, ctx: &Context<'_>, input: UpdateInboxInput) -> Result<Inbox> {
        let input = &input;
        let inbox = parse_id(&input.inbox_id, "inbox")?;
        mutate(ctx, move |Acting { principal, state, context }| async move {
            principal.require(Action::ManageAccount)?;
            let mut written = commands::Written::default();
            if let Some(name) = &input.name {
                written = state.commands.rename_inbox(&context, inbox, name).await?;
            }
            let current = state.commands.inbox(&context, inbox).await?;
            if let Some(settings) = channel_input(input.whatsapp.as_ref(), input.messenger.as_ref(), current.address())?
            {
                let configured = state.commands.configure_inbox(&context, inbox, settings).await?;
                written = configured.position.map_or(written, |_| configured);
            }
            state.settle(written, &["directory"]).await;
            let row = directory::inbox(&state.pool, principal.account_id, inbox).await?;
            Ok(Inbox(row.ok_or_else(|| ApiError::not_found("inbox"))?))
        })
        .await
    }
}
