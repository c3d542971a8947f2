//! What a commit asserts is still current: the streams a decision read, the streams it
//! decided not to change, and the caller's access. Checked by `assert_current` in the
//! database (migration `…0005`), in the same statement as the append, so no process
//! acknowledges a decision made on state another process has moved on.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::context::{CommandContext, Head, Staleness};
use crate::store::StoreError;

/// The assertions of one unit of work (or of a batch of them), column by column.
#[derive(Debug, Default, Clone)]
pub(crate) struct Guard {
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
        for head in context.reads.heads() {
            if !appended.contains(&head) {
                guard.read_types.push(head.aggregate_type.to_string());
                guard.read_ids.push(head.id);
                guard.read_versions.push(head.version);
            }
        }
        if let Some(access) = context.access {
            guard.users.push(access.user);
            guard.user_versions.push(access.version);
        }
        guard
    }

    /// Asserts too that `head`, which the command decided to leave as it is, is current.
    pub fn unchanged(&mut self, head: &Head) {
        self.own_types.push(head.aggregate_type.to_string());
        self.own_ids.push(head.id.clone());
        self.own_versions.push(head.version);
    }

    pub fn is_empty(&self) -> bool {
        self.own_ids.is_empty() && self.read_ids.is_empty() && self.users.is_empty()
    }

    /// Adds another unit's assertions (a batch's units often share their caller: each
    /// user and version is asserted once).
    pub fn extend(&mut self, other: &Guard) {
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

    /// Binds the eight arrays `assert_current` takes, in its order.
    pub fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query
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
        self.bind(sqlx::query("SELECT assert_current($1, $2, $3, $4, $5, $6, $7, $8)"))
            .execute(conn)
            .await
            .map(|_| ())
            .map_err(|e| violation(&e).unwrap_or_else(|| StoreError::Internal(anyhow::Error::new(e))))
    }
}

/// The store's reading of an `assert_current` refusal, if `error` is one.
pub(crate) fn violation(error: &sqlx::Error) -> Option<StoreError> {
    let sqlx::Error::Database(db) = error else { return None };
    match db.code().as_deref()? {
        "IX000" => Some(StoreError::Conflict),
        "IX001" => Some(StoreError::Stale(Staleness::Stream)),
        "IX002" => Some(StoreError::Stale(Staleness::Access)),
        _ => None,
    }
}
