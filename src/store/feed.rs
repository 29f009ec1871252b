//! The global feed: every event in one order that no reader ever skips.
//!
//! Each event row carries the id of the transaction that wrote it (`tx_id`) and an identity
//! (`global_id`). The feed is ordered by `(tx_id, global_id)` and is read only below the oldest
//! transaction still running (`pg_snapshot_xmin` of the reading statement's snapshot): every
//! transaction below it has committed or rolled back, so nothing can appear behind a reader's
//! cursor later. A rolled-back transaction leaves a hole that nobody waits for. Transaction ids
//! are handed out before a transaction can see another's commit, so a request's later event is
//! always behind its earlier one. See docs/decisions/0002-gap-free-feed.md.

use std::collections::HashMap;
use std::time::Duration;

use approval_aggregates::upcasters::upcasters;
use approval_aggregates::{ApprovalEvent, RequestId};
use approval_projections::{FeedEvent, LoadedStates, Position};
use chrono::{DateTime, Utc};
use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use serde::Deserialize as _;
use serde_json::Value;
use sqlx::{FromRow, PgConnection, PgPool, Row as _};
use uuid::Uuid;

/// Why a batch could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored event does not decode. Readers stop here rather than skip it.
    #[error("event at {position:?} ({event_type} {event_version}) does not decode: {message}")]
    Decode {
        /// Where it stands.
        position: Position,
        /// Its stored type.
        event_type: String,
        /// Its stored version.
        event_version: String,
        /// What went wrong.
        message: String,
    },
}

/// A batch of the feed.
#[derive(Debug, Default)]
pub struct Batch {
    /// The events after the cursor, in feed order.
    pub events: Vec<FeedEvent>,
    /// Whether committed events exist after the batch that it does not hold: held back behind a
    /// transaction still running (or, after an empty batch, committed since the read). The
    /// reader should look again soon rather than sleep. [`Feed::read_after_on`] answers it for
    /// every batch (in the read's own statement and snapshot when the batch has events);
    /// [`Feed::read_with_states_on`] only for an empty one, and a batch of it with events says
    /// `false` (its reader reads again soon anyway).
    pub held_back: bool,
}

/// How soon a reader looks again when [`Batch::held_back`] says committed events wait behind a
/// transaction still running.
pub const HELD_BACK_RETRY: Duration = Duration::from_millis(2);

/// A row of [`Feed::read_after_on`]: the event and whether events are held back.
#[derive(sqlx::FromRow)]
struct HeldRow {
    #[sqlx(flatten)]
    row: Row,
    held_back: bool,
}

/// Reads the global feed.
pub struct Feed {
    pool: PgPool,
    upcasters: Vec<Box<dyn EventUpcaster>>,
}

/// An event row as stored, before decoding.
#[derive(sqlx::FromRow)]
pub(crate) struct Row {
    tx_id: i64,
    global_id: i64,
    event_id: Uuid,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: Value,
    metadata: Value,
    recorded_at: DateTime<Utc>,
}

impl Feed {
    /// A reader over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            upcasters: upcasters(),
        }
    }

    /// Up to `limit` events after `after`, in feed order.
    pub async fn read_after(&self, after: Position, limit: i64) -> Result<Batch, FeedError> {
        let mut conn = self.pool.acquire().await?;
        self.read_after_on(&mut conn, after, limit).await
    }

    /// [`Feed::read_after`] on `conn`, for a reader that goes on to write through the same
    /// connection (one checkout of the pool for both).
    pub async fn read_after_on(
        &self,
        conn: &mut PgConnection,
        after: Position,
        limit: i64,
    ) -> Result<Batch, FeedError> {
        // Whether events are held back is asked in the same statement (evaluated once for it),
        // so that a reader that got part of what is committed knows whether to look again soon
        // or to wait for the next commit without a round trip of its own.
        let rows: Vec<HeldRow> = sqlx::query_as(
            "SELECT tx_id, global_id, event_id, aggregate_id, sequence, event_type, event_version, \
                    payload, metadata, recorded_at, \
                    (SELECT EXISTS (SELECT 1 FROM events \
                         WHERE tx_id >= pg_snapshot_xmin(pg_current_snapshot())::text::bigint)) \
                        AS held_back \
             FROM events \
             WHERE (tx_id, global_id) > ($1, $2) \
               AND tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint \
             ORDER BY tx_id, global_id \
             LIMIT $3",
        )
        .bind(after.tx_id)
        .bind(after.global_id)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        let held_back = match rows.first() {
            Some(first) => first.held_back,
            None => held_back(conn, after).await?,
        };
        let events = rows
            .into_iter()
            .map(|row| decode(&self.upcasters, row.row))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Batch { events, held_back })
    }

    /// [`Feed::read_after_on`] that also reads, in the same statement, the stored state of each
    /// request in the batch from each table of `states` (built by [`StatesQuery::new`]): one
    /// map per table, in its order. The maps are `None` when an event's aggregate id is not in
    /// the canonical form the tables are keyed by (the caller then reads the states itself).
    pub async fn read_with_states_on(
        &self,
        conn: &mut PgConnection,
        states: &StatesQuery,
        after: Position,
        limit: i64,
    ) -> Result<(Batch, Option<Vec<LoadedStates>>), FeedError> {
        if states.tables == 0 {
            return Ok((self.read_after_on(conn, after, limit).await?, None));
        }
        let rows = sqlx::query(&states.sql)
            .bind(after.tx_id)
            .bind(after.global_id)
            .bind(limit)
            .fetch_all(&mut *conn)
            .await?;
        let mut loaded = vec![LoadedStates::new(); states.tables];
        let mut canonical = true;
        let mut events = Vec::with_capacity(rows.len());
        for pg_row in rows {
            let row = Row::from_row(&pg_row)?;
            let aggregate_id = row.aggregate_id.clone();
            let event = decode(&self.upcasters, row)?;
            canonical &= event.request_id.0.hyphenated().to_string() == aggregate_id;
            // The states are the last columns, one per table.
            let first_state = pg_row.len() - states.tables;
            for (i, map) in loaded.iter_mut().enumerate() {
                let state: Option<Value> = pg_row.try_get(first_state + i)?;
                if let Some(state) = state {
                    map.insert(event.request_id.0, state);
                }
            }
            events.push(event);
        }
        let held_back = events.is_empty() && held_back(conn, after).await?;
        Ok((Batch { events, held_back }, canonical.then_some(loaded)))
    }

    /// Every committed event of request `id`, in sequence order, decoded and upcast exactly as
    /// the feed delivers them: what the audit replay folds.
    pub async fn events_of(&self, id: RequestId) -> Result<Vec<FeedEvent>, FeedError> {
        crate::store::events::history(&self.pool, id, i64::MAX).await
    }
}

