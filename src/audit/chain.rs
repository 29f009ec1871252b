//! The hashes of the tamper evidence, computed exactly as `migrations/0004_audit.sql` computes an
//! event's hash in PostgreSQL (a test in tests/audit.rs holds the two together):
//!
//! - an event's hash is SHA-256 of `"approval-ledger/event/v1"`, the hash of the previous event
//!   of its request (32 zero bytes before the first), then the framed aggregate type, framed
//!   aggregate id, sequence, framed event type, framed event version, framed payload and framed
//!   metadata (jsonb text), the event id's 16 bytes and the recording time in microseconds since
//!   the Unix epoch. Integers are big-endian; a framed field is its length in 4 bytes, then its
//!   UTF-8 bytes.
//! - the running hash over the feed is SHA-256 of `"approval-ledger/feed/v1"`, the previous
//!   running hash (32 zero bytes before the first event), the event's position (`tx_id`,
//!   `global_id`, 8 bytes each) and the event's hash, folded in feed order.

use crate::feed::Position;
use sha2::{Digest, Sha256};

use crate::store::audit::StoredEvent;

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The hash before the first event of a request, and the running hash before the first event.
pub const GENESIS: Hash = [0; 32];

const EVENT_TAG: &[u8] = b"approval-ledger/event/v1";
const FEED_TAG: &[u8] = b"approval-ledger/feed/v1";

/// The hash `event` must have when the event before it in its request has hash `prev`.
pub fn event_hash(prev: &[u8], event: &StoredEvent) -> Hash {
    let mut h = Sha256::new();
    h.update(EVENT_TAG);
    h.update(prev);
    framed(&mut h, event.aggregate_type.as_bytes());
    framed(&mut h, event.aggregate_id.as_bytes());
    h.update(event.sequence.to_be_bytes());
    framed(&mut h, event.event_type.as_bytes());
    framed(&mut h, event.event_version.as_bytes());
    framed(&mut h, event.payload.as_bytes());
    framed(&mut h, event.metadata.as_bytes());
    h.update(event.event_id.as_bytes());
    h.update(event.recorded_at.timestamp_micros().to_be_bytes());
    h.finalize().into()
}

/// The running hash after folding the event at `position` with hash `event_hash` into `running`.
pub fn running_hash(running: &[u8], position: Position, event_hash: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(FEED_TAG);
    h.update(running);
    h.update(position.tx_id.to_be_bytes());
    h.update(position.global_id.to_be_bytes());
    h.update(event_hash);
    h.finalize().into()
}

/// A stored hash as a [`Hash`]; `None` when it is not 32 bytes long.
pub fn to_hash(bytes: &[u8]) -> Option<Hash> {
    bytes.try_into().ok()
}

fn framed(h: &mut Sha256, part: &[u8]) {
    // A field longer than 4 GiB cannot be stored in a jsonb or text column (1 GB at most).
    let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
    h.update(len.to_be_bytes());
    h.update(part);
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    use super::*;

    fn event(payload: &str) -> StoredEvent {
        StoredEvent {
            tx_id: 10,
            global_id: 3,
            aggregate_type: "ApprovalRequest".into(),
            aggregate_id: "r1".into(),
            sequence: 1,
            event_type: "T".into(),
            event_version: "1.0".into(),
            payload: payload.into(),
            metadata: "{}".into(),
            event_id: Uuid::nil(),
            recorded_at: Utc
                .timestamp_opt(1_700_000_000, 123_456_000)
                .single()
                .unwrap_or_default(),
            hash: vec![],
        }
    }

    #[test]
    fn every_hashed_field_changes_the_hash() {
        let base = event(r#"{"a": 1}"#);
        let h = event_hash(&GENESIS, &base);
        assert_ne!(h, event_hash(&GENESIS, &event(r#"{"a": 2}"#)));
        assert_ne!(h, event_hash(&[1; 32], &base));
        let mut other = base.clone();
        other.sequence = 2;
        assert_ne!(h, event_hash(&GENESIS, &other));
        let mut other = base.clone();
        other.recorded_at += chrono::Duration::microseconds(1);
        assert_ne!(h, event_hash(&GENESIS, &other));
        let mut other = base.clone();
        other.event_id = Uuid::from_u128(1);
        assert_ne!(h, event_hash(&GENESIS, &other));
        // The position is not part of an event's hash: the running hash covers it.
        let mut other = base;
        other.global_id = 99;
        assert_eq!(h, event_hash(&GENESIS, &other));
    }

    #[test]
    fn framing_keeps_fields_apart() {
        let mut a = event("{}");
        a.event_type = "AB".into();
        a.event_version = "C".into();
        let mut b = event("{}");
        b.event_type = "A".into();
        b.event_version = "BC".into();
        assert_ne!(event_hash(&GENESIS, &a), event_hash(&GENESIS, &b));
    }

    #[test]
    fn the_running_hash_depends_on_order_and_position() {
        let p = |g| Position {
            tx_id: 1,
            global_id: g,
        };
        let one = running_hash(&running_hash(&GENESIS, p(1), &[1; 32]), p(2), &[2; 32]);
        let swapped = running_hash(&running_hash(&GENESIS, p(1), &[2; 32]), p(2), &[1; 32]);
        let moved = running_hash(&running_hash(&GENESIS, p(1), &[1; 32]), p(3), &[2; 32]);
        assert_ne!(one, swapped);
        assert_ne!(one, moved);
    }
}
