//! Readers of old event shapes. Every event read from the store, by the command path, the feed,
//! the projections or the audit replay, passes through [`upcasters`] first, so each of them sees
//! the current shape only. Stored events are never rewritten: the ledger is append-only and
//! each stored event's hash covers the shape it was written in.
//!
//! The changes so far:
//! - decision events 1.0 → 1.1 ([`SeenVersion`]): `ApprovalRecorded`, `RequestRejected` and
//!   `RequestReturned` record `seen_version`, the request's version the approver decided on.

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use serde_json::Value;

use crate::events::{DECISION_TYPES, DECISION_VERSION, FIRST_VERSION};

/// The upcasters to apply, oldest change first.
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    vec![Box::new(SeenVersion)]
}

/// Applies every upcaster that accepts the event, in order, as cqrs-es does on its own path.
pub fn apply(upcasters: &[Box<dyn EventUpcaster>], event: SerializedEvent) -> SerializedEvent {
    upcasters.iter().fold(event, |event, upcaster| {
        if upcaster.can_upcast(&event.event_type, &event.event_version) {
            upcaster.upcast(event)
        } else {
            event
        }
    })
}

/// Reads a 1.0 decision event as 1.1 by filling in `seen_version`.
///
/// A decision is the first event its command appends, and a command decides on the version it
/// loaded, so the version the approver decided on is exactly the event's sequence minus one.
/// The upcaster needs the stored sequence, which is why it is written by hand rather than with
/// cqrs-es's payload-only `SemanticVersionEventUpcaster`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeenVersion;

impl EventUpcaster for SeenVersion {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_version == FIRST_VERSION && DECISION_TYPES.contains(&event_type)
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        let seen = event.sequence.saturating_sub(1);
        // The payload is the externally tagged enum: {"ApprovalRecorded": {...}}.
        if let Some(Value::Object(body)) = event.payload.get_mut(&event.event_type) {
            body.entry("seen_version").or_insert(Value::from(seen));
        }
        event.event_version = DECISION_VERSION.to_owned();
        event
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::events::ApprovalEvent;

    fn stored(event_type: &str, version: &str, sequence: usize, payload: Value) -> SerializedEvent {
        SerializedEvent::new(
            "id".into(),
            sequence,
            "ApprovalRequest".into(),
            event_type.into(),
            version.into(),
            payload,
            json!({}),
        )
    }

    fn read(event: SerializedEvent) -> SerializedEvent {
        apply(&upcasters(), event)
    }

    #[test]
    fn an_approval_stored_in_1_0_reads_as_1_1_with_the_version_it_was_decided_on() {
        let old = stored(
            "ApprovalRecorded",
            "1.0",
            4,
            json!({"ApprovalRecorded": {"step": 1, "approver": "bob", "comment": null,
                   "at": "2026-11-20T09:10:00Z"}}),
        );
        let current = read(old);
        assert_eq!(current.event_version, "1.1");
        let event: Result<ApprovalEvent, _> = serde_json::from_value(current.payload);
        assert!(
            matches!(
                event,
                Ok(ApprovalEvent::ApprovalRecorded {
                    seen_version: 3,
                    ..
                })
            ),
            "{event:?}"
        );
    }

    #[test]
    fn rejections_and_returns_are_upcast_too() {
        for event_type in ["RequestRejected", "RequestReturned"] {
            let old = stored(
                event_type,
                "1.0",
                2,
                json!({event_type: {"step": 0, "decided_by": "alice", "comment": "no",
                       "at": "2026-11-20T09:10:00Z"}}),
            );
            let current = read(old);
            assert_eq!(current.payload[event_type]["seen_version"], json!(1));
            assert!(serde_json::from_value::<ApprovalEvent>(current.payload).is_ok());
        }
    }

    #[test]
    fn current_events_and_other_types_pass_unchanged() {
        let new = stored(
            "ApprovalRecorded",
            "1.1",
            4,
            json!({"ApprovalRecorded": {"step": 1, "approver": "bob", "comment": null,
                   "seen_version": 3, "at": "2026-11-20T09:10:00Z"}}),
        );
        assert_eq!(read(new.clone()), new);
        let other = stored(
            "StepCompleted",
            "1.0",
            3,
            json!({"StepCompleted": {"step": 0, "at": "2026-11-20T09:10:00Z"}}),
        );
        assert_eq!(read(other.clone()), other);
    }
}
