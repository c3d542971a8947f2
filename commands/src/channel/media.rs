//! A contact's files, copied at once from the provider (its links expire): the `media`
//! policy enqueues one job per file of each received message, keyed by the file, and
//! the job fetches it — WhatsApp through the media endpoint (`GET /{media_id}` for a
//! URL, then that URL, both with the inbox's token), Messenger from its CDN URL — and
//! keeps it in the attachment store sealed with the contact's key.

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use domain::attachment::Attachment;
use domain::conversation::{Conversation, ConversationEvent};
use domain::inbox::Inbox;
use domain::values::Channel;
use projections::feed::{read_event, FeedEvent};
use projections::policy::Policy;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::settings;
use super::{GraphApi, ProviderError};
use crate::attachments::{Attachments, KeepOutcome, MAX_FILE_BYTES};
use crate::jobs::{enqueue_all, Clock, Job, JobHandler, NewJob, Outcome, DEFAULT_MAX_ATTEMPTS};
use crate::outbound::Outbound;
use crate::Commands;

/// The policy's name (its checkpoint).
pub const POLICY: &str = "media";
/// The job kind of one file's fetch.
pub const FETCH_JOB: &str = "media_fetch";

/// What a fetch job carries: the file by reference (its source is read, and opened,
/// from the message's event when it runs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchJob {
    pub conversation_id: Uuid,
    /// The `MessageReceived` event's sequence in the conversation's stream.
    pub sequence: i64,
    pub attachment_id: Uuid,
}

pub struct MediaPolicy {
    pool: PgPool,
    clock: Arc<dyn Clock>,
}

impl MediaPolicy {
    pub fn new(pool: PgPool, clock: Arc<dyn Clock>) -> Self {
        Self { pool, clock }
    }
}

