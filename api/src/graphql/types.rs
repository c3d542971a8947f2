//! GraphQL object, enum and input types, and their mapping to domain values.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Enum, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use commands::Written;
use domain::channel::{ChannelAddress, ChannelSecret};
use domain::values;
use projections::availability::{self, AvailabilityRow};
use projections::directory::{self, AgentRow, ContactRow, InboxRow, LabelRow, TeamRow};
use projections::feed::FeedEvent;
use projections::inbox_list::{self, ConversationRow};
use projections::timeline::{self, MessageRow};
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::{principal, state, CONVERSATION_VIEWS, LONG_PAGE};
use crate::error::{ApiError, Result};
use crate::policy::Action;
use crate::state::AppState;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "values::Status")]
pub enum ConversationStatus {
    Open,
    Pending,
    Snoozed,
    Resolved,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "values::Priority")]
pub enum Priority {
    None,
    Low,
    Medium,
    High,
    Urgent,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "values::MessageType")]
pub enum MessageType {
    Incoming,
    Outgoing,
    Activity,
    Template,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "values::Channel")]
pub enum ChannelType {
    Api,
    Webchat,
    Whatsapp,
    Messenger,
    Email,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "values::FileType")]
pub enum FileType {
    Image,
    Audio,
    Video,
    File,
    Sticker,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "values::MessageStatus")]
pub enum MessageStatus {
    Pending,
    Sent,
    Delivered,
    Read,
    Failed,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "values::Role")]
pub enum Role {
    Administrator,
    Agent,
}

/// A value a projector stored from a domain enum; anything else is a bug.
pub fn stored<T: std::str::FromStr<Err = domain::DomainError>>(text: &str) -> Result<T> {
    text.parse::<T>().map_err(|e| ApiError::internal(anyhow::anyhow!("read model holds {e}")))
}

/// Whose conversations the inbox list shows.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum AssigneeScope {
    Me,
    Unassigned,
    Assigned,
    All,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "inbox_list::ConversationSort")]
pub enum ConversationSort {
    LastActivity,
    CreatedAt,
    Priority,
    WaitingSince,
}

/// A conversation as the inbox list shows it. A mutation's answer names one by id
/// and fetches its row only if a field needs it — after waiting for the projectors to
/// pass the mutation's own write, so the answer shows it.
///
/// Every field but `id` is authorized for the caller here, however the object was
/// reached (a list, a mutation's answer, a message's `conversation`).
pub struct Conversation {
    id: Uuid,
    account_id: Uuid,
    written: Written,
    row: OnceCell<ConversationRow>,
}

impl Conversation {
    /// `None`: the inbox's channel has no reply window; `Some(closes)`: it has, and
    /// it closes then (`None` before the contact wrote).
    async fn reply_window(&self, ctx: &Context<'_>) -> Result<Option<Option<DateTime<Utc>>>> {
        let row = self.row(ctx).await?;
        let inbox = directory::inbox(&state(ctx)?.pool, self.account_id, row.inbox_id).await?;
        let Some(address) = inbox.and_then(|inbox| inbox.address) else { return Ok(None) };
        let window = address.delivery().window;
        Ok(Some(row.last_received_at.map(|last| last + window)))
    }

    pub fn loaded(row: ConversationRow) -> Self {
        Self {
            id: row.conversation_id,
            account_id: row.account_id,
            written: Written::default(),
            row: OnceCell::new_with(Some(row)),
        }
    }

    /// One changed by `written` (or by nothing: `Written::default()`), read on demand.
    pub fn changed(id: Uuid, account_id: Uuid, written: Written) -> Self {
        Self { id, account_id, written, row: OnceCell::new() }
    }

    async fn row(&self, ctx: &Context<'_>) -> Result<&ConversationRow> {
        let row = self
            .row
            .get_or_try_init(|| async {
                let state = state(ctx)?;
                state.settle(self.written, CONVERSATION_VIEWS).await;
                inbox_list::get(&state.pool, self.account_id, self.id).await?.ok_or_else(|| {
                    ApiError::internal(anyhow::anyhow!("conversation {} is not in the inbox list", self.id))
                })
            })
            .await?;
        principal(ctx)?.require_conversation(row.inbox_id, row.assignee_id)?;
        Ok(row)
    }
}

