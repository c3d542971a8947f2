//! Inbox: one channel instance of an account, and the agents who work it.

use std::collections::HashSet;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::channel::{ChannelAddress, ChannelSecret};
use crate::ids::{AccountId, UserId};
use crate::values::{Channel, Instant, Name};
use crate::{domain_event, DomainError, PersonalData};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Inbox {
    account_id: Option<AccountId>,
    name: String,
    channel: Option<Channel>,
    address: Option<ChannelAddress>,
    members: HashSet<UserId>,
}

impl Inbox {
    /// The account the inbox belongs to; `None` if it was never created.
    pub fn account_id(&self) -> Option<AccountId> {
        self.account_id
    }
    pub fn has_member(&self, user: UserId) -> bool {
        self.members.contains(&user)
    }
    pub fn channel(&self) -> Option<Channel> {
        self.channel
    }
    /// Where the provider addresses the inbox (provider channels only).
    pub fn address(&self) -> Option<&ChannelAddress> {
        self.address.as_ref()
    }
}

/// A provider channel's settings as an administrator gives them: the address, and
/// which secrets were given (their values go to the sealed settings, not here).
#[derive(Debug, Clone)]
pub struct ChannelSettings {
    pub address: Option<ChannelAddress>,
    pub secrets: Vec<ChannelSecret>,
}

