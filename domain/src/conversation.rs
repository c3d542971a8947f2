//! Conversation: the thread between a contact and the team in one inbox — its messages,
//! status, priority, assignee, team, labels, custom attributes and reply tracking.
//!
//! The aggregate derives what readers need (response times, the previous assignee, the
//! activity line the timeline shows) and puts it in the events, so projectors stay thin.

use std::collections::{BTreeSet, HashMap, HashSet};

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::activity::{ActedBy, Activity, ActivityLine, Line};
use crate::attachment::Attachment;
use crate::channel::{ProviderDelivery, TemplateRef};
use crate::ids::{AccountId, ContactId, ConversationId, InboxId, MessageId, TeamId, UserId};
use crate::values::{Channel, CustomAttributes, Instant, MessageContent, MessageStatus, Priority, Status};
use crate::{domain_event, DomainError, PersonalData};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Conversation {
    id: Option<ConversationId>,
    contact_id: Option<ContactId>,
    inbox_id: Option<InboxId>,
    account_id: Option<AccountId>,
    status: Status,
    priority: Priority,
    assignee: Option<UserId>,
    team: Option<TeamId>,
    labels: BTreeSet<String>,
    muted: bool,
    waiting_since: Option<Instant>,
    first_reply_at: Option<Instant>,
    /// Replies whose id the client keyed (name-based, UUID v5; others are v7): a
    /// retried reply with the same key is the one already sent.
    keyed_replies: HashSet<MessageId>,
    /// The contact's messages so far, and how many of them each agent has read.
    received: u32,
    read: HashMap<UserId, u32>,
    /// When the contact last wrote, by the provider's clock where it says.
    last_received_at: Option<Instant>,
    /// Our messages a provider delivers, and where each stands.
    outgoing: HashMap<MessageId, MessageStatus>,
}

/// Whether a message id was derived from a client's key (`MessageId::keyed`).
fn is_keyed(id: MessageId) -> bool {
    id.0.get_version_num() == 5
}

impl Conversation {
    pub fn account_id(&self) -> Option<AccountId> {
        self.account_id
    }
    pub fn inbox_id(&self) -> Option<InboxId> {
        self.inbox_id
    }
    pub fn assignee(&self) -> Option<UserId> {
        self.assignee
    }
    pub fn contact_id(&self) -> Option<ContactId> {
        self.contact_id
    }
    /// Where one of our messages stands at its provider (`None`: not delivered by one).
    pub fn delivery_status(&self, message: MessageId) -> Option<MessageStatus> {
        self.outgoing.get(&message).copied()
    }
    /// Until when a free-form reply may go out through a provider whose window is
    /// `window` (`None`: the contact never wrote, only a template may).
    pub fn reply_window_closes_at(&self, window: chrono::Duration) -> Option<Instant> {
        self.last_received_at.map(|last| last + window)
    }
}

/// What happened to one of our messages at its provider.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryOutcome {
    /// An attempt is about to be made (1 for the first).
    Attempted { attempt: i32 },
    /// The provider accepted it under this id: sent.
    Accepted { provider_message_id: String },
    /// A provider's callback: delivered, read (or sent).
    Status(MessageStatus),
    /// The provider refused it, or a callback says it failed: terminal.
    Failed { code: Option<String>, reason: String },
}

/// Who issues a command to the conversation, and the id its activity line gets.
#[derive(Debug, Clone, Copy)]
pub struct ChangedBy {
    pub by: ActedBy,
    pub activity_message_id: MessageId,
}

