//! What agents do to a conversation: reply, note, assign, set status, priority,
//! labels and mute.

use std::collections::BTreeSet;

use domain::activity::ActedBy;
use domain::actor::Actor;
use domain::attachment::Attachment;
use domain::channel::{ChannelAddress, ProviderDelivery, TemplateRef};
use domain::conversation::{ChangedBy, Conversation, ConversationCommand};
use domain::ids::{ConversationId, MessageId, TeamId, UserId};
use domain::inbox::Inbox;
use domain::label::LabelTitle;
use domain::values::{CustomAttributes, Instant, MessageContent, Priority, Role, Status};
use domain::DomainError;
use uuid::Uuid;

use crate::attachments::UploadsSent;
use crate::context::CommandContext;
use crate::side_write::SideWrites;
use crate::{CommandError, Commands, Written};

/// A change to assignee or team: `None` leaves it, `Some(None)` clears it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Assignment {
    pub assignee: Option<Option<Uuid>>,
    pub team: Option<Option<Uuid>>,
}

fn in_account(context: &CommandContext, conversation: &Conversation) -> Result<(), DomainError> {
    match conversation.account_id() {
        Some(owner) if owner.as_uuid() == context.account_id => Ok(()),
        _ => Err(DomainError::NotFound("conversation")),
    }
}

impl Commands {
    /// The conversation's state, if it exists in the context's account, to decide on:
    /// the commit asserts it is still current.
    pub async fn conversation(&self, context: &CommandContext, id: Uuid) -> Result<Conversation, CommandError> {
        let conversation = self.store().load::<Conversation>(context, &id.to_string()).await?.state;
        in_account(context, &conversation)?;
        Ok(conversation)
    }

    /// The conversation, for what never changes of it (its account and inbox) only.
    pub async fn conversation_placement(
        &self,
        context: &CommandContext,
        id: Uuid,
    ) -> Result<Conversation, CommandError> {
        let conversation = self.store().peek::<Conversation>(&id.to_string()).await?.state;
        in_account(context, &conversation)?;
        Ok(conversation)
    }

    /// How the conversation's inbox delivers replies (`None`: it does not, e.g. the
    /// API channel). The inbox is read through the context: a change of its settings
    /// before the reply commits makes the reply decided again.
    pub async fn provider_delivery(
        &self,
        context: &CommandContext,
        conversation_id: Uuid,
    ) -> Result<Option<ProviderDelivery>, CommandError> {
        let conversation = self.conversation_placement(context, conversation_id).await?;
        let Some(inbox) = conversation.inbox_id() else { return Ok(None) };
        let inbox = self.store().load::<Inbox>(context, &inbox.to_string()).await?.state;
        Ok(inbox.address().map(ChannelAddress::delivery))
    }

    /// An agent's reply (or private note); returns the message id, and whether a
    /// provider delivers it (it is pending until the provider accepts it). With the
    /// client's key for it, a retry is answered with the reply already sent (nothing
    /// written).
    pub async fn send_message(
        &self,
        context: &CommandContext,
        conversation_id: Uuid,
        reply: Reply<'_>,
    ) -> Result<(Uuid, Written, bool), CommandError> {
        self.send(context, conversation_id, reply, None).await
    }

    /// An approved WhatsApp template (the only message allowed outside the reply
    /// window); `content` is its text as agents read it in the timeline.
    pub async fn send_template(
        &self,
        context: &CommandContext,
        conversation_id: Uuid,
        template: TemplateRef,
        components: serde_json::Value,
        content: MessageContent,
    ) -> Result<(Uuid, Written), CommandError> {
        TemplateRef::check_components(&components)?;
        let reply = Reply { content, ..Reply::default() };
        let (id, written, _) = self.send(context, conversation_id, reply, Some((template, components))).await?;
        Ok((id, written))
    }

    async fn send(
        &self,
        context: &CommandContext,
        conversation_id: Uuid,
        reply: Reply<'_>,
        template: Option<(TemplateRef, serde_json::Value)>,
    ) -> Result<(Uuid, Written, bool), CommandError> {
        let Actor::User(author) = context.actor else {
            return Err(DomainError::invalid("only an agent can send a message").into());
        };
        let Reply { content, attachments, private, client_key, reply_to } = reply;
        let reply_to = reply_to.map(MessageId);
        let message_id = match client_key {
            Some(key) => MessageId::keyed(ConversationId(conversation_id), UserId(author), key)?.as_uuid(),
            None => Uuid::now_v7(),
        };
        let delivery = if private { None } else { self.provider_delivery(context, conversation_id).await? };
        let mut side_writes = SideWrites::default();
        if !attachments.is_empty() {
            let attachments = attachments.iter().map(|a| a.attachment_id).collect();
            side_writes.add(UploadsSent { conversation: conversation_id, attachments });
        }
        let written = self
            .execute_with::<Conversation>(
                context,
                &conversation_id.to_string(),
                |conversation| {
                    in_account(context, conversation)?;
                    Ok(ConversationCommand::SendMessage {
                        delivery,
                        template: template.clone(),
                        reply_to,
                        message_id: MessageId(message_id),
                        author: UserId(author),
                        content: content.clone(),
                        attachments: attachments.clone(),
                        private,
                        at: context.at,
                    })
                },
                &side_writes,
            )
            .await?;
        Ok((message_id, written, delivery.is_some()))
    }

