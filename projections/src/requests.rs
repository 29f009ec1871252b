//! Projection `requests`: each request's folded state (the detail the API shows) and its
//! timeline, one entry per event.

use approval_aggregates::{ApprovalEvent, Request};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::fold::fold_batch_keeping_timers;
use crate::write::BatchWrite;
use crate::{FeedEvent, LoadedStates, Projection, ProjectionError, Schema};

/// The projection.
#[derive(Debug, Clone)]
pub struct RequestsProjection {
    state_table: String,
    write_states: String,
    write_timeline: String,
    write_timers: String,
    write_timers_gone: String,
}

impl RequestsProjection {
    /// Its name.
    pub const NAME: &'static str = "requests";

    /// The projection writing to the tables of `schema`.
    pub fn new(schema: &Schema) -> Self {
        let requests = schema.table("rm_requests");
        let timeline = schema.table("rm_timeline");
        let timers = schema.table("rm_timers");
        Self {
            state_table: requests.clone(),
            // The requests' states, and their new timeline entries.
            write_states: format!(
                "INSERT INTO {requests} (id, system, external_ref, requester, status, version, \
                     state, submitted_at, updated_at, due_at, step_due_at) \
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], \
                     $5::text[], $6::int8[], $7::jsonb[], $8::timestamptz[], \
                     $9::timestamptz[], $10::timestamptz[], $11::timestamptz[]) WHERE {{gate}} \
                 ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, \
                     version = EXCLUDED.version, state = EXCLUDED.state, \
                     updated_at = EXCLUDED.updated_at, due_at = EXCLUDED.due_at, \
                     step_due_at = EXCLUDED.step_due_at"
            ),
            // The timers of the requests whose timers changed: the ones they set now upserted
            // ($1: those requests; $2.. the timers), a row that holds already the same left as
            // it is, the rest of theirs (fired, or no longer applying) removed.
            write_timers: format!(
                "INSERT INTO {timers} AS old (request_id, timer, kind, rank, fire_at) \
                 SELECT * FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::int2[], \
                     $6::timestamptz[]) WHERE {{gate}} \
                 ON CONFLICT (request_id, timer) DO UPDATE SET kind = EXCLUDED.kind, \
                     rank = EXCLUDED.rank, fire_at = EXCLUDED.fire_at \
                 WHERE (old.kind, old.rank, old.fire_at) \
                     IS DISTINCT FROM (EXCLUDED.kind, EXCLUDED.rank, EXCLUDED.fire_at)"
            ),
            write_timers_gone: format!(
                "DELETE FROM {timers} AS old WHERE old.request_id = ANY($1) AND {{gate}} \
                     AND (old.request_id, old.timer) NOT IN \
                         (SELECT * FROM UNNEST($2::uuid[], $3::text[]))"
            ),
            write_timeline: format!(
                "INSERT INTO {timeline} (request_id, sequence, event_id, event_type, actor, \
                     comment, step, delegate, occurred_at, recorded_at) \
                 SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::uuid[], $4::text[], \
                     $5::text[], $6::text[], $7::int4[], $8::text[], $9::timestamptz[], \
                     $10::timestamptz[]) WHERE {{gate}} \
                 ON CONFLICT DO NOTHING"
            ),
        }
    }
}

#[derive(Default)]
struct StateRows {
    id: Vec<Uuid>,
    system: Vec<String>,
    external_ref: Vec<String>,
    requester: Vec<String>,
    status: Vec<&'static str>,
    version: Vec<i64>,
    state: Vec<serde_json::Value>,
    submitted_at: Vec<DateTime<Utc>>,
    updated_at: Vec<DateTime<Utc>>,
    due_at: Vec<Option<DateTime<Utc>>>,
    step_due_at: Vec<Option<DateTime<Utc>>>,
}

#[derive(Default)]
struct TimerRows {
    /// The changed requests that have deadlines: their timers are rewritten.
    timed: Vec<Uuid>,
    request_id: Vec<Uuid>,
    timer: Vec<String>,
    kind: Vec<&'static str>,
    rank: Vec<i16>,
    fire_at: Vec<DateTime<Utc>>,
}

#[derive(Default)]
struct TimelineRows {
    request_id: Vec<Uuid>,
    sequence: Vec<i64>,
    event_id: Vec<Uuid>,
    event_type: Vec<String>,
    actor: Vec<Option<String>>,
    comment: Vec<Option<String>>,
    step: Vec<Option<i32>>,
    delegate: Vec<Option<String>>,
    occurred_at: Vec<DateTime<Utc>>,
    recorded_at: Vec<DateTime<Utc>>,
}

