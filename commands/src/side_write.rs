//! Rows outside the log, written in the same transaction as a unit's events: a
//! credential issued with the event that says so, a job enqueued with the event that
//! causes it. Never lost between a commit and a second write, never written alone.
//!
//! Each side table's writes are defined beside the concept that owns the table (the
//! access tables in `access::tables`, erasure's in `erasure`), as a [`SideWrite`]: a
//! new side table is a new file, not an arm in a shared `match`. New data subjects'
//! keys and new contacts' channel identities are the store's own: they ride in the
//! events' statement (see `append`).

use std::sync::Arc;

use async_trait::async_trait;
use projections::keyring::{Aes256Gcm, Keyring};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::StoreError;

/// Rows a unit writes outside the log, in its transaction.
#[async_trait]
pub trait SideWrite: Send + Sync + 'static {
    /// Writes the rows. A write that finds it can no longer stand (an invitation used
    /// meanwhile) answers [`StoreError::Conflict`]: the command decides again.
    async fn write(&self, conn: &mut PgConnection) -> Result<(), StoreError>;

    /// The user whose access (credentials, roles, memberships) this changes: their
    /// access version moves on in the same transaction, and decisions on it wait.
    fn changes_access_of(&self) -> Option<Uuid> {
        None
    }
}

/// A new data subject's key: stored wrapped, and used to seal this unit's events.
#[derive(Clone)]
pub(crate) struct SubjectKey {
    pub subject: Uuid,
    pub wrapped: Vec<u8>,
    pub cipher: Arc<Aes256Gcm>,
}

/// A new contact's channel identity (a keyed hash of inbox and sender) and its stream.
#[derive(Debug, Clone)]
pub struct ChannelIdentity {
    pub hash: String,
    pub account: Uuid,
    pub inbox: Uuid,
    pub contact: Uuid,
}

/// Everything one unit writes besides its events.
#[derive(Clone, Default)]
pub struct SideWrites {
    pub(crate) keys: Vec<SubjectKey>,
    pub(crate) identities: Vec<ChannelIdentity>,
    pub(crate) rows: Vec<Arc<dyn SideWrite>>,
}

impl SideWrites {
    pub fn of(row: impl SideWrite) -> Self {
        let mut writes = Self::default();
        writes.add(row);
        writes
    }

    pub fn add(&mut self, row: impl SideWrite) {
        self.rows.push(Arc::new(row));
    }

    /// A key for a data subject that is new in this unit of work (a contact, or a
    /// member's or login's fresh subject id), which seals its fields from the start.
    pub fn data_key(&mut self, keyring: &Keyring, subject: Uuid) -> anyhow::Result<()> {
        let key = keyring.new_data_key(subject)?;
        self.keys.push(SubjectKey { subject, wrapped: key.wrapped, cipher: key.cipher });
        Ok(())
    }

    pub fn channel_identity(&mut self, identity: ChannelIdentity) {
        self.identities.push(identity);
    }

    pub fn extend(&mut self, other: &SideWrites) {
        self.keys.extend_from_slice(&other.keys);
        self.identities.extend_from_slice(&other.identities);
        self.rows.extend_from_slice(&other.rows);
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.identities.is_empty() && self.rows.is_empty()
    }

    /// The key this unit creates for `subject`, if it does.
    pub(crate) fn created_key(&self, subject: Uuid) -> Option<Arc<Aes256Gcm>> {
        self.keys.iter().find(|k| k.subject == subject).map(|k| k.cipher.clone())
    }

    /// The users whose access these writes change.
    pub(crate) fn access_changed(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.rows.iter().filter_map(|row| row.changes_access_of())
    }
}

/// Writes `rows` in order, moving on the access version of each user one changes.
pub(crate) async fn write_rows(conn: &mut PgConnection, rows: &[&Arc<dyn SideWrite>]) -> Result<(), StoreError> {
    for row in rows {
        row.write(&mut *conn).await?;
        if let Some(user) = row.changes_access_of() {
            sqlx::query(
                "INSERT INTO access_versions (user_id, version) VALUES ($1, 1) \
                 ON CONFLICT (user_id) DO UPDATE SET version = access_versions.version + 1",
            )
            .bind(user)
            .execute(&mut *conn)
            .await
            .map_err(|e| StoreError::of_write(e, "", StoreError::Conflict))?;
        }
    }
    Ok(())
}
