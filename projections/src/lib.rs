//! The read side: the event feed, the projection engine, every projector and the
//! queries over the read models they build.

use std::sync::Arc;

pub mod availability;
pub mod contact_search;
pub mod directory;
pub mod engine;
pub mod envelope;
pub mod feed;
pub mod inbox_list;
pub mod keyring;
pub mod live_metrics;
pub mod notifications;
pub mod policy;
pub mod publication;
pub mod shared_feed;
pub mod timeline;
pub mod transient;

/// For `.persistent(…)` on lookups by a set of ids that run all day on long-lived
/// connections (the live feed's loads): planned for each call rather than cached on
/// the connection. A plan cached while a read model was small scans the whole table
/// for as long as the connection lives (statistics need not change to replan it:
/// autovacuum may be off), and the growing table makes every call slower.
pub const ONE_OFF_PLAN: bool = false;

/// Every projector, in the order they are registered (the keyring keys the contacts'
/// search index).
pub fn all_projectors(keyring: &Arc<keyring::Keyring>) -> Vec<Arc<dyn engine::Projector>> {
    vec![
        Arc::new(directory::Directory { keyring: keyring.clone() }),
        Arc::new(inbox_list::InboxList::default()),
        Arc::new(timeline::Timeline),
        Arc::new(availability::AvailabilityProjector),
        Arc::new(live_metrics::LiveMetrics),
        Arc::new(notifications::Notifications::default()),
    ]
}
