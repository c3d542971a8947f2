//! Mutations. Each one validates its input, runs a command, waits (bounded) for the
//! read models it answers from, and answers from them: the caller sees its own write.

use async_graphql::{Context, InputObject, MaybeUndefined, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use commands::attachments::{Upload as KeptUpload, MAX_FILE_BYTES};
use commands::channel::templates;
use commands::context::CommandContext;
use commands::conversation::{Assignment, Reply};
use commands::inbound::InboundMessage;
use commands::Written;
use domain::actor::Actor;
use domain::attachment::{Attachment, MAX_ATTACHMENTS};
use domain::channel::TemplateRef;
use domain::contact::ContactDetails;
use domain::values::{self, EmailAddress, MessageContent, Name, PhoneNumber};
use projections::{directory, timeline};
use uuid::Uuid;

use super::types::*;
use super::upload::Upload;
use super::{authorize_conversation, mutate, parse_id, principal, Acting};
use crate::error::{ApiError, Result};
use crate::policy::Action;
use crate::state::AppState;

#[derive(Default)]
pub struct Mutation;

/// An approved WhatsApp template, sent as a reply (the one kind of message allowed
/// outside the 24-hour window).
#[derive(InputObject)]
pub struct SendTemplateInput {
    pub conversation_id: ID,
    pub name: String,
    /// The template's language code (`en_US`, `pt_BR`).
    pub language: String,
    /// The provider's `components` (body parameters, header media, button payloads).
    pub components: Option<async_graphql::Json<serde_json::Value>>,
}

#[derive(InputObject)]
pub struct InboxMemberInput {
    pub inbox_id: ID,
    pub user_id: ID,
}

/// The contact as the API channel identifies it.
#[derive(InputObject)]
pub struct ContactInput {
    /// The contact's id in the calling system; one conversation per contact and inbox.
    pub source_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
}

/// A contact's details as they are now: an absent or null field clears it.
#[derive(InputObject)]
pub struct UpdateContactInput {
    pub contact_id: ID,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
}

#[derive(InputObject)]
pub struct ReceiveMessageInput {
    pub inbox_id: ID,
    pub contact: ContactInput,
    /// The message's id in the calling system: a repeat is answered with the original.
    pub source_id: String,
    pub content: String,
}

#[derive(InputObject)]
pub struct SendMessageInput {
    pub conversation_id: ID,
    /// May be absent when the message is its files.
    pub content: Option<String>,
    /// Files uploaded to this conversation with `uploadAttachment`. A WhatsApp or
    /// Messenger reply carries one, with text only as a WhatsApp image, video or
    /// document caption.
    pub attachment_ids: Option<Vec<ID>>,
    /// A private note, visible to agents only.
    pub private: Option<bool>,
    /// The client's own id for this reply: sending it again (a retry after a lost
    /// answer) returns the reply already sent instead of sending another.
    pub client_message_id: Option<String>,
    /// The message of this conversation it answers (WhatsApp shows it quoted).
    pub reply_to_message_id: Option<ID>,
}

#[derive(InputObject)]
pub struct UploadAttachmentInput {
    pub conversation_id: ID,
    /// The file, sent as a GraphQL multipart request; at most 25 MB.
    pub file: Upload,
}

#[derive(InputObject)]
pub struct AssignConversationInput {
    pub conversation_id: ID,
    /// The agent; null unassigns, absent leaves the assignee as it is.
    pub assignee_id: MaybeUndefined<ID>,
    /// The team; null clears it, absent leaves it as it is.
    pub team_id: MaybeUndefined<ID>,
}

#[derive(InputObject)]
pub struct DeleteLabelInput {
    pub label_id: ID,
}

#[derive(SimpleObject)]
pub struct DeleteLabelPayload {
    pub label_id: ID,
    pub deleted: bool,
}

#[derive(InputObject)]
pub struct DeleteTeamInput {
    pub team_id: ID,
}

#[derive(SimpleObject)]
pub struct DeleteTeamPayload {
    pub team_id: ID,
    pub deleted: bool,
}

#[derive(InputObject)]
pub struct SetConversationStatusInput {
    pub conversation_id: ID,
    pub status: ConversationStatus,
    /// Only with SNOOZED: when it reopens by itself.
    pub snoozed_until: Option<DateTime<Utc>>,
}

#[derive(InputObject)]
pub struct SetConversationPriorityInput {
    pub conversation_id: ID,
    pub priority: Priority,
}

#[derive(InputObject)]
pub struct SetConversationLabelsInput {
    pub conversation_id: ID,
    /// The whole set of labels after the change.
    pub labels: Vec<String>,
}

#[derive(InputObject)]
pub struct SetConversationMutedInput {
    pub conversation_id: ID,
    pub muted: bool,
}

#[derive(InputObject)]
pub struct MarkConversationReadInput {
    pub conversation_id: ID,
}

#[derive(InputObject)]
pub struct SetConversationCustomAttributesInput {
    pub conversation_id: ID,
    /// The whole set after the change: an object of strings, numbers, booleans.
    pub attributes: async_graphql::Json<serde_json::Value>,
}

#[derive(InputObject)]
pub struct CreateTeamInput {
    pub name: String,
}

#[derive(InputObject)]
pub struct TeamMemberInput {
    pub team_id: ID,
    pub user_id: ID,
}

#[derive(InputObject)]
pub struct CreateLabelInput {
    pub title: String,
    /// `#rrggbb`
    pub color: String,
}

/// An uploaded file's bytes (spooled to a temporary file while the request was read),
/// at most [`MAX_FILE_BYTES`] and not empty.
async fn read_upload(mut file: std::fs::File) -> Result<Vec<u8>> {
    let bytes = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut bytes = Vec::new();
        (&mut file).take(MAX_FILE_BYTES as u64 + 1).read_to_end(&mut bytes).map(|_| bytes)
    })
    .await
    .map_err(|e| ApiError::internal(anyhow::anyhow!("reading an upload failed: {e}")))?
    .map_err(|e| ApiError::internal(anyhow::Error::new(e).context("failed to read an upload")))?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(ApiError::file_too_large());
    }
    if bytes.is_empty() {
        return Err(ApiError::bad_input("the file is empty"));
    }
    Ok(bytes)
}