#[derive(Debug)]
pub enum InboxCommand {
    Create {
        account_id: AccountId,
        name: Name,
        channel: Channel,
        /// A provider channel's settings, all of them: it cannot work without.
        settings: Option<ChannelSettings>,
        at: Instant,
    },
    /// Changes a provider channel's settings: a new address, secrets given anew.
    Configure {
        settings: ChannelSettings,
        at: Instant,
    },
    AddMember {
        user_id: UserId,
        at: Instant,
    },
    RemoveMember {
        user_id: UserId,
        at: Instant,
    },
    /// The inbox's settings, as agents see them (its name, for now).
    Rename {
        name: Name,
        at: Instant,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InboxEvent {
    InboxCreated {
        account_id: AccountId,
        name: String,
        channel: Channel,
        at: Instant,
    },
    InboxMemberAdded {
        account_id: AccountId,
        user_id: UserId,
        at: Instant,
    },
    InboxMemberRemoved {
        account_id: AccountId,
        user_id: UserId,
        at: Instant,
    },
    InboxRenamed {
        account_id: AccountId,
        name: String,
        at: Instant,
    },
    /// A provider channel's address as it now is, and which secrets were set anew
    /// (their values are sealed outside the log).
    InboxChannelConfigured {
        account_id: AccountId,
        address: ChannelAddress,
        secrets_changed: Vec<ChannelSecret>,
        at: Instant,
    },
}

domain_event!(
    InboxEvent,
    version = "1",
    [InboxCreated, InboxMemberAdded, InboxMemberRemoved, InboxRenamed, InboxChannelConfigured]
);
impl PersonalData for InboxEvent {}

impl Aggregate for Inbox {
    const TYPE: &'static str = "inbox";
    type Command = InboxCommand;
    type Event = InboxEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(&mut self, command: InboxCommand, _: &(), sink: &EventSink<Self>) -> Result<(), DomainError> {
        if let InboxCommand::Create { account_id, name, channel, settings, at } = command {
            if self.account_id.is_some() {
                return Err(DomainError::AlreadyExists("inbox"));
            }
            let configured = match settings {
                Some(settings) => configured(channel, None, settings)?,
                None if !ChannelSecret::required(channel).is_empty() => {
                    return Err(DomainError::invalid(format!(
                        "a {} inbox needs its settings (the `{}` input)",
                        channel.as_str(),
                        channel.as_str()
                    )))
                }
                None => None,
            };
            sink.write(InboxEvent::InboxCreated { account_id, name: name.into_inner(), channel, at }, self).await;
            if let Some((address, secrets_changed)) = configured {
                sink.write(InboxEvent::InboxChannelConfigured { account_id, address, secrets_changed, at }, self).await;
            }
            return Ok(());
        }
        let account_id = self.account_id.ok_or(DomainError::NotFound("inbox"))?;
        match command {
            InboxCommand::Configure { settings, at } => {
                let channel = self.channel.unwrap_or(Channel::Api);
                if let Some((address, secrets_changed)) = configured(channel, self.address.as_ref(), settings)? {
                    sink.write(InboxEvent::InboxChannelConfigured { account_id, address, secrets_changed, at }, self)
                        .await;
                }
            }
            InboxCommand::AddMember { user_id, at } if !self.members.contains(&user_id) => {
                sink.write(InboxEvent::InboxMemberAdded { account_id, user_id, at }, self).await;
            }
            InboxCommand::RemoveMember { user_id, at } if self.members.contains(&user_id) => {
                sink.write(InboxEvent::InboxMemberRemoved { account_id, user_id, at }, self).await;
            }
            InboxCommand::Rename { name, at } if name.as_str() != self.name => {
                sink.write(InboxEvent::InboxRenamed { account_id, name: name.into_inner(), at }, self).await;
            }
            // Adding a member twice, removing a non-member or renaming to the same
            // name changes nothing.
            _ => {}
        }
        Ok(())
    }

    fn apply(&mut self, event: InboxEvent) {
        match event {
            InboxEvent::InboxCreated { account_id, name, channel, .. } => {
                self.account_id = Some(account_id);
                self.name = name;
                self.channel = Some(channel);
            }
            InboxEvent::InboxChannelConfigured { address, .. } => self.address = Some(address),
            InboxEvent::InboxRenamed { name, .. } => self.name = name,
            InboxEvent::InboxMemberAdded { user_id, .. } => {
                self.members.insert(user_id);
            }
            InboxEvent::InboxMemberRemoved { user_id, .. } => {
                self.members.remove(&user_id);
            }
        }
    }
}

/// What configuring a channel records: its address and the secrets given, or `None`
/// when nothing changes. The first configuration must be whole; later ones may give
/// only what changes.
fn configured(
    channel: Channel,
    current: Option<&ChannelAddress>,
    settings: ChannelSettings,
) -> Result<Option<(ChannelAddress, Vec<ChannelSecret>)>, DomainError> {
    let required = ChannelSecret::required(channel);
    if required.is_empty() {
        return Err(DomainError::invalid(format!("{} inboxes have no channel settings", channel.as_str())));
    }
    let address = match (settings.address, current) {
        (Some(address), _) => address.parse()?,
        (None, Some(current)) => current.clone(),
        (None, None) => return Err(DomainError::invalid(format!("a {} inbox needs its address", channel.as_str()))),
    };
    if address.channel() != channel {
        return Err(DomainError::invalid(format!(
            "a {} inbox takes the `{}` settings",
            channel.as_str(),
            channel.as_str()
        )));
    }
    let mut secrets = settings.secrets;
    secrets.sort_unstable();
    secrets.dedup();
    if let Some(foreign) = secrets.iter().find(|s| !required.contains(s)) {
        return Err(DomainError::invalid(format!("a {} inbox has no {}", channel.as_str(), foreign.as_str())));
    }
    if current.is_none() {
        if let Some(missing) = required.iter().find(|s| !secrets.contains(s)) {
            return Err(DomainError::invalid(format!("a {} inbox needs its {}", channel.as_str(), missing.as_str())));
        }
    }
    if current == Some(&address) && secrets.is_empty() {
        return Ok(None);
    }
    Ok(Some((address, secrets)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;
    use uuid::Uuid;

    fn at() -> Instant {
        chrono::Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap()
    }
    const ACCOUNT: AccountId = AccountId(Uuid::from_u128(1));
    const AGENT: UserId = UserId(Uuid::from_u128(2));

    fn created() -> InboxEvent {
        InboxEvent::InboxCreated { account_id: ACCOUNT, name: "Support".into(), channel: Channel::Api, at: at() }
    }

    #[test]
    fn adding_a_member_is_recorded_once() {
        let added = InboxEvent::InboxMemberAdded { account_id: ACCOUNT, user_id: AGENT, at: at() };
        TestFramework::<Inbox>::with(())
            .given(vec![created()])
            .when(InboxCommand::AddMember { user_id: AGENT, at: at() })
            .then_expect_events(vec![added.clone()]);
        TestFramework::<Inbox>::with(())
            .given(vec![created(), added])
            .when(InboxCommand::AddMember { user_id: AGENT, at: at() })
            .then_expect_events(vec![]);
    }

    #[test]
    fn removing_a_non_member_changes_nothing_and_a_missing_inbox_is_not_found() {
        TestFramework::<Inbox>::with(())
            .given(vec![created()])
            .when(InboxCommand::RemoveMember { user_id: AGENT, at: at() })
            .then_expect_events(vec![]);
        TestFramework::<Inbox>::with(())
            .given_no_previous_events()
            .when(InboxCommand::AddMember { user_id: AGENT, at: at() })
            .then_expect_error(DomainError::NotFound("inbox"));
    }

    #[test]
    fn renaming_records_the_new_name_once() {
        let created =
            InboxEvent::InboxCreated { account_id: ACCOUNT, name: "Web".into(), channel: Channel::Api, at: at() };
        let rename = |name: &str| InboxCommand::Rename { name: Name::parse("inbox name", name).unwrap(), at: at() };
        TestFramework::<Inbox>::with(()).given(vec![created.clone()]).when(rename("Website")).then_expect_events(vec![
            InboxEvent::InboxRenamed { account_id: ACCOUNT, name: "Website".into(), at: at() },
        ]);
        TestFramework::<Inbox>::with(()).given(vec![created]).when(rename("Web")).then_expect_events(vec![]);
    }

    fn whatsapp(phone: &str) -> ChannelAddress {
        ChannelAddress::Whatsapp { phone_number_id: phone.into(), business_account_id: "42".into() }
    }

    #[test]
    fn a_provider_inbox_is_created_with_all_its_settings_and_records_only_which_secrets_changed() {
        use ChannelSecret::*;
        let create = |settings| InboxCommand::Create {
            account_id: ACCOUNT,
            name: Name::parse("inbox name", "WhatsApp").unwrap(),
            channel: Channel::Whatsapp,
            settings,
            at: at(),
        };
        let all = vec![VerifyToken, AccessToken, AppSecret];
        TestFramework::<Inbox>::with(())
            .given_no_previous_events()
            .when(create(Some(ChannelSettings { address: Some(whatsapp("1")), secrets: all.clone() })))
            .then_expect_events(vec![
                InboxEvent::InboxCreated {
                    account_id: ACCOUNT,
                    name: "WhatsApp".into(),
                    channel: Channel::Whatsapp,
                    at: at(),
                },
                InboxEvent::InboxChannelConfigured {
                    account_id: ACCOUNT,
                    address: whatsapp("1"),
                    secrets_changed: vec![AccessToken, AppSecret, VerifyToken],
                    at: at(),
                },
            ]);
        let partial = ChannelSettings { address: Some(whatsapp("1")), secrets: vec![AccessToken] };
        let refused = TestFramework::<Inbox>::with(()).given_no_previous_events().when(create(Some(partial)));
        refused.then_expect_error_message("a whatsapp inbox needs its app_secret");
        TestFramework::<Inbox>::with(())
            .given_no_previous_events()
            .when(create(None))
            .then_expect_error_message("a whatsapp inbox needs its settings (the `whatsapp` input)");
        let messenger = ChannelAddress::Messenger { page_id: "7".into(), human_agent_tag: true };
        TestFramework::<Inbox>::with(())
            .given_no_previous_events()
            .when(create(Some(ChannelSettings { address: Some(messenger), secrets: all })))
            .then_expect_error_message("a whatsapp inbox takes the `whatsapp` settings");
    }

    #[test]
    fn reconfiguring_changes_what_is_given_and_nothing_when_nothing_is() {
        let created = InboxEvent::InboxCreated {
            account_id: ACCOUNT,
            name: "WhatsApp".into(),
            channel: Channel::Whatsapp,
            at: at(),
        };
        let configured = InboxEvent::InboxChannelConfigured {
            account_id: ACCOUNT,
            address: whatsapp("1"),
            secrets_changed: vec![ChannelSecret::AccessToken, ChannelSecret::AppSecret, ChannelSecret::VerifyToken],
            at: at(),
        };
        let configure =
            |address, secrets| InboxCommand::Configure { settings: ChannelSettings { address, secrets }, at: at() };
        TestFramework::<Inbox>::with(())
            .given(vec![created.clone(), configured.clone()])
            .when(configure(None, vec![ChannelSecret::AccessToken]))
            .then_expect_events(vec![InboxEvent::InboxChannelConfigured {
                account_id: ACCOUNT,
                address: whatsapp("1"),
                secrets_changed: vec![ChannelSecret::AccessToken],
                at: at(),
            }]);
        TestFramework::<Inbox>::with(())
            .given(vec![created.clone(), configured.clone()])
            .when(configure(Some(whatsapp("1")), vec![]))
            .then_expect_events(vec![]);
        TestFramework::<Inbox>::with(())
            .given(vec![created, configured])
            .when(configure(None, vec![ChannelSecret::PageAccessToken]))
            .then_expect_error_message("a whatsapp inbox has no page_access_token");
        TestFramework::<Inbox>::with(())
            .given(vec![InboxEvent::InboxCreated {
                account_id: ACCOUNT,
                name: "API".into(),
                channel: Channel::Api,
                at: at(),
            }])
            .when(configure(Some(whatsapp("1")), vec![]))
            .then_expect_error_message("api inboxes have no channel settings");
    }
}
