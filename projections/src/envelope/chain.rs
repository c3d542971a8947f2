//! The per-stream hash chain: each event's hash covers its predecessor's and the event
//! as stored, so an auditor can tell whether a stream was altered.
//!
//! The chain is keyed: a hash is `[key id] ‖ HMAC-SHA256(chain key, previous ‖ event)`,
//! 33 bytes, with a key derived from the master key that is never in the database, so
//! someone who can write to the database cannot recompute it after a change. Rows
//! written before the keyed chain carry plain sha256 (32 bytes, no key id); they are
//! allowed only at or below the cut-over position recorded when it began, and never
//! after a keyed row of the same stream. Key ids let the key change: new rows use the
//! configured id, every id stays derivable for verification (see ADR 0005).

use std::sync::{Arc, OnceLock};

use crate::keyring::Keyring;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Length of a plain sha256 hash (rows before the keyed chain).
const PLAIN_LEN: usize = 32;

/// What an event's hash covers, beside its predecessor's hash. Payload and metadata
/// are compact JSON text as serde_json writes it (object keys sorted), which a value
/// read back from `jsonb` writes again identically.
pub struct Hashed<'a> {
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: i64,
    pub event_type: &'a str,
    pub event_version: &'a str,
    pub payload: &'a str,
    pub metadata: &'a str,
}

impl Hashed<'_> {
    fn feed(&self, previous: Option<&[u8]>, mut update: impl FnMut(&[u8])) {
        let Hashed { aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata } = self;
        update(previous.unwrap_or(&[0u8; 32]));
        for part in [aggregate_type, aggregate_id, event_type, event_version] {
            update(&(part.len() as u64).to_be_bytes());
            update(part.as_bytes());
        }
        update(&sequence.to_be_bytes());
        update(payload.as_bytes());
        update(&[0]);
        update(metadata.as_bytes());
    }
}

/// How one stored hash was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Plain sha256: rows from before the keyed chain.
    Plain,
    Keyed(u8),
    /// Neither shape: damage.
    Unknown,
}

impl Link {
    pub fn of(hash: &[u8]) -> Self {
        match hash.len() {
            PLAIN_LEN => Link::Plain,
            33 if hash[0] != 0 => Link::Keyed(hash[0]),
            _ => Link::Unknown,
        }
    }
}

/// The chain keys: the one new rows are hashed with, and every other id on demand.
#[derive(Clone)]
pub struct Chain {
    current: u8,
    keyring: Arc<Keyring>,
    keys: Arc<[OnceLock<HmacSha256>; 256]>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Chain(key {})", self.current)
    }
}

impl Chain {
    /// `current`: the key id new rows are hashed with (1..=255).
    pub fn new(keyring: Arc<Keyring>, current: u8) -> anyhow::Result<Self> {
        anyhow::ensure!(current != 0, "the chain key id must be between 1 and 255");
        Ok(Self { current, keyring, keys: Arc::new(std::array::from_fn(|_| OnceLock::new())) })
    }

    pub fn keyring(&self) -> &Arc<Keyring> {
        &self.keyring
    }

    fn key(&self, id: u8) -> &HmacSha256 {
        self.keys[id as usize].get_or_init(|| {
            let secret = self.keyring.derive(&format!("event-chain/{id}"));
            <HmacSha256 as Mac>::new_from_slice(&secret).expect("HMAC takes any key length")
        })
    }

    /// The hash a new event gets.
    pub fn hash(&self, previous: Option<&[u8]>, event: &Hashed<'_>) -> Vec<u8> {
        self.keyed(self.current, previous, event)
    }

    fn keyed(&self, id: u8, previous: Option<&[u8]>, event: &Hashed<'_>) -> Vec<u8> {
        let mut mac = self.key(id).clone();
        event.feed(previous, |bytes| mac.update(bytes));
        let mut out = Vec::with_capacity(33);
        out.push(id);
        out.extend_from_slice(&mac.finalize().into_bytes());
        out
    }

    /// Whether `stored` is the right hash of `event` after `previous`, by the rule of
    /// its own kind (a plain row's rule is the old one).
    pub fn matches(&self, stored: &[u8], previous: Option<&[u8]>, event: &Hashed<'_>) -> bool {
        let expected = match Link::of(stored) {
            Link::Plain => unkeyed(previous, event),
            Link::Keyed(id) => self.keyed(id, previous, event),
            Link::Unknown => return false,
        };
        // Not a secret comparison: the verifier recomputes, it does not authenticate.
        expected == stored
    }
}

/// The chain rule before it was keyed (rows written by earlier releases).
pub fn unkeyed(previous: Option<&[u8]>, event: &Hashed<'_>) -> Vec<u8> {
    let mut hasher = Sha256::new();
    event.feed(previous, |bytes| hasher.update(bytes));
    hasher.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(payload: &str) -> Hashed<'_> {
        Hashed {
            aggregate_type: "conversation",
            aggregate_id: "c1",
            sequence: 1,
            event_type: "StatusChanged",
            event_version: "1",
            payload,
            metadata: "{}",
        }
    }

    #[test]
    fn a_keyed_hash_verifies_only_with_the_key_it_names_and_a_plain_one_by_the_old_rule() {
        let chain = Chain::new(Arc::new(Keyring::new([3; 32])), 2).unwrap();
        let hash = chain.hash(None, &event("{\"a\":1}"));
        assert_eq!((hash.len(), Link::of(&hash)), (33, Link::Keyed(2)));
        assert!(chain.matches(&hash, None, &event("{\"a\":1}")));
        assert!(!chain.matches(&hash, None, &event("{\"a\":2}")));
        let other_master = Chain::new(Arc::new(Keyring::new([4; 32])), 2).unwrap();
        assert!(!other_master.matches(&hash, None, &event("{\"a\":1}")), "someone without the key cannot make it");
        let mut relabelled = hash.clone();
        relabelled[0] = 1;
        assert!(!chain.matches(&relabelled, None, &event("{\"a\":1}")));
        let old = unkeyed(None, &event("{\"a\":1}"));
        assert!(chain.matches(&old, None, &event("{\"a\":1}")));
        assert_eq!(Link::of(&[0; 33]), Link::Unknown);
    }
}
