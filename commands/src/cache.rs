//! Aggregates kept in memory between commands, so a command on a long conversation
//! costs what one on a short one does: no replay of its history.
//!
//! A command holding a stream's lock *takes* the stream out (no copy), and the store
//! puts it back with its new head after a successful commit; a failed or conflicting
//! command leaves nothing behind, so the next one replays from the log. Read-only
//! loads copy. Entries never go back in time: a write of an older version than the
//! cached one is ignored. Another process's appends are found at commit: an append on
//! stale state conflicts on its sequence, and every other decision (to write nothing,
//! or on a stream it only read) asserts the versions it saw (`guard`); a stale entry
//! is then evicted and the decision taken again from the log.

use std::any::Any;
use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;

struct Entry {
    version: i64,
    stream: Box<dyn Any + Send + Sync>,
}

pub struct AggregateCache {
    entries: Mutex<LruCache<String, Entry>>,
}

impl AggregateCache {
    pub fn new(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity.max(1)).expect("capacity is at least one");
        Self { entries: Mutex::new(LruCache::new(capacity)) }
    }

    fn key(aggregate_type: &str, id: &str) -> String {
        format!("{aggregate_type}/{id}")
    }

    /// Removes and returns the cached stream, if it is there and of type `T`.
    pub fn take<T: Any>(&self, aggregate_type: &str, id: &str) -> Option<T> {
        let entry = self.entries.lock().expect("cache lock").pop(&Self::key(aggregate_type, id))?;
        entry.stream.downcast::<T>().ok().map(|b| *b)
    }

    /// A copy of the cached stream.
    pub fn copy<T: Any + Clone>(&self, aggregate_type: &str, id: &str) -> Option<T> {
        let mut entries = self.entries.lock().expect("cache lock");
        entries.get(&Self::key(aggregate_type, id)).and_then(|e| e.stream.downcast_ref::<T>()).cloned()
    }

    /// Forgets the stream: it moved on elsewhere, the next load replays it.
    pub fn evict(&self, aggregate_type: &str, id: &str) {
        self.entries.lock().expect("cache lock").pop(&Self::key(aggregate_type, id));
    }

    /// Keeps `stream` at `version`, unless a newer version is cached already.
    pub fn put<T: Any + Send + Sync>(&self, aggregate_type: &str, id: &str, version: i64, stream: T) {
        let key = Self::key(aggregate_type, id);
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.peek(&key).is_some_and(|e| e.version > version) {
            return;
        }
        entries.put(key, Entry { version, stream: Box::new(stream) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_stream_is_gone_until_put_back_and_never_goes_back_in_time() {
        let cache = AggregateCache::new(10);
        cache.put("conversation", "a", 3, "v3".to_string());
        assert_eq!(cache.copy::<String>("conversation", "a").as_deref(), Some("v3"));
        assert_eq!(cache.take::<String>("conversation", "a").as_deref(), Some("v3"));
        assert_eq!(cache.take::<String>("conversation", "a"), None);
        cache.put("conversation", "a", 5, "v5".to_string());
        cache.put("conversation", "a", 4, "v4".to_string());
        assert_eq!(cache.copy::<String>("conversation", "a").as_deref(), Some("v5"));
        assert_eq!(cache.copy::<u32>("conversation", "a"), None, "a different type is a miss");
    }

    #[test]
    fn the_least_recently_used_stream_is_dropped_at_capacity() {
        let cache = AggregateCache::new(2);
        cache.put("t", "a", 1, 1u8);
        cache.put("t", "b", 1, 2u8);
        assert_eq!(cache.copy::<u8>("t", "a"), Some(1));
        cache.put("t", "c", 1, 3u8);
        assert_eq!(cache.copy::<u8>("t", "b"), None);
        assert_eq!(cache.copy::<u8>("t", "a"), Some(1));
    }
}
