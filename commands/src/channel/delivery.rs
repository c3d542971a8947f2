//! Replies out through their provider: the `channel_delivery` policy enqueues one job
//! per public reply in a WhatsApp or Messenger inbox (keyed by the message, so once),
//! and the job sends it through the Graph API.
//!
//! - Every attempt is recorded before it is made (`MessageDeliveryAttempted`), and the
//!   provider's id as soon as it answers (`MessageAcceptedByProvider`, with the id in
//!   `channel_messages` in the same transaction): an attempt that finds the message
//!   accepted sends nothing. The one window where a crash sends twice is between the
//!   provider's answer and that commit (one round trip to PostgreSQL).
//! - Transient failures (no answer, 5xx, 429, the providers' throttling codes) are
//!   retried on the jobs' schedule with full jitter, `Retry-After` winning; a
//!   permanent refusal (another 4xx) fails the message with the provider's error.
//! - Callbacks about the message that arrived before its acceptance was recorded are
//!   applied right after it (the intake keeps them first, then looks for the message;
//!   the job records the message first, then looks for them: one of the two sees the
//!   other).

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use chrono::Utc;
use domain::actor::Actor;
use domain::attachment::Attachment;
use domain::channel::TemplateRef;
use domain::contact::Contact;
use domain::conversation::{Conversation, ConversationEvent, DeliveryOutcome};
use domain::ids::MessageId;
use domain::inbox::Inbox;
use domain::values::{Channel, MessageStatus};
use projections::feed::{read_event, FeedEvent};
use projections::policy::Policy;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::settings::{self, ChannelInbox};
use super::tracking::{self, Accepted};
use super::{messenger, whatsapp, GraphApi, ProviderError};
use crate::attachments::Attachments;
use crate::context::CommandContext;
use crate::jobs::{enqueue_all, Clock, Job, JobHandler, NewJob, Outcome, DEFAULT_MAX_ATTEMPTS};
use crate::outbound::Outbound;
use crate::side_write::SideWrites;
use crate::{CommandError, Commands};

/// The policy's name (its checkpoint).
pub const POLICY: &str = "channel_delivery";
/// The job kind of one reply's delivery.
pub const DELIVERY_JOB: &str = "channel_delivery";

/// What a delivery job carries: the reply by reference (its text is read, and opened,
/// when it is sent: an erased contact's conversation sends nothing).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryJob {
    pub conversation_id: Uuid,
    pub message_id: Uuid,
    /// The `MessageSent` event's sequence in the conversation's stream.
    pub sequence: i64,
}

pub struct DeliveryPolicy {
    pool: PgPool,
    clock: Arc<dyn Clock>,
}

impl DeliveryPolicy {
    pub fn new(pool: PgPool, clock: Arc<dyn Clock>) -> Self {
        Self { pool, clock }
    }
}

#[async_trait]
impl Policy for DeliveryPolicy {
    fn name(&self) -> &'static str {
        POLICY
    }

    fn consumes(&self) -> &'static [&'static str] {
        &["conversation"]
    }

    /// The job reads (and opens) the reply when it sends: nothing to open here.
    fn opens(&self) -> bool {
        false
    }

    fn wants(&self, event: &FeedEvent) -> bool {
        event.event_type == "MessageSent"
    }

    async fn react(&self, events: &[FeedEvent]) -> anyhow::Result<()> {
        let mut jobs = Vec::new();
        for event in events {
            if let ConversationEvent::MessageSent { message_id, private: false, delivered_by: Some(_), .. } =
                event.decode()?
            {
                let job = DeliveryJob {
                    conversation_id: event.aggregate_id.parse().context("conversation id is not a uuid")?,
                    message_id: message_id.as_uuid(),
                    sequence: event.sequence,
                };
                jobs.push(NewJob {
                    kind: DELIVERY_JOB,
                    account: event.account_id,
                    key: format!("deliver:{}", job.message_id),
                    payload: serde_json::to_value(&job)?,
                    run_at: self.clock.now(),
                    max_attempts: DEFAULT_MAX_ATTEMPTS,
                });
            }
        }
        enqueue_all(&self.pool, &jobs).await
    }
}

