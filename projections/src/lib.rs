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
pub mod timeline;
pub mod transient;

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
