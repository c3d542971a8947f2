//! A provider's webhook, from raw body to what it tells: checked against the inbox's
//! app secret, read into notices, each notice routed to the inbox it names, and
//! stored before the provider is answered (a provider retries what it was not
//! answered 200 for; the route's dedupe on the provider's message id makes a
//! redelivery, concurrent or days later, store nothing more).

use std::collections::HashMap;

use domain::actor::Actor;
use domain::attachment::Attachment;
use domain::channel::ChannelSecret;
use domain::contact::ContactDetails;
use domain::values::{Channel, MessageContent, Name, PhoneNumber};
use uuid::Uuid;

use super::settings::{self, ChannelInbox};
use super::signature::verifies;
use super::tracking::Callback;
use super::GraphApi;
use super::{messenger, whatsapp, Malformed, Notice, ProviderMessage};
use crate::context::CommandContext;
use crate::inbound::{InboundMessage, RouteKeys};
use crate::outbound::{Outbound, OutboundError};
use crate::{CommandError, Commands};

/// Why a webhook was refused.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// 404: the path names no inbox of this provider.
    #[error("no {0} inbox has this id")]
    UnknownInbox(&'static str),
    /// 401: the signature is missing or does not verify.
    #[error("the X-Hub-Signature-256 header does not verify with the inbox's app secret")]
    BadSignature,
    /// 400: not the provider's envelope.
    #[error(transparent)]
    Malformed(#[from] Malformed),
    /// 500/503: nothing is lost, the provider retries.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// What a webhook's processing did, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Intake {
    pub messages: usize,
    pub duplicates: usize,
    pub statuses: usize,
    /// Notices for ids no inbox has, or signed by another app.
    pub unrouted: usize,
    pub ignored: usize,
}

fn read(channel: Channel, body: &[u8]) -> Result<Vec<Notice>, Malformed> {
    match channel {
        Channel::Whatsapp => whatsapp::parse(body),
        _ => messenger::parse(body),
    }
}

impl Commands {
    /// Handles one webhook of `channel` (WhatsApp or Messenger), sent to the inbox's
    /// own path (`inbox`) or to the app-level one.
    ///
    /// On an inbox's path the signature is checked before the body is read. On the
    /// app-level path the body is read first, to find which inboxes (so which app
    /// secrets) it concerns; notices for inboxes whose secret does not verify it are
    /// dropped, and if none does the webhook is refused.
    pub async fn receive_webhook(
        &self,
        provider: &ProviderApi<'_>,
        channel: Channel,
        inbox: Option<Uuid>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<Intake, IntakeError> {
        let pool = self.store().pool();
        let keyring = self.store().keyring();
        if let Some(inbox) = inbox {
            let found = settings::of_inbox(pool, keyring, channel, inbox).await?;
            let found = found.ok_or(IntakeError::UnknownInbox(channel.as_str()))?;
            if !signed_by(&found, signature, body) {
                return Err(IntakeError::BadSignature);
            }
        }
        let notices = read(channel, body)?;
        let mut ids: Vec<String> = notices.iter().map(|n| n.routing_id().to_string()).collect();
        ids.sort_unstable();
        ids.dedup();
        let inboxes = settings::by_routing_ids(pool, keyring, channel, &ids).await?;
        let verified: HashMap<&str, &ChannelInbox> =
            inboxes.iter().filter(|i| signed_by(i, signature, body)).map(|i| (i.routing_id.as_str(), i)).collect();
        if inbox.is_none() && !inboxes.is_empty() && verified.is_empty() {
            return Err(IntakeError::BadSignature);
        }
        let mut intake = Intake::default();
        for notice in notices {
            let Some(target) = verified.get(notice.routing_id()) else {
                if !matches!(notice, Notice::Ignored { .. }) {
                    intake.unrouted += 1;
                    tracing::info!(
                        channel = channel.as_str(),
                        routing_id = notice.routing_id(),
                        "a webhook notice for an id no inbox has (or signed by another app); acknowledged, not stored"
                    );
                } else {
                    intake.ignored += 1;
                }
                continue;
            };
            match notice {
                Notice::Message(message) => {
                    if self.receive_provider_message(provider, target, message).await? {
                        intake.messages += 1;
                    } else {
                        intake.duplicates += 1;
                    }
                }
                Notice::Status(status) => {
                    let callback = Callback {
                        inbox: target.inbox_id,
                        provider_message_id: status.provider_message_id,
                        status: status.status,
                        at: status.at,
                    };
                    self.track_status(&channel_context(target), &callback).await?;
                    intake.statuses += 1;
                }
                Notice::Watermark { recipient, status, up_to, .. } => {
                    let context = channel_context(target);
                    self.track_watermark(&context, target.inbox_id, &recipient, status, up_to).await?;
                    intake.statuses += 1;
                }
                Notice::Echo { provider_message_id, .. } => {
                    tracing::debug!(provider_message_id, "an echo of our own send; not stored again");
                    intake.ignored += 1;
                }
                Notice::Ignored { kind, .. } => {
                    tracing::debug!(channel = channel.as_str(), kind, "a webhook notice of a kind not handled");
                    intake.ignored += 1;
                }
            }
        }
        Ok(intake)
    }

    /// Stores a contact's message; `false` if it had been stored before.
    async fn receive_provider_message(
        &self,
        provider: &ProviderApi<'_>,
        inbox: &ChannelInbox,
        mut message: ProviderMessage,
    ) -> anyhow::Result<bool> {
        let context = channel_context(inbox);
        if inbox.channel == Channel::Messenger && message.sender_name.is_none() {
            message.sender_name = self.new_senders_name(provider, inbox, &message.sender).await;
        }
        // What the provider says of the sender is kept only if it reads as such.
        let contact = ContactDetails {
            name: message
                .sender_name
                .as_deref()
                .and_then(|n| Name::parse("contact name", n).ok())
                .map(Name::into_inner),
            email: None,
            phone: message
                .sender_phone
                .as_deref()
                .and_then(|p| PhoneNumber::parse(p).ok())
                .map(PhoneNumber::into_inner),
        };
        // Ids derived from the provider's: the same files whatever the redelivery.
        let attachments: Vec<Attachment> = message
            .media
            .iter()
            .enumerate()
            .map(|(n, media)| Attachment {
                attachment_id: Uuid::new_v5(&inbox.inbox_id, format!("{}/{n}", message.provider_message_id).as_bytes()),
                file_type: media.file_type,
                mime_type: media.mime_type.clone(),
                file_name: media.file_name.clone(),
                source: media.source.clone(),
            })
            .collect();
        let content = if attachments.is_empty() {
            MessageContent::parse(message.text)
        } else {
            MessageContent::caption(message.text)
        };
        let content = match content {
            Ok(content) => content,
            Err(refused) => {
                tracing::warn!(error = %refused, "a provider's message that cannot be stored; acknowledged");
                return Ok(false);
            }
        };
        let inbound = InboundMessage {
            inbox_id: inbox.inbox_id,
            contact_source_id: message.sender,
            contact,
            source_id: message.provider_message_id,
            content,
            attachments,
            sent_at: Some(message.sent_at),
        };
        match self.receive_message(&context, inbound).await {
            Ok(received) => Ok(!received.duplicate),
            Err(CommandError::Domain(refused)) => {
                tracing::warn!(error = %refused, "a provider's message that cannot be stored; acknowledged");
                Ok(false)
            }
            Err(other) => Err(anyhow::Error::new(other).context("failed to store a provider's message")),
        }
    }
}

/// The longest a new Messenger sender's profile is waited for.
const PROFILE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// What the intake may ask the provider (a Messenger user's profile).
pub struct ProviderApi<'a> {
    pub outbound: &'a Outbound,
    pub graph: &'a GraphApi,
}

impl Commands {
    /// A Messenger user's name from the Graph API, asked only for a sender the inbox
    /// has not seen (a failure leaves the contact unnamed, as Messenger sends none).
    async fn new_senders_name(&self, provider: &ProviderApi<'_>, inbox: &ChannelInbox, psid: &str) -> Option<String> {
        let keys = RouteKeys::new(self.store().keyring(), inbox.inbox_id, psid);
        let known: Option<i32> = sqlx::query_scalar("SELECT 1 FROM channel_identities WHERE identity_hash = $1")
            .bind(&keys.identity_hash)
            .fetch_optional(self.store().pool())
            .await
            .ok()?;
        if known.is_some() {
            return None;
        }
        let url = provider.graph.url(&format!("{psid}?fields=first_name,last_name"));
        let headers = [("authorization", format!("Bearer {}", inbox.access_token()?))];
        // Bounded: the provider waits for this webhook's answer.
        let asked = tokio::time::timeout(PROFILE_TIMEOUT, provider.outbound.get(&url, &headers)).await;
        let asked = match asked.unwrap_or_else(|_| Err(OutboundError::Failed("timed out".into()))) {
            Ok(response) if response.status().is_success() => response.json::<serde_json::Value>().await.ok(),
            Ok(response) => {
                tracing::debug!(status = %response.status(), "the Graph API gave no profile for a Messenger user");
                None
            }
            Err(error) => {
                tracing::debug!(%error, "the Graph API could not be asked for a Messenger user's profile");
                None
            }
        };
        asked.as_ref().and_then(messenger::profile_name)
    }
}

/// The channel acts on the inbox's account: it authors what it records.
fn channel_context(inbox: &ChannelInbox) -> CommandContext {
    let name = inbox.channel.as_str().to_string();
    CommandContext { channel: Some(name.clone()), ..CommandContext::now(inbox.account_id, Actor::Channel(name)) }
}

fn signed_by(inbox: &ChannelInbox, signature: Option<&str>, body: &[u8]) -> bool {
    inbox.secret(ChannelSecret::AppSecret).is_some_and(|secret| verifies(secret, signature, body))
}