#[async_trait]
impl Policy for MediaPolicy {
    fn name(&self) -> &'static str {
        POLICY
    }

    fn consumes(&self) -> &'static [&'static str] {
        &["conversation"]
    }

    /// The attachments are sealed with the message.
    fn opens(&self) -> bool {
        true
    }

    /// Only messages with files: the others are not opened.
    fn wants(&self, event: &FeedEvent) -> bool {
        event.event_type == "MessageReceived" && event.seals("attachments")
    }

    async fn react(&self, events: &[FeedEvent]) -> anyhow::Result<()> {
        let mut jobs = Vec::new();
        for event in events {
            let ConversationEvent::MessageReceived { attachments, .. } = event.decode()? else { continue };
            for attachment in Attachment::list(attachments.as_ref()) {
                let job = FetchJob {
                    conversation_id: event.aggregate_id.parse().context("conversation id is not a uuid")?,
                    sequence: event.sequence,
                    attachment_id: attachment.attachment_id,
                };
                jobs.push(NewJob {
                    kind: FETCH_JOB,
                    account: event.account_id,
                    key: format!("media:{}", attachment.attachment_id),
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
pub struct MediaFetch {
    commands: Commands,
    outbound: Outbound,
    graph: GraphApi,
    attachments: Attachments,
}

impl MediaFetch {
    pub fn new(commands: Commands, outbound: Outbound, graph: GraphApi, attachments: Attachments) -> Self {
        Self { commands, outbound, graph, attachments }
    }
}

#[derive(Deserialize)]
struct MediaUrl {
    url: String,
    #[serde(default)]
    mime_type: Option<String>,
}

#[async_trait]
impl JobHandler for MediaFetch {
    fn kind(&self) -> &'static str {
        FETCH_JOB
    }

    async fn run(&self, job: &Job) -> Outcome {
        let fetch: FetchJob = match job.payload() {
            Ok(fetch) => fetch,
            Err(given_up) => return given_up,
        };
        match self.attempt(&fetch).await {
            Ok(Ok(())) => Outcome::Done,
            Ok(Err(error)) if error.transient => Outcome::Retry { error: error.to_string(), after: error.retry_after },
            Ok(Err(error)) => Outcome::Give { error: error.to_string() },
            Err(error) => Outcome::Retry { error: format!("{error:#}"), after: None },
        }
    }
}

impl MediaFetch {
    async fn attempt(&self, fetch: &FetchJob) -> anyhow::Result<Result<(), ProviderError>> {
        if !self.attachments.kept(&[fetch.attachment_id]).await?.is_empty() {
            return Ok(Ok(()));
        }
        let store = self.commands.store();
        let conversation = store.peek::<Conversation>(&fetch.conversation_id.to_string()).await?.state;
        let account = conversation.account_id().context("a fetch for a conversation never started")?.as_uuid();
        let contact = conversation.contact_id().context("a conversation without a contact")?.as_uuid();
        let inbox_id = conversation.inbox_id().context("a conversation without an inbox")?.as_uuid();
        let channel = store.peek::<Inbox>(&inbox_id.to_string()).await?.state.channel().unwrap_or(Channel::Api);
        let mut conn = store.pool().acquire().await.context("failed to read the message")?;
        let conversation_id = fetch.conversation_id.to_string();
        let event = read_event(&mut conn, store.keyring(), "conversation", &conversation_id, fetch.sequence).await?;
        drop(conn);
        let attachments = match event.map(|e| e.decode::<ConversationEvent>()).transpose()? {
            Some(ConversationEvent::MessageReceived { attachments, .. }) => Attachment::list(attachments.as_ref()),
            _ => anyhow::bail!("the fetch names an event that is not a received message"),
        };
        let Some(attachment) = attachments.into_iter().find(|a| a.attachment_id == fetch.attachment_id) else {
            // Erased with the contact: nothing to fetch.
            return Ok(Err(ProviderError::permanent("the file's message was erased".into())));
        };
        let Some(inbox) = settings::of_inbox(store.pool(), store.keyring(), channel, inbox_id).await? else {
            return Ok(Err(ProviderError::permanent("the inbox has no channel settings".into())));
        };
        let (url, headers, mut mime_type) = match channel {
            Channel::Whatsapp => {
                let token = inbox.access_token().context("the inbox has no access token")?;
                let headers = vec![("authorization", format!("Bearer {token}"))];
                let answer = match self.body(&self.graph.url(&attachment.source), &headers, 64 * 1024).await {
                    Ok(answer) => answer,
                    Err(error) => return Ok(Err(error)),
                };
                let located: MediaUrl = serde_json::from_slice(&answer)
                    .map_err(|e| anyhow::anyhow!("the media endpoint's answer does not read: {e}"))?;
                (located.url, headers, located.mime_type)
            }
            _ => (attachment.source.clone(), Vec::new(), None),
        };
        let bytes = match self.body(&url, &headers, MAX_FILE_BYTES).await {
            Ok(bytes) => bytes,
            Err(error) => return Ok(Err(error)),
        };
        mime_type = mime_type.or(attachment.mime_type).filter(|m| !m.is_empty());
        let mime_type = mime_type.unwrap_or_else(|| "application/octet-stream".into());
        match self.attachments.keep(fetch.attachment_id, account, contact, &mime_type, &bytes).await? {
            KeepOutcome::Kept => Ok(Ok(())),
            KeepOutcome::Erased => Ok(Err(ProviderError::permanent("the contact was erased".into()))),
        }
    }

    /// A GET's body, at most `limit` bytes (a larger one is refused, not kept).
    async fn body(&self, url: &str, headers: &[(&str, String)], limit: usize) -> Result<Vec<u8>, ProviderError> {
        let mut response = ProviderError::answered(self.outbound.get(url, headers).await).await?;
        let too_large = || ProviderError::permanent(format!("the file is larger than {limit} bytes"));
        if response.content_length().is_some_and(|length| length > limit as u64) {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > limit {
                        return Err(too_large());
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(bytes),
                Err(e) => return Err(ProviderError::transient(format!("the download broke off: {e}"))),
            }
        }
    }
}
