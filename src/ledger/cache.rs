//! The command path's cache of recently used requests: a command on a request it holds needs no
//! load. It is kept honest by the append's optimistic lock: a cached state older than the store
//! appends at a sequence that exists already, which is a conflict, and the command is decided
//! again on a fresh load. A refusal decided on a cached state is checked the same way (the state
//! may be older than the store), except "not pending": a final request stays final.

use std::collections::HashMap;
use std::sync::Mutex;

use approval_aggregates::{ApprovalRequest, RequestId};

/// A request as the command path last wrote or loaded it, and its sequence then.
struct Entry {
    aggregate: ApprovalRequest,
    sequence: usize,
    used: u64,
}

#[derive(Default)]
struct Entries {
    map: HashMap<RequestId, Entry>,
    clock: u64,
}

/// The most recently used requests, up to a capacity.
pub struct Cache {
    entries: Mutex<Entries>,
    capacity: usize,
}

impl Cache {
    /// A cache of up to `capacity` requests; 0 keeps none.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::default(),
            capacity,
        }
    }

    /// Request `id` and its sequence, if held.
    pub fn get(&self, id: RequestId) -> Option<(ApprovalRequest, usize)> {
        let mut entries = self.entries.lock().ok()?;
        entries.clock += 1;
        let now = entries.clock;
        let entry = entries.map.get_mut(&id)?;
        entry.used = now;
        Some((entry.aggregate.clone(), entry.sequence))
    }

    /// Holds request `id` as it stands after `sequence`.
    pub fn put(&self, id: RequestId, aggregate: ApprovalRequest, sequence: usize) {
        if self.capacity == 0 {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        entries.clock += 1;
        let used = entries.clock;
        entries.map.insert(
            id,
            Entry {
                aggregate,
                sequence,
                used,
            },
        );
        if entries.map.len() > self.capacity {
            // Forget the least recently used eighth at once, so that this sort is rare.
            let mut ages: Vec<u64> = entries.map.values().map(|e| e.used).collect();
            let cut = ages.len() / 8;
            ages.select_nth_unstable(cut);
            let oldest_kept = ages[cut];
            entries.map.retain(|_, e| e.used >= oldest_kept);
        }
    }

    /// Forgets request `id`.
    pub fn forget(&self, id: RequestId) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.map.remove(&id);
        }
    }

    /// How many requests it holds.
    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.map.len())
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn id(n: u128) -> RequestId {
        RequestId(Uuid::from_u128(n))
    }

    #[test]
    fn the_least_recently_used_go_first_and_a_cache_of_none_keeps_none() {
        let cache = Cache::new(16);
        for n in 0..16 {
            cache.put(id(n), ApprovalRequest::default(), n as usize);
        }
        // Request 0 is used again, so it outlives the others of its age.
        assert_eq!(cache.get(id(0)).map(|(_, s)| s), Some(0));
        cache.put(id(16), ApprovalRequest::default(), 16);
        assert!(cache.len() < 17);
        assert!(cache.get(id(0)).is_some(), "used lately");
        assert!(cache.get(id(1)).is_none(), "the oldest is gone");
        assert!(cache.get(id(16)).is_some());
        cache.forget(id(16));
        assert!(cache.get(id(16)).is_none());

        let none = Cache::new(0);
        none.put(id(1), ApprovalRequest::default(), 1);
        assert!(none.is_empty());
    }
}