/// The step an event happened at, and the delegate it named, for the timeline.
fn step_and_delegate(event: &ApprovalEvent) -> (Option<i32>, Option<String>) {
    let step = |s: &usize| i32::try_from(*s).ok();
    match event {
        ApprovalEvent::ApprovalRecorded { step: s, .. }
        | ApprovalEvent::StepCompleted { step: s, .. }
        | ApprovalEvent::RequestRejected { step: s, .. }
        | ApprovalEvent::RequestReturned { step: s, .. }
        | ApprovalEvent::ReminderSent { step: s, .. }
        | ApprovalEvent::StepEscalated { step: s, .. }
        | ApprovalEvent::InfoRequested { step: s, .. } => (step(s), None),
        ApprovalEvent::ApproverDelegated { step: s, to, .. } => (step(s), Some(to.0.clone())),
        _ => (None, None),
    }
}

impl Projection for RequestsProjection {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_requests", "rm_timeline", "rm_timers"]
    }

    fn state_table(&self) -> Option<(&str, &'static str)> {
        Some((&self.state_table, "id"))
    }

    fn write(
        &self,
        write: &mut BatchWrite,
        events: &[FeedEvent],
        states: LoadedStates,
    ) -> Result<bool, ProjectionError> {
        let folded = fold_batch_keeping_timers(events, states)?;
        if folded.changed.is_empty() {
            return Ok(true);
        }
        let mut rows = StateRows::default();
        let mut timers = TimerRows::default();
        for id in &folded.changed {
            let Some(r) = folded.states.get(id) else {
                continue;
            };
            rows.id.push(*id);
            rows.system.push(r.system.0.clone());
            rows.external_ref.push(r.external_ref.clone());
            rows.requester.push(r.requester.0.clone());
            rows.status.push(r.status.as_str());
            rows.version
                .push(i64::try_from(r.version).unwrap_or(i64::MAX));
            rows.state.push(serde_json::to_value(r)?);
            rows.submitted_at.push(r.submitted_at);
            rows.updated_at.push(r.updated_at);
            rows.due_at.push(r.due_at);
            rows.step_due_at
                .push(r.open_step().and_then(|step| step.due_at));
            // Requests without deadlines (most) never set a timer, and most events of those
            // with deadlines leave their timers as they were (an approval within a step, say):
            // nothing to write for them.
            if !r.has_deadlines() {
                continue;
            }
            let now = r.timers();
            if folded.timers_before.get(id).map_or(&[][..], Vec::as_slice) == now.as_slice() {
                continue;
            }
            timers.timed.push(*id);
            for timer in now {
                timers.request_id.push(*id);
                timers.timer.push(timer.key());
                timers.kind.push(timer.kind.name());
                timers.rank.push(timer.kind.rank());
                timers.fire_at.push(timer.fire_at);
            }
        }

        let mut t = TimelineRows::default();
        for &index in &folded.applied {
            let e = &events[index];
            let entry = TimelineEntry::of(e);
            t.request_id.push(e.request_id.0);
            t.sequence.push(entry.sequence);
            t.event_id.push(entry.event_id);
            t.event_type.push(entry.event_type);
            t.actor.push(entry.actor);
            t.comment.push(entry.comment);
            t.step.push(entry.step);
            t.delegate.push(entry.delegate);
            t.occurred_at.push(entry.occurred_at);
            t.recorded_at.push(entry.recorded_at);
        }
        let before = write.bound();
        write.bind(&rows.id)?;
        write.bind(&rows.system)?;
        write.bind(&rows.external_ref)?;
        write.bind(&rows.requester)?;
        write.bind(&rows.status)?;
        write.bind(&rows.version)?;
        write.bind(&rows.state)?;
        write.bind(&rows.submitted_at)?;
        write.bind(&rows.updated_at)?;
        write.bind(&rows.due_at)?;
        write.bind(&rows.step_due_at)?;
        write.cte("requests_states", &self.write_states, before);
        if !timers.timed.is_empty() {
            let before = write.bound();
            write.bind(&timers.timed)?;
            write.bind(&timers.request_id)?;
            write.bind(&timers.timer)?;
            write.bind(&timers.kind)?;
            write.bind(&timers.rank)?;
            write.bind(&timers.fire_at)?;
            write.cte("requests_timers", &self.write_timers, before);
            write.cte("requests_timers_gone", &self.write_timers_gone, before);
        }
        let before = write.bound();
        write.bind(&t.request_id)?;
        write.bind(&t.sequence)?;
        write.bind(&t.event_id)?;
        write.bind(&t.event_type)?;
        write.bind(&t.actor)?;
        write.bind(&t.comment)?;
        write.bind(&t.step)?;
        write.bind(&t.delegate)?;
        write.bind(&t.occurred_at)?;
        write.bind(&t.recorded_at)?;
        write.cte("requests_timeline", &self.write_timeline, before);
        Ok(true)
    }
}

