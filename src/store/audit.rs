//! The audit ledger's SQL: stored events as their hashes cover them, in feed order or per
//! request; the audit reader's running hash, its checkpoints and the last event it saw of each
//! request. The hashing itself is in `crate::audit::chain`; see
//! docs/decisions/0004-tamper-evidence.md.

use std::collections::HashMap;

use crate::feed::Position;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// An event exactly as stored: every field its hash covers, JSON as PostgreSQL's jsonb text.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StoredEvent {
    /// The writing transaction's id (the first half of the feed position).
    pub tx_id: i64,
    /// The identity (the second half of the feed position).
    pub global_id: i64,
    /// The aggregate type, `ApprovalRequest`.
    pub aggregate_type: String,
    /// The request id as stored.
    pub aggregate_id: String,
    /// Its sequence within the request.
    pub sequence: i64,
    /// Its stored type name.
    pub event_type: String,
    /// Its stored version (before any upcasting).
    pub event_version: String,
    /// The payload as jsonb text.
    pub payload: String,
    /// The metadata as jsonb text.
    pub metadata: String,
    /// Its stable id.
    pub event_id: Uuid,
    /// When it was written.
    pub recorded_at: DateTime<Utc>,
    /// Its stored hash.
    pub hash: Vec<u8>,
}

impl StoredEvent {
    /// Where it stands in the feed.
    pub fn position(&self) -> Position {
        Position {
            tx_id: self.tx_id,
            global_id: self.global_id,
        }
    }
}

const STORED_COLUMNS: &str = "tx_id, global_id, aggregate_type, aggregate_id, sequence, \
     event_type, event_version, payload::text AS payload, metadata::text AS metadata, event_id, \
     recorded_at, hash";

/// Up to `limit` stored events after `after` and below transaction `below`, in feed order,
/// recorded at or after `since` when given.
pub async fn page(
    pool: &PgPool,
    after: Position,
    below: i64,
    since: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {STORED_COLUMNS} FROM events \
         WHERE (tx_id, global_id) > ($1, $2) AND tx_id < $3 \
           AND ($4::timestamptz IS NULL OR recorded_at >= $4) \
         ORDER BY tx_id, global_id LIMIT $5"
    ))
    .bind(after.tx_id)
    .bind(after.global_id)
    .bind(below)
    .bind(since)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Every stored event of one aggregate, in sequence order.
pub async fn events_of(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {STORED_COLUMNS} FROM events \
         WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
    ))
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_all(pool)
    .await
}

/// The last event of a request that the audit reader saw.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Head {
    /// The aggregate type.
    pub aggregate_type: String,
    /// The request id as stored.
    pub aggregate_id: String,
    /// The event's sequence.
    pub sequence: i64,
    /// The event's hash.
    pub hash: Vec<u8>,
}

/// The stored identity and hash of each of the events `ids`, by event id.
pub async fn heads_of_events(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Head>, sqlx::Error> {
    let rows: Vec<(Uuid, String, String, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT event_id, aggregate_type, aggregate_id, sequence, hash FROM events \
         WHERE event_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, aggregate_type, aggregate_id, sequence, hash)| {
            (
                id,
                Head {
                    aggregate_type,
                    aggregate_id,
                    sequence,
                    hash,
                },
            )
        })
        .collect())
}

/// Records the last event of each request in `heads`; an older one never replaces a newer one.
pub async fn save_heads(conn: &mut PgConnection, heads: &[Head]) -> Result<(), sqlx::Error> {
    let types: Vec<&str> = heads.iter().map(|h| h.aggregate_type.as_str()).collect();
    let ids: Vec<&str> = heads.iter().map(|h| h.aggregate_id.as_str()).collect();
    let sequences: Vec<i64> = heads.iter().map(|h| h.sequence).collect();
    let hashes: Vec<&[u8]> = heads.iter().map(|h| h.hash.as_slice()).collect();
    sqlx::query(
        "INSERT INTO audit_heads (aggregate_type, aggregate_id, sequence, hash) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::bytea[]) \
         ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE \
             SET sequence = EXCLUDED.sequence, hash = EXCLUDED.hash \
             WHERE audit_heads.sequence < EXCLUDED.sequence",
    )
    .bind(&types)
    .bind(&ids)
    .bind(&sequences)
    .bind(&hashes)
    .execute(conn)
    .await?;
    Ok(())
}

