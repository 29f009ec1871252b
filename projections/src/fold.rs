//! Per-request state for the projections that need it: load the states a batch touches in one
//! query, fold the batch with the aggregate's own `apply`, and report what changed.
//!
//! A request's stored version says which events it has seen, so an event at or below it is
//! skipped: replaying a batch changes nothing.

use std::collections::{HashMap, HashSet};

use approval_aggregates::{ApprovalRequest, Request, Timer};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{FeedEvent, LoadedStates, ProjectionError};

/// The states a batch touched, after folding it.
#[derive(Debug, Default)]
pub struct Folded {
    /// Every loaded or created state, by request id.
    pub states: HashMap<Uuid, Request>,
    /// The requests whose state changed, in the order the batch first touched them.
    pub changed: Vec<Uuid>,
    /// The indexes (into the batch) of the events that were applied.
    pub applied: Vec<usize>,
    /// The timers each changed request with deadlines set before the batch (kept only when
    /// asked for, by [`fold_batch_keeping_timers`]; a request new in the batch has none).
    pub timers_before: HashMap<Uuid, Vec<Timer>>,
}

/// The stored states of the requests of `events`, read through `conn` from `table` (a
/// projection's [`crate::Projection::state_table`]), keyed by its request-id column `column`.
pub async fn read_states(
    conn: &mut PgConnection,
    (table, column): (&str, &str),
    events: &[FeedEvent],
) -> Result<LoadedStates, ProjectionError> {
    let mut ids: Vec<Uuid> = events.iter().map(|e| e.request_id.0).collect();
    ids.sort_unstable();
    ids.dedup();
    let rows: Vec<(Uuid, serde_json::Value)> = sqlx::query_as(&format!(
        "SELECT {column}, state FROM {table} WHERE {column} = ANY($1)"
    ))
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Folds the batch into `stored`, the stored states of its requests (a request missing from
/// them has none yet).
pub fn fold_batch(events: &[FeedEvent], stored: LoadedStates) -> Result<Folded, ProjectionError> {
    fold(events, stored, false)
}

/// [`fold_batch`], keeping [`Folded::timers_before`] too.
pub fn fold_batch_keeping_timers(
    events: &[FeedEvent],
    stored: LoadedStates,
) -> Result<Folded, ProjectionError> {
    fold(events, stored, true)
}

fn fold(
    events: &[FeedEvent],
    stored: LoadedStates,
    keep_timers: bool,
) -> Result<Folded, ProjectionError> {
    let mut folded = Folded::default();
    let mut touched = HashSet::new();
    for (id, state) in stored {
        folded.states.insert(id, serde_json::from_value(state)?);
    }
    for (index, event) in events.iter().enumerate() {
        // A person's absences share the feed; they are no request's.
        if !event.event.concerns_a_request() {
            continue;
        }
        let id = event.request_id.0;
        let mut aggregate = ApprovalRequest {
            request: folded.states.remove(&id),
        };
        let seen = aggregate.request.as_ref().map_or(0, |r| r.version);
        if u64::try_from(event.sequence).unwrap_or(0) > seen {
            if touched.insert(id) {
                folded.changed.push(id);
                if let Some(before) = aggregate.request.as_ref().filter(|_| keep_timers) {
                    if before.has_deadlines() {
                        folded.timers_before.insert(id, before.timers());
                    }
                }
            }
            aggregate.fold(event.event.clone());
            folded.applied.push(index);
        }
        if let Some(request) = aggregate.request {
            folded.states.insert(id, request);
        }
    }
    Ok(folded)
}