#[derive(Debug)]
pub enum ConversationCommand {
    Start {
        conversation_id: ConversationId,
        account_id: AccountId,
        inbox_id: InboxId,
        contact_id: ContactId,
        display_id: i64,
        at: Instant,
    },
    ReceiveMessage {
        message_id: MessageId,
        /// May be empty when the message is its attachments.
        content: MessageContent,
        attachments: Vec<Attachment>,
        /// When the contact sent it, by the provider's clock (channels that say).
        sent_at: Option<Instant>,
        /// Its id on the channel (a reply quotes it).
        source_id: Option<String>,
        at: Instant,
    },
    SendMessage {
        message_id: MessageId,
        author: UserId,
        /// May be empty when the message is its attachments.
        content: MessageContent,
        /// Files the agent uploaded to the conversation.
        attachments: Vec<Attachment>,
        private: bool,
        /// The provider that delivers public replies in this conversation's inbox.
        delivery: Option<ProviderDelivery>,
        /// An approved template and its components (WhatsApp): allowed outside the
        /// reply window.
        template: Option<(TemplateRef, serde_json::Value)>,
        /// The message of the conversation it answers (quoted by providers that can).
        reply_to: Option<MessageId>,
        at: Instant,
    },
    /// Records an attempt or outcome of a provider's delivery of our message.
    RecordDelivery {
        message_id: MessageId,
        outcome: DeliveryOutcome,
        at: Instant,
    },
    /// `None` leaves that side unchanged; `Some(None)` clears it.
    Assign {
        assignee: Option<Option<UserId>>,
        team: Option<Option<TeamId>>,
        by: ChangedBy,
        at: Instant,
    },
    SetStatus {
        status: Status,
        snoozed_until: Option<Instant>,
        by: ChangedBy,
        at: Instant,
    },
    SetPriority {
        priority: Priority,
        by: ChangedBy,
        at: Instant,
    },
    SetLabels {
        labels: BTreeSet<String>,
        by: ChangedBy,
        at: Instant,
    },
    SetMuted {
        muted: bool,
        by: ChangedBy,
        at: Instant,
    },
    SetCustomAttributes {
        attributes: CustomAttributes,
        at: Instant,
    },
    /// An agent has read the conversation as it stands.
    MarkRead {
        reader: UserId,
        at: Instant,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ConversationEvent {
    ConversationStarted {
        conversation_id: ConversationId,
        account_id: AccountId,
        inbox_id: InboxId,
        contact_id: ContactId,
        display_id: i64,
        status: Status,
        at: Instant,
    },
    /// `content` is `None` once the contact is erased.
    MessageReceived {
        message_id: MessageId,
        contact_id: ContactId,
        content: Option<String>,
        /// Set when this message starts a wait for a reply.
        waiting_since: Option<Instant>,
        /// When the contact sent it, by the provider's clock: a provider's reply
        /// window runs from it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sent_at: Option<Instant>,
        /// The files it carries ([`Attachment`]s); sealed, and `None` once erased.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attachments: Option<serde_json::Value>,
        /// Its id on the channel (a reply quotes it); sealed: a WhatsApp id embeds the
        /// sender's number.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source_id: Option<String>,
        at: Instant,
    },
    MessageSent {
        message_id: MessageId,
        contact_id: ContactId,
        author: UserId,
        content: Option<String>,
        private: bool,
        /// The first public reply of the conversation.
        first_reply: bool,
        /// Seconds the contact waited for this reply (public replies while waiting).
        reply_time_seconds: Option<i64>,
        /// The provider channel that delivers it (a public reply in a WhatsApp or
        /// Messenger inbox): pending until the provider accepts it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delivered_by: Option<Channel>,
        /// The approved template this message is (WhatsApp).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template: Option<TemplateRef>,
        /// The template's components as sent; sealed (parameters may name the contact).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template_components: Option<serde_json::Value>,
        /// The message of the conversation it answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<MessageId>,
        /// The files it carries ([`Attachment`]s); sealed, and `None` once erased.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attachments: Option<serde_json::Value>,
        at: Instant,
    },
    /// We are about to hand the message to its provider (attempt 1, 2, …).
    MessageDeliveryAttempted {
        message_id: MessageId,
        attempt: i32,
        at: Instant,
    },
    /// The provider accepted the message under its own id: sent.
    MessageAcceptedByProvider {
        message_id: MessageId,
        provider_message_id: String,
        at: Instant,
    },
    /// A provider's callback moved the message on (delivered, read).
    MessageStatusUpdated {
        message_id: MessageId,
        status: MessageStatus,
        at: Instant,
    },
    /// The provider refused the message, or said it failed: terminal.
    MessageDeliveryFailed {
        message_id: MessageId,
        /// The provider's error code, when it gave one.
        code: Option<String>,
        reason: String,
        at: Instant,
    },
    AssigneeChanged {
        from: Option<UserId>,
        to: Option<UserId>,
        activity: Activity,
        at: Instant,
    },
    TeamChanged {
        from: Option<TeamId>,
        to: Option<TeamId>,
        activity: Activity,
        at: Instant,
    },
    StatusChanged {
        from: Status,
        to: Status,
        snoozed_until: Option<Instant>,
        /// `None` when the change was automatic (a contact's message reopened it).
        activity: Option<Activity>,
        at: Instant,
    },
    PriorityChanged {
        from: Priority,
        to: Priority,
        activity: Activity,
        at: Instant,
    },
    LabelsChanged {
        added: Vec<String>,
        removed: Vec<String>,
        activity: Activity,
        at: Instant,
    },
    MuteChanged {
        muted: bool,
        activity: Activity,
        at: Instant,
    },
    /// The whole set after the change; sealed: attributes may identify the contact.
    CustomAttributesChanged {
        contact_id: ContactId,
        attributes: Option<serde_json::Map<String, serde_json::Value>>,
        at: Instant,
    },
    /// An agent read the conversation: the first `messages_read` of the contact's
    /// messages (the rest are unread for them).
    ConversationRead {
        reader: UserId,
        messages_read: u32,
        at: Instant,
    },
}

impl ConversationEvent {
    /// The line an event adds to the timeline, with its id; `None` for events that add
    /// none (messages, automatic reopening, attributes).
    pub fn activity_line(&self) -> Option<(MessageId, Line)> {
        use ConversationEvent as E;
        let by = |activity: &Activity| activity.by.unwrap_or(ActedBy::System);
        let (activity, line) = match self {
            E::AssigneeChanged { to, activity, .. } => (activity, ActivityLine::Assignee { to: *to, by: by(activity) }),
            E::TeamChanged { to, activity, .. } => (activity, ActivityLine::Team { to: *to, by: by(activity) }),
            E::StatusChanged { to, activity: Some(activity), .. } => {
                (activity, ActivityLine::Status { to: *to, by: by(activity) })
            }
            E::PriorityChanged { to, activity, .. } => (activity, ActivityLine::Priority { to: *to, by: by(activity) }),
            E::LabelsChanged { added, removed, activity, .. } => {
                let (added, removed) = (added.clone(), removed.clone());
                (activity, ActivityLine::Labels { added, removed, by: by(activity) })
            }
            E::MuteChanged { muted, activity, .. } => {
                (activity, ActivityLine::Muted { muted: *muted, by: by(activity) })
            }
            _ => return None,
        };
        let line = match &activity.content {
            Some(text) => Line::Text(text.clone()),
            None => Line::Structured(line),
        };
        Some((activity.message_id, line))
    }
}

domain_event!(
    ConversationEvent,
    version = "1",
    [
        ConversationStarted,
        MessageReceived,
        MessageSent,
        AssigneeChanged,
        TeamChanged,
        StatusChanged,
        PriorityChanged,
        LabelsChanged,
        MuteChanged,
        CustomAttributesChanged,
        ConversationRead,
        MessageDeliveryAttempted,
        MessageAcceptedByProvider,
        MessageStatusUpdated,
        MessageDeliveryFailed,
    ]
);

impl PersonalData for ConversationEvent {
    fn personal_fields(&self) -> &'static [&'static str] {
        match self {
            Self::MessageReceived { .. } => &["content", "attachments", "source_id"],
            Self::MessageSent { .. } => &["content", "template_components", "attachments"],
            Self::CustomAttributesChanged { .. } => &["attributes"],
            _ => &[],
        }
    }
    fn data_subject(&self) -> Option<Uuid> {
        match self {
            Self::MessageReceived { contact_id, .. }
            | Self::MessageSent { contact_id, .. }
            | Self::CustomAttributesChanged { contact_id, .. } => Some(contact_id.as_uuid()),
            _ => None,
        }
    }
}

impl Conversation {
    fn started(&self) -> Result<ContactId, DomainError> {
        self.contact_id.ok_or(DomainError::NotFound("conversation"))
    }