#[Object]
impl Conversation {
    async fn id(&self) -> ID {
        ID(self.id.to_string())
    }
    /// The account-wide conversation number (1, 2, 3…).
    async fn display_id(&self, ctx: &Context<'_>) -> Result<i64> {
        Ok(self.row(ctx).await?.display_id)
    }
    async fn status(&self, ctx: &Context<'_>) -> Result<ConversationStatus> {
        Ok(stored::<values::Status>(&self.row(ctx).await?.status)?.into())
    }
    async fn priority(&self, ctx: &Context<'_>) -> Result<Priority> {
        Ok(stored::<values::Priority>(&self.row(ctx).await?.priority)?.into())
    }
    async fn labels(&self, ctx: &Context<'_>) -> Result<&[String]> {
        Ok(&self.row(ctx).await?.labels)
    }
    async fn muted(&self, ctx: &Context<'_>) -> Result<bool> {
        Ok(self.row(ctx).await?.muted)
    }
    /// Free-form attributes set by agents or integrations; null once erased.
    async fn custom_attributes(&self, ctx: &Context<'_>) -> Result<Option<async_graphql::Json<&serde_json::Value>>> {
        Ok(self.row(ctx).await?.custom_attributes.as_ref().map(async_graphql::Json))
    }
    async fn snoozed_until(&self, ctx: &Context<'_>) -> Result<Option<DateTime<Utc>>> {
        Ok(self.row(ctx).await?.snoozed_until)
    }
    /// Since when the contact has been waiting for a reply; null when answered.
    async fn waiting_since(&self, ctx: &Context<'_>) -> Result<Option<DateTime<Utc>>> {
        Ok(self.row(ctx).await?.waiting_since)
    }
    async fn first_reply_at(&self, ctx: &Context<'_>) -> Result<Option<DateTime<Utc>>> {
        Ok(self.row(ctx).await?.first_reply_at)
    }
    async fn messages_count(&self, ctx: &Context<'_>) -> Result<i32> {
        Ok(self.row(ctx).await?.messages_count)
    }
    /// The agents who have the conversation open now (a subscription to its events):
    /// two about to answer the same customer see each other.
    async fn viewers(&self, ctx: &Context<'_>) -> Result<Vec<Agent>> {
        self.row(ctx).await?;
        let mut viewers = Vec::new();
        for user in state(ctx)?.viewers.of(self.id).await? {
            viewers.push(Agent::load(ctx, user).await?);
        }
        Ok(viewers)
    }
    /// The contact's messages the caller has not read (`markConversationRead`).
    async fn unread_count(&self, ctx: &Context<'_>) -> Result<i32> {
        let row = self.row(ctx).await?;
        Ok(inbox_list::unread_count(&state(ctx)?.pool, row, principal(ctx)?.user_id).await?)
    }
    /// Whether a free-form reply can be sent now; outside the provider's window only
    /// a template can (`MESSAGING_WINDOW_CLOSED`). Always true for channels without one.
    async fn can_reply(&self, ctx: &Context<'_>) -> Result<bool> {
        Ok(match self.reply_window(ctx).await? {
            None => true,
            Some(closes) => closes.is_some_and(|closes| Utc::now() <= closes),
        })
    }
    /// When the provider's window for free-form replies closes (24 hours after the
    /// contact's last message; 7 days on Messenger with the human-agent tag). Null for
    /// channels without a window, and before the contact wrote.
    async fn reply_window_closes_at(&self, ctx: &Context<'_>) -> Result<Option<DateTime<Utc>>> {
        Ok(self.reply_window(ctx).await?.flatten())
    }
    async fn created_at(&self, ctx: &Context<'_>) -> Result<DateTime<Utc>> {
        Ok(self.row(ctx).await?.created_at)
    }
    async fn last_activity_at(&self, ctx: &Context<'_>) -> Result<DateTime<Utc>> {
        Ok(self.row(ctx).await?.last_activity_at)
    }
    async fn assignee(&self, ctx: &Context<'_>) -> Result<Option<Agent>> {
        let Some(user) = self.row(ctx).await?.assignee_id else { return Ok(None) };
        let row = directory::agent(&state(ctx)?.pool, self.account_id, user).await?;
        Ok(Some(row.map_or(Agent::unknown(user), Agent)))
    }
    async fn team(&self, ctx: &Context<'_>) -> Result<Option<Team>> {
        let Some(team) = self.row(ctx).await?.team_id else { return Ok(None) };
        let teams = directory::teams(&state(ctx)?.pool, self.account_id).await?;
        Ok(teams.into_iter().find(|t| t.team_id == team).map(Team))
    }
    async fn inbox(&self, ctx: &Context<'_>) -> Result<Option<Inbox>> {
        let inbox_id = self.row(ctx).await?.inbox_id;
        let row = directory::inbox(&state(ctx)?.pool, self.account_id, inbox_id).await?;
        Ok(row.map(Inbox))
    }
    async fn contact(&self, ctx: &Context<'_>) -> Result<Contact> {
        let conversation = self.row(ctx).await?;
        // A mutation may have just written the contact, as an inbound message's first does.
        state(ctx)?.settle(self.written, &["directory"]).await;
        let row = directory::contact(&state(ctx)?.pool, self.account_id, conversation.contact_id, None).await?;
        Ok(Contact(row.unwrap_or(ContactRow {
            contact_id: conversation.contact_id,
            name: conversation.contact_name.clone(),
            email: None,
            phone: None,
            created_at: conversation.created_at,
        })))
    }
    /// Messages and activity lines, oldest first.
    #[graphql(complexity = "LONG_PAGE.cost(first, child_complexity)")]
    async fn messages(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Message>> {
        let limit = LONG_PAGE.size(first)?;
        self.row(ctx).await?;
        let after_seq = after
            .map(|a| a.parse::<i64>().map_err(|_| ApiError::bad_input("the cursor is not valid for this list")))
            .transpose()?;
        state(ctx)?.settle(self.written, CONVERSATION_VIEWS).await;
        let rows = timeline::messages(&state(ctx)?.pool, self.account_id, self.id, after_seq, limit + 1).await?;
        let account_id = self.account_id;
        Ok(connection(rows, limit, |m| m.seq.to_string(), |row| Message::loaded(row, account_id)))
    }
}

/// Builds a Relay connection from `limit + 1` fetched rows.
pub fn connection<R, N: async_graphql::OutputType>(
    mut rows: Vec<R>,
    limit: i64,
    cursor: impl Fn(&R) -> String,
    node: impl Fn(R) -> N,
) -> Connection<String, N> {
    let has_next = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let mut connection = Connection::new(false, has_next);
    connection.edges.extend(rows.into_iter().map(|row| Edge::new(cursor(&row), node(row))));
    connection
}

/// A message or activity line. A mutation's answer builds it from what the command
/// knows; its conversation is read on demand (see [`Conversation`]).
pub struct Message {
    row: MessageRow,
    account_id: Uuid,
    written: Written,
}

impl Message {
    pub fn loaded(row: MessageRow, account_id: Uuid) -> Self {
        Self { row, account_id, written: Written::default() }
    }

