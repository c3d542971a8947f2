//! Activity lines: the timeline's record of a change ("Assigned to Ana by Bo").
//!
//! The log names people by id only, never by name: a line is derived from its event
//! and rendered with the names known when it is read. So a renamed agent reads with
//! their new name, and an erased one as "a former agent", without touching the
//! immutable log. Lines recorded before this carried their text, which they keep.

use serde::{Deserialize, Serialize};

use crate::ids::{MessageId, TeamId, UserId};
use crate::values::{Priority, Status};

/// Who made a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActedBy {
    Agent(UserId),
    Contact,
    System,
}

/// The activity part of a change event: the timeline line's id and who acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    pub message_id: MessageId,
    /// Absent in lines recorded with their text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<ActedBy>,
    /// The rendered line, in events recorded before lines named people by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

impl Activity {
    pub fn by(message_id: MessageId, by: ActedBy) -> Self {
        Self { message_id, by: Some(by), content: None }
    }
}

/// What a line says, as stored in the timeline until it is rendered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "line", rename_all = "snake_case")]
pub enum ActivityLine {
    Assignee { to: Option<UserId>, by: ActedBy },
    Team { to: Option<TeamId>, by: ActedBy },
    Status { to: Status, by: ActedBy },
    Priority { to: Priority, by: ActedBy },
    Labels { added: Vec<String>, removed: Vec<String>, by: ActedBy },
    Muted { muted: bool, by: ActedBy },
}

/// The names a line is rendered with, as known when it is read.
pub trait Names {
    fn agent(&self, user: UserId) -> Option<&str>;
    fn team(&self, team: TeamId) -> Option<&str>;
}

/// A line of the timeline an event adds: structured, or text recorded with the event.
pub enum Line {
    Structured(ActivityLine),
    Text(String),
}

impl ActivityLine {
    /// The agents and teams whose names the line needs.
    pub fn names_needed(&self) -> (Vec<UserId>, Option<TeamId>) {
        let by = match self.by() {
            ActedBy::Agent(user) => Some(user),
            _ => None,
        };
        match self {
            ActivityLine::Assignee { to, .. } => (by.into_iter().chain(*to).collect(), None),
            ActivityLine::Team { to, .. } => (by.into_iter().collect(), *to),
            _ => (by.into_iter().collect(), None),
        }
    }

    fn by(&self) -> ActedBy {
        match self {
            ActivityLine::Assignee { by, .. }
            | ActivityLine::Team { by, .. }
            | ActivityLine::Status { by, .. }
            | ActivityLine::Priority { by, .. }
            | ActivityLine::Labels { by, .. }
            | ActivityLine::Muted { by, .. } => *by,
        }
    }

    /// The line as the timeline shows it.
    pub fn render(&self, names: &impl Names) -> String {
        let agent = |user: UserId| names.agent(user).unwrap_or("a former agent").to_string();
        let by = match self.by() {
            ActedBy::Agent(user) => agent(user),
            ActedBy::Contact => "the contact".to_string(),
            ActedBy::System => "the system".to_string(),
        };
        match self {
            ActivityLine::Assignee { to: Some(to), by: acted } if *acted == ActedBy::Agent(*to) => {
                format!("{by} self-assigned this conversation")
            }
            ActivityLine::Assignee { to: Some(to), .. } => format!("Assigned to {} by {by}", agent(*to)),
            ActivityLine::Assignee { to: None, .. } => format!("Conversation unassigned by {by}"),
            ActivityLine::Team { to: Some(team), .. } => match names.team(*team) {
                Some(team) => format!("Assigned to {team} team by {by}"),
                None => format!("Assigned to a former team by {by}"),
            },
            ActivityLine::Team { to: None, .. } => format!("Unassigned from team by {by}"),
            ActivityLine::Status { to, .. } => match to {
                Status::Open => format!("Conversation was reopened by {by}"),
                Status::Pending => format!("Conversation was marked pending by {by}"),
                Status::Snoozed => format!("Conversation was snoozed by {by}"),
                Status::Resolved => format!("Conversation was marked resolved by {by}"),
            },
            ActivityLine::Priority { to, .. } => format!("{by} set the priority to {}", to.as_str()),
            ActivityLine::Labels { added, removed, .. } => {
                let mut parts = Vec::new();
                if !added.is_empty() {
                    parts.push(format!("added {}", added.join(", ")));
                }
                if !removed.is_empty() {
                    parts.push(format!("removed {}", removed.join(", ")));
                }
                format!("{by} {}", parts.join(" and "))
            }
            ActivityLine::Muted { muted, .. } => {
                format!("{by} {} the conversation", if *muted { "muted" } else { "unmuted" })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use uuid::Uuid;

    use crate::conversation::ConversationEvent;

    use super::*;

    const ANA: UserId = UserId(Uuid::from_u128(5));
    const BO: UserId = UserId(Uuid::from_u128(6));
    const BILLING: TeamId = TeamId(Uuid::from_u128(7));

    struct Known(HashMap<Uuid, &'static str>);

    impl Names for Known {
        fn agent(&self, user: UserId) -> Option<&str> {
            self.0.get(&user.as_uuid()).copied()
        }
        fn team(&self, team: TeamId) -> Option<&str> {
            self.0.get(&team.as_uuid()).copied()
        }
    }

    fn known() -> Known {
        Known(HashMap::from([(ANA.as_uuid(), "Ana"), (BO.as_uuid(), "Bo"), (BILLING.as_uuid(), "Billing")]))
    }

    #[test]
    fn lines_read_with_the_names_known_now_and_an_unknown_agent_as_a_former_one() {
        let by = ActedBy::Agent(BO);
        let assigned = ActivityLine::Assignee { to: Some(ANA), by };
        assert_eq!(assigned.render(&known()), "Assigned to Ana by Bo");
        assert_eq!(assigned.names_needed(), (vec![BO, ANA], None));
        assert_eq!(ActivityLine::Assignee { to: Some(BO), by }.render(&known()), "Bo self-assigned this conversation");
        assert_eq!(assigned.render(&Known(HashMap::new())), "Assigned to a former agent by a former agent");
        let team = ActivityLine::Team { to: Some(BILLING), by: ActedBy::System };
        assert_eq!(team.render(&known()), "Assigned to Billing team by the system");
        assert_eq!(team.names_needed(), (vec![], Some(BILLING)));
        let labels = ActivityLine::Labels { added: vec!["urgent".into()], removed: vec!["billing".into()], by };
        assert_eq!(labels.render(&known()), "Bo added urgent and removed billing");
        let status = ActivityLine::Status { to: Status::Snoozed, by };
        assert_eq!(status.render(&known()), "Conversation was snoozed by Bo");
    }

    #[test]
    fn a_line_recorded_with_its_text_keeps_it() {
        let activity =
            Activity { message_id: MessageId(Uuid::from_u128(1)), by: None, content: Some("Bo muted".into()) };
        let event = ConversationEvent::MuteChanged { muted: true, activity, at: chrono::Utc::now() };
        let Some((_, Line::Text(text))) = event.activity_line() else { panic!("a text line") };
        assert_eq!(text, "Bo muted");
        let stored = serde_json::json!({ "message_id": Uuid::from_u128(1), "content": "Bo muted" });
        assert_eq!(serde_json::from_value::<Activity>(stored).unwrap().content.as_deref(), Some("Bo muted"));
    }
}