/// The job handler.
pub struct ChannelDelivery {
    commands: Commands,
    outbound: Outbound,
    graph: GraphApi,
    attachments: Attachments,
}

impl ChannelDelivery {
    pub fn new(commands: Commands, outbound: Outbound, graph: GraphApi, attachments: Attachments) -> Self {
        Self { commands, outbound, graph, attachments }
    }
}

#[async_trait]
impl JobHandler for ChannelDelivery {
    fn kind(&self) -> &'static str {
        DELIVERY_JOB
    }

    async fn run(&self, job: &Job) -> Outcome {
        let delivery: DeliveryJob = match job.payload() {
            Ok(delivery) => delivery,
            Err(given_up) => return given_up,
        };
        match self.attempt(job, &delivery).await {
            Ok(outcome) => outcome,
            Err(error) => Outcome::Retry { error: format!("{error:#}"), after: None },
        }
    }
}

/// What one attempt found it has to send.
struct Reply {
    inbox: ChannelInbox,
    conversation: Conversation,
    recipient: String,
    text: String,
    /// An approved template and its components, sent as such.
    template: Option<(TemplateRef, serde_json::Value)>,
    /// The provider's id of the message it answers.
    quoted: Option<String>,
    /// The file it carries (a provider reply carries at most one).
    file: Option<Attachment>,
}

impl ChannelDelivery {
    fn context(&self, account: Uuid, channel: Channel) -> CommandContext {
        CommandContext {
            channel: Some(channel.as_str().to_string()),
            ..CommandContext::now(account, Actor::Channel(channel.as_str().to_string()))
        }
    }

    async fn attempt(&self, job: &Job, delivery: &DeliveryJob) -> anyhow::Result<Outcome> {
        let account = job.account_id.context("a delivery job without an account")?;
        let store = self.commands.store();
        let conversation = store.peek::<Conversation>(&delivery.conversation_id.to_string()).await?.state;
        let inbox_id = conversation.inbox_id().context("a delivery for a conversation that was never started")?;
        let channel = store.peek::<Inbox>(&inbox_id.to_string()).await?.state.channel().unwrap_or(Channel::Api);
        let context = self.context(account, channel);
        // Recording the attempt asserts, against the log, that the message is still
        // pending: a message the provider accepted is never sent again.
        let status = self.record(&context, delivery, DeliveryOutcome::Attempted { attempt: job.attempts }).await?;
        if status != Some(MessageStatus::Pending) {
            tracing::debug!(message = %delivery.message_id, ?status, "a delivery whose message is no longer pending");
            return Ok(Outcome::Done);
        }
        let reply = match self.reply(delivery, inbox_id.as_uuid(), channel, conversation).await? {
            Ok(reply) => reply,
            Err(reason) => {
                let failed = DeliveryOutcome::Failed { code: None, reason: reason.clone() };
                self.record(&context, delivery, failed).await?;
                return Ok(Outcome::Give { error: reason });
            }
        };
        let token = reply.inbox.access_token().context("the inbox has no access token")?;
        // A file goes up first (as often as it takes: an upload sends nothing to the
        // contact), then the message naming it.
        let sent = match self.upload(&reply, token).await? {
            Ok(media_id) => {
                let (url, body) = self.request(&reply, media_id.as_deref());
                let headers =
                    [("authorization", format!("Bearer {token}")), ("content-type", "application/json".into())];
                ProviderError::answered(self.outbound.post(&url, &headers, serde_json::to_vec(&body)?).await).await
            }
            Err(failure) => Err(failure),
        };
        let failure = match sent {
            Ok(response) => {
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                let accepted_id = match channel {
                    Channel::Whatsapp => whatsapp::accepted_id(&body),
                    _ => messenger::accepted_id(&body),
                };
                let Some(provider_message_id) = accepted_id else {
                    // Accepted, maybe: sending again could send twice. Failed, with why.
                    let reason = format!("the provider answered without a message id: {body}");
                    self.record(&context, delivery, DeliveryOutcome::Failed { code: None, reason: reason.clone() })
                        .await?;
                    return Ok(Outcome::Give { error: reason });
                };
                self.accepted(&context, delivery, &reply, provider_message_id).await?;
                return Ok(Outcome::Done);
            }
            Err(failure) => failure,
        };
        if failure.transient && !job.is_last_attempt() {
            return Ok(Outcome::Retry { error: failure.to_string(), after: failure.retry_after });
        }
        let reason = if failure.transient {
            format!("gave up after {} attempts: {}", job.attempts, failure.message)
        } else {
            failure.message.clone()
        };
        let failed = DeliveryOutcome::Failed { code: failure.code.clone(), reason };
        self.record(&context, delivery, failed).await?;
        Ok(Outcome::Give { error: failure.to_string() })
    }

