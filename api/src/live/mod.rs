//! Real time: what happens in an account, pushed to the screens allowed to see it,
//! whichever process it happened in.
//!
//! - [`dashboard`]: one reader per process of what may have moved the live dashboards.
//! - [`feed`]: one reader of the feed per process, broadcasting to its subscribers.
//! - [`notices`]: one reader of new notifications per process, for `notificationCreated`.
//! - [`socket`]: the WebSocket the subscriptions are served on.
//! - [`presence`]: which agents are here, shared by every process.
//! - [`viewers`]: which agents have a conversation open.

pub mod dashboard;
pub mod feed;
pub mod notices;
pub mod presence;
pub mod socket;
pub mod viewers;