/// Every request's head, as the audit reader last recorded it.
pub async fn heads(pool: &PgPool) -> Result<Vec<Head>, sqlx::Error> {
    sqlx::query_as("SELECT aggregate_type, aggregate_id, sequence, hash FROM audit_heads")
        .fetch_all(pool)
        .await
}

/// The head of one request, if the audit reader has seen it.
pub async fn head_of(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Option<Head>, sqlx::Error> {
    sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, sequence, hash FROM audit_heads \
         WHERE aggregate_type = $1 AND aggregate_id = $2",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_optional(pool)
    .await
}

/// A statement of the running hash: after every event of the feed up to `position`,
/// `event_count` events folded into `running_hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainState {
    /// The last event folded in.
    pub position: Position,
    /// How many events were folded in.
    pub event_count: i64,
    /// The running hash after them.
    pub running_hash: Vec<u8>,
}

/// The audit reader's running state, inside its transaction.
pub async fn chain(conn: &mut PgConnection) -> Result<ChainState, sqlx::Error> {
    let (tx_id, global_id, event_count, running_hash): (i64, i64, i64, Vec<u8>) = sqlx::query_as(
        "SELECT tx_id, global_id, event_count, running_hash FROM audit_chain WHERE id",
    )
    .fetch_one(conn)
    .await?;
    Ok(ChainState {
        position: Position { tx_id, global_id },
        event_count,
        running_hash,
    })
}

/// Stores the audit reader's running state and, when the last checkpoint is at least
/// `interval_secs` old, a checkpoint of it. Returns whether it wrote a checkpoint.
pub async fn advance(
    conn: &mut PgConnection,
    state: &ChainState,
    interval_secs: u64,
) -> Result<bool, sqlx::Error> {
    let interval = i64::try_from(interval_secs).unwrap_or(i64::MAX);
    let (due,): (bool,) = sqlx::query_as(
        "UPDATE audit_chain SET tx_id = $1, global_id = $2, event_count = $3, running_hash = $4, \
             updated_at = now(), \
             checkpointed_at = CASE WHEN checkpointed_at IS NULL \
                 OR checkpointed_at <= now() - make_interval(secs => $5) \
                 THEN now() ELSE checkpointed_at END \
         WHERE id \
         RETURNING checkpointed_at = now()",
    )
    .bind(state.position.tx_id)
    .bind(state.position.global_id)
    .bind(state.event_count)
    .bind(&state.running_hash)
    .bind(interval as f64)
    .fetch_one(&mut *conn)
    .await?;
    if due {
        sqlx::query(
            "INSERT INTO audit_checkpoints (tx_id, global_id, event_count, running_hash) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(state.position.tx_id)
        .bind(state.position.global_id)
        .bind(state.event_count)
        .bind(&state.running_hash)
        .execute(conn)
        .await?;
    }
    Ok(due)
}

/// A stored audit checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Its number.
    pub id: i64,
    /// What it states.
    pub state: ChainState,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

type CheckpointRow = (i64, i64, i64, i64, Vec<u8>, DateTime<Utc>);

fn checkpoint(
    (id, tx_id, global_id, event_count, running_hash, created_at): CheckpointRow,
) -> Checkpoint {
    Checkpoint {
        id,
        state: ChainState {
            position: Position { tx_id, global_id },
            event_count,
            running_hash,
        },
        created_at,
    }
}

/// Every audit checkpoint, oldest first.
pub async fn checkpoints(pool: &PgPool) -> Result<Vec<Checkpoint>, sqlx::Error> {
    let rows: Vec<CheckpointRow> = sqlx::query_as(
        "SELECT id, tx_id, global_id, event_count, running_hash, created_at \
         FROM audit_checkpoints ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(checkpoint).collect())
}

/// The audit reader's latest state, with the time it was stored.
pub async fn latest(pool: &PgPool) -> Result<(ChainState, DateTime<Utc>), sqlx::Error> {
    let (tx_id, global_id, event_count, running_hash, updated_at): (
        i64,
        i64,
        i64,
        Vec<u8>,
        DateTime<Utc>,
    ) = sqlx::query_as(
        "SELECT tx_id, global_id, event_count, running_hash, updated_at FROM audit_chain WHERE id",
    )
    .fetch_one(pool)
    .await?;
    Ok((
        ChainState {
            position: Position { tx_id, global_id },
            event_count,
            running_hash,
        },
        updated_at,
    ))
}