    /// What to send and to whom; `Err` with the reason when it cannot be sent at all.
    async fn reply(
        &self,
        delivery: &DeliveryJob,
        inbox_id: Uuid,
        channel: Channel,
        conversation: Conversation,
    ) -> anyhow::Result<Result<Reply, String>> {
        let store = self.commands.store();
        let Some(inbox) = settings::of_inbox(store.pool(), store.keyring(), channel, inbox_id).await? else {
            return Ok(Err("the inbox has no channel settings".into()));
        };
        let contact_id = conversation.contact_id().context("a conversation without a contact")?;
        let contact = store.peek::<Contact>(&contact_id.to_string()).await?.state;
        let Some(recipient) = contact.source_id().map(str::to_string) else {
            return Ok(Err("the contact has no id on the channel (erased)".into()));
        };
        let mut conn = store.pool().acquire().await.context("failed to read the reply")?;
        let conversation_id = delivery.conversation_id.to_string();
        let event = read_event(&mut conn, store.keyring(), "conversation", &conversation_id, delivery.sequence).await?;
        let (text, template, reply_to, file) = match event.map(|e| e.decode::<ConversationEvent>()).transpose()? {
            Some(ConversationEvent::MessageSent {
                message_id,
                content: Some(text),
                template,
                template_components,
                reply_to,
                attachments,
                ..
            }) if message_id.as_uuid() == delivery.message_id => {
                let template = template.map(|t| (t, template_components.unwrap_or_else(|| serde_json::json!([]))));
                (text, template, reply_to, Attachment::list(attachments.as_ref()).into_iter().next())
            }
            Some(ConversationEvent::MessageSent { content: None, .. }) => {
                return Ok(Err("the message's text was erased with the contact's data".into()))
            }
            _ => anyhow::bail!("the delivery names an event that is not its message"),
        };
        let quoted = match reply_to {
            Some(quoted) => self.provider_id_of(&mut conn, delivery.conversation_id, quoted.as_uuid()).await?,
            None => None,
        };
        Ok(Ok(Reply { inbox, conversation, recipient, text, template, quoted, file }))
    }

    /// The provider's id of a message of the conversation: ours as the provider
    /// accepted it, or the contact's as it arrived (opened from its event).
    async fn provider_id_of(
        &self,
        conn: &mut sqlx::PgConnection,
        conversation: Uuid,
        message: Uuid,
    ) -> anyhow::Result<Option<String>> {
        let ours: Option<String> =
            sqlx::query_scalar("SELECT provider_message_id FROM channel_messages WHERE message_id = $1")
                .bind(message)
                .fetch_optional(&mut *conn)
                .await
                .context("failed to find a quoted message")?;
        if ours.is_some() {
            return Ok(ours);
        }
        let sequence: Option<i64> = sqlx::query_scalar("SELECT seq FROM rm_messages WHERE message_id = $1")
            .bind(message)
            .fetch_optional(&mut *conn)
            .await
            .context("failed to find a quoted message")?;
        let Some(sequence) = sequence else { return Ok(None) };
        let keyring = self.commands.store().keyring();
        let event = read_event(conn, keyring, "conversation", &conversation.to_string(), sequence).await?;
        Ok(match event.map(|e| e.decode::<ConversationEvent>()).transpose()? {
            Some(ConversationEvent::MessageReceived { source_id, .. }) => source_id,
            _ => None,
        })
    }

