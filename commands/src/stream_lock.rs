//! Per-stream locks inside one process: commands on one stream queue instead of
//! conflicting. Across processes, the log's primary key and `assert_current` decide.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::OwnedMutexGuard;

/// Serialises commands per stream inside this process, so a burst on one
/// conversation queues instead of conflicting. Locks are per stream (not striped):
/// a command that takes two (route, then conversation) can never deadlock another.
#[derive(Default)]
pub struct StreamLocks {
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl StreamLocks {
    pub async fn lock(&self, aggregate_type: &str, id: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().expect("stream lock table");
            if locks.len() > 10_000 {
                locks.retain(|_, lock| lock.strong_count() > 0);
            }
            let key = format!("{aggregate_type}/{id}");
            match locks.get(&key).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(key, Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }
}
