//! Delivering one notification by e-mail or web push: the job of kind
//! `notification_delivery`.
//!
//! Each attempt reads what it sends when it sends it: the notification from the read
//! model, the message it is about from the log (opened now, so an erased contact's
//! words are never sent), the recipient's address from the directory. E-mail goes
//! through the server's relay (`mail`); push is encrypted to the browser (RFC 8291),
//! signed with the server's VAPID key (RFC 8292) and sent through the outbound guard.
//! At least once: the e-mail's Message-ID and the push's `Topic` are the same on every
//! attempt.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use base64::Engine;
use chrono::{DateTime, Utc};
use domain::conversation::ConversationEvent;
use domain::notification::NotificationType;
use projections::feed::read_event;
use projections::notifications::NotificationRow;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::{subscription_binding, SealedSubscription};
use crate::jobs::{Clock, Job, JobHandler, NewJob, Outcome, DEFAULT_MAX_ATTEMPTS};
use crate::mail::{MailError, Mailer};
use crate::outbound::{Outbound, OutboundError};
use crate::web_push::{encrypt, VapidKey};
use crate::Commands;

/// The job kind.
pub const DELIVERY_JOB: &str = "notification_delivery";
/// How long the conversation's row may take to reach the inbox list before asking again.
const NOT_YET_PROJECTED: Duration = Duration::from_millis(200);
/// The most of a message a notification quotes.
const EXCERPT_CHARS: usize = 200;
/// How long a push service keeps a message for a browser that is offline.
const PUSH_TTL_SECS: u32 = 24 * 3600;

/// Where a notification goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "channel", rename_all = "snake_case")]
pub enum Channel {
    Email,
    Push { subscription_id: Uuid },
}

/// What a delivery job carries: the notification by reference.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryJob {
    pub notification_id: Uuid,
    #[serde(flatten)]
    pub channel: Channel,
}

impl DeliveryJob {
    /// The job's key: this notification on this channel, enqueued once.
    pub fn job_key(&self) -> String {
        match self.channel {
            Channel::Email => format!("notification:{}:email", self.notification_id),
            Channel::Push { subscription_id } => {
                format!("notification:{}:push:{subscription_id}", self.notification_id)
            }
        }
    }

    pub fn new_job(&self, account: Uuid, run_at: DateTime<Utc>) -> anyhow::Result<NewJob> {
        Ok(NewJob {
            kind: DELIVERY_JOB,
            account: Some(account),
            key: self.job_key(),
            payload: serde_json::to_value(self)?,
            run_at,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        })
    }
}

/// How a deployment reaches people beyond the app.
pub struct NotificationDelivery {
    commands: Commands,
    outbound: Outbound,
    mailer: Option<Arc<Mailer>>,
    vapid: VapidKey,
    /// The contact push services may reach the operator at (`mailto:` or `https:`).
    vapid_subject: String,
    clock: Arc<dyn Clock>,
}

impl NotificationDelivery {
    pub fn new(
        commands: Commands,
        outbound: Outbound,
        mailer: Option<Arc<Mailer>>,
        vapid: VapidKey,
        vapid_subject: String,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { commands, outbound, mailer, vapid, vapid_subject, clock }
    }
}

/// What a notification says, as e-mail and push show it.
struct Text {
    title: String,
    /// The message it is about, unless there is none or its contact was erased.
    excerpt: Option<String>,
}

#[async_trait]
impl JobHandler for NotificationDelivery {
    fn kind(&self) -> &'static str {
        DELIVERY_JOB
    }

    async fn run(&self, job: &Job) -> Outcome {
        let delivery: DeliveryJob = match job.payload() {
            Ok(delivery) => delivery,
            Err(given_up) => return given_up,
        };
        match self.attempt(&delivery).await {
            Ok(outcome) => outcome,
            Err(error) => Outcome::Retry { error: format!("{error:#}"), after: None },
        }
    }
}

impl NotificationDelivery {
    async fn attempt(&self, delivery: &DeliveryJob) -> anyhow::Result<Outcome> {
        let pool = self.commands.store().pool();
        // Gone: a mention in the note of a contact erased since.
        let Some(notification) = projections::notifications::by_id(pool, delivery.notification_id).await? else {
            return Ok(Outcome::Done);
        };
        let Some(text) = self.text(&notification).await? else {
            return Ok(Outcome::NotYet { after: NOT_YET_PROJECTED });
        };
        match delivery.channel {
            Channel::Email => self.email(&notification, &text).await,
            Channel::Push { subscription_id } => self.push(&notification, &text, subscription_id).await,
        }
    }

    /// The title and excerpt; `None` while the conversation is not in the inbox list yet.
    async fn text(&self, notification: &NotificationRow) -> anyhow::Result<Option<Text>> {
        let store = self.commands.store();
        let conversation =
            projections::inbox_list::get(store.pool(), notification.account_id, notification.conversation_id);
        let Some(conversation) = conversation.await? else { return Ok(None) };
        let number = conversation.display_id;
        let kind: NotificationType = notification.kind.parse()?;
        let title = match kind {
            NotificationType::ConversationCreated => format!("New conversation #{number}"),
            NotificationType::ConversationAssigned => format!("Conversation #{number} was assigned to you"),
            NotificationType::NewMessage => format!("New message in conversation #{number}"),
            NotificationType::Mentioned => format!("You were mentioned in conversation #{number}"),
            NotificationType::SlaMissed => format!("An SLA was missed in conversation #{number}"),
        };
        let excerpt = match notification.message_id {
            Some(_) => self.message_text(notification).await?,
            None => None,
        };
        Ok(Some(Text { title, excerpt }))
    }