    fn activity(by: &ChangedBy) -> Activity {
        Activity::by(by.activity_message_id, by.by)
    }
}

impl Aggregate for Conversation {
    const TYPE: &'static str = "conversation";
    type Command = ConversationCommand;
    type Event = ConversationEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: ConversationCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        use ConversationEvent as E;
        if let ConversationCommand::Start { conversation_id, account_id, inbox_id, contact_id, display_id, at } =
            command
        {
            if self.id.is_some() {
                return Err(DomainError::AlreadyExists("conversation"));
            }
            let event = E::ConversationStarted {
                conversation_id,
                account_id,
                inbox_id,
                contact_id,
                display_id,
                status: Status::Open,
                at,
            };
            sink.write(event, self).await;
            return Ok(());
        }
        let contact_id = self.started()?;
        match command {
            ConversationCommand::Start { .. } => unreachable!("handled above"),
            ConversationCommand::ReceiveMessage { message_id, content, attachments, sent_at, source_id, at } => {
                if content.is_empty() && attachments.is_empty() {
                    return Err(DomainError::invalid("a message needs text or a file"));
                }
                let waiting_since = self.waiting_since.or(Some(at));
                let content = Some(content.into_inner());
                let attachments = Attachment::record(&attachments)?;
                let received = E::MessageReceived {
                    message_id,
                    contact_id,
                    content,
                    waiting_since,
                    sent_at,
                    attachments,
                    source_id,
                    at,
                };
                sink.write(received, self).await;
                if matches!(self.status, Status::Snoozed | Status::Resolved) && !self.muted {
                    let from = self.status;
                    let reopened = E::StatusChanged { from, to: Status::Open, snoozed_until: None, activity: None, at };
                    sink.write(reopened, self).await;
                }
            }
            ConversationCommand::SendMessage {
                message_id,
                author,
                content,
                attachments,
                private,
                delivery,
                template,
                reply_to,
                at,
            } => {
                if self.keyed_replies.contains(&message_id) {
                    return Ok(());
                }
                let public = !private;
                let delivery = delivery.filter(|_| public);
                if template.is_some() && (private || delivery.is_none_or(|d| d.channel != Channel::Whatsapp)) {
                    return Err(DomainError::invalid("a template is sent as a reply in a WhatsApp inbox"));
                }
                if content.is_empty() && attachments.is_empty() {
                    return Err(DomainError::invalid("a message needs text or a file"));
                }
                if template.is_some() && !attachments.is_empty() {
                    return Err(DomainError::invalid("a template carries no files"));
                }
                if let Some(delivery) = delivery {
                    delivery.check_files(&attachments, content.as_str())?;
                }
                let attachments = Attachment::record(&attachments)?;
                // A template is what may go out when the window is closed.
                if let Some(delivery) = delivery.filter(|_| template.is_none()) {
                    match self.reply_window_closes_at(delivery.window) {
                        Some(closes) if at <= closes => {}
                        closed => {
                            let since = closed.map_or("the contact has not written yet".to_string(), |c| {
                                format!("it closed at {}", c.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                            });
                            return Err(DomainError::WindowClosed(format!(
                                "outside the {} reply window ({since}): only a template can be sent",
                                delivery.channel.as_str()
                            )));
                        }
                    }
                }
                let first_reply = public && self.first_reply_at.is_none();
                let reply_time_seconds = match (public, self.waiting_since) {
                    (true, Some(since)) => Some((at - since).num_seconds().max(0)),
                    _ => None,
                };
                let event = E::MessageSent {
                    message_id,
                    contact_id,
                    author,
                    content: Some(content.into_inner()),
                    private,
                    first_reply,
                    reply_time_seconds,
                    delivered_by: delivery.map(|d| d.channel),
                    template: template.as_ref().map(|(t, _)| t.clone()),
                    template_components: template.map(|(_, components)| components),
                    reply_to,
                    attachments,
                    at,
                };
                sink.write(event, self).await;
            }
            ConversationCommand::RecordDelivery { message_id, outcome, at } => {
                let Some(status) = self.outgoing.get(&message_id).copied() else {
                    return Err(DomainError::NotFound("message"));
                };
                let event = match outcome {
                    DeliveryOutcome::Attempted { attempt } if status == MessageStatus::Pending => {
                        E::MessageDeliveryAttempted { message_id, attempt, at }
                    }
                    // Recorded once: a retry never sends what the provider accepted.
                    DeliveryOutcome::Accepted { provider_message_id } if status == MessageStatus::Pending => {
                        E::MessageAcceptedByProvider { message_id, provider_message_id, at }
                    }
                    DeliveryOutcome::Status(next)
                        if status != MessageStatus::Pending
                            && next != MessageStatus::Failed
                            && status.moves_to(next) =>
                    {
                        E::MessageStatusUpdated { message_id, status: next, at }
                    }
                    DeliveryOutcome::Failed { code, reason } if status.moves_to(MessageStatus::Failed) => {
                        E::MessageDeliveryFailed { message_id, code, reason, at }
                    }
                    // Late, repeated or out of order: nothing changes.
                    _ => return Ok(()),
                };
                sink.write(event, self).await;
            }
            ConversationCommand::Assign { assignee, team, by, at } => {
                if assignee.is_none() && team.is_none() {
                    return Err(DomainError::invalid("name an assignee or a team (null clears it)"));
                }
                let mut team_changed = false;
                if let Some(to) = team {
                    if to != self.team {
                        team_changed = true;
                        let activity = Self::activity(&by);
                        sink.write(E::TeamChanged { from: self.team, to, activity, at }, self).await;
                    }
                }
                if let Some(to) = assignee {
                    if to != self.assignee {
                        // When the team changed too, its line took the given id: this
                        // one gets an id derived from it, so both stay deterministic.
                        let mut activity = Self::activity(&by);
                        if team_changed {
                            activity.message_id = MessageId(Uuid::new_v5(&by.activity_message_id.0, b"assignee"));
                        }
                        sink.write(E::AssigneeChanged { from: self.assignee, to, activity, at }, self).await;
                    }
                }
            }
            ConversationCommand::SetStatus { status, snoozed_until, by, at } => {
                if snoozed_until.is_some() && status != Status::Snoozed {
                    return Err(DomainError::invalid("snoozedUntil is only allowed with status SNOOZED"));
                }
                if let Some(until) = snoozed_until {
                    if until <= at {
                        return Err(DomainError::invalid("snoozedUntil must be in the future"));
                    }
                }
                if status != self.status || status == Status::Snoozed {
                    let activity = Some(Self::activity(&by));
                    sink.write(E::StatusChanged { from: self.status, to: status, snoozed_until, activity, at }, self)
                        .await;
                }
            }
            ConversationCommand::SetPriority { priority, by, at } => {
                if priority != self.priority {
                    let activity = Self::activity(&by);
                    sink.write(E::PriorityChanged { from: self.priority, to: priority, activity, at }, self).await;
                }
            }
            ConversationCommand::SetLabels { labels, by, at } => {
                let added: Vec<String> = labels.difference(&self.labels).cloned().collect();
                let removed: Vec<String> = self.labels.difference(&labels).cloned().collect();
                if !added.is_empty() || !removed.is_empty() {
                    let activity = Self::activity(&by);
                    sink.write(E::LabelsChanged { added, removed, activity, at }, self).await;
                }
            }
            ConversationCommand::SetMuted { muted, by, at } => {
                if muted != self.muted {
                    let activity = Self::activity(&by);
                    sink.write(E::MuteChanged { muted, activity, at }, self).await;
                }
            }
            ConversationCommand::SetCustomAttributes { attributes, at } => {
                let event = E::CustomAttributesChanged { contact_id, attributes: Some(attributes.into_inner()), at };
                sink.write(event, self).await;
            }
            ConversationCommand::MarkRead { reader, at } => {
                // Reading again what was read already is no news.
                if self.read.get(&reader).copied().unwrap_or(0) < self.received {
                    sink.write(E::ConversationRead { reader, messages_read: self.received, at }, self).await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: ConversationEvent) {
        use ConversationEvent as E;
        match event {
            E::ConversationStarted { conversation_id, account_id, inbox_id, contact_id, status, at, .. } => {
                self.id = Some(conversation_id);
                self.account_id = Some(account_id);
                self.inbox_id = Some(inbox_id);
                self.contact_id = Some(contact_id);
                self.status = status;
                self.waiting_since = Some(at);
            }
            E::MessageReceived { waiting_since, sent_at, at, .. } => {
                self.waiting_since = waiting_since;
                self.received += 1;
                self.last_received_at = Some(sent_at.unwrap_or(at));
            }
            E::MessageDeliveryAttempted { .. } => {}
            E::MessageAcceptedByProvider { message_id, .. } => {
                self.outgoing.insert(message_id, MessageStatus::Sent);
            }
            E::MessageStatusUpdated { message_id, status, .. } => {
                self.outgoing.insert(message_id, status);
            }
            E::MessageDeliveryFailed { message_id, .. } => {
                self.outgoing.insert(message_id, MessageStatus::Failed);
            }
            E::MessageSent { message_id, private, at, first_reply, delivered_by, .. } => {
                if delivered_by.is_some() {
                    self.outgoing.insert(message_id, MessageStatus::Pending);
                }
                if is_keyed(message_id) {
                    self.keyed_replies.insert(message_id);
                }
                if !private {
                    self.waiting_since = None;
                }
                if first_reply {
                    self.first_reply_at = Some(at);
                }
            }
            E::AssigneeChanged { to, .. } => self.assignee = to,
            E::TeamChanged { to, .. } => self.team = to,
            E::StatusChanged { to, .. } => {
                self.status = to;
                if to == Status::Resolved {
                    self.waiting_since = None;
                }
            }
            E::PriorityChanged { to, .. } => self.priority = to,
            E::LabelsChanged { added, removed, .. } => {
                for label in removed {
                    self.labels.remove(&label);
                }
                self.labels.extend(added);
            }
            E::MuteChanged { muted, .. } => self.muted = muted,
            E::CustomAttributesChanged { .. } => {}
            E::ConversationRead { reader, messages_read, .. } => {
                self.read.insert(reader, messages_read);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use cqrs_es::test::TestFramework;
    use ConversationCommand as C;
    use ConversationEvent as E;

    const CONTACT: ContactId = ContactId(Uuid::from_u128(3));
    const ANA: UserId = UserId(Uuid::from_u128(5));
    const BO: UserId = UserId(Uuid::from_u128(6));

    fn t(minutes: i64) -> Instant {
        chrono::Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap() + Duration::minutes(minutes)
    }
    fn msg(n: u128) -> MessageId {
        MessageId(Uuid::from_u128(100 + n))
    }
    fn by() -> ChangedBy {
        ChangedBy { by: ActedBy::Agent(BO), activity_message_id: msg(99) }
    }
    fn activity() -> Activity {
        Activity::by(msg(99), ActedBy::Agent(BO))
    }
    fn text(s: &str) -> MessageContent {
        MessageContent::parse(s).unwrap()
    }
    fn started() -> E {
        E::ConversationStarted {
            conversation_id: ConversationId(Uuid::from_u128(4)),
            account_id: AccountId(Uuid::from_u128(1)),
            inbox_id: InboxId(Uuid::from_u128(2)),
            contact_id: CONTACT,
            display_id: 1,
            status: Status::Open,
            at: t(0),
        }
    }
    fn received(n: u128, minute: i64, waiting_since: Instant) -> E {
        E::MessageReceived {
            message_id: msg(n),
            contact_id: CONTACT,
            content: Some("hi".into()),
            waiting_since: Some(waiting_since),
            sent_at: None,
            attachments: None,
            source_id: None,
            at: t(minute),
        }
    }
    /// The contact's text message `n`, at `minute`.
    fn receive(n: u128, content: &str, minute: i64) -> C {
        C::ReceiveMessage {
            message_id: msg(n),
            content: text(content),
            attachments: Vec::new(),
            sent_at: None,
            source_id: None,
            at: t(minute),
        }
    }
    /// A status change, by Bo or (`by_bo` false) automatic.
    fn status(from: Status, to: Status, minute: i64, by_bo: bool) -> E {
        let activity = by_bo.then(activity);
        E::StatusChanged { from, to, snoozed_until: None, activity, at: t(minute) }
    }
    fn conversation() -> TestFramework<Conversation> {
        TestFramework::with(())
    }

    #[test]
    fn an_incoming_message_reopens_a_resolved_conversation() {
        conversation()
            .given(vec![started(), status(Status::Open, Status::Resolved, 5, true)])
            .when(receive(1, "hi", 10))
            .then_expect_events(vec![received(1, 10, t(10)), status(Status::Resolved, Status::Open, 10, false)]);
    }

    #[test]
    fn an_incoming_message_reopens_a_snoozed_conversation_unless_muted() {
        let snoozed = status(Status::Open, Status::Snoozed, 5, true);
        conversation()
            .given(vec![started(), snoozed.clone()])
            .when(receive(1, "hi", 10))
            .then_expect_events(vec![received(1, 10, t(0)), status(Status::Snoozed, Status::Open, 10, false)]);
        let muted = E::MuteChanged { muted: true, activity: activity(), at: t(6) };
        conversation()
            .given(vec![started(), snoozed, muted])
            .when(receive(1, "hi", 10))
            .then_expect_events(vec![received(1, 10, t(0))]);
    }

    #[test]
    fn a_reply_keyed_by_the_client_is_sent_once_and_an_unkeyed_one_each_time() {
        let keyed = MessageId::keyed(ConversationId(Uuid::from_u128(4)), ANA, "draft-7").unwrap();
        let sent = |id: MessageId| E::MessageSent {
            message_id: id,
            contact_id: CONTACT,
            author: ANA,
            content: Some("hello".into()),
            private: true,
            first_reply: false,
            reply_time_seconds: None,
            delivered_by: None,
            template: None,
            template_components: None,
            reply_to: None,
            attachments: None,
            at: t(3),
        };
        let send = |id: MessageId| C::SendMessage {
            message_id: id,
            author: ANA,
            content: text("hello"),
            private: true,
            delivery: None,
            template: None,
            reply_to: None,
            attachments: Vec::new(),
            at: t(3),
        };
        conversation().given(vec![started(), sent(keyed)]).when(send(keyed)).then_expect_events(vec![]);
        conversation().given(vec![started(), sent(msg(2))]).when(send(msg(2))).then_expect_events(vec![sent(msg(2))]);
        assert_ne!(
            keyed,
            MessageId::keyed(ConversationId(Uuid::from_u128(4)), UserId(Uuid::from_u128(6)), "draft-7").unwrap(),
            "another author's key names another reply"
        );
    }

    #[test]
    fn the_first_public_reply_records_the_response_time_and_private_notes_do_not() {
        conversation()
            .given(vec![started(), received(1, 1, t(0))])
            .when(C::SendMessage {
                message_id: msg(2),
                author: ANA,
                content: text("note"),
                private: true,
                delivery: None,
                template: None,
                reply_to: None,
                attachments: Vec::new(),
                at: t(3),
            })
            .then_expect_events(vec![E::MessageSent {
                message_id: msg(2),
                contact_id: CONTACT,
                author: ANA,
                content: Some("note".into()),
                private: true,
                first_reply: false,
                reply_time_seconds: None,
                delivered_by: None,
                template: None,
                template_components: None,
                reply_to: None,
                attachments: None,
                at: t(3),
            }]);
        conversation()
            .given(vec![started(), received(1, 1, t(0))])
            .when(C::SendMessage {
                message_id: msg(2),
                author: ANA,
                content: text("hello"),
                private: false,
                delivery: None,
                template: None,
                reply_to: None,
                attachments: Vec::new(),
                at: t(4),
            })
            .then_expect_events(vec![E::MessageSent {
                message_id: msg(2),
                contact_id: CONTACT,
                author: ANA,
                content: Some("hello".into()),
                private: false,
                first_reply: true,
                reply_time_seconds: Some(240),
                delivered_by: None,
                template: None,
                template_components: None,
                reply_to: None,
                attachments: None,
                at: t(4),
            }]);
    }

    #[test]
    fn waiting_starts_again_with_the_first_message_after_a_reply() {
        let reply = E::MessageSent {
            message_id: msg(2),
            contact_id: CONTACT,
            author: ANA,
            content: Some("hello".into()),
            private: false,
            first_reply: true,
            reply_time_seconds: Some(240),
            delivered_by: None,
            template: None,
            template_components: None,
            reply_to: None,
            attachments: None,
            at: t(4),
        };
        conversation()
            .given(vec![started(), received(1, 1, t(0)), reply])
            .when(receive(3, "thanks", 20))
            .then_expect_events(vec![E::MessageReceived {
                message_id: msg(3),
                contact_id: CONTACT,
                content: Some("thanks".into()),
                waiting_since: Some(t(20)),
                sent_at: None,
                attachments: None,
                source_id: None,
                at: t(20),
            }]);
    }

    #[test]
    fn snooze_times_must_be_in_the_future_and_only_with_snoozed() {
        conversation()
            .given(vec![started()])
            .when(C::SetStatus { status: Status::Resolved, snoozed_until: Some(t(60)), by: by(), at: t(1) })
            .then_expect_error(DomainError::invalid("snoozedUntil is only allowed with status SNOOZED"));
        conversation()
            .given(vec![started()])
            .when(C::SetStatus { status: Status::Snoozed, snoozed_until: Some(t(0)), by: by(), at: t(1) })
            .then_expect_error(DomainError::invalid("snoozedUntil must be in the future"));
        conversation()
            .given(vec![started()])
            .when(C::SetStatus { status: Status::Snoozed, snoozed_until: Some(t(60)), by: by(), at: t(1) })
            .then_expect_events(vec![E::StatusChanged {
                from: Status::Open,
                to: Status::Snoozed,
                snoozed_until: Some(t(60)),
                activity: Some(activity()),
                at: t(1),
            }]);
    }

    #[test]
    fn setting_the_current_status_again_changes_nothing() {
        conversation()
            .given(vec![started()])
            .when(C::SetStatus { status: Status::Open, snoozed_until: None, by: by(), at: t(1) })
            .then_expect_events(vec![]);
    }

    #[test]
    fn assignment_records_who_assigned_whom() {
        let ana = || Some(Some(ANA));
        conversation()
            .given(vec![started()])
            .when(C::Assign { assignee: ana(), team: None, by: by(), at: t(1) })
            .then_expect_events(vec![E::AssigneeChanged { from: None, to: Some(ANA), activity: activity(), at: t(1) }]);
        let assigned = E::AssigneeChanged { from: None, to: Some(ANA), activity: activity(), at: t(1) };
        conversation()
            .given(vec![started(), assigned.clone()])
            .when(C::Assign { assignee: ana(), team: None, by: by(), at: t(2) })
            .then_expect_events(vec![]);
        conversation()
            .given(vec![started(), assigned])
            .when(C::Assign { assignee: Some(None), team: None, by: by(), at: t(2) })
            .then_expect_events(vec![E::AssigneeChanged { from: Some(ANA), to: None, activity: activity(), at: t(2) }]);
        conversation()
            .given(vec![started()])
            .when(C::Assign { assignee: None, team: None, by: by(), at: t(2) })
            .then_expect_error(DomainError::invalid("name an assignee or a team (null clears it)"));
    }

    #[test]
    fn a_conversation_that_was_never_started_is_not_found() {
        conversation()
            .given_no_previous_events()
            .when(receive(1, "hi", 1))
            .then_expect_error(DomainError::NotFound("conversation"));
    }

    #[test]
    fn labels_record_what_was_added_and_removed() {
        let labels = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let first = E::LabelsChanged {
            added: vec!["billing".into(), "vip".into()],
            removed: vec![],
            activity: activity(),
            at: t(1),
        };
        conversation()
            .given(vec![started()])
            .when(C::SetLabels { labels: labels(&["vip", "billing"]), by: by(), at: t(1) })
            .then_expect_events(vec![first.clone()]);
        conversation()
            .given(vec![started(), first])
            .when(C::SetLabels { labels: labels(&["vip", "urgent"]), by: by(), at: t(2) })
            .then_expect_events(vec![E::LabelsChanged {
                added: vec!["urgent".into()],
                removed: vec!["billing".into()],
                activity: activity(),
                at: t(2),
            }]);
    }

    #[test]
    fn an_agent_reads_what_the_contact_wrote_once_and_each_agent_for_themself() {
        let read = |reader, messages_read, minute| E::ConversationRead { reader, messages_read, at: t(minute) };
        let two = vec![started(), received(1, 1, t(1)), received(2, 2, t(1))];
        conversation()
            .given(two.clone())
            .when(C::MarkRead { reader: ANA, at: t(3) })
            .then_expect_events(vec![read(ANA, 2, 3)]);
        let mut read_by_ana = two.clone();
        read_by_ana.push(read(ANA, 2, 3));
        conversation()
            .given(read_by_ana.clone())
            .when(C::MarkRead { reader: ANA, at: t(4) })
            .then_expect_events(vec![]);
        conversation()
            .given(read_by_ana.clone())
            .when(C::MarkRead { reader: BO, at: t(4) })
            .then_expect_events(vec![read(BO, 2, 4)]);
        read_by_ana.push(received(3, 5, t(1)));
        conversation()
            .given(read_by_ana)
            .when(C::MarkRead { reader: ANA, at: t(6) })
            .then_expect_events(vec![read(ANA, 3, 6)]);
        conversation().given(vec![started()]).when(C::MarkRead { reader: ANA, at: t(1) }).then_expect_events(vec![]);
    }

    #[test]
    fn message_content_has_limits() {
        assert!(MessageContent::parse("  ").is_err());
        assert!(MessageContent::parse("x".repeat(crate::values::MAX_MESSAGE_CHARS + 1)).is_err());
        assert!(MessageContent::parse("x".repeat(crate::values::MAX_MESSAGE_CHARS)).is_ok());
    }

    fn whatsapp() -> Option<ProviderDelivery> {
        Some(ProviderDelivery { channel: Channel::Whatsapp, window: chrono::Duration::hours(24) })
    }

    fn reply(n: u128, minute: i64, delivery: Option<ProviderDelivery>) -> C {
        C::SendMessage {
            message_id: msg(n),
            author: ANA,
            content: text("hello"),
            private: false,
            delivery,
            template: None,
            reply_to: None,
            attachments: Vec::new(),
            at: t(minute),
        }
    }

    #[test]
    fn a_free_form_reply_goes_out_only_inside_the_window_from_the_contacts_own_timestamp() {
        // The contact wrote at minute 0 by the provider's clock (received at minute 5).
        let received = E::MessageReceived {
            message_id: msg(1),
            contact_id: CONTACT,
            content: Some("hi".into()),
            waiting_since: Some(t(5)),
            sent_at: Some(t(0)),
            attachments: None,
            source_id: None,
            at: t(5),
        };
        let hours = |h: i64| h * 60;
        conversation()
            .given(vec![started(), received.clone()])
            .when(reply(2, hours(25), whatsapp()))
            .then_expect_error(DomainError::WindowClosed(format!(
                "outside the whatsapp reply window (it closed at {}): only a template can be sent",
                t(hours(24)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )));
        conversation().given(vec![started()]).when(reply(2, 1, whatsapp())).then_expect_error_message(
            "outside the whatsapp reply window (the contact has not written yet): only a template can be sent",
        );
        // A private note is never sent, so no window applies; inside it, a reply is pending delivery.
        let note = C::SendMessage {
            message_id: msg(2),
            author: ANA,
            content: text("note"),
            private: true,
            delivery: whatsapp(),
            template: None,
            reply_to: None,
            attachments: Vec::new(),
            at: t(hours(30)),
        };
        let events = conversation().given(vec![started(), received.clone()]).when(note).inspect_result().unwrap();
        assert!(
            matches!(
                &events[0],
                E::MessageSent { delivered_by: None, template: None, template_components: None, reply_to: None, .. }
            ),
            "{events:?}"
        );
        let events = conversation().given(vec![started(), received]).when(reply(2, hours(23), whatsapp()));
        let events = events.inspect_result().unwrap();
        assert!(
            matches!(
                &events[0],
                E::MessageSent {
                    delivered_by: Some(Channel::Whatsapp),
                    template: None,
                    template_components: None,
                    reply_to: None,
                    ..
                }
            ),
            "{events:?}"
        );
    }

    #[test]
    fn a_delivery_is_accepted_once_and_statuses_only_move_forward_until_a_failure() {
        let sent = E::MessageSent {
            message_id: msg(2),
            contact_id: CONTACT,
            author: ANA,
            content: Some("hello".into()),
            private: false,
            first_reply: true,
            reply_time_seconds: Some(60),
            delivered_by: Some(Channel::Whatsapp),
            template: None,
            template_components: None,
            reply_to: None,
            attachments: None,
            at: t(1),
        };
        let record = |outcome| C::RecordDelivery { message_id: msg(2), outcome, at: t(2) };
        let accepted =
            E::MessageAcceptedByProvider { message_id: msg(2), provider_message_id: "wamid.1".into(), at: t(2) };
        let read = E::MessageStatusUpdated { message_id: msg(2), status: MessageStatus::Read, at: t(2) };
        conversation()
            .given(vec![started(), sent.clone()])
            .when(record(DeliveryOutcome::Accepted { provider_message_id: "wamid.1".into() }))
            .then_expect_events(vec![accepted.clone()]);
        conversation()
            .given(vec![started(), sent.clone(), accepted.clone()])
            .when(record(DeliveryOutcome::Accepted { provider_message_id: "wamid.2".into() }))
            .then_expect_events(vec![]);
        conversation()
            .given(vec![started(), sent.clone(), accepted.clone()])
            .when(record(DeliveryOutcome::Status(MessageStatus::Read)))
            .then_expect_events(vec![read.clone()]);
        // A late DELIVERED does not undo READ; a status before acceptance waits.
        conversation()
            .given(vec![started(), sent.clone(), accepted.clone(), read.clone()])
            .when(record(DeliveryOutcome::Status(MessageStatus::Delivered)))
            .then_expect_events(vec![]);
        conversation()
            .given(vec![started(), sent.clone()])
            .when(record(DeliveryOutcome::Status(MessageStatus::Delivered)))
            .then_expect_events(vec![]);
        let failed = E::MessageDeliveryFailed {
            message_id: msg(2),
            code: Some("131047".into()),
            reason: "Re-engagement message".into(),
            at: t(2),
        };
        let fail =
            || record(DeliveryOutcome::Failed { code: Some("131047".into()), reason: "Re-engagement message".into() });
        conversation()
            .given(vec![started(), sent.clone(), accepted.clone()])
            .when(fail())
            .then_expect_events(vec![failed.clone()]);
        conversation()
            .given(vec![started(), sent.clone(), failed])
            .when(record(DeliveryOutcome::Accepted { provider_message_id: "wamid.1".into() }))
            .then_expect_events(vec![]);
        conversation().given(vec![started(), sent, accepted, read]).when(fail()).then_expect_events(vec![]);
        conversation()
            .given(vec![started()])
            .when(record(DeliveryOutcome::Attempted { attempt: 1 }))
            .then_expect_error(DomainError::NotFound("message"));
    }
}
