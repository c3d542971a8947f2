//! Notifications: what an agent is told, and what they do about it (ADR 0009).
//!
//! The notifications themselves are derived from conversation events by the
//! notifications projector; they are facts about the conversation, not decisions. What
//! a user decides about theirs is recorded here, on one `notification_inbox` stream per
//! user and account: reading, unreading and snoozing one, reading all, the settings per
//! type and channel, and the browsers they registered for push. Events, not side-table
//! writes, so the read model stays a replay of the log and an auditor sees who read
//! what, and when — as conversations' read markers are events too.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::UserId;
use crate::values::Instant;
use crate::{domain_event, DomainError, PersonalData};

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationType {
    /// A conversation started in one of the recipient's inboxes.
    ConversationCreated,
    /// The recipient became a conversation's assignee (by someone else).
    ConversationAssigned,
    /// A contact wrote in a conversation the recipient is assigned to or takes part in.
    NewMessage,
    /// A private note mentioned the recipient (see [`mentions`]).
    Mentioned,
    /// Reserved for SLA policies: nothing produces it yet.
    SlaMissed,
}

impl NotificationType {
    pub const ALL: [NotificationType; 5] =
        [Self::ConversationCreated, Self::ConversationAssigned, Self::NewMessage, Self::Mentioned, Self::SlaMissed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConversationCreated => "conversation_created",
            Self::ConversationAssigned => "conversation_assigned",
            Self::NewMessage => "new_message",
            Self::Mentioned => "mentioned",
            Self::SlaMissed => "sla_missed",
        }
    }

    /// The settings of a user who never changed them: every channel on, except for new
    /// conversations, which in a busy inbox would drown the rest.
    pub fn default_channels(self) -> Channels {
        let on = self != Self::ConversationCreated;
        Channels { in_app: on, email: on, push: on }
    }
}

impl fmt::Display for NotificationType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NotificationType {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| DomainError::invalid(format!("'{s}' is not a notification type")))
    }
}

/// Where a notification of one type reaches its recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channels {
    pub in_app: bool,
    pub email: bool,
    pub push: bool,
}

/// The agents a note mentions, in order, each once. The syntax carries the id, so a
/// rename or two agents of the same name cannot redirect a mention:
/// `@[Display Name](user:<uuid>)`. The name is what the note shows, free text without
/// `]`; anything else (a bare `@name`, a malformed id) is plain text.
pub fn mentions(text: &str) -> Vec<UserId> {
    const LINK: &str = "](user:";
    // Longest id text a uuid parses from (`urn:uuid:` and 36 characters), with its `)`.
    const LONGEST_ID: usize = 46;
    let mut found = Vec::new();
    let mut rest = text;
    // Each character is looked at a bounded number of times: a note of any size costs
    // time in proportion to it (the projector reads every note).
    while let Some(start) = rest.find("@[") {
        rest = &rest[start + 2..];
        // A name holds no bracket: it ends at the first one.
        let Some(bracket) = rest.find(['[', ']']) else { break };
        let tail = &rest[bracket..];
        if !tail.starts_with(LINK) {
            // A '[' may open the next mention (`@[@[Ana](user:…)`): look again from its '@'.
            rest = if tail.starts_with('[') && rest[..bracket].ends_with('@') { &rest[bracket - 1..] } else { tail };
            continue;
        }
        let after = &tail[LINK.len()..];
        let window = &after[..after.floor_char_boundary(LONGEST_ID)];
        let Some(end) = window.find(')') else {
            rest = after;
            continue;
        };
        if let Ok(id) = after[..end].parse::<Uuid>() {
            if !found.contains(&UserId(id)) {
                found.push(UserId(id));
            }
        }
        rest = &after[end + 1..];
    }
    found
}

/// One user's notifications in one account: their decisions about them.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct NotificationInbox {
    /// Settings changed from the defaults.
    settings: HashMap<NotificationType, Channels>,
}

impl NotificationInbox {
    pub fn channels(&self, kind: NotificationType) -> Channels {
        self.settings.get(&kind).copied().unwrap_or_else(|| kind.default_channels())
    }
}