    /// The words of the message a notification is about, read from the log now: `None`
    /// once its contact is erased.
    async fn message_text(&self, notification: &NotificationRow) -> anyhow::Result<Option<String>> {
        let store = self.commands.store();
        let (_, sequence) = notification.source_event.rsplit_once('/').context("a source event without a sequence")?;
        let mut conn = store.pool().acquire().await.context("failed to get a connection")?;
        let id = notification.conversation_id.to_string();
        let event = read_event(&mut conn, store.keyring(), "conversation", &id, sequence.parse()?)
            .await?
            .context("the event of a notification is not in the log")?;
        let content = match event.decode::<ConversationEvent>()? {
            ConversationEvent::MessageReceived { content, .. } | ConversationEvent::MessageSent { content, .. } => {
                content
            }
            _ => None,
        };
        Ok(content.map(|text| {
            let mut excerpt: String = text.chars().take(EXCERPT_CHARS).collect();
            if text.chars().nth(EXCERPT_CHARS).is_some() {
                excerpt.push('…');
            }
            excerpt
        }))
    }

    async fn email(&self, notification: &NotificationRow, text: &Text) -> anyhow::Result<Outcome> {
        let Some(mailer) = &self.mailer else {
            return Ok(Outcome::Give { error: "this server sends no e-mail (SMTP_URL is not set)".into() });
        };
        let agent =
            projections::directory::agent(self.commands.store().pool(), notification.account_id, notification.user_id)
                .await?;
        let Some(address) = agent.map(|a| a.email).filter(|e| !e.is_empty()) else {
            return Ok(Outcome::Give { error: "the recipient has no e-mail address here (removed or erased)".into() });
        };
        let mut body = format!("{}.\n", text.title);
        if let Some(excerpt) = &text.excerpt {
            body.push_str(&format!("\n> {}\n", excerpt.replace('\n', "\n> ")));
        }
        let message_id = format!("<notification-{}@inboxd>", notification.notification_id);
        Ok(match mailer.send(&address, &text.title, body, &message_id).await {
            Ok(()) => Outcome::Done,
            Err(MailError::Refused(error)) => Outcome::Give { error },
            Err(MailError::Failed(error)) => Outcome::Retry { error, after: None },
        })
    }

    async fn push(&self, notification: &NotificationRow, text: &Text, subscription: Uuid) -> anyhow::Result<Outcome> {
        let pool = self.commands.store().pool();
        let sealed: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT sealed FROM push_subscriptions WHERE subscription_id = $1 AND account_id = $2 AND user_id = $3",
        )
        .bind(subscription)
        .bind(notification.account_id)
        .bind(notification.user_id)
        .fetch_optional(pool)
        .await?;
        let Some(sealed) = sealed else {
            return Ok(Outcome::Give { error: "the browser's push subscription is gone".into() });
        };
        let opened = self.commands.store().keyring().open_setting(&subscription_binding(subscription), &sealed)?;
        let browser: SealedSubscription = serde_json::from_slice(&opened)?;
        let payload = serde_json::to_vec(&json!({
            "id": notification.notification_id,
            "type": notification.kind,
            "conversationId": notification.conversation_id,
            "title": text.title,
            "body": text.excerpt,
        }))?;
        let body = encrypt(&payload, &browser.p256dh, &browser.auth)?;
        let expires = self.clock.now().timestamp() + 12 * 3600;
        let headers = [
            ("authorization", self.vapid.authorization(&browser.endpoint, &self.vapid_subject, expires)?),
            ("content-encoding", "aes128gcm".to_string()),
            ("content-type", "application/octet-stream".to_string()),
            ("ttl", PUSH_TTL_SECS.to_string()),
            // One topic per notification: a retry replaces, not adds to, what waits.
            ("topic", BASE64URL.encode(notification.notification_id.as_bytes())),
        ];
        let answer = match self.outbound.post(&browser.endpoint, &headers, body).await {
            Ok(answer) => answer,
            Err(OutboundError::Refused(error)) => return Ok(Outcome::Give { error }),
            Err(OutboundError::Failed(error)) => return Ok(Outcome::Retry { error, after: None }),
        };
        let status = answer.status();
        if status.is_success() {
            return Ok(Outcome::Done);
        }
        let error = format!("the push service answered {}", status.as_u16());
        // The browser unsubscribed: forget it.
        if status.as_u16() == 404 || status.as_u16() == 410 {
            sqlx::query("DELETE FROM push_subscriptions WHERE subscription_id = $1")
                .bind(subscription)
                .execute(pool)
                .await?;
            return Ok(Outcome::Give { error });
        }
        let after = answer
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Ok(Outcome::Retry { error, after })
    }
}
