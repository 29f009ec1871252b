//! The global feed as data, shared by the write side (the service) and the read side (the
//! projections): where an event stands ([`Position`]), an event as the feed delivers it
//! ([`FeedEvent`]), and how a stored row becomes one ([`decode`], through the aggregate's
//! upcasters). Pure: the SQL that reads the feed, and the rule of what is visible, live in the
//! service's `feed` module; nothing here touches a database.
#![forbid(unsafe_code)]

use std::collections::HashMap;

use approval_aggregates::{ApprovalEvent, RequestId};
use chrono::{DateTime, Utc};
use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Where an event stands in the global feed: the writing transaction's id, then the event's
/// global id. Ordering by this pair is the feed's order.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Position {
    /// The id of the transaction that appended the event.
    pub tx_id: i64,
    /// The event's identity value, unique and increasing within a transaction.
    pub global_id: i64,
}

impl Position {
    /// The position before every event.
    pub const START: Self = Self {
        tx_id: 0,
        global_id: 0,
    };
}

/// An event as the global feed delivers it: stored columns plus the decoded, upcast event.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedEvent {
    /// Its place in the feed.
    pub position: Position,
    /// Its stable id.
    pub event_id: Uuid,
    /// The request it belongs to.
    pub request_id: RequestId,
    /// Its sequence within the request, from 1: the request's version after it.
    pub sequence: i64,
    /// The stored type name.
    pub event_type: String,
    /// The version it is read in (after upcasting).
    pub event_version: String,
    /// The event.
    pub event: ApprovalEvent,
    /// The event's body as JSON, in the current version, without the enum tag.
    pub payload: Value,
    /// What the command path recorded beside it (request id, actor, idempotency key).
    pub metadata: HashMap<String, String>,
    /// When its row was written.
    pub recorded_at: DateTime<Utc>,
}

/// An event row as stored, before decoding.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRow {
    /// Its place in the feed.
    pub position: Position,
    /// Its stable id.
    pub event_id: Uuid,
    /// The aggregate id as stored (a request id in canonical form, unless tampered with).
    pub aggregate_id: String,
    /// Its sequence within the request.
    pub sequence: i64,
    /// The stored type name.
    pub event_type: String,
    /// The stored version.
    pub event_version: String,
    /// The stored payload: the externally tagged enum.
    pub payload: Value,
    /// The stored metadata: an object of strings.
    pub metadata: Value,
    /// When it was written.
    pub recorded_at: DateTime<Utc>,
}

/// A stored event that does not decode. Readers stop there rather than skip it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event at {position:?} ({event_type} {event_version}) does not decode: {message}")]
pub struct DecodeError {
    /// Where it stands.
    pub position: Position,
    /// Its stored type.
    pub event_type: String,
    /// Its stored version.
    pub event_version: String,
    /// What went wrong.
    pub message: String,
}

/// Decodes a stored row into a feed event, through `upcasters` (the aggregate's, in order).
pub fn decode(
    upcasters: &[Box<dyn EventUpcaster>],
    mut row: StoredRow,
) -> Result<FeedEvent, DecodeError> {
    let fail = |row: &StoredRow, message: String| DecodeError {
        position: row.position,
        event_type: row.event_type.clone(),
        event_version: row.event_version.clone(),
        message,
    };
    let request_id = Uuid::try_parse(&row.aggregate_id)
        .map(RequestId)
        .map_err(|e| fail(&row, format!("aggregate id: {e}")))?;
    // Read from the stored JSON in place, and the JSON moved rather than copied: a deep copy of
    // a payload is an allocation per field, for every event every reader decodes.
    let metadata = HashMap::<String, String>::deserialize(&row.metadata)
        .map_err(|e| fail(&row, format!("metadata: {e}")))?;
    let upcast = approval_aggregates::upcasters::apply(
        upcasters,
        SerializedEvent::new(
            row.aggregate_id.clone(),
            usize::try_from(row.sequence).unwrap_or(0),
            String::new(),
            row.event_type.clone(),
            row.event_version.clone(),
            std::mem::take(&mut row.payload),
            std::mem::take(&mut row.metadata),
        ),
    );
    let event = ApprovalEvent::deserialize(&upcast.payload)
        .map_err(|e| fail(&row, format!("payload: {e}")))?;
    let payload = match upcast.payload {
        Value::Object(mut tagged) if tagged.len() == 1 => tagged
            .remove(&row.event_type)
            .unwrap_or(Value::Object(tagged)),
        other => other,
    };
    Ok(FeedEvent {
        position: row.position,
        event_id: row.event_id,
        request_id,
        sequence: row.sequence,
        event_type: row.event_type,
        event_version: upcast.event_version,
        event,
        payload,
        metadata,
        recorded_at: row.recorded_at,
    })
}

#[cfg(test)]
mod tests {
    use approval_aggregates::upcasters::upcasters;
    use serde_json::json;

    use super::*;

    fn row(aggregate_id: &str, payload: Value) -> StoredRow {
        StoredRow {
            position: Position {
                tx_id: 7,
                global_id: 3,
            },
            event_id: Uuid::nil(),
            aggregate_id: aggregate_id.to_owned(),
            sequence: 4,
            event_type: "ApprovalRecorded".into(),
            event_version: "1.0".into(),
            payload,
            metadata: json!({"actor": "bob"}),
            recorded_at: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_row_decodes_through_the_upcasters_and_loses_its_tag() {
        let id = Uuid::new_v4();
        let event = decode(
            &upcasters(),
            row(
                &id.to_string(),
                json!({"ApprovalRecorded": {"step": 1, "approver": "bob", "comment": null,
                       "at": "2026-11-20T09:10:00Z"}}),
            ),
        )
        .unwrap();
        assert_eq!(event.request_id, RequestId(id));
        assert_eq!(event.event_version, "1.1");
        assert_eq!(event.payload["seen_version"], json!(3));
        assert_eq!(event.metadata["actor"], "bob");
    }

    #[test]
    fn a_row_that_does_not_decode_names_where_it_stands() {
        let refused = decode(&upcasters(), row("not-a-uuid", json!({}))).unwrap_err();
        assert_eq!(refused.position.tx_id, 7);
        assert!(refused.message.starts_with("aggregate id"), "{refused}");
    }
}