    /// Assigns an agent and/or a team. An agent must be an administrator of the
    /// account or a member of the conversation's inbox (as the reference allows).
    pub async fn assign(
        &self,
        context: &CommandContext,
        conversation_id: Uuid,
        change: Assignment,
    ) -> Result<Written, CommandError> {
        let account = self.account(context).await?;
        let current = self.conversation(context, conversation_id).await?;
        let assignee = match change.assignee {
            Some(Some(user)) => {
                let member = account.member(UserId(user)).ok_or(DomainError::NotFound("agent"))?;
                let inbox_id = current.inbox_id().ok_or(DomainError::NotFound("conversation"))?;
                let inbox = self.inbox(context, inbox_id.as_uuid()).await?;
                if member.role != Role::Administrator && !inbox.has_member(UserId(user)) {
                    return Err(DomainError::invalid("the agent is not a member of this conversation's inbox").into());
                }
                Some(Some(UserId(user)))
            }
            Some(None) => Some(None),
            None => None,
        };
        let team = match change.team {
            Some(Some(team_id)) => {
                self.team(context, team_id).await?;
                Some(Some(TeamId(team_id)))
            }
            Some(None) => Some(None),
            None => None,
        };
        let by = changed_by(context);
        self.change(context, conversation_id, || ConversationCommand::Assign { assignee, team, by, at: context.at })
            .await
    }

    pub async fn set_status(
        &self,
        context: &CommandContext,
        conversation_id: Uuid,
        status: Status,
        snoozed_until: Option<Instant>,
    ) -> Result<Written, CommandError> {
        self.change_by(context, conversation_id, |by| ConversationCommand::SetStatus {
            status,
            snoozed_until,
            by,
            at: context.at,
        })
        .await
    }

    pub async fn set_priority(
        &self,
        context: &CommandContext,
        conversation_id: Uuid,
        priority: Priority,
    ) -> Result<Written, CommandError> {
        self.change_by(context, conversation_id, |by| ConversationCommand::SetPriority { priority, by, at: context.at })
            .await
    }

    pub async fn set_labels(
        &self,
        context: &CommandContext,
        conversation_id: Uuid,
        labels: &[String],
    ) -> Result<Written, CommandError> {
        let labels = labels
            .iter()
            .map(|l| LabelTitle::parse(l).map(LabelTitle::into_inner))
            .collect::<Result<BTreeSet<_>, _>>()?;
        self.change_by(context, conversation_id, |by| ConversationCommand::SetLabels {
            labels: labels.clone(),
            by,
            at: context.at,
        })
        .await
    }

    pub async fn set_muted(
        &self,
        context: &CommandContext,
        conversation_id: Uuid,
        muted: bool,
    ) -> Result<Written, CommandError> {
        self.change_by(context, conversation_id, |by| ConversationCommand::SetMuted { muted, by, at: context.at }).await
    }

    /// Records that an agent has read the conversation as it stands (nothing when
    /// they had read it all already).
    pub async fn mark_read(
        &self,
        context: &CommandContext,
        conversation_id: Uuid,
        reader: Uuid,
    ) -> Result<Written, CommandError> {
        self.change(context, conversation_id, || ConversationCommand::MarkRead {
            reader: UserId(reader),
            at: context.at,
        })
        .await
    }

    /// Replaces the conversation's custom attributes (a flat JSON object).
    pub async fn set_custom_attributes(
        &self,
        context: &CommandContext,
        conversation_id: Uuid,
        attributes: serde_json::Value,
    ) -> Result<Written, CommandError> {
        let attributes = CustomAttributes::parse(attributes)?;
        self.change(context, conversation_id, || ConversationCommand::SetCustomAttributes {
            attributes: attributes.clone(),
            at: context.at,
        })
        .await
    }

    async fn change(
        &self,
        context: &CommandContext,
        conversation_id: Uuid,
        command: impl Fn() -> ConversationCommand,
    ) -> Result<Written, CommandError> {
        let written = self
            .execute::<Conversation>(context, &conversation_id.to_string(), |conversation| {
                in_account(context, conversation)?;
                Ok(command())
            })
            .await?;
        Ok(written)
    }

    /// A change recorded with an activity line naming the context's actor.
    async fn change_by(
        &self,
        context: &CommandContext,
        conversation_id: Uuid,
        command: impl Fn(ChangedBy) -> ConversationCommand,
    ) -> Result<Written, CommandError> {
        let by = changed_by(context);
        self.change(context, conversation_id, || command(by)).await
    }
}

/// The context's actor, as its activity line records them (by id, never by name).
fn changed_by(context: &CommandContext) -> ChangedBy {
    let by = match context.actor {
        Actor::User(id) => ActedBy::Agent(UserId(id)),
        Actor::Contact(_) => ActedBy::Contact,
        // Until lines name them, rules, channels and policies read "by the system".
        Actor::Automation(_) | Actor::Channel(_) | Actor::Policy(_) | Actor::System => ActedBy::System,
    };
    ChangedBy { by, activity_message_id: MessageId(Uuid::now_v7()) }
}

/// An agent's reply or private note.
#[derive(Default)]
pub struct Reply<'a> {
    /// May be empty when the reply is its files.
    pub content: MessageContent,
    /// Files uploaded to the conversation ([`crate::attachments::Attachments::uploaded`]).
    pub attachments: Vec<Attachment>,
    /// A private note, visible to agents only.
    pub private: bool,
    /// The client's own id for it: a retry is answered with the reply already sent.
    pub client_key: Option<&'a str>,
    /// The message of the conversation it answers.
    pub reply_to: Option<Uuid>,
}
