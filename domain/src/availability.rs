//! Availability: whether an agent takes conversations now. The agent chooses a status
//! (online, busy, offline); what counts is the effective one, offline whenever they
//! are not present (no socket and no heartbeat for a while). Presence itself is no
//! event (it is touched every few seconds); a change of the effective status is, so
//! policies (auto-assignment) react to it and reports can replay it.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, UserId};
use crate::values::{AvailabilityStatus, Instant};
use crate::{domain_event, DomainError, PersonalData};

/// One agent's availability (the stream's id is the user's).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Availability {
    account_id: Option<AccountId>,
    /// What the agent chose; an agent who never chose is online when present.
    chosen: Option<AvailabilityStatus>,
    present: bool,
}

impl Availability {
    pub fn account_id(&self) -> Option<AccountId> {
        self.account_id
    }
    pub fn chosen(&self) -> AvailabilityStatus {
        self.chosen.unwrap_or(AvailabilityStatus::Online)
    }
    /// What others see: the choice while present, offline otherwise.
    pub fn effective(&self) -> AvailabilityStatus {
        if self.present {
            self.chosen()
        } else {
            AvailabilityStatus::Offline
        }
    }
}

#[derive(Debug)]
pub enum AvailabilityCommand {
    /// The agent chooses a status; `present` is what the presence store says now.
    Choose { account_id: AccountId, user_id: UserId, status: AvailabilityStatus, present: bool, at: Instant },
    /// The presence store saw the agent arrive or lapse.
    Observe { account_id: AccountId, user_id: UserId, present: bool, at: Instant },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AvailabilityEvent {
    /// The chosen or the effective status changed (or both).
    AvailabilityChanged {
        account_id: AccountId,
        user_id: UserId,
        chosen: AvailabilityStatus,
        present: bool,
        effective: AvailabilityStatus,
        at: Instant,
    },
}

domain_event!(AvailabilityEvent, version = "1", [AvailabilityChanged]);
impl PersonalData for AvailabilityEvent {}

impl Aggregate for Availability {
    const TYPE: &'static str = "availability";
    type Command = AvailabilityCommand;
    type Event = AvailabilityEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: AvailabilityCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        let (account_id, user_id, chosen, present, at) = match command {
            AvailabilityCommand::Choose { account_id, user_id, status, present, at } => {
                (account_id, user_id, Some(status), present, at)
            }
            AvailabilityCommand::Observe { account_id, user_id, present, at } => {
                (account_id, user_id, self.chosen, present, at)
            }
        };
        if self.account_id.is_some_and(|owner| owner != account_id) {
            return Err(DomainError::NotFound("agent"));
        }
        let next = Availability { account_id: Some(account_id), chosen, present };
        // An observation that changes nothing others see is no news; a new choice is.
        let news = next.effective() != self.effective() || (chosen.is_some() && next.chosen() != self.chosen());
        if news || self.account_id.is_none() && chosen.is_some() {
            let event = AvailabilityEvent::AvailabilityChanged {
                account_id,
                user_id,
                chosen: next.chosen(),
                present,
                effective: next.effective(),
                at,
            };
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: AvailabilityEvent) {
        let AvailabilityEvent::AvailabilityChanged { account_id, chosen, present, .. } = event;
        self.account_id = Some(account_id);
        self.chosen = Some(chosen);
        self.present = present;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use AvailabilityCommand as C;
    use AvailabilityStatus as S;

    const ACCOUNT: AccountId = AccountId(uuid::Uuid::from_u128(1));
    const ANA: UserId = UserId(uuid::Uuid::from_u128(5));

    fn changed(chosen: S, present: bool, effective: S) -> AvailabilityEvent {
        let at = chrono::DateTime::UNIX_EPOCH;
        AvailabilityEvent::AvailabilityChanged { account_id: ACCOUNT, user_id: ANA, chosen, present, effective, at }
    }
    fn observe(present: bool) -> C {
        C::Observe { account_id: ACCOUNT, user_id: ANA, present, at: chrono::DateTime::UNIX_EPOCH }
    }
    fn choose(status: S, present: bool) -> C {
        C::Choose { account_id: ACCOUNT, user_id: ANA, status, present, at: chrono::DateTime::UNIX_EPOCH }
    }
    fn availability() -> TestFramework<Availability> {
        TestFramework::with(())
    }

    #[test]
    fn arriving_and_lapsing_change_the_effective_status_and_repeats_are_no_news() {
        availability().given_no_previous_events().when(observe(true)).then_expect_events(vec![changed(
            S::Online,
            true,
            S::Online,
        )]);
        let online = changed(S::Online, true, S::Online);
        availability().given(vec![online.clone()]).when(observe(true)).then_expect_events(vec![]);
        availability().given(vec![online.clone()]).when(observe(false)).then_expect_events(vec![changed(
            S::Online,
            false,
            S::Offline,
        )]);
        availability().given_no_previous_events().when(observe(false)).then_expect_events(vec![]);
    }

    #[test]
    fn a_choice_is_recorded_and_counts_only_while_present() {
        availability().given_no_previous_events().when(choose(S::Busy, false)).then_expect_events(vec![changed(
            S::Busy,
            false,
            S::Offline,
        )]);
        let busy_away = changed(S::Busy, false, S::Offline);
        availability().given(vec![busy_away.clone()]).when(observe(true)).then_expect_events(vec![changed(
            S::Busy,
            true,
            S::Busy,
        )]);
        availability().given(vec![busy_away]).when(choose(S::Busy, false)).then_expect_events(vec![]);
        let offline_here = changed(S::Offline, true, S::Offline);
        availability().given(vec![offline_here.clone()]).when(observe(false)).then_expect_events(vec![]);
        availability().given(vec![offline_here]).when(choose(S::Online, true)).then_expect_events(vec![changed(
            S::Online,
            true,
            S::Online,
        )]);
    }

    #[test]
    fn another_accounts_agent_is_not_found() {
        let other = C::Observe {
            account_id: AccountId(uuid::Uuid::from_u128(2)),
            user_id: ANA,
            present: true,
            at: chrono::DateTime::UNIX_EPOCH,
        };
        availability()
            .given(vec![changed(S::Online, true, S::Online)])
            .when(other)
            .then_expect_error(DomainError::NotFound("agent"));
    }
}
