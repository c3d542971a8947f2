//! Agents' availability: their choice, and what the presence store observes (arrivals
//! and lapses). One stream per agent, its id the user's; observations that change
//! nothing others see record nothing, so every process may report the same one.

use domain::actor::Actor;
use domain::availability::{Availability, AvailabilityCommand};
use domain::ids::{AccountId, UserId};
use domain::values::AvailabilityStatus;
use uuid::Uuid;

use crate::context::CommandContext;
use crate::{CommandError, Commands, Written};

/// The actor observations are recorded as (`system:presence`).
pub const PRESENCE: &str = "presence";

impl Commands {
    /// The caller chooses their availability; `present` is what the presence store
    /// says of them now.
    pub async fn choose_availability(
        &self,
        context: &CommandContext,
        user: Uuid,
        status: AvailabilityStatus,
        present: bool,
    ) -> Result<Written, CommandError> {
        let (account_id, user_id, at) = (AccountId(context.account_id), UserId(user), context.at);
        self.execute::<Availability>(context, &user.to_string(), |_| {
            Ok(AvailabilityCommand::Choose { account_id, user_id, status, present, at })
        })
        .await
    }

    /// The presence store saw an agent arrive (`present`) or lapse.
    pub async fn observe_presence(&self, account: Uuid, user: Uuid, present: bool) -> Result<Written, CommandError> {
        let context = CommandContext::now(account, Actor::Policy(PRESENCE.into()));
        let (account_id, user_id, at) = (AccountId(account), UserId(user), context.at);
        self.execute::<Availability>(&context, &user.to_string(), |_| {
            Ok(AvailabilityCommand::Observe { account_id, user_id, present, at })
        })
        .await
    }
}
