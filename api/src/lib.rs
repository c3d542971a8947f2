//! The API process: configuration, the composition root, HTTP and GraphQL, auth, and
//! the command-line tasks of the `inboxd` binary.

pub mod app;
pub mod auth;
#[cfg(feature = "bench")]
pub mod bench;
pub mod cli;
pub mod config;
pub mod error;
pub mod fanout;
pub mod files;
pub mod graphql;
pub mod http;
pub mod live;
pub mod policy;
pub mod provider_webhooks;
pub mod rate_limit;
pub mod request_metrics;
pub mod state;
pub mod telemetry;