    /// One a command just wrote (`written`): its conversation is read after it lands.
    pub fn written(row: MessageRow, account_id: Uuid, written: Written) -> Self {
        Self { row, account_id, written }
    }
}

#[Object]
impl Message {
    async fn id(&self) -> ID {
        ID(self.row.message_id.to_string())
    }
    /// Null once the contact's data has been erased.
    /// The text; null once the contact was erased (see `contentErased`).
    async fn content(&self) -> Option<&str> {
        self.row.content.as_deref()
    }
    /// Whether the text was erased with the contact's data (right to be forgotten).
    async fn content_erased(&self) -> bool {
        self.row.content.is_none()
    }
    async fn message_type(&self) -> Result<MessageType> {
        Ok(stored::<values::MessageType>(&self.row.message_type)?.into())
    }
    async fn private(&self) -> bool {
        self.row.private
    }
    /// `contact:<id>`, `user:<id>` or `system`.
    async fn sender(&self) -> &str {
        &self.row.sender
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at
    }
    /// Where a reply a provider (WhatsApp, Messenger) delivers stands: `PENDING` until
    /// the provider accepts it, then `SENT`, `DELIVERED`, `READ`, or `FAILED`. Null for
    /// incoming messages, private notes and channels without a provider.
    async fn status(&self) -> Result<Option<MessageStatus>> {
        self.row.status.as_deref().map(|s| Ok(stored::<values::MessageStatus>(s)?.into())).transpose()
    }
    /// The provider's error (`<code>: <title>`) when the status is `FAILED`.
    async fn status_error(&self) -> Option<&str> {
        self.row.status_error.as_deref()
    }
    /// The files it carries. `url` is a link that works for a few minutes (ask again
    /// for a fresh one), null until the file has been copied from the provider.
    async fn attachments(&self, ctx: &Context<'_>) -> Result<Vec<MessageAttachment>> {
        let Some(listed) = self.row.attachments.as_ref().and_then(|a| a.0.as_array()) else { return Ok(Vec::new()) };
        let shown: Vec<ShownAttachment> =
            listed.iter().filter_map(|a| serde_json::from_value(a.clone()).ok()).collect();
        let ids: Vec<Uuid> = shown.iter().map(|a| a.attachment_id).collect();
        let files = &state(ctx)?.attachments;
        let kept = files.kept(&ids).await.map_err(ApiError::internal)?;
        let expires = Utc::now() + commands::attachments::LINK_TTL;
        Ok(shown
            .into_iter()
            .map(|a| {
                let file = kept.iter().find(|k| k.attachment_id == a.attachment_id && k.account_id == self.account_id);
                MessageAttachment {
                    id: ID(a.attachment_id.to_string()),
                    file_type: a.file_type.into(),
                    mime_type: file.map(|f| f.mime_type.clone()).or(a.mime_type),
                    file_name: a.file_name,
                    file_size: file.map(|f| f.file_size),
                    url: file.map(|f| files.link(f.attachment_id, expires)),
                }
            })
            .collect())
    }
    async fn conversation(&self) -> Conversation {
        Conversation::changed(self.row.conversation_id, self.account_id, self.written)
    }
}

/// A file of a message.
#[derive(SimpleObject)]
pub struct MessageAttachment {
    pub id: ID,
    pub file_type: FileType,
    pub mime_type: Option<String>,
    pub file_name: Option<String>,
    /// Bytes, once copied.
    pub file_size: Option<i64>,
    /// A path on this server that serves the file for a few minutes.
    pub url: Option<String>,
}

/// A file as the timeline keeps it.
#[derive(serde::Deserialize)]
struct ShownAttachment {
    attachment_id: Uuid,
    file_type: values::FileType,
    mime_type: Option<String>,
    file_name: Option<String>,
}

pub struct Agent(pub AgentRow);

impl Agent {
    /// An agent the directory no longer has (removed from the account).
    pub fn unknown(user: Uuid) -> Self {
        Self(AgentRow { user_id: user, name: String::new(), email: String::new(), role: "agent".into() })
    }

