//! Failures that are the database's state, not a defect: the connection was lost or
//! ended, the server is restarting or full, a pool had no connection in time, or a
//! transaction lost a serialization race. Retrying later can succeed; callers answer
//! them as "unavailable", never as an internal error.

use std::fmt;

/// A transient failure reported to several callers at once (e.g. every unit of a
/// failed group commit), which cannot all own the original error.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

/// Whether the connection an error came from is gone (a retry needs a new one).
pub fn connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        // Connection exceptions (08…) and operator intervention (57P…: terminated by
        // an administrator, crash or shutdown, cannot connect now).
        sqlx::Error::Database(db) => db.code().is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

/// Whether `error` is transient: lost connections, no pooled connection in time, too
/// many connections, serialization failures and deadlocks, anywhere in its chain.
pub fn is_transient(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        if cause.downcast_ref::<Unavailable>().is_some() {
            return true;
        }
        match cause.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed) => true,
            Some(sqlx::Error::Database(db)) if matches!(db.code().as_deref(), Some("40001" | "40P01" | "53300")) => {
                true
            }
            Some(error) => connection_lost(error),
            None => false,
        }
    })
}
