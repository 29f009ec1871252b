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

/// The events of request `id` up to and including `upto`, decoded through the upcasters, in
/// order: what the handlers fold to decide whom an event concerns.
pub async fn history(
    pool: &PgPool,
    id: RequestId,
    upto: i64,
) -> Result<Vec<approval_projections::FeedEvent>, crate::store::feed::FeedError> {
    let rows: Vec<crate::store::feed::Row> = sqlx::query_as(&format!(
        "SELECT {} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence <= $3 \
         ORDER BY sequence",
        crate::store::feed::ROW_COLUMNS
    ))
    .bind(ApprovalRequest::TYPE)
    .bind(id.to_string())
    .bind(upto)
    .fetch_all(pool)
    .await?;
    let upcasters = approval_aggregates::upcasters::upcasters();
    rows.into_iter()
        .map(|row| crate::store::feed::decode(&upcasters, row))
        .collect()
}

/// The system and external reference of each request in `ids`, from its submission.
pub async fn sources(
    pool: &PgPool,
    ids: &[String],
) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT aggregate_id, \
                coalesce(payload->'RequestSubmitted'->>'system', ''), \
                coalesce(payload->'RequestSubmitted'->>'external_ref', '') \
         FROM events WHERE aggregate_type = $1 AND aggregate_id = ANY($2) AND sequence = 1",
    )
    .bind(ApprovalRequest::TYPE)
    .bind(ids)
    .fetch_all(pool)
    .await
}
