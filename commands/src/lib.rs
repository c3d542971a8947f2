//! The write side: the event store and the command services that load aggregates,
//! let them decide, and append what they decided.

use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use domain::DomainError;
use projections::feed::FeedPosition;

pub mod access;
pub mod account;
mod append;
pub mod attachments;
pub mod availability;
pub mod cache;
pub mod channel;
pub mod connection;
pub mod contact;
pub mod context;
pub mod conversation;
pub mod digest;
pub mod erasure;
pub mod error;
pub mod guard;
pub mod inbound;
pub mod inbox;
pub mod jobs;
pub mod label;
pub mod mail;
pub mod notification;
mod numbering;
pub mod outbound;
pub mod side_write;
pub mod store;
mod stream_lock;
pub mod team;
pub mod verify;
pub mod web_push;
pub mod webhook;

use context::CommandContext;
pub use error::{CommandError, StoreError};
use side_write::SideWrites;
use store::{EventStore, Loaded, UnitOfWork};

/// Attempts per command when another process appended to the same stream first.
const ATTEMPTS: u32 = 10;

/// What a command wrote: the position of its last event, to wait for projections.
#[derive(Debug, Clone, Copy, Default)]
pub struct Written {
    pub position: Option<FeedPosition>,
}

/// The command services; cheap to clone.
#[derive(Clone)]
pub struct Commands {
    store: Arc<EventStore>,
}

impl Commands {
    pub fn new(store: Arc<EventStore>) -> Self {
        Self { store }
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// Runs one command on one stream: lock, load, decide, append; retried with
    /// fresh state on a conflict from another process.
    pub async fn execute<A>(
        &self,
        context: &CommandContext,
        id: &str,
        command: impl Fn(&A) -> Result<A::Command, CommandError>,
    ) -> Result<Written, CommandError>
    where
        A: Aggregate<Error = DomainError, Services = ()> + 'static,
        A::Event: domain::PersonalData,
    {
        self.execute_with(context, id, command, &SideWrites::default()).await
    }

    /// [`Commands::execute`], with rows outside the log written in the same
    /// transaction when the command's events are.
    pub async fn execute_with<A>(
        &self,
        context: &CommandContext,
        id: &str,
        command: impl Fn(&A) -> Result<A::Command, CommandError>,
        side_writes: &SideWrites,
    ) -> Result<Written, CommandError>
    where
        A: Aggregate<Error = DomainError, Services = ()> + 'static,
        A::Event: domain::PersonalData,
    {
        retry(|| async {
            let _guard = self.store.lock::<A>(id).await;
            let mut stream = self.store.load_for_update::<A>(id).await?;
            let command = match command(&stream.state) {
                Ok(command) => command,
                Err(refused) => {
                    self.store.confirm(context, Some(stream.head())).await?;
                    self.store.keep(stream);
                    return Err(refused);
                }
            };
            let head = stream.head();
            let events = match decide(&mut stream, command).await {
                Ok(events) => events,
                // `handle` may have changed the state before it refused: replay next time.
                Err(refused) => {
                    self.store.confirm(context, Some(head)).await?;
                    return Err(refused.into());
                }
            };
            let mut work = UnitOfWork::new(context);
            let wrote_events = !events.is_empty();
            work.append(stream, events)?;
            if wrote_events {
                work.side_writes().extend(side_writes);
            }
            let position = self.store.commit(work).await?;
            Ok(Written { position })
        })
        .await
    }
}

/// Lets the aggregate decide on a command; its state moves on with the events.
pub async fn decide<A>(stream: &mut Loaded<A>, command: A::Command) -> Result<Vec<A::Event>, DomainError>
where
    A: Aggregate<Error = DomainError, Services = ()>,
{
    let sink = EventSink::default();
    stream.state.handle(command, &(), &sink).await?;
    Ok(sink.collect().await)
}

/// Runs `attempt` until it does not conflict, at most [`ATTEMPTS`] times, backing off
/// (exponentially, jittered, up to ~50 ms) so the other process's burst can drain.
pub async fn retry<T, F, Fut>(attempt: F) -> Result<T, CommandError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, CommandError>>,
{
    for n in 1..ATTEMPTS {
        match attempt().await {
            Err(CommandError::Conflict) => {
                let ceiling = 1u64 << n.min(6);
                let pause = rand::Rng::gen_range(&mut rand::thread_rng(), 1..=ceiling);
                tracing::debug!(attempt = n, pause_ms = pause, "stream conflict; retrying with fresh state");
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
            other => return other,
        }
    }
    attempt().await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_conflict_is_retried_with_fresh_state_and_reported_once_attempts_run_out() {
        let attempts = AtomicU32::new(0);
        let settled = retry(|| async {
            if attempts.fetch_add(1, Ordering::SeqCst) < 3 {
                Err(CommandError::Conflict)
            } else {
                Ok("written")
            }
        })
        .await;
        assert_eq!(settled.unwrap(), "written");
        assert_eq!(attempts.load(Ordering::SeqCst), 4);

        let attempts = AtomicU32::new(0);
        let lost = retry(|| async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(CommandError::Conflict)
        })
        .await;
        assert!(matches!(lost, Err(CommandError::Conflict)));
        assert_eq!(attempts.load(Ordering::SeqCst), ATTEMPTS);
    }

    #[tokio::test]
    async fn a_refusal_is_not_retried() {
        let attempts = AtomicU32::new(0);
        let refused = retry(|| async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(CommandError::Domain(DomainError::invalid("no")))
        })
        .await;
        assert!(matches!(refused, Err(CommandError::Domain(_))));
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }
}