/// A message a retried delivery or reply names, as it was first written: committed
/// before this retry looked, so projected once the projectors reach the head of the log.
async fn original(state: &AppState, account: Uuid, message_id: Uuid) -> Result<Message> {
    let head = state.engine.head().await.map_err(ApiError::internal)?;
    let written = Written { position: Some(head) };
    state.settle(written, &["timeline"]).await;
    let row = timeline::message(&state.pool, account, message_id).await?;
    let row = row.ok_or_else(|| ApiError::internal(anyhow::anyhow!("message {message_id} is not projected")))?;
    Ok(Message::written(row, account, written))
}

/// A change to one conversation, as every conversation mutation makes it: authorized
/// on the conversation, decided on current state (`mutate`), and answered once the
/// inbox views show it, so an agent who acts and then reloads the list sees what they did.
async fn change_conversation<F, Fut>(ctx: &Context<'_>, conversation: &ID, change: F) -> Result<Conversation>
where
    F: Fn(AppState, CommandContext, Uuid) -> Fut,
    Fut: std::future::Future<Output = Result<Written>>,
{
    let id = parse_id(conversation, "conversation")?;
    let change = &change;
    mutate(ctx, move |Acting { principal, state, context }| async move {
        authorize_conversation(&principal, &state, &context, id).await?;
        let written = change(state.clone(), context, id).await?;
        state.settle(written, super::CONVERSATION_VIEWS).await;
        Ok(Conversation::changed(id, principal.account_id, written))
    })
    .await
}

fn optional_id(value: &MaybeUndefined<ID>, what: &str) -> Result<Option<Option<Uuid>>> {
    match value {
        MaybeUndefined::Undefined => Ok(None),
        MaybeUndefined::Null => Ok(Some(None)),
        MaybeUndefined::Value(id) => Ok(Some(Some(parse_id(id, what)?))),
    }
}

fn contact_details(name: Option<&str>, email: Option<&str>, phone: Option<&str>) -> Result<ContactDetails> {
    let name = name.map(|n| Name::parse("contact name", n).map(Name::into_inner)).transpose()?;
    let email = email.map(|e| EmailAddress::parse(e).map(EmailAddress::into_inner)).transpose()?;
    let phone = phone.map(|p| PhoneNumber::parse(p).map(PhoneNumber::into_inner)).transpose()?;
    Ok(ContactDetails { name, email, phone })
}

#[Object]
impl Mutation {
    async fn add_inbox_member(&self, ctx: &Context<'_>, input: InboxMemberInput) -> Result<Inbox> {
        self.change_inbox(ctx, input, true).await
    }

    async fn remove_inbox_member(&self, ctx: &Context<'_>, input: InboxMemberInput) -> Result<Inbox> {
        self.change_inbox(ctx, input, false).await
    }

    /// The API channel's inbound path: a contact's message arrives in an inbox.
    async fn receive_message(&self, ctx: &Context<'_>, input: ReceiveMessageInput) -> Result<Message> {
        // Input is parsed once, before any decision (a rerun parses nothing again).
        let inbox_id = parse_id(&input.inbox_id, "inbox")?;
        let contact = contact_details(
            input.contact.name.as_deref(),
            input.contact.email.as_deref(),
            input.contact.phone.as_deref(),
        )?;
        let content = MessageContent::parse(input.content.clone())?;
        let input = &input;
        let (contact, content) = (&contact, &content);
        mutate(ctx, move |Acting { principal, state, context }| async move {
            let (principal, state) = (&principal, &state);
            principal.require_inbox(inbox_id)?;
            // Delivering into an inbox reaches whichever conversation the contact has:
            // only for callers who see every conversation of it.
            if principal.sees_by_assignee() {
                return Err(ApiError::forbidden("your role does not allow delivering messages into this inbox"));
            }
            let message = InboundMessage {
                inbox_id,
                contact_source_id: input.contact.source_id.clone(),
                contact: contact.clone(),
                source_id: input.source_id.clone(),
                content: content.clone(),
                attachments: Vec::new(),
                sent_at: None,
            };
            let received = state.commands.receive_message(&context, message).await?;
            let account = principal.account_id;
            if received.duplicate {
                return original(state, account, received.message_id).await;
            }
            let row = timeline::MessageRow {
                message_id: received.message_id,
                conversation_id: received.conversation_id,
                seq: 0,
                message_type: values::MessageType::Incoming.as_str().into(),
                private: false,
                content: Some(input.content.clone()),
                sender: Actor::Contact(received.contact_id).to_string(),
                created_at: context.at,
                status: None,
                status_error: None,
                attachments: None,
            };
            Ok(Message::written(row, account, received.written))
        })
        .await
    }

    /// Uploads a file to a conversation, to send with a reply or note
    /// (`sendMessage(attachmentIds)`): kept sealed like the contact's own files.
    async fn upload_attachment(&self, ctx: &Context<'_>, input: UploadAttachmentInput) -> Result<MessageAttachment> {
        let conversation = parse_id(&input.conversation_id, "conversation")?;
        let input = &input;
        mutate(ctx, move |Acting { principal, state, context }| async move {
            let placed = authorize_conversation(&principal, &state, &context, conversation).await?;
            let contact = placed.contact_id().ok_or_else(|| ApiError::not_found("conversation"))?;
            let upload = input.file.value(ctx)?;
            let _turn = state.attachments.admit_upload().await;
            let file_name = &Attachment::file_name(&upload.filename)?;
            let mime_type = &Attachment::mime_type(upload.content_type.as_deref());
            let bytes = &read_upload(upload.content).await?;
            let upload = KeptUpload {
                account: principal.account_id,
                contact: contact.as_uuid(),
                conversation,
                uploaded_by: principal.user_id,
                file_name,
                mime_type,
                bytes,
            };
            let kept = state.attachments.upload(upload).await.map_err(ApiError::internal)?;
            let kept = kept.ok_or_else(|| ApiError::bad_input("the conversation's contact was erased"))?;
            let expires = Utc::now() + commands::attachments::LINK_TTL;
            Ok(MessageAttachment {
                id: ID(kept.attachment_id.to_string()),
                file_type: kept.file_type.into(),
                mime_type: kept.mime_type,
                file_name: kept.file_name,
                file_size: Some(i64::try_from(bytes.len()).unwrap_or(i64::MAX)),
                url: Some(state.attachments.link(kept.attachment_id, expires)),
            })
        })
        .await
    }

    /// An agent's reply, or a private note.
    async fn send_message(&self, ctx: &Context<'_>, input: SendMessageInput) -> Result<Message> {
        let conversation = parse_id(&input.conversation_id, "conversation")?;
        let content = &MessageContent::caption(input.content.clone().unwrap_or_default())?;
        let reply_to = input.reply_to_message_id.as_ref().map(|id| parse_id(id, "message")).transpose()?;
        let files = input.attachment_ids.iter().flatten().map(|id| parse_id(id, "attachment"));
        let files = &files.collect::<Result<Vec<Uuid>>>()?;
        if files.len() > MAX_ATTACHMENTS {
            return Err(ApiError::bad_input(format!("a message carries at most {MAX_ATTACHMENTS} files")));
        }
        let input = &input;
        mutate(ctx, move |Acting { principal, state, context }| async move {
            let (principal, state) = (&principal, &state);
            authorize_conversation(principal, state, &context, conversation).await?;
            let private = input.private.unwrap_or(false);
            if let Some(quoted) = reply_to {
                let found = timeline::message(&state.pool, principal.account_id, quoted).await?;
                if found.is_none_or(|m| m.conversation_id != conversation) {
                    return Err(ApiError::bad_input("replyToMessageId names no message of this conversation"));
                }
            }
            let uploaded = state.attachments.uploaded(principal.account_id, conversation, files).await;
            let attachments = uploaded
                .map_err(ApiError::internal)?
                .ok_or_else(|| ApiError::bad_input("attachmentIds names a file not uploaded to this conversation"))?;
            let shown = timeline::shown(Attachment::record(&attachments)?.as_ref());
            let reply = Reply {
                content: content.clone(),
                attachments,
                private,
                client_key: input.client_message_id.as_deref(),
                reply_to,
            };
            let (id, written, delivered) = state.commands.send_message(&context, conversation, reply).await?;
            if written.position.is_none() {
                return original(state, principal.account_id, id).await;
            }
            let row = timeline::MessageRow {
                message_id: id,
                conversation_id: conversation,
                seq: 0,
                message_type: values::MessageType::Outgoing.as_str().into(),
                private,
                content: Some(content.clone().into_inner()),
                sender: Actor::User(principal.user_id).to_string(),
                created_at: context.at,
                status: delivered.then(|| values::MessageStatus::Pending.as_str().to_string()),
                status_error: None,
                attachments: shown,
            };
            Ok(Message::written(row, principal.account_id, written))
        })
        .await
    }

    /// Sends an approved template of the conversation's WhatsApp inbox (synced with
    /// `syncMessageTemplates`); its text as agents read it is the template's body with
    /// the parameters in place.
    async fn send_template(&self, ctx: &Context<'_>, input: SendTemplateInput) -> Result<Message> {
        let conversation = parse_id(&input.conversation_id, "conversation")?;
        let template = &TemplateRef::parse(&input.name, &input.language)?;
        let components = &input.components.as_ref().map_or_else(|| serde_json::json!([]), |c| c.0.clone());
        TemplateRef::check_components(components)?;
        mutate(ctx, move |Acting { principal, state, context }| async move {
            let (principal, state) = (&principal, &state);
            authorize_conversation(principal, state, &context, conversation).await?;
            let placed = state.commands.conversation_placement(&context, conversation).await?;
            let inbox = placed.inbox_id().ok_or_else(|| ApiError::not_found("conversation"))?.as_uuid();
            let synced = state.commands.templates(inbox).await.map_err(ApiError::internal)?;
            let found = synced.iter().find(|t| t.name == template.name && t.language == template.language);
            let found = found.ok_or_else(|| {
                ApiError::not_found("message template (sync the inbox's templates with syncMessageTemplates)")
            })?;
            if found.status != "APPROVED" {
                return Err(ApiError::bad_input(format!("the template is {}, not APPROVED", found.status)));
            }
            let content = MessageContent::parse(templates::render(found, components))?;
            let (id, written) = state
                .commands
                .send_template(&context, conversation, template.clone(), components.clone(), content.clone())
                .await?;
            let row = timeline::MessageRow {
                message_id: id,
                conversation_id: conversation,
                seq: 0,
                message_type: values::MessageType::Outgoing.as_str().into(),
                private: false,
                content: Some(content.into_inner()),
                sender: Actor::User(principal.user_id).to_string(),
                created_at: context.at,
                status: Some(values::MessageStatus::Pending.as_str().to_string()),
                status_error: None,
                attachments: None,
            };
            Ok(Message::written(row, principal.account_id, written))
        })
        .await
    }

    async fn assign_conversation(&self, ctx: &Context<'_>, input: AssignConversationInput) -> Result<Conversation> {
        let change = Assignment {
            assignee: optional_id(&input.assignee_id, "agent")?,
            team: optional_id(&input.team_id, "team")?,
        };
        change_conversation(ctx, &input.conversation_id, move |state, context, id| async move {
            Ok(state.commands.assign(&context, id, change).await?)
        })
        .await
    }

    async fn set_conversation_status(
        &self,
        ctx: &Context<'_>,
        input: SetConversationStatusInput,
    ) -> Result<Conversation> {
        let (status, until) = (input.status.into(), input.snoozed_until);
        change_conversation(ctx, &input.conversation_id, move |state, context, id| async move {
            Ok(state.commands.set_status(&context, id, status, until).await?)
        })
        .await
    }

    async fn set_conversation_priority(
        &self,
        ctx: &Context<'_>,
        input: SetConversationPriorityInput,
    ) -> Result<Conversation> {
        let priority = input.priority.into();
        change_conversation(ctx, &input.conversation_id, move |state, context, id| async move {
            Ok(state.commands.set_priority(&context, id, priority).await?)
        })
        .await
    }

    async fn set_conversation_labels(
        &self,
        ctx: &Context<'_>,
        input: SetConversationLabelsInput,
    ) -> Result<Conversation> {
        let labels = &input.labels;
        change_conversation(ctx, &input.conversation_id, move |state, context, id| async move {
            Ok(state.commands.set_labels(&context, id, labels).await?)
        })
        .await
    }

    async fn set_conversation_muted(
        &self,
        ctx: &Context<'_>,
        input: SetConversationMutedInput,
    ) -> Result<Conversation> {
        let muted = input.muted;
        change_conversation(ctx, &input.conversation_id, move |state, context, id| async move {
            Ok(state.commands.set_muted(&context, id, muted).await?)
        })
        .await
    }

    /// Marks what the contact wrote so far as read by the caller (their `unreadCount`).
    async fn mark_conversation_read(
        &self,
        ctx: &Context<'_>,
        input: MarkConversationReadInput,
    ) -> Result<Conversation> {
        let reader = principal(ctx)?.user_id;
        change_conversation(ctx, &input.conversation_id, move |state, context, id| async move {
            Ok(state.commands.mark_read(&context, id, reader).await?)
        })
        .await
    }

    async fn set_conversation_custom_attributes(
        &self,
        ctx: &Context<'_>,
        input: SetConversationCustomAttributesInput,
    ) -> Result<Conversation> {
        let attributes = &input.attributes.0;
        change_conversation(ctx, &input.conversation_id, move |state, context, id| async move {
            Ok(state.commands.set_custom_attributes(&context, id, attributes.clone()).await?)
        })
        .await
    }

    /// Corrects a contact's name, e-mail and phone (stored sealed, as the first ones).
    async fn update_contact(&self, ctx: &Context<'_>, input: UpdateContactInput) -> Result<Contact> {
        let input = &input;
        mutate(ctx, move |Acting { principal, state, context }| async move {
            let (principal, state) = (&principal, &state);
            principal.require(Action::ReadContacts)?;
            let id = parse_id(&input.contact_id, "contact")?;
            let details = contact_details(input.name.as_deref(), input.email.as_deref(), input.phone.as_deref())?;
            super::visible_contact(principal, &state.pool, id).await?;
            let written = state.commands.update_contact(&context, id, details).await?;
            state.settle(written, &["directory"]).await;
            let row = directory::contact(&state.pool, principal.account_id, id, None).await?;
            Ok(Contact(row.ok_or_else(|| ApiError::not_found("contact"))?))
        })
        .await
    }

    async fn create_team(&self, ctx: &Context<'_>, input: CreateTeamInput) -> Result<Team> {
        let input = &input;
        mutate(ctx, move |Acting { principal, state, context }| async move {
            let (principal, state) = (&principal, &state);
            principal.require(Action::ManageAccount)?;
            let (id, written) = state.commands.create_team(&context, &input.name).await?;
            state.settle(written, &["directory"]).await;
            self.team_view(state, principal.account_id, id).await
        })
        .await
    }

    async fn add_team_member(&self, ctx: &Context<'_>, input: TeamMemberInput) -> Result<Team> {
        self.change_team(ctx, input, true).await
    }

    async fn remove_team_member(&self, ctx: &Context<'_>, input: TeamMemberInput) -> Result<Team> {
        self.change_team(ctx, input, false).await
    }

    /// Deletes a team; conversations handed to it keep it in their history, where its
    /// lines read "a former team".
    async fn delete_team(&self, ctx: &Context<'_>, input: DeleteTeamInput) -> Result<DeleteTeamPayload> {
        let input = &input;
        mutate(ctx, move |Acting { principal, state, context }| async move {
            let (principal, state) = (&principal, &state);
            principal.require(Action::ManageAccount)?;
            let team = parse_id(&input.team_id, "team")?;
            let written = state.commands.delete_team(&context, team).await?;
            state.settle(written, &["directory"]).await;
            Ok(DeleteTeamPayload { team_id: input.team_id.clone(), deleted: true })
        })
        .await
    }

    /// Deletes a label definition; conversations keep the title they were given.
    async fn delete_label(&self, ctx: &Context<'_>, input: DeleteLabelInput) -> Result<DeleteLabelPayload> {
        let input = &input;
        mutate(ctx, move |Acting { principal, state, context }| async move {
            let (principal, state) = (&principal, &state);
            principal.require(Action::ManageAccount)?;
            let label = parse_id(&input.label_id, "label")?;
            let written = state.commands.delete_label(&context, label).await?;
            state.settle(written, &["directory"]).await;
            Ok(DeleteLabelPayload { label_id: input.label_id.clone(), deleted: true })
        })
        .await
    }

    async fn create_label(&self, ctx: &Context<'_>, input: CreateLabelInput) -> Result<Label> {
        let input = &input;
        mutate(ctx, move |Acting { principal, state, context }| async move {
            let (principal, state) = (&principal, &state);
            principal.require(Action::ManageAccount)?;
            let (id, written) = state.commands.create_label(&context, &input.title, &input.color).await?;
            state.settle(written, &["directory"]).await;
            let labels = directory::labels(&state.pool, principal.account_id).await?;
            let label = labels.into_iter().find(|l| l.label_id == id);
            Ok(Label(label.ok_or_else(|| ApiError::internal(anyhow::anyhow!("label {id} not projected")))?))
        })
        .await
    }
}

impl Mutation {
    async fn change_inbox(&self, ctx: &Context<'_>, input: InboxMemberInput, add: bool) -> Result<Inbox> {
        let input = &input;
        let add = &add;
        mutate(ctx, move |Acting { principal, state, context }| async move {
            let (principal, state) = (&principal, &state);
            principal.require(Action::ManageAccount)?;
            let inbox = parse_id(&input.inbox_id, "inbox")?;
            let user = parse_id(&input.user_id, "agent")?;
            let written = if *add {
                state.commands.add_inbox_member(&context, inbox, user).await
            } else {
                state.commands.remove_inbox_member(&context, inbox, user).await
            }?;
            state.settle(written, &["directory"]).await;
            let row = directory::inbox(&state.pool, principal.account_id, inbox).await?;
            Ok(Inbox(row.ok_or_else(|| ApiError::not_found("inbox"))?))
        })
        .await
    }

    async fn change_team(&self, ctx: &Context<'_>, input: TeamMemberInput, add: bool) -> Result<Team> {
        let input = &input;
        mutate(ctx, move |Acting { principal, state, context }| async move {
            let (principal, state) = (&principal, &state);
            principal.require(Action::ManageAccount)?;
            let team = parse_id(&input.team_id, "team")?;
            let user = parse_id(&input.user_id, "agent")?;
            let written = if add {
                state.commands.add_team_member(&context, team, user).await
            } else {
                state.commands.remove_team_member(&context, team, user).await
            }?;
            state.settle(written, &["directory"]).await;
            self.team_view(state, principal.account_id, team).await
        })
        .await
    }

    async fn team_view(&self, state: &AppState, account: Uuid, id: Uuid) -> Result<Team> {
        let teams = directory::teams(&state.pool, account).await?;
        let team = teams.into_iter().find(|t| t.team_id == id);
        Ok(Team(team.ok_or_else(|| ApiError::internal(anyhow::anyhow!("team {id} not projected")))?))
    }
}
