//! Look-ups on stored events that the command path needs beyond what cqrs-es offers: where a
//! committed event stands in the feed, and whether a command with an idempotency key already
//! took effect.

use approval_aggregates::{ApprovalRequest, RequestId};
use approval_projections::Position;
use cqrs_es::Aggregate;
use sqlx::PgPool;

/// The feed position of event `sequence` of request `id`.
pub async fn position_of(
    pool: &PgPool,
    id: RequestId,
    sequence: u64,
) -> Result<Option<Position>, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT tx_id, global_id FROM events \
         WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
    )
    .bind(ApprovalRequest::TYPE)
    .bind(id.to_string())
    .bind(i64::try_from(sequence).unwrap_or(i64::MAX))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(tx_id, global_id)| Position { tx_id, global_id }))
}

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
