//! Who issues a command, for which account, when, and as part of what; and what the
//! decision read, so the commit can tell whether that is still current.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use domain::actor::Actor;
use projections::feed::FeedEvent;
use uuid::Uuid;

/// The caller's access as it was resolved: a user's access version (moved on by every
/// change to their credentials, roles or memberships). A commit made on an older one
/// is refused as stale, so no process acts on a principal it cached before a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessStamp {
    pub user: Uuid,
    pub version: i64,
}

/// Everything about a command that is not its payload; copied into each event's
/// metadata. The account is the one the caller acts in, never one named by input.
#[derive(Debug, Clone)]
pub struct CommandContext {
    pub account_id: Uuid,
    pub actor: Actor,
    pub correlation_id: Uuid,
    /// The event this command reacts to (`<type>/<id>/<sequence>`), for a policy's or
    /// a job's commands.
    pub causation_id: Option<String>,
    pub channel: Option<String>,
    pub at: DateTime<Utc>,
    /// The access the request was authorized with, when a principal made it.
    pub access: Option<AccessStamp>,
    /// The streams read for this request's decisions (shared by clones).
    pub reads: Reads,
}

impl CommandContext {
    /// A context stamped with the current time and a fresh correlation id.
    pub fn now(account_id: Uuid, actor: Actor) -> Self {
        Self {
            account_id,
            actor,
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            channel: None,
            at: Utc::now(),
            access: None,
            reads: Reads::default(),
        }
    }

    /// A policy's or a job's context, acting on `event`: in its account, as `actor`,
    /// caused by it and in its correlation.
    pub fn caused_by(event: &FeedEvent, account_id: Uuid, actor: Actor) -> Self {
        let mut context = Self::now(account_id, actor);
        context.causation_id = Some(event.id());
        if let Some(correlation) = event.correlation_id() {
            context.correlation_id = correlation;
        }
        context
    }
}

/// A stream at the version a decision saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub aggregate_type: &'static str,
    pub id: String,
    pub version: i64,
}

/// Why a request's decision could not stand: what it read has moved on since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staleness {
    /// A stream read for the decision (and since dropped from this process's cache).
    Stream,
    /// The caller's access (the principal must be resolved again).
    Access,
}

/// The streams a request read to decide (each at the oldest version it saw), and
/// what the store last found of them and of the caller's access: moved on (the caller
/// that built the context decides again from scratch), or current (a commit or check
/// asserted everything read so far, so a refusal needs no further check).
#[derive(Debug, Clone, Default)]
pub struct Reads(Arc<Mutex<ReadState>>);

#[derive(Debug, Default)]
struct ReadState {
    heads: Vec<Head>,
    stale: Option<Staleness>,
    current: bool,
}

impl Reads {
    pub fn record(&self, aggregate_type: &'static str, id: &str, version: i64) {
        let mut state = self.0.lock().expect("reads");
        match state.heads.iter_mut().find(|h| h.aggregate_type == aggregate_type && h.id == id) {
            Some(head) if head.version <= version => return,
            Some(head) => head.version = version,
            None => state.heads.push(Head { aggregate_type, id: id.to_string(), version }),
        }
        state.current = false;
    }

    pub fn heads(&self) -> Vec<Head> {
        self.0.lock().expect("reads").heads.clone()
    }

    pub fn mark_stale(&self, why: Staleness) {
        let mut state = self.0.lock().expect("reads");
        // Access outranks a stream: resolving the principal again is the larger redo.
        if state.stale != Some(Staleness::Access) {
            state.stale = Some(why);
        }
    }

    pub fn stale(&self) -> Option<Staleness> {
        self.0.lock().expect("reads").stale
    }

    /// The store asserted every read so far, and the caller's access, current.
    pub fn mark_current(&self) {
        self.0.lock().expect("reads").current = true;
    }

    pub fn current(&self) -> bool {
        self.0.lock().expect("reads").current
    }
}
