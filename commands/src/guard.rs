//! What a commit asserts is still current: the streams a decision read, the streams it
//! decided not to change, and the caller's access. Checked by `assert_current` in the
//! database (migrations `…0005`, `…0010`), in the same statement as the append, so no
//! process acknowledges a decision made on state another process has moved on.
//!
//! Two commits in flight at once are ordered by transaction-scoped advisory locks:
//! exclusive on what a unit writes (the streams it appends, the access it changes),
//! shared on what it read, all taken in one sorted pass before the assertions look, so
//! a decision on a stream another transaction is writing waits for that commit and then
//! sees it.

use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::context::{CommandContext, Head};
use crate::error::StoreError;

/// The assertions of one unit of work (or of a batch of them), column by column.
#[derive(Debug, Default, Clone)]
pub(crate) struct Guard {
    /// Lock keys (see [`lock_key`]) taken exclusively, and shared.
    exclusive: Vec<i64>,
    shared: Vec<i64>,
    own_types: Vec<String>,
    own_ids: Vec<String>,
    own_versions: Vec<i64>,
    read_types: Vec<String>,
    read_ids: Vec<String>,
    read_versions: Vec<i64>,
    users: Vec<Uuid>,
    user_versions: Vec<i64>,
}

impl Guard {
    /// What `context` read and was authorized with; `appended` streams (written by this
    /// unit at the version it read them) are covered by the log's primary key instead.
    pub fn of(context: &CommandContext, appended: &[Head]) -> Self {
        let mut guard = Guard::default();
        for head in appended {
            guard.exclusive.push(lock_key(head.aggregate_type, &head.id));
        }
        for head in context.reads.heads() {
            if !appended.contains(&head) {
                guard.shared.push(lock_key(head.aggregate_type, &head.id));
                guard.read_types.push(head.aggregate_type.to_string());
                guard.read_ids.push(head.id);
                guard.read_versions.push(head.version);
            }
        }
        if let Some(access) = context.access {
            guard.shared.push(access_lock_key(access.user));
            guard.users.push(access.user);
            guard.user_versions.push(access.version);
        }
        guard
    }

    /// The unit changes `user`'s access: decisions on it wait for this commit.
    pub fn changes_access_of(&mut self, user: Uuid) {
        self.exclusive.push(access_lock_key(user));
    }

    /// Asserts too that `head`, which the command decided to leave as it is, is current.
    pub fn unchanged(&mut self, head: &Head) {
        self.shared.push(lock_key(head.aggregate_type, &head.id));
        self.own_types.push(head.aggregate_type.to_string());
        self.own_ids.push(head.id.clone());
        self.own_versions.push(head.version);
    }

    pub fn is_empty(&self) -> bool {
        self.exclusive.is_empty() && self.shared.is_empty()
    }

    /// Adds another unit's assertions (a batch's units often share their caller: each
    /// user and version is asserted once).
    pub fn extend(&mut self, other: &Guard) {
        self.exclusive.extend_from_slice(&other.exclusive);
        self.shared.extend_from_slice(&other.shared);
        self.own_types.extend_from_slice(&other.own_types);
        self.own_ids.extend_from_slice(&other.own_ids);
        self.own_versions.extend_from_slice(&other.own_versions);
        self.read_types.extend_from_slice(&other.read_types);
        self.read_ids.extend_from_slice(&other.read_ids);
        self.read_versions.extend_from_slice(&other.read_versions);
        for (user, version) in other.users.iter().zip(&other.user_versions) {
            let known = self.users.iter().zip(&self.user_versions).any(|(u, v)| u == user && v == version);
            if !known {
                self.users.push(*user);
                self.user_versions.push(*version);
            }
        }
    }

    /// Binds the ten arrays `assert_current` takes, in its order.
    pub fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(&self.exclusive)
            .bind(&self.shared)
            .bind(&self.own_types)
            .bind(&self.own_ids)
            .bind(&self.own_versions)
            .bind(&self.read_types)
            .bind(&self.read_ids)
            .bind(&self.read_versions)
            .bind(&self.users)
            .bind(&self.user_versions)
    }

    /// Checks the assertions on their own (for a unit with nothing to append, or
    /// before a transaction's other writes).
    pub async fn check(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        if self.is_empty() {
            return Ok(());
        }
        self.bind(sqlx::query("SELECT assert_current($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"))
            .execute(conn)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::refusal(&e).unwrap_or_else(|| StoreError::Internal(anyhow::Error::new(e))))
    }
}

/// The advisory lock key of a stream: the same in every process.
pub fn lock_key(aggregate_type: &str, id: &str) -> i64 {
    let hash = Sha256::new().chain_update(aggregate_type).chain_update([0]).chain_update(id).finalize();
    i64::from_be_bytes(hash[..8].try_into().expect("eight bytes"))
}

fn access_lock_key(user: Uuid) -> i64 {
    lock_key("access", &user.to_string())
}