/// One entry of a request's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct TimelineEntry {
    /// The event's sequence: the request's version after it.
    pub sequence: i64,
    /// The event's stable id.
    pub event_id: Uuid,
    /// The event's type name.
    pub event_type: String,
    /// The person who acted, if a person did.
    pub actor: Option<String>,
    /// Their comment or reason.
    pub comment: Option<String>,
    /// The step it happened at.
    pub step: Option<i32>,
    /// The person a delegation named.
    pub delegate: Option<String>,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
}

impl TimelineEntry {
    /// The entry of a feed event: the projection stores these, and the audit replay builds
    /// them straight from the event store.
    pub fn of(e: &FeedEvent) -> Self {
        let (actor, comment) = e.event.actor_and_comment();
        let (step, delegate) = step_and_delegate(&e.event);
        Self {
            sequence: e.sequence,
            event_id: e.event_id,
            event_type: e.event_type.clone(),
            actor: actor.map(|a| a.0.clone()),
            comment: comment.map(str::to_owned),
            step,
            delegate,
            occurred_at: e.event.at(),
            recorded_at: e.recorded_at,
        }
    }
}

/// The current state of request `id`, if the projection has it.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Request>, ProjectionError> {
    let row: Option<(serde_json::Value,)> =
        sqlx::query_as("SELECT state FROM rm_requests WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(match row {
        Some((state,)) => Some(serde_json::from_value(state)?),
        None => None,
    })
}

/// The timeline of request `id`, oldest first.
pub async fn timeline(pool: &PgPool, id: Uuid) -> Result<Vec<TimelineEntry>, ProjectionError> {
    Ok(sqlx::query_as(
        "SELECT sequence, event_id, event_type, actor, comment, step, delegate, occurred_at, recorded_at \
         FROM rm_timeline WHERE request_id = $1 ORDER BY sequence",
    )
    .bind(id)
    .fetch_all(pool)
    .await?)
}

/// The current states of the requests in `ids` that the projection has.
pub async fn states(
    executor: impl sqlx::PgExecutor<'_>,
    ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, Request>, ProjectionError> {
    let rows: Vec<(Uuid, serde_json::Value)> =
        sqlx::query_as("SELECT id, state FROM rm_requests WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(executor)
            .await?;
    rows.into_iter()
        .map(|(id, state)| Ok((id, serde_json::from_value(state)?)))
        .collect()
}

/// A current step of a pending request whose deadline has passed.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct OverdueStep {
    /// The request.
    pub request_id: Uuid,
    /// Its source system.
    pub system: String,
    /// Its reference there.
    pub external_ref: String,
    /// Its title.
    pub title: String,
    /// The current step's index, from 0.
    pub step: i32,
    /// When the step was due.
    pub due_at: DateTime<Utc>,
}

/// How many current steps of pending requests were due by `now`, and the `limit` longest
/// overdue of them: both walk the partial index of pending steps' deadlines.
pub async fn overdue_steps(
    pool: &PgPool,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<(i64, Vec<OverdueStep>), ProjectionError> {
    let (count,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM rm_requests WHERE status = 'pending' AND step_due_at <= $1",
    )
    .bind(now)
    .fetch_one(pool)
    .await?;
    let oldest = sqlx::query_as(
        "SELECT id AS request_id, system, external_ref, \
                coalesce(state->>'title', '') AS title, \
                coalesce((state->>'current_step')::int4, 0) AS step, step_due_at AS due_at \
         FROM rm_requests WHERE status = 'pending' AND step_due_at <= $1 \
         ORDER BY step_due_at, id LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok((count, oldest))
}
