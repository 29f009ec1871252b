//! Reading the global feed, and the rule of what a reader may see: the one place that names the
//! snapshot horizon.
//!
//! Each event row carries the id of the transaction that wrote it (`tx_id`) and an identity
//! (`global_id`). The feed is ordered by `(tx_id, global_id)` and is read only below the oldest
//! transaction still running (`pg_snapshot_xmin` of the reading statement's snapshot): every
//! transaction below it has committed or rolled back, so nothing can appear behind a reader's
//! cursor later. A rolled-back transaction leaves a hole that nobody waits for. Transaction ids
//! are handed out before a transaction can see another's commit, so a request's later event is
//! always behind its earlier one. See docs/decisions/0002-gap-free-feed.md.

use std::time::Duration;

use approval_aggregates::upcasters::upcasters;
use approval_feed::{DecodeError, FeedEvent, Position, StoredRow};
use approval_projections::LoadedStates;
use chrono::{DateTime, Utc};
use cqrs_es::persist::EventUpcaster;
use serde_json::Value;
use sqlx::{FromRow, PgConnection, PgPool, Row as _};
use uuid::Uuid;

/// The oldest transaction still running, as the reading statement's snapshot sees it: the feed's
/// horizon. Everything below it has committed or rolled back for good.
macro_rules! horizon {
    () => {
        "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
    };
}
const HORIZON: &str = horizon!();

/// Why a batch could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored event does not decode. Readers stop here rather than skip it.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// A batch of the feed.
#[derive(Debug, Default)]
pub struct Batch {
    /// The events after the cursor, in feed order.
    pub events: Vec<FeedEvent>,
    /// Whether committed events exist after the batch that it does not hold: held back behind a
    /// transaction still running (or, after an empty batch, committed since the read). The
    /// reader should look again soon rather than wait for the next commit.
    pub held_back: bool,
    /// For a read with states ([`Feed::read_with_states_on`]): the stored state of each request
    /// of the batch in each table, one map per table in its order; `None` when an event's
    /// aggregate id is not in the canonical form the tables are keyed by (the reader then reads
    /// the states itself), or for a plain read.
    pub states: Option<Vec<LoadedStates>>,
}

/// How soon a reader looks again when [`Batch::held_back`] says committed events wait behind a
/// transaction still running.
pub const HELD_BACK_RETRY: Duration = Duration::from_millis(2);

/// A row of a feed read: the event and whether events are held back.
#[derive(sqlx::FromRow)]
struct HeldRow {
    #[sqlx(flatten)]
    row: Row,
    held_back: bool,
}

/// Whether committed events are held back: asked in the reading statement, with its snapshot.
const HELD_BACK: &str = concat!(
    "(SELECT EXISTS (SELECT 1 FROM events WHERE tx_id >= ",
    horizon!(),
    ")) AS held_back"
);

/// Reads the global feed.
pub struct Feed {
    upcasters: Vec<Box<dyn EventUpcaster>>,
}

impl Default for Feed {
    fn default() -> Self {
        Self::new()
    }
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

impl Row {
    /// The row as the feed crate decodes it.
    fn stored(self) -> StoredRow {
        StoredRow {
            position: Position {
                tx_id: self.tx_id,
                global_id: self.global_id,
            },
            event_id: self.event_id,
            aggregate_id: self.aggregate_id,
            sequence: self.sequence,
            event_type: self.event_type,
            event_version: self.event_version,
            payload: self.payload,
            metadata: self.metadata,
            recorded_at: self.recorded_at,
        }
    }

    /// Decodes the row through `upcasters`.
    pub(crate) fn decode(
        self,
        upcasters: &[Box<dyn EventUpcaster>],
    ) -> Result<FeedEvent, DecodeError> {
        approval_feed::decode(upcasters, self.stored())
    }
}

/// The columns of an event row that [`Row`] reads.
pub(crate) const ROW_COLUMNS: &str = "tx_id, global_id, event_id, aggregate_id, sequence, \
    event_type, event_version, payload, metadata, recorded_at";

impl Feed {
    /// A reader, decoding through the aggregate's upcasters.
    pub fn new() -> Self {
        Self {
            upcasters: upcasters(),
        }
    }

