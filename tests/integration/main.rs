//! The integration suite: one binary, each test against its own database and server.

mod access;
mod access_matrix;
mod across_processes;
mod auth;
mod channel_replies;
mod channels;
mod concurrency;
mod conversation_flow;
mod docs;
mod durability;
mod erasure;
mod event_log;
mod hardening;
mod hostile_input;
mod house;
mod inbox_list;
mod jobs;
mod live_metrics;
mod notifications;
mod presence;
mod projections;
mod publication;
mod subscriptions;
mod tamper_evidence;
mod webhooks;