    /// An agent of the caller's account, by id.
    pub async fn load(ctx: &Context<'_>, user: Uuid) -> Result<Self> {
        let row = directory::agent(&state(ctx)?.pool, principal(ctx)?.account_id, user).await?;
        Ok(row.map_or(Agent::unknown(user), Agent))
    }
}

#[Object]
impl Agent {
    async fn id(&self) -> ID {
        ID(self.0.user_id.to_string())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn email(&self) -> &str {
        &self.0.email
    }
    async fn role(&self) -> Result<Role> {
        Ok(stored::<values::Role>(&self.0.role)?.into())
    }
    /// Whether the agent takes conversations now (OFFLINE while not present).
    async fn availability(&self, ctx: &Context<'_>) -> Result<Availability> {
        Availability::of_agent(state(ctx)?, principal(ctx)?.account_id, self.0.user_id).await
    }
}

pub struct Inbox(pub InboxRow);

#[Object]
impl Inbox {
    async fn id(&self) -> ID {
        ID(self.0.inbox_id.to_string())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn channel(&self) -> Result<ChannelType> {
        Ok(stored::<values::Channel>(&self.0.channel)?.into())
    }
    /// A WhatsApp inbox's settings (secrets only as whether they are set).
    async fn whatsapp(&self) -> Option<WhatsappSettings> {
        whatsapp_settings(&self.0)
    }
    /// A Messenger inbox's settings (secrets only as whether they are set).
    async fn messenger(&self) -> Option<MessengerSettings> {
        messenger_settings(&self.0)
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn members(&self, ctx: &Context<'_>) -> Result<Vec<Agent>> {
        members(ctx, self.0.account_id, directory::Group::Inbox(self.0.inbox_id)).await
    }
}

/// A WhatsApp inbox's settings as shown: ids, and which secrets are set.
#[derive(SimpleObject)]
pub struct WhatsappSettings {
    pub phone_number_id: String,
    pub business_account_id: String,
    pub access_token_set: bool,
    pub app_secret_set: bool,
    pub verify_token_set: bool,
}

/// A Messenger inbox's settings as shown: ids, and which secrets are set.
#[derive(SimpleObject)]
pub struct MessengerSettings {
    pub page_id: String,
    pub human_agent_tag: bool,
    pub page_access_token_set: bool,
    pub app_secret_set: bool,
    pub verify_token_set: bool,
}

fn is_set(row: &InboxRow, secret: ChannelSecret) -> bool {
    row.secrets_set.iter().any(|s| s == secret.as_str())
}

fn whatsapp_settings(row: &InboxRow) -> Option<WhatsappSettings> {
    match row.address.as_deref()? {
        ChannelAddress::Whatsapp { phone_number_id, business_account_id } => Some(WhatsappSettings {
            phone_number_id: phone_number_id.clone(),
            business_account_id: business_account_id.clone(),
            access_token_set: is_set(row, ChannelSecret::AccessToken),
            app_secret_set: is_set(row, ChannelSecret::AppSecret),
            verify_token_set: is_set(row, ChannelSecret::VerifyToken),
        }),
        ChannelAddress::Messenger { .. } => None,
    }
}

fn messenger_settings(row: &InboxRow) -> Option<MessengerSettings> {
    match row.address.as_deref()? {
        ChannelAddress::Messenger { page_id, human_agent_tag } => Some(MessengerSettings {
            page_id: page_id.clone(),
            human_agent_tag: *human_agent_tag,
            page_access_token_set: is_set(row, ChannelSecret::PageAccessToken),
            app_secret_set: is_set(row, ChannelSecret::AppSecret),
            verify_token_set: is_set(row, ChannelSecret::VerifyToken),
        }),
        ChannelAddress::Whatsapp { .. } => None,
    }
}

async fn members(ctx: &Context<'_>, account: Uuid, group: directory::Group) -> Result<Vec<Agent>> {
    let rows = directory::members(&state(ctx)?.pool, account, group).await?;
    Ok(rows.into_iter().map(Agent).collect())
}

pub struct Team(pub TeamRow);

#[Object]
impl Team {
    async fn id(&self) -> ID {
        ID(self.0.team_id.to_string())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn members(&self, ctx: &Context<'_>) -> Result<Vec<Agent>> {
        members(ctx, self.0.account_id, directory::Group::Team(self.0.team_id)).await
    }
}

pub struct Label(pub LabelRow);

#[Object]
impl Label {
    async fn id(&self) -> ID {
        ID(self.0.label_id.to_string())
    }
    async fn title(&self) -> &str {
        &self.0.title
    }
    async fn color(&self) -> &str {
        &self.0.color
    }
}

pub struct Contact(pub ContactRow);

/// A contact; personal fields are null when unknown or erased. Its e-mail and phone
/// need the permission to manage contacts, wherever the contact was reached.
#[Object]
impl Contact {
    async fn id(&self) -> ID {
        ID(self.0.contact_id.to_string())
    }
    async fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }
    async fn email(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
        principal(ctx)?.require(Action::ReadContacts)?;
        Ok(self.0.email.as_deref())
    }
    async fn phone(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
        principal(ctx)?.require(Action::ReadContacts)?;
        Ok(self.0.phone.as_deref())
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// One event of the log, personal fields opened (null once erased).
pub struct Event(pub FeedEvent);

#[Object]
impl Event {
    /// Opaque cursor of the event in feed order; pass it back as `after`.
    async fn position(&self) -> String {
        self.0.position.to_string()
    }
    async fn event_type(&self) -> &str {
        &self.0.event_type
    }
    async fn event_version(&self) -> &str {
        &self.0.event_version
    }
    async fn aggregate_type(&self) -> &str {
        &self.0.aggregate_type
    }
    async fn aggregate_id(&self) -> ID {
        ID(self.0.aggregate_id.clone())
    }
    /// The event's number within its stream, from 1.
    async fn sequence(&self) -> i64 {
        self.0.sequence
    }
    async fn recorded_at(&self) -> DateTime<Utc> {
        self.0.recorded_at
    }
    /// Who caused the event, as recorded: `user:<id>`, `contact:<id>`,
    /// `automation:<rule>`, `channel:<name>`, `system:<policy>` or `system`.
    async fn actor(&self) -> &str {
        self.0.recorded_actor()
    }
    /// The request, or chain of reactions, the event belongs to.
    async fn correlation_id(&self) -> Option<String> {
        self.0.correlation_id().map(|id| id.to_string())
    }
    /// For an event a policy or a job wrote: the event it reacts to
    /// (`<aggregateType>/<aggregateId>/<sequence>`).
    async fn causation_id(&self) -> Option<&str> {
        self.0.metadata.get(projections::envelope::META_CAUSATION).and_then(serde_json::Value::as_str)
    }
    async fn payload(&self) -> async_graphql::Json<serde_json::Value> {
        let mut payload = self.0.payload.clone();
        // The variant's fields, not the serde envelope: the type is in eventType.
        if let Some(body) = projections::envelope::variant_body(&mut payload) {
            return async_graphql::Json(serde_json::Value::Object(body.clone()));
        }
        async_graphql::Json(payload)
    }
    async fn metadata(&self) -> async_graphql::Json<serde_json::Value> {
        async_graphql::Json(self.0.metadata.clone())
    }
}

/// Counts behind the inbox tabs, under the same filter.
#[derive(SimpleObject)]
pub struct ConversationCounts {
    pub mine: i64,
    pub unassigned: i64,
    pub assigned: i64,
    pub all: i64,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum AvailabilityStatus {
    Online,
    Busy,
    Offline,
}

impl From<values::AvailabilityStatus> for AvailabilityStatus {
    fn from(status: values::AvailabilityStatus) -> Self {
        match status {
            values::AvailabilityStatus::Online => Self::Online,
            values::AvailabilityStatus::Busy => Self::Busy,
            values::AvailabilityStatus::Offline => Self::Offline,
        }
    }
}

impl From<AvailabilityStatus> for values::AvailabilityStatus {
    fn from(status: AvailabilityStatus) -> Self {
        match status {
            AvailabilityStatus::Online => Self::Online,
            AvailabilityStatus::Busy => Self::Busy,
            AvailabilityStatus::Offline => Self::Offline,
        }
    }
}

/// An agent's availability: `status` is what others see (OFFLINE while the agent is
/// not present, whatever they chose), `chosen` what they chose.
#[derive(SimpleObject, Clone, PartialEq, Eq, Debug)]
pub struct Availability {
    pub status: AvailabilityStatus,
    pub chosen: AvailabilityStatus,
    /// Since when `status` holds; null for an agent never seen.
    pub since: Option<DateTime<Utc>>,
}

impl Availability {
    fn of(row: Option<AvailabilityRow>) -> Result<Self> {
        Ok(match row {
            Some(row) => Self {
                status: stored::<values::AvailabilityStatus>(&row.status)?.into(),
                chosen: stored::<values::AvailabilityStatus>(&row.chosen)?.into(),
                since: Some(row.since),
            },
            None => Self { status: AvailabilityStatus::Offline, chosen: AvailabilityStatus::Online, since: None },
        })
    }

    /// One agent's, as the read model shows it.
    pub async fn of_agent(state: &AppState, account: Uuid, user: Uuid) -> Result<Self> {
        Self::of(availability::of_agent(&state.pool, account, user).await?)
    }
}