#[derive(Debug)]
pub enum NotificationInboxCommand {
    /// The command service checked that the notification is the user's.
    MarkRead {
        user_id: UserId,
        notification_id: Uuid,
        at: Instant,
    },
    MarkUnread {
        user_id: UserId,
        notification_id: Uuid,
        at: Instant,
    },
    /// Every notification the user has when this is recorded.
    MarkAllRead {
        user_id: UserId,
        at: Instant,
    },
    /// Out of the unread count and list until `until`.
    Snooze {
        user_id: UserId,
        notification_id: Uuid,
        until: Instant,
        at: Instant,
    },
    SetChannels {
        user_id: UserId,
        kind: NotificationType,
        channels: Channels,
        at: Instant,
    },
    /// A browser to push to; the log records only the push service's host (the
    /// endpoint and keys are sealed in `push_subscriptions`).
    RegisterPushSubscription {
        user_id: UserId,
        subscription_id: Uuid,
        host: String,
        at: Instant,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NotificationInboxEvent {
    NotificationRead { user_id: UserId, notification_id: Uuid, at: Instant },
    NotificationUnread { user_id: UserId, notification_id: Uuid, at: Instant },
    AllNotificationsRead { user_id: UserId, at: Instant },
    NotificationSnoozed { user_id: UserId, notification_id: Uuid, until: Instant, at: Instant },
    NotificationChannelsChanged { user_id: UserId, kind: NotificationType, channels: Channels, at: Instant },
    PushSubscriptionRegistered { user_id: UserId, subscription_id: Uuid, host: String, at: Instant },
}

domain_event!(
    NotificationInboxEvent,
    version = "1",
    [
        NotificationRead,
        NotificationUnread,
        AllNotificationsRead,
        NotificationSnoozed,
        NotificationChannelsChanged,
        PushSubscriptionRegistered,
    ]
);
impl PersonalData for NotificationInboxEvent {}

impl Aggregate for NotificationInbox {
    const TYPE: &'static str = "notification_inbox";
    type Command = NotificationInboxCommand;
    type Event = NotificationInboxEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: NotificationInboxCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        use NotificationInboxCommand as C;
        use NotificationInboxEvent as E;
        let event = match command {
            C::MarkRead { user_id, notification_id, at } => E::NotificationRead { user_id, notification_id, at },
            C::MarkUnread { user_id, notification_id, at } => E::NotificationUnread { user_id, notification_id, at },
            C::MarkAllRead { user_id, at } => E::AllNotificationsRead { user_id, at },
            C::Snooze { user_id, notification_id, until, at } => {
                if until <= at {
                    return Err(DomainError::invalid("until must be in the future"));
                }
                E::NotificationSnoozed { user_id, notification_id, until, at }
            }
            C::SetChannels { user_id, kind, channels, at } => {
                if self.channels(kind) == channels {
                    return Ok(());
                }
                E::NotificationChannelsChanged { user_id, kind, channels, at }
            }
            C::RegisterPushSubscription { user_id, subscription_id, host, at } => {
                E::PushSubscriptionRegistered { user_id, subscription_id, host, at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: NotificationInboxEvent) {
        if let NotificationInboxEvent::NotificationChannelsChanged { kind, channels, .. } = event {
            self.settings.insert(kind, channels);
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn user() -> UserId {
        UserId(Uuid::from_u128(7))
    }

    #[test]
    fn a_mention_carries_the_agent_s_id_and_anything_else_is_plain_text() {
        let (ana, bo) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let note = format!(
            "@[Ana Lima](user:{ana}) and @[Bo](user:{bo}), see @[Ana](user:{ana}); not @Bo, @[x](user:nope), \
             @[unclosed"
        );
        assert_eq!(mentions(&note), vec![UserId(ana), UserId(bo)]);
        assert_eq!(mentions(&format!("@[a [b]](user:{ana})")), vec![], "a name holds no '['");
        assert_eq!(mentions(&format!("@[@[Ana](user:{ana})")), vec![UserId(ana)], "a stray @[ before one");
        assert!(mentions("").is_empty());
        assert_eq!(mentions(&format!("@[Ana](user:{ana}")), vec![], "no closing parenthesis");
        // Hostile notes cost time in proportion to their size.
        let many_openings = format!("{}](user:{ana})", "@[".repeat(70_000));
        assert_eq!(mentions(&many_openings), vec![UserId(ana)], "only the last opening is a mention");
        let many_links = "@[a](user:".repeat(15_000);
        assert!(mentions(&many_links).is_empty());
    }

    #[test]
    fn new_conversations_are_off_by_default_and_everything_else_on() {
        let inbox = NotificationInbox::default();
        assert_eq!(
            inbox.channels(NotificationType::ConversationCreated),
            Channels { in_app: false, email: false, push: false }
        );
        for kind in [NotificationType::ConversationAssigned, NotificationType::NewMessage, NotificationType::Mentioned]
        {
            assert_eq!(inbox.channels(kind), Channels { in_app: true, email: true, push: true });
        }
        assert_eq!("new_message".parse::<NotificationType>().unwrap(), NotificationType::NewMessage);
        assert!("NEW".parse::<NotificationType>().is_err());
    }

    #[test]
    fn settings_change_only_when_they_differ_and_a_snooze_ends_in_the_future() {
        let at = chrono::Utc::now();
        let kind = NotificationType::NewMessage;
        let quiet = Channels { in_app: true, email: false, push: false };
        let changed =
            NotificationInboxEvent::NotificationChannelsChanged { user_id: user(), kind, channels: quiet, at };
        TestFramework::<NotificationInbox>::with(())
            .given_no_previous_events()
            .when(NotificationInboxCommand::SetChannels { user_id: user(), kind, channels: quiet, at })
            .then_expect_events(vec![changed.clone()]);
        TestFramework::<NotificationInbox>::with(())
            .given(vec![changed])
            .when(NotificationInboxCommand::SetChannels { user_id: user(), kind, channels: quiet, at })
            .then_expect_events(vec![]);
        TestFramework::<NotificationInbox>::with(())
            .given_no_previous_events()
            .when(NotificationInboxCommand::SetChannels {
                user_id: user(),
                kind,
                channels: kind.default_channels(),
                at,
            })
            .then_expect_events(vec![]);
        let id = Uuid::from_u128(9);
        TestFramework::<NotificationInbox>::with(())
            .given_no_previous_events()
            .when(NotificationInboxCommand::Snooze { user_id: user(), notification_id: id, until: at, at })
            .then_expect_error(DomainError::invalid("until must be in the future"));
    }
}