    /// Uploads the reply's file to the provider: the id it is sent under (`None`
    /// without a file), or why not.
    async fn upload(&self, reply: &Reply, token: &str) -> anyhow::Result<Result<Option<String>, ProviderError>> {
        let Some(file) = &reply.file else { return Ok(Ok(None)) };
        let Some((mime_type, bytes)) = self.attachments.open(file.attachment_id).await? else {
            return Ok(Err(ProviderError::permanent("the file is no longer kept (erased with the contact)".into())));
        };
        let routing_id = &reply.inbox.routing_id;
        let (path, form) = match reply.inbox.channel {
            Channel::Whatsapp => {
                let name = file.file_name.as_deref().unwrap_or("file");
                (format!("{routing_id}/media"), whatsapp::upload_form(name, &mime_type, bytes)?)
            }
            _ => (format!("{routing_id}/message_attachments"), messenger::upload_form(file, &mime_type, bytes)?),
        };
        let headers = [("authorization", format!("Bearer {token}"))];
        let answer = self.outbound.post_form(&self.graph.url(&path), &headers, form).await;
        let response = match ProviderError::answered(answer).await {
            Ok(response) => response,
            Err(failure) => return Ok(Err(failure)),
        };
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let uploaded = match reply.inbox.channel {
            Channel::Whatsapp => whatsapp::uploaded_id(&body),
            _ => messenger::uploaded_id(&body),
        };
        Ok(uploaded
            .map(Some)
            .ok_or_else(|| ProviderError::transient(format!("the upload answered without an id: {body}"))))
    }

    /// The provider's send request for the reply (its file uploaded as `media_id`):
    /// its URL and body.
    fn request(&self, reply: &Reply, media_id: Option<&str>) -> (String, serde_json::Value) {
        match reply.inbox.channel {
            Channel::Whatsapp => {
                let quoted = reply.quoted.as_deref();
                let body = match (&reply.template, &reply.file, media_id) {
                    (Some((template, components)), _, _) => whatsapp::template(&reply.recipient, template, components),
                    (None, Some(file), Some(id)) => whatsapp::media(&reply.recipient, file, id, &reply.text, quoted),
                    _ => whatsapp::text(&reply.recipient, &reply.text, quoted),
                };
                (self.graph.url(&format!("{}/messages", reply.inbox.routing_id)), body)
            }
            _ => {
                // Past the standard 24 hours (and inside the inbox's window, which the
                // reply was checked against), only a human agent's tagged message goes.
                let tagged = reply
                    .conversation
                    .reply_window_closes_at(chrono::Duration::hours(24))
                    .is_some_and(|closes| Utc::now() > closes);
                let body = match (&reply.file, media_id) {
                    (Some(file), Some(id)) => messenger::attachment(&reply.recipient, file, id, tagged),
                    _ => messenger::text(&reply.recipient, &reply.text, tagged),
                };
                (self.graph.url(&format!("{}/messages", reply.inbox.routing_id)), body)
            }
        }
    }

    /// Records an outcome; answers the message's status as the decision saw it.
    async fn record(
        &self,
        context: &CommandContext,
        delivery: &DeliveryJob,
        outcome: DeliveryOutcome,
    ) -> Result<Option<MessageStatus>, CommandError> {
        self.commands
            .record_delivery(
                context,
                delivery.conversation_id,
                MessageId(delivery.message_id),
                outcome,
                &SideWrites::default(),
            )
            .await
    }

    /// Records the provider's id with the message's id beside it (one transaction),
    /// then applies what the provider said about it before that.
    async fn accepted(
        &self,
        context: &CommandContext,
        delivery: &DeliveryJob,
        reply: &Reply,
        provider_message_id: String,
    ) -> anyhow::Result<()> {
        let accepted = Accepted {
            inbox: reply.inbox.inbox_id,
            provider_message_id: provider_message_id.clone(),
            conversation: delivery.conversation_id,
            message: delivery.message_id,
            recipient: tracking::recipient_key(self.commands.store().keyring(), reply.inbox.inbox_id, &reply.recipient),
            accepted_at: Utc::now(),
        };
        let outcome = DeliveryOutcome::Accepted { provider_message_id };
        self.commands
            .record_delivery(
                context,
                delivery.conversation_id,
                MessageId(delivery.message_id),
                outcome,
                &SideWrites::of(accepted.clone()),
            )
            .await?;
        self.commands.apply_kept_callbacks(context, &accepted).await?;
        Ok(())
    }
}
