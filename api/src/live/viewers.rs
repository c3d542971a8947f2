//! Viewers: which agents have a conversation open (a subscription to its events), so
//! two agents about to answer the same customer know of each other.
//!
//! Shared by every process in the `conversation_viewers` table: a subscription
//! registers its agent while it lives; each process touches its subscriptions' rows
//! every [`TOUCH_EVERY`], removes a row when the last of its subscriptions ends (the
//! agent's subscription in another process registers it again at its next touch), and
//! sweeps rows untouched for [`LAPSE`] (a process that died). Each change of a
//! conversation's viewers is signalled to every process (`VIEWERS_CHANGED`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use projections::publication::{Publisher, Signal};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::presence::{LAPSE, TOUCH_EVERY};

/// The kind of signal a change of viewers travels as.
pub const VIEWERS_CHANGED: &str = "viewers";

/// An agent viewing a conversation: (account, conversation, user).
pub type ViewKey = (Uuid, Uuid, Uuid);

/// This process's viewers, and the shared table.
#[derive(Clone)]
pub struct Viewers {
    pool: PgPool,
    publisher: Publisher,
    /// Open subscriptions per viewer.
    open: Arc<Mutex<HashMap<ViewKey, usize>>>,
}

/// Held while a subscription views a conversation.
pub struct Viewing {
    key: ViewKey,
    viewers: Viewers,
}

impl Drop for Viewing {
    fn drop(&mut self) {
        let last = {
            let mut open = self.viewers.open.lock().expect("viewers registry");
            match open.get_mut(&self.key) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                _ => {
                    open.remove(&self.key);
                    true
                }
            }
        };
        if let (true, Ok(runtime)) = (last, tokio::runtime::Handle::try_current()) {
            let (viewers, key) = (self.viewers.clone(), self.key);
            runtime.spawn(async move {
                if let Err(error) = viewers.leave(key).await {
                    tracing::warn!(%error, "could not record that a viewer left; it lapses");
                }
            });
        }
    }
}

impl Viewers {
    pub fn new(pool: PgPool, publisher: Publisher) -> Self {
        Self { pool, publisher, open: Arc::default() }
    }

    /// Registers the agent as viewing the conversation while the guard lives.
    pub async fn view(&self, key: ViewKey) -> sqlx::Result<Viewing> {
        *self.open.lock().expect("viewers registry").entry(key).or_default() += 1;
        let guard = Viewing { key, viewers: self.clone() };
        self.touch(&[key]).await?;
        Ok(guard)
    }

    /// The agents viewing a conversation now.
    pub async fn of(&self, conversation: Uuid) -> sqlx::Result<Vec<Uuid>> {
        sqlx::query_scalar(
            "SELECT user_id FROM conversation_viewers WHERE conversation_id = $1 AND seen_at > $2 ORDER BY seen_at",
        )
        .bind(conversation)
        .bind(Utc::now() - chrono::Duration::from_std(LAPSE).unwrap_or_default())
        .fetch_all(&self.pool)
        .await
    }

    /// Keeps this process's viewers registered, and sweeps lapsed ones, until
    /// `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TOUCH_EVERY) => {}
                _ = shutdown.cancelled() => return,
            }
            if let Err(error) = self.keep().await {
                tracing::warn!(%error, "could not keep the conversations' viewers");
            }
        }
    }

    /// Touches this process's viewers, and sweeps lapsed ones (every process does; a
    /// row is claimed by one).
    async fn keep(&self) -> sqlx::Result<()> {
        let keys: Vec<ViewKey> = self.open.lock().expect("viewers registry").keys().copied().collect();
        if !keys.is_empty() {
            self.touch(&keys).await?;
        }
        let before = Utc::now() - chrono::Duration::from_std(LAPSE).unwrap_or_default();
        let lapsed: Vec<(Uuid, Uuid)> =
            sqlx::query_as("DELETE FROM conversation_viewers WHERE seen_at < $1 RETURNING account_id, conversation_id")
                .bind(before)
                .fetch_all(&self.pool)
                .await?;
        for (account, conversation) in lapsed {
            self.changed(account, conversation);
        }
        Ok(())
    }

    /// Marks the viewers seen now; signals the conversations they newly view.
    async fn touch(&self, keys: &[ViewKey]) -> sqlx::Result<()> {
        let accounts: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let conversations: Vec<Uuid> = keys.iter().map(|k| k.1).collect();
        let users: Vec<Uuid> = keys.iter().map(|k| k.2).collect();
        // `xmax = 0`: inserted, not updated — a new viewer.
        let arrived: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "INSERT INTO conversation_viewers (account_id, conversation_id, user_id, seen_at) \
             SELECT a, c, u, $4 FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[]) AS t(a, c, u) \
             ON CONFLICT (conversation_id, user_id) DO UPDATE SET seen_at = EXCLUDED.seen_at \
             RETURNING account_id, conversation_id, xmax = 0 AS arrived",
        )
        .bind(accounts)
        .bind(conversations)
        .bind(users)
        .bind(Utc::now())
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .filter_map(|(a, c, arrived): (Uuid, Uuid, bool)| arrived.then_some((a, c)))
        .collect();
        for (account, conversation) in arrived {
            self.changed(account, conversation);
        }
        Ok(())
    }

    /// The agent's last subscription to the conversation in this process ended.
    async fn leave(&self, (account, conversation, user): ViewKey) -> sqlx::Result<()> {
        // Another subscription of the same agent may have started meanwhile.
        if self.open.lock().expect("viewers registry").contains_key(&(account, conversation, user)) {
            return Ok(());
        }
        let left = sqlx::query("DELETE FROM conversation_viewers WHERE conversation_id = $1 AND user_id = $2")
            .bind(conversation)
            .bind(user)
            .execute(&self.pool)
            .await?;
        if left.rows_affected() > 0 {
            self.changed(account, conversation);
        }
        Ok(())
    }

    fn changed(&self, account: Uuid, conversation: Uuid) {
        self.publisher.signal(Signal {
            account_id: account,
            kind: VIEWERS_CHANGED.into(),
            body: serde_json::json!({ "conversation_id": conversation }),
        });
    }
}
