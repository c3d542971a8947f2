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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_or_an_exhausted_pool_is_transient_and_a_defect_is_not() {
        let io = sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer"));
        assert!(connection_lost(&io));
        assert!(!connection_lost(&sqlx::Error::PoolTimedOut), "the pool's connections are fine, just busy");
        for transient in [io, sqlx::Error::PoolTimedOut, sqlx::Error::PoolClosed] {
            let error = anyhow::Error::new(transient).context("failed to append events");
            assert!(is_transient(&error), "{error:#}");
        }
        let shared = anyhow::Error::new(Unavailable("connection reset".into())).context("group commit");
        assert!(is_transient(&shared), "a batch neighbour's copy of a transient failure");
        assert!(!is_transient(&anyhow::Error::new(sqlx::Error::RowNotFound)));
        assert!(!is_transient(&anyhow::anyhow!("failed to decode event 7 of conversation")));
    }
}
