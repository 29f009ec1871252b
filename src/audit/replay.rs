//! Point-in-time replay: a request's state and timeline as they were at a moment or a version,
//! folded from the event store alone with the aggregate's own `fold` after the same upcasters
//! the command path and the feed use. `audit replay` and `GET /v1/requests/{id}/history` both
//! answer from here; no read model is involved.

use approval_aggregates::{ApprovalRequest, Request, RequestId};
use approval_projections::requests::TimelineEntry;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::feed::{FeedError, FeedEvent};

/// Where to stop folding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// After every event.
    Latest,
    /// After every event recorded at or before this moment.
    At(DateTime<Utc>),
    /// After the event with this sequence: the request at this version.
    Version(u64),
    /// Whichever of the two comes first.
    AtAndVersion(DateTime<Utc>, u64),
}

impl Cut {
    fn includes(self, e: &FeedEvent) -> bool {
        match self {
            Self::Latest => true,
            Self::At(moment) => e.recorded_at <= moment,
            Self::Version(version) => u64::try_from(e.sequence).is_ok_and(|s| s <= version),
            Self::AtAndVersion(moment, version) => {
                Self::At(moment).includes(e) && Self::Version(version).includes(e)
            }
        }
    }
}

/// Every event of one request, as the store holds them (upcast to the current shapes).
#[derive(Debug, Clone)]
pub struct History {
    events: Vec<FeedEvent>,
}

/// A request as it stood at a cut.
#[derive(Debug, Clone)]
pub struct Replay {
    /// Its state.
    pub request: Request,
    /// Its events up to the cut, oldest first.
    pub timeline: Vec<TimelineEntry>,
    /// The moment it describes: the moment asked for, or else when its last event was recorded.
    pub as_of: DateTime<Utc>,
}

impl History {
    /// Loads request `id`'s events; empty when the store has none.
    pub async fn load(pool: &PgPool, id: RequestId) -> Result<Self, FeedError> {
        Ok(Self {
            events: crate::store::events::history(pool, id, i64::MAX).await?,
        })
    }

    /// A history of `events`, which must be one request's, in sequence order.
    pub fn of(events: Vec<FeedEvent>) -> Self {
        Self { events }
    }

    /// The request as it stands now; `None` when it was never submitted.
    pub fn current(&self) -> Option<Request> {
        self.as_of(Cut::Latest).map(|r| r.request)
    }

    /// The request as it stood at `cut`; `None` when it did not exist yet.
    pub fn as_of(&self, cut: Cut) -> Option<Replay> {
        let mut aggregate = ApprovalRequest::default();
        let mut timeline = vec![];
        let mut last_recorded = None;
        for e in self.events.iter().take_while(|e| cut.includes(e)) {
            aggregate.fold(e.event.clone());
            timeline.push(TimelineEntry::of(e));
            last_recorded = Some(e.recorded_at);
        }
        let request = aggregate.request?;
        let as_of = match cut {
            Cut::At(moment) | Cut::AtAndVersion(moment, _) => moment,
            Cut::Latest | Cut::Version(_) => last_recorded?,
        };
        Some(Replay {
            request,
            timeline,
            as_of,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::feed::Position;
    use approval_aggregates::{ApprovalEvent, Rule, Status, StepSpec, SystemId, Timestamp, UserId};
    use chrono::TimeZone;
    use uuid::Uuid;

    use super::*;

    fn at(minute: u32) -> Timestamp {
        Utc.with_ymd_and_hms(2026, 11, 20, 9, minute, 0)
            .single()
            .unwrap_or_default()
    }

    fn feed_event(sequence: i64, event: ApprovalEvent, recorded: u32) -> FeedEvent {
        FeedEvent {
            position: Position {
                tx_id: sequence,
                global_id: sequence,
            },
            event_id: Uuid::from_u128(sequence as u128),
            request_id: RequestId(Uuid::nil()),
            sequence,
            event_type: event.type_name().into(),
            event_version: event.version().into(),
            payload: serde_json::Value::Null,
            event,
            metadata: HashMap::new(),
            recorded_at: at(recorded),
        }
    }

    /// Submitted at 9:00, approved by alice at 9:10 (which completes the only step) and so
    /// approved.
    fn history() -> History {
        let approver = UserId::new("alice");
        History::of(vec![
            feed_event(
                1,
                ApprovalEvent::RequestSubmitted {
                    request_id: RequestId(Uuid::nil()),
                    system: SystemId::new("erp"),
                    external_ref: "PO-1".into(),
                    kind: "purchase_order".into(),
                    title: "PO 1".into(),
                    requester: UserId::new("dina"),
                    amount: None,
                    steps: vec![StepSpec::new(vec![approver.clone()], Rule::Any)],
                    due_at: None,
                    details: None,
                    link: None,
                    at: at(0),
                    attachments: vec![],
                },
                0,
            ),
            feed_event(
                2,
                ApprovalEvent::ApprovalRecorded {
                    step: 0,
                    approver: approver.clone(),
                    comment: None,
                    seen_version: 1,
                    at: at(10),
                    on_behalf_of: None,
                },
                10,
            ),
            feed_event(
                3,
                ApprovalEvent::StepCompleted {
                    step: 0,
                    at: at(10),
                },
                10,
            ),
            feed_event(
                4,
                ApprovalEvent::RequestApproved {
                    decided_by: approver,
                    comment: None,
                    at: at(10),
                },
                10,
            ),
        ])
    }

    #[test]
    fn a_moment_between_two_events_shows_the_state_after_the_first() {
        let replay = history().as_of(Cut::At(at(5)));
        let replay = replay.unwrap_or_else(|| panic!("submitted by then"));
        assert_eq!(replay.request.version, 1);
        assert_eq!(replay.request.status, Status::Pending);
        assert_eq!(replay.timeline.len(), 1);
        assert_eq!(replay.as_of, at(5));
    }

    #[test]
    fn a_version_and_the_latest_state_show_as_of_their_last_event() {
        let h = history();
        let two = h
            .as_of(Cut::Version(2))
            .unwrap_or_else(|| panic!("version 2"));
        assert_eq!(two.request.version, 2);
        assert_eq!(two.as_of, at(10));
        assert_eq!(h.current().map(|r| r.status), Some(Status::Approved));
    }

    #[test]
    fn before_the_submission_there_is_no_request() {
        let h = history();
        assert!(h
            .as_of(Cut::At(at(0) - chrono::Duration::seconds(1)))
            .is_none());
        assert!(h.as_of(Cut::Version(0)).is_none());
        assert!(History::of(vec![]).current().is_none());
    }
}