    /// Up to `limit` events after `after`, in feed order, read on `conn`.
    pub async fn read_after_on(
        &self,
        conn: &mut PgConnection,
        after: Position,
        limit: i64,
    ) -> Result<Batch, FeedError> {
        // Whether events are held back is asked in the same statement (evaluated once for it),
        // so that a reader that got part of what is committed knows whether to look again soon
        // or to wait for the next commit without a round trip of its own.
        let rows: Vec<HeldRow> = sqlx::query_as(&format!(
            "SELECT {ROW_COLUMNS}, {HELD_BACK} FROM events \
             WHERE (tx_id, global_id) > ($1, $2) AND tx_id < {HORIZON} \
             ORDER BY tx_id, global_id \
             LIMIT $3"
        ))
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
            .map(|row| row.row.decode(&self.upcasters))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Batch {
            events,
            held_back,
            states: None,
        })
    }

    /// [`Feed::read_after_on`] that also reads, in the same statement, the stored state of each
    /// request in the batch from each table of `states` (built by [`StatesQuery::new`]), into
    /// [`Batch::states`].
    pub async fn read_with_states_on(
        &self,
        conn: &mut PgConnection,
        states: &StatesQuery,
        after: Position,
        limit: i64,
    ) -> Result<Batch, FeedError> {
        if states.tables == 0 {
            return self.read_after_on(conn, after, limit).await;
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
        let mut held_back = false;
        for pg_row in rows {
            let HeldRow {
                row,
                held_back: held,
            } = HeldRow::from_row(&pg_row)?;
            held_back = held;
            let aggregate_id = row.aggregate_id.clone();
            let event = row.decode(&self.upcasters)?;
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
        if events.is_empty() {
            held_back = self::held_back(conn, after).await?;
        }
        Ok(Batch {
            events,
            held_back,
            states: canonical.then_some(loaded),
        })
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
                 SELECT {ROW_COLUMNS}, {HELD_BACK} FROM events \
                 WHERE (tx_id, global_id) > ($1, $2) AND tx_id < {HORIZON} \
                 ORDER BY tx_id, global_id \
                 LIMIT $3 \
             ), b AS ( \
                 SELECT *, aggregate_id ~ '^[0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}$' \
                     AND row_number() OVER (PARTITION BY aggregate_id ORDER BY tx_id, global_id) = 1 \
                     AS first \
                 FROM batch \
             ) \
             SELECT {ROW_COLUMNS}, held_back{states} FROM b ORDER BY tx_id, global_id"
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
pub async fn head(conn: &mut PgConnection) -> Result<Position, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(&format!(
        "SELECT tx_id, global_id FROM events WHERE tx_id < {HORIZON} \
         ORDER BY tx_id DESC, global_id DESC LIMIT 1"
    ))
    .fetch_optional(conn)
    .await?;
    Ok(row.map_or(Position::START, |(tx_id, global_id)| Position {
        tx_id,
        global_id,
    }))
}

/// The feed's horizon now: every event below this transaction id has committed for good, so a
/// long read bounded by it sees a fixed store (the audit's verification reads that way).
pub async fn horizon(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let (xmin,): (i64,) = sqlx::query_as(&format!("SELECT {HORIZON}"))
        .fetch_one(pool)
        .await?;
    Ok(xmin)
}

/// The highest transaction id the event store holds, and the next one the server will hand out.
/// The feed is ordered by transaction ids, so a store whose ids are ahead of the server's (a
/// logical dump restored into another cluster) would sort new events behind every reader.
pub async fn transaction_ids(pool: &PgPool) -> Result<(Option<i64>, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT (SELECT max(tx_id) FROM events), \
                pg_snapshot_xmax(pg_current_snapshot())::text::bigint",
    )
    .fetch_one(pool)
    .await
}
