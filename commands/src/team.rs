//! Teams and their members.

use domain::ids::{AccountId, UserId};
use domain::team::{Team, TeamCommand};
use domain::values::Name;
use domain::DomainError;
use uuid::Uuid;

use crate::context::CommandContext;
use crate::{CommandError, Commands, Written};

impl Commands {
    pub async fn create_team(&self, context: &CommandContext, name: &str) -> Result<(Uuid, Written), CommandError> {
        let name = Name::parse("team name", name)?;
        let id = Uuid::now_v7();
        let account_id = AccountId(context.account_id);
        let written = self
            .execute::<Team>(context, &id.to_string(), |_| {
                Ok(TeamCommand::Create { account_id, name: name.clone(), at: context.at })
            })
            .await?;
        Ok((id, written))
    }

    pub async fn add_team_member(
        &self,
        context: &CommandContext,
        team_id: Uuid,
        user_id: Uuid,
    ) -> Result<Written, CommandError> {
        let account = self.account(context).await?;
        if account.member(UserId(user_id)).is_none() {
            return Err(DomainError::NotFound("agent").into());
        }
        let written = self
            .execute::<Team>(context, &team_id.to_string(), |team| {
                team_in_account(context, team)?;
                Ok(TeamCommand::AddMember { user_id: UserId(user_id), at: context.at })
            })
            .await?;
        Ok(written)
    }

    pub async fn remove_team_member(
        &self,
        context: &CommandContext,
        team_id: Uuid,
        user_id: Uuid,
    ) -> Result<Written, CommandError> {
        self.execute::<Team>(context, &team_id.to_string(), |team| {
            team_in_account(context, team)?;
            Ok(TeamCommand::RemoveMember { user_id: UserId(user_id), at: context.at })
        })
        .await
    }

    pub async fn delete_team(&self, context: &CommandContext, team_id: Uuid) -> Result<Written, CommandError> {
        self.execute::<Team>(context, &team_id.to_string(), |team| {
            team_in_account(context, team)?;
            Ok(TeamCommand::Delete { at: context.at })
        })
        .await
    }

    /// The team, if it exists in the context's account.
    pub async fn team(&self, context: &CommandContext, team_id: Uuid) -> Result<Team, CommandError> {
        let team = self.store().load::<Team>(context, &team_id.to_string()).await?.state;
        team_in_account(context, &team)?;
        Ok(team)
    }
}

fn team_in_account(context: &CommandContext, team: &Team) -> Result<(), DomainError> {
    match team.account_id() {
        Some(owner) if owner.as_uuid() == context.account_id => Ok(()),
        _ => Err(DomainError::NotFound("team")),
    }
}
