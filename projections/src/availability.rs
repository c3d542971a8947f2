//! Projector `availability`: each agent's effective availability and since when, for
//! `Agent.availability`, the live dashboard and presence pushes.

use std::borrow::Cow;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::availability::AvailabilityEvent;
use sqlx::{FromRow, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::engine::Projector;
use crate::feed::FeedEvent;

/// The projector's name (its checkpoint, and its publications).
pub const NAME: &str = "availability";

pub struct AvailabilityProjector;

#[async_trait]
impl Projector for AvailabilityProjector {
    fn name(&self) -> &'static str {
        NAME
    }
    fn tables(&self) -> &'static [&'static str] {
        &["rm_agent_availability"]
    }
    fn consumes(&self) -> &'static [&'static str] {
        &["availability"]
    }
    fn opens(&self, _: &str) -> bool {
        false
    }

    async fn apply(&self, tx: &mut Transaction<'_, Postgres>, events: &[Cow<'_, FeedEvent>]) -> anyhow::Result<()> {
        for event in events {
            let AvailabilityEvent::AvailabilityChanged { account_id, user_id, chosen, effective, at, .. } =
                event.decode::<AvailabilityEvent>()?;
            // `since` moves only when what others see changes.
            sqlx::query(
                "INSERT INTO rm_agent_availability (user_id, account_id, chosen, status, since) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (user_id) DO UPDATE SET chosen = EXCLUDED.chosen, status = EXCLUDED.status, \
                 since = CASE WHEN rm_agent_availability.status = EXCLUDED.status \
                 THEN rm_agent_availability.since ELSE EXCLUDED.since END",
            )
            .bind(user_id.as_uuid())
            .bind(account_id.as_uuid())
            .bind(chosen.as_str())
            .bind(effective.as_str())
            .bind(at)
            .execute(&mut **tx)
            .await
            .context("failed to write an agent's availability")?;
        }
        Ok(())
    }
}

/// An agent's availability as others see it.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct AvailabilityRow {
    pub user_id: Uuid,
    pub chosen: String,
    pub status: String,
    pub since: DateTime<Utc>,
}

/// The agents of an account whose availability was ever recorded (the others are
/// offline).
pub async fn of_account(pool: &PgPool, account: Uuid) -> sqlx::Result<Vec<AvailabilityRow>> {
    sqlx::query_as("SELECT user_id, chosen, status, since FROM rm_agent_availability WHERE account_id = $1")
        .bind(account)
        .fetch_all(pool)
        .await
}

/// One agent's, if ever recorded.
pub async fn of_agent(pool: &PgPool, account: Uuid, user: Uuid) -> sqlx::Result<Option<AvailabilityRow>> {
    sqlx::query_as(
        "SELECT user_id, chosen, status, since FROM rm_agent_availability WHERE account_id = $1 AND user_id = $2",
    )
    .bind(account)
    .bind(user)
    .fetch_optional(pool)
    .await
}
