//! Readers of old event shapes. Every event read from the store, by the command path, the feed,
//! the projections or the audit replay, passes through [`upcasters`] first, so each of them sees
//! the current shape only.

use cqrs_es::persist::EventUpcaster;

/// The upcasters to apply, oldest change first.
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    vec![]
}
