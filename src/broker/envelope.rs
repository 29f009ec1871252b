//! What goes on the exchange: one [`Envelope`] per event, and [`Sources`], the system and
//! reference of each request that every envelope names.

use std::collections::HashMap;

use approval_aggregates::ApprovalEvent;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::feed::{FeedError, FeedEvent, Position};
use crate::store::events;

/// A message on the exchange: one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The event's stable id; also the message's `message_id`. Deduplicate on it.
    pub event_id: Uuid,
    /// Its place in the global feed; compare as the pair (`tx_id`, `global_id`).
    pub position: Position,
    /// The request.
    pub request_id: Uuid,
    /// The request's legacy system.
    pub system: String,
    /// The system's reference of the request.
    pub external_ref: String,
    /// The event's sequence in its request (the request's version after it).
    pub sequence: i64,
    /// The event's type, such as `RequestApproved`.
    pub event_type: String,
    /// The version of the payload's shape.
    pub event_version: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// When it was committed.
    pub recorded_at: DateTime<Utc>,
    /// The event's fields.
    pub payload: Value,
    /// Who caused it: `actor`, `system`, `request_id` (the HTTP request id).
    pub metadata: HashMap<String, String>,
}

impl Envelope {
    /// The envelope of `event` of a request from `system` under `external_ref`.
    pub fn of(event: &FeedEvent, system: &str, external_ref: &str) -> Self {
        Self {
            event_id: event.event_id,
            position: event.position,
            request_id: event.request_id.0,
            system: system.to_owned(),
            external_ref: external_ref.to_owned(),
            sequence: event.sequence,
            event_type: event.event_type.clone(),
            event_version: event.event_version.clone(),
            occurred_at: event.event.at(),
            recorded_at: event.recorded_at,
            payload: event.payload.clone(),
            metadata: event.metadata.clone(),
        }
    }
}

/// The most requests [`Sources`] remembers before it starts afresh.
const REMEMBERED: usize = 100_000;

/// The system and external reference of requests, as their submissions say, remembered.
#[derive(Debug, Default)]
pub struct Sources {
    known: HashMap<Uuid, (String, String)>,
}

impl Sources {
    /// Learns the source of every request of `events` not yet known: from a submission among
    /// them, else from the request's stored submission, decoded like every other event.
    pub async fn resolve(
        &mut self,
        executor: impl sqlx::PgExecutor<'_>,
        events: &[FeedEvent],
    ) -> Result<(), FeedError> {
        if self.known.len() > REMEMBERED {
            self.known.clear();
        }
        // A submission in the batch says it itself (a third of all commands are submissions).
        for event in events {
            self.learn(event);
        }
        let mut missing: Vec<String> = events
            .iter()
            .filter(|e| !self.known.contains_key(&e.request_id.0))
            .map(|e| e.request_id.to_string())
            .collect();
        missing.sort();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        for submission in events::submissions(executor, &missing).await? {
            self.learn(&submission);
        }
        Ok(())
    }

    fn learn(&mut self, event: &FeedEvent) {
        match &event.event {
            ApprovalEvent::RequestSubmitted {
                system,
                external_ref,
                ..
            } => {
                self.known.insert(
                    event.request_id.0,
                    (system.as_str().to_owned(), external_ref.clone()),
                );
            }
            // A person's absences come from no system: they leave under a name of their own,
            // with the absent person as the reference, and need no look-up.
            ApprovalEvent::AbsenceRecorded { person, .. }
            | ApprovalEvent::AbsenceEnded { person, .. } => {
                self.known.insert(
                    event.request_id.0,
                    (
                        crate::config::PEOPLE_SYSTEM.to_owned(),
                        person.as_str().to_owned(),
                    ),
                );
            }
            _ => {}
        }
    }

    /// The system and reference of request `id`, if known.
    pub fn of(&self, id: Uuid) -> Option<(&str, &str)> {
        self.known
            .get(&id)
            .map(|(system, external_ref)| (system.as_str(), external_ref.as_str()))
    }

    /// The envelope of `event`; a request whose source is unknown (its submission is not in
    /// the store) gets empty names.
    pub fn envelope(&self, event: &FeedEvent) -> Envelope {
        let (system, external_ref) = self.of(event.request_id.0).unwrap_or_default();
        Envelope::of(event, system, external_ref)
    }
}
