//! What every request handler shares.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use commands::context::{AccessStamp, CommandContext};
use commands::digest::Digests;
use commands::jobs::Jobs;
use commands::outbound::Outbound;
use commands::{Commands, Written};
use domain::actor::Actor;
use projections::engine::Engine;
use projections::keyring::Keyring;
use projections::policy::Policies;
use sqlx::PgPool;

use crate::auth::{Authenticator, Principal};
use crate::live::dashboard::DashboardChanges;
use crate::live::feed::LiveFeed;
use crate::live::notices::NotificationFeed;
use crate::live::presence::Presence;
use crate::live::viewers::Viewers;
use crate::rate_limit::RateLimiter;
use crate::request_metrics::RequestMetrics;

/// The request's id: the caller's `X-Request-Id` if it is a UUID, else a new one.
#[derive(Debug, Clone, Copy)]
pub struct RequestId(pub uuid::Uuid);

/// The client's address, for rate limits (`X-Forwarded-For` only when trusted).
#[derive(Debug, Clone)]
pub struct ClientAddress(pub String);

/// The application's handles, behind one `Arc`: requests and mutations clone the
/// state freely, and a clone of dozens of handles each was a sixth of the server's CPU
/// under the ingest load (measured with perf).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub pool: PgPool,
    pub commands: Commands,
    pub engine: Engine,
    pub keyring: Arc<Keyring>,
    pub read_your_writes_timeout: Duration,
    pub authenticator: Arc<Authenticator>,
    pub rate_limiter: Arc<RateLimiter>,
    pub session_ttl: Duration,
    /// Mutations this process decided again because what they read had moved on
    /// (`/metrics`: how often processes contend on the same state).
    pub decided_again: Arc<AtomicU64>,
    pub digests: Arc<Digests>,
    /// GraphQL requests by operation and outcome, for `/metrics`.
    pub requests: Arc<RequestMetrics>,
    /// The guard every request a tenant's setting aims goes through.
    pub outbound: Outbound,
    /// Where WhatsApp and Messenger requests go (operator configuration).
    pub graph: commands::channel::GraphApi,
    /// Files of messages, and their links.
    pub attachments: commands::attachments::Attachments,
    pub policies: Policies,
    pub jobs: Jobs,
    /// This process's reader of the feed for subscriptions.
    pub live: LiveFeed,
    /// This process's reader of new notifications for `notificationCreated`.
    pub notices: NotificationFeed,
    /// This process's reader of what may have moved the live dashboards.
    pub dashboard_changes: DashboardChanges,
    /// Which agents are here (shared by every process).
    pub presence: Presence,
    /// Which agents have a conversation open (shared by every process).
    pub viewers: Viewers,
}

impl AppState {
    /// A command context for the principal, carrying the request's id as the
    /// correlation id of every event the command writes.
    pub fn context(&self, principal: &Principal, request: RequestId) -> CommandContext {
        let mut context = CommandContext::now(principal.account_id, Actor::User(principal.user_id));
        context.correlation_id = request.0;
        context.channel = Some("api".into());
        context.access = Some(AccessStamp { user: principal.user_id, version: principal.access_version });
        context
    }

    /// Waits (bounded, outside any transaction) until the named projectors have
    /// applied what a command wrote, so a mutation's answer shows its own write.
    pub async fn settle(&self, written: Written, projectors: &[&'static str]) {
        if let Some(position) = written.position {
            if !self.engine.wait_for(projectors, position, self.read_your_writes_timeout).await {
                tracing::warn!(
                    ?position,
                    ?projectors,
                    "read model did not catch up in time; answering with it as it is"
                );
            }
        }
    }
}
