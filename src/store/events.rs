//! What the command path and the handlers do with stored events beyond loading them through
//! cqrs-es: the append (one statement that also returns the feed position), whether a command
//! with an idempotency key already took effect, a request's history and its source system.

use std::collections::HashMap;

use approval_aggregates::upcasters::upcasters;
use approval_aggregates::{ApprovalEvent, ApprovalRequest, RequestId};
use cqrs_es::persist::SerializedEvent;
use cqrs_es::{Aggregate, EventEnvelope};
use sqlx::PgPool;
use uuid::Uuid;

use crate::feed::read::{Row, ROW_COLUMNS};
use crate::feed::{FeedError, FeedEvent, Position};

/// The last sequence that `actor`'s command with idempotency key `key` wrote to request `id`,
/// if it wrote any: the event store itself remembers keys, so an answer lost in a crash between
/// the append and the storing of the answer is still found.
pub async fn sequence_of_key(
    pool: &PgPool,
    id: RequestId,
    actor: &str,
    key: &str,
) -> Result<Option<u64>, sqlx::Error> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT max(sequence) FROM events \
         WHERE aggregate_type = $1 AND aggregate_id = $2 \
           AND metadata->>'idempotency_key' = $3 AND metadata->>'actor' = $4 \
         HAVING max(sequence) IS NOT NULL",
    )
    .bind(ApprovalRequest::TYPE)
    .bind(id.to_string())
    .bind(key)
    .bind(actor)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(s,)| u64::try_from(s).ok()))
}

/// The events of request `id` up to and including `upto`, decoded through the upcasters, in
/// order: what the handlers fold to decide whom an event concerns.
pub async fn history(pool: &PgPool, id: RequestId, upto: i64) -> Result<Vec<FeedEvent>, FeedError> {
    let mut all = histories(pool, &HashMap::from([(id.0, upto)])).await?;
    Ok(all.remove(&id.0).unwrap_or_default())
}

/// For each request in `upto`, its events up to and including the sequence given, decoded as
/// [`history`] decodes them, in sequence order; one query for them all. A request without events
/// has no entry.
///
/// Each wanted request is read on its own through the primary key (a lateral read that
/// `OFFSET 0` keeps from being merged into a join), so that a plan made once, even on an empty
/// table (the delivery pool plans once, `db::connect_delivery`), cannot join the other way round
/// and read every request's events.
pub async fn histories(
    executor: impl sqlx::PgExecutor<'_>,
    upto: &HashMap<Uuid, i64>,
) -> Result<HashMap<Uuid, Vec<FeedEvent>>, FeedError> {
    let (ids, sequences): (Vec<String>, Vec<i64>) = upto
        .iter()
        .map(|(id, upto)| (id.to_string(), *upto))
        .unzip();
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {ROW_COLUMNS} FROM UNNEST($2::text[], $3::int8[]) AS wanted(id, upto) \
         CROSS JOIN LATERAL ( \
             SELECT * FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = wanted.id AND sequence <= wanted.upto \
             ORDER BY sequence OFFSET 0) AS events"
    ))
    .bind(ApprovalRequest::TYPE)
    .bind(&ids)
    .bind(&sequences)
    .fetch_all(executor)
    .await?;
    let upcasters = upcasters();
    let mut all: HashMap<Uuid, Vec<FeedEvent>> = HashMap::new();
    for row in rows {
        let event = row.decode(&upcasters)?;
        all.entry(event.request_id.0).or_default().push(event);
    }
    Ok(all)
}

/// The submission (the first event) of each request in `ids` that has one, decoded through the
/// upcasters like every event the feed delivers.
pub async fn submissions(
    executor: impl sqlx::PgExecutor<'_>,
    ids: &[String],
) -> Result<Vec<FeedEvent>, FeedError> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {ROW_COLUMNS} FROM events \
         WHERE aggregate_type = $1 AND aggregate_id = ANY($2) AND sequence = 1"
    ))
    .bind(ApprovalRequest::TYPE)
    .bind(ids)
    .fetch_all(executor)
    .await?;
    let upcasters = upcasters();
    Ok(rows
        .into_iter()
        .map(|row| row.decode(&upcasters))
        .collect::<Result<_, _>>()?)
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another command appended to the request first: an event with one of these sequences
    /// exists (the primary key is the optimistic lock, as in postgres-es).
    #[error("the request moved on")]
    Conflict,
    /// An event does not serialize.
    #[error("serializing an event: {0}")]
    Serialize(#[from] cqrs_es::persist::PersistenceError),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Appends `events`, the next events of request `id` after `last_sequence`, with `metadata`,
/// in one statement (one round trip, atomic on its own), and returns the feed position of the
/// last one.
///
/// It writes exactly the rows postgres-es's `persist` writes: the same columns, each event
/// serialized by cqrs-es's own `SerializedEvent::try_from` with the metadata map; the table's
/// defaults fill `event_id`, `global_id`, `tx_id` and `recorded_at`, and the rows are inserted in
/// sequence order so their `global_id`s follow it. A duplicate key (SQLSTATE 23505) is the
/// optimistic-lock conflict postgres-es reports.
pub async fn append(
    pool: &PgPool,
    id: RequestId,
    last_sequence: usize,
    events: Vec<ApprovalEvent>,
    metadata: &HashMap<String, String>,
) -> Result<Option<Position>, AppendError> {
    append_to::<ApprovalRequest>(pool, id.to_string(), last_sequence, events, metadata).await
}

/// [`append`] to an aggregate of type `A` (a request, or a person's absences), whose id is
/// `aggregate_id`.
pub async fn append_to<A: Aggregate<Event = ApprovalEvent>>(
    pool: &PgPool,
    aggregate_id: String,
    last_sequence: usize,
    events: Vec<ApprovalEvent>,
    metadata: &HashMap<String, String>,
) -> Result<Option<Position>, AppendError> {
    let n = events.len();
    let mut sequences = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut versions = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    let mut metadatas = Vec::with_capacity(n);
    for (payload, sequence) in events.into_iter().zip(last_sequence + 1..) {
        let envelope = EventEnvelope::<A> {
            aggregate_id: aggregate_id.clone(),
            sequence,
            payload,
            metadata: metadata.clone(),
        };
        let serialized = SerializedEvent::try_from(&envelope)?;
        sequences.push(i64::try_from(serialized.sequence).unwrap_or(i64::MAX));
        types.push(serialized.event_type);
        versions.push(serialized.event_version);
        payloads.push(serialized.payload);
        metadatas.push(serialized.metadata);
    }
    let rows: Result<Vec<(i64, i64)>, sqlx::Error> = sqlx::query_as(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                             payload, metadata) \
         SELECT $1, $2, s, t, v, p, m \
         FROM UNNEST($3::int8[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[]) \
             WITH ORDINALITY AS u(s, t, v, p, m, o) \
         ORDER BY o \
         RETURNING tx_id, global_id",
    )
    .bind(A::TYPE)
    .bind(&aggregate_id)
    .bind(&sequences)
    .bind(&types)
    .bind(&versions)
    .bind(&payloads)
    .bind(&metadatas)
    .fetch_all(pool)
    .await;
    match rows {
        Ok(rows) => Ok(rows
            .into_iter()
            .max()
            .map(|(tx_id, global_id)| Position { tx_id, global_id })),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
            Err(AppendError::Conflict)
        }
        Err(e) => Err(e.into()),
    }
}
