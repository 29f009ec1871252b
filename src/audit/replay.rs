//! Point-in-time replay: a request's state and timeline as they were at a moment or a version,
//! folded from the event store alone with the aggregate's own `fold` after the same upcasters
//! the command path and the feed use. `audit replay` and `GET /v1/requests/{id}/history` both
//! answer from here; no read model is involved.

use approval_aggregates::{ApprovalRequest, Request, RequestId};
use approval_projections::requests::TimelineEntry;
use approval_projections::FeedEvent;
use chrono::{DateTime, Utc};

use crate::store::feed::{Feed, FeedError};

/// Where to stop folding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// After every event.
    Latest,
    /// After every event recorded at or before this moment.
    At(DateTime<Utc>),
    /// After the event with this sequence: the request at this version.
    Version(u64),
}

impl Cut {
    fn includes(self, e: &FeedEvent) -> bool {
        match self {
            Self::Latest => true,
            Self::At(moment) => e.recorded_at <= moment,
            Self::Version(version) => u64::try_from(e.sequence).is_ok_and(|s| s <= version),
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
    pub async fn load(feed: &Feed, id: RequestId) -> Result<Self, FeedError> {
        Ok(Self {
            events: feed.events_of(id).await?,
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
            Cut::At(moment) => moment,
            Cut::Latest | Cut::Version(_) => last_recorded?,
        };
        Some(Replay {
            request,
            timeline,
            as_of,
        })
    }
}