/// The feed read of [`Feed::read_with_states_on`] for a group of projections that keep
/// per-request states: the batch, and beside the first event of each request in it, the
/// request's stored state in each table.
pub struct StatesQuery {
    sql: String,
    tables: usize,
}

impl StatesQuery {
    /// The read for `tables`, each `(table, request id column)` with a `jsonb` column `state`.
    /// Table and column names come from the projections, never from input.
    pub fn new(tables: &[(&str, &str)]) -> Self {
        let states: String = tables
            .iter()
            .enumerate()
            .map(|(i, (table, id))| {
                format!(
                    ", CASE WHEN b.first THEN (SELECT s.state FROM {table} s \
                     WHERE s.{id} = b.aggregate_id::uuid) END AS state_{i}"
                )
            })
            .collect();
        // The cast is only tried on ids in the canonical form: anything else is left to the
        // decoder, which names the event it cannot read.
        let sql = format!(
            "WITH batch AS ( \
                 SELECT {ROW_COLUMNS} FROM events \
                 WHERE (tx_id, global_id) > ($1, $2) \
                   AND tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint \
                 ORDER BY tx_id, global_id \
                 LIMIT $3 \
             ), b AS ( \
                 SELECT *, aggregate_id ~ '^[0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}$' \
                     AND row_number() OVER (PARTITION BY aggregate_id ORDER BY tx_id, global_id) = 1 \
                     AS first \
                 FROM batch \
             ) \
             SELECT {ROW_COLUMNS}{states} FROM b ORDER BY tx_id, global_id"
        );
        Self {
            sql,
            tables: tables.len(),
        }
    }
}

/// After a read that found nothing after `after`: whether committed events are there now, held
/// back behind a transaction still running or committed since the read. The reader should then
/// look again soon rather than sleep.
///
/// Asked in a statement of its own, so with a later snapshot than the read's: asking it as
/// "events at or above the oldest running transaction" would miss an event whose blocker rolled
/// back in between (no commit, so no wake-up), and the reader would sleep on it until its next
/// poll. Anything after the cursor is exactly what the next read would find.
async fn held_back(conn: &mut PgConnection, after: Position) -> Result<bool, sqlx::Error> {
    let (held,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM events WHERE (tx_id, global_id) > ($1, $2))")
            .bind(after.tx_id)
            .bind(after.global_id)
            .fetch_one(conn)
            .await?;
    Ok(held)
}

/// The columns of an event row that [`decode`] reads.
pub(crate) const ROW_COLUMNS: &str = "tx_id, global_id, event_id, aggregate_id, sequence, \
    event_type, event_version, payload, metadata, recorded_at";

/// Decodes a stored row into a feed event, through the upcasters.
pub(crate) fn decode(
    upcasters: &[Box<dyn EventUpcaster>],
    mut row: Row,
) -> Result<FeedEvent, FeedError> {
    let position = Position {
        tx_id: row.tx_id,
        global_id: row.global_id,
    };
    let fail = |row: &Row, message: String| FeedError::Decode {
        position,
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
    let upcast = upcast(
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
        position,
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

/// Applies every upcaster that accepts the event, in order, as cqrs-es does on its own path.
pub fn upcast(upcasters: &[Box<dyn EventUpcaster>], event: SerializedEvent) -> SerializedEvent {
    approval_aggregates::upcasters::apply(upcasters, event)
}

/// How far a reader at `at` is behind the feed's head: events (counted up to `cap`) and the age of
/// the oldest event it has yet to read.
pub async fn lag(
    pool: &PgPool,
    at: Position,
    cap: i64,
) -> Result<(i64, Option<DateTime<Utc>>), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), min(recorded_at) FROM ( \
             SELECT recorded_at FROM events WHERE (tx_id, global_id) > ($1, $2) \
             ORDER BY tx_id, global_id LIMIT $3) behind",
    )
    .bind(at.tx_id)
    .bind(at.global_id)
    .bind(cap)
    .fetch_one(pool)
    .await
}

/// The position of the last event no running transaction can precede: where a reader that
/// only wants what happens from now on starts.
pub async fn head(pool: &PgPool) -> Result<Position, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT tx_id, global_id FROM events \
         WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint \
         ORDER BY tx_id DESC, global_id DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map_or(Position::START, |(tx_id, global_id)| Position {
        tx_id,
        global_id,
    }))
}
