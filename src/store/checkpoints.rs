//! Where each reader of the feed stands. A reader locks its row at the start of the transaction
//! that applies a batch and moves it in the same transaction, so the effect and the checkpoint
//! commit together, and a second instance of the same reader waits instead of applying twice.

use std::collections::BTreeMap;

use approval_projections::Position;
use sqlx::{PgConnection, PgPool};

/// The checkpoint of `name`, created at the start of the feed when missing.
pub async fn load(pool: &PgPool, name: &str) -> Result<Position, sqlx::Error> {
    sqlx::query("INSERT INTO feed_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .execute(pool)
        .await?;
    let (tx_id, global_id): (i64, i64) =
        sqlx::query_as("SELECT tx_id, global_id FROM feed_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_one(pool)
            .await?;
    Ok(Position { tx_id, global_id })
}

/// Creates the checkpoint of `name` where `like` stands, unless `name` has one already (or
/// `like` has none: then `load` starts it at the beginning of the feed).
pub async fn start_where(pool: &PgPool, name: &str, like: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO feed_checkpoints (name, tx_id, global_id) \
         SELECT $1, tx_id, global_id FROM feed_checkpoints WHERE name = $2 \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(like)
    .execute(pool)
    .await?;
    Ok(())
}

/// Locks the checkpoint of `name` until the end of the transaction `conn` is in, and returns it.
pub async fn lock(conn: &mut PgConnection, name: &str) -> Result<Position, sqlx::Error> {
    let (tx_id, global_id): (i64, i64) =
        sqlx::query_as("SELECT tx_id, global_id FROM feed_checkpoints WHERE name = $1 FOR UPDATE")
            .bind(name)
            .fetch_one(conn)
            .await?;
    Ok(Position { tx_id, global_id })
}

/// Moves the checkpoint of `name` to `to`, inside the caller's transaction.
pub async fn save(conn: &mut PgConnection, name: &str, to: Position) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE feed_checkpoints SET tx_id = $2, global_id = $3, updated_at = now() WHERE name = $1",
    )
    .bind(name)
    .bind(to.tx_id)
    .bind(to.global_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Every checkpoint, by name.
pub async fn all(pool: &PgPool) -> Result<Vec<(String, Position)>, sqlx::Error> {
    let rows: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT name, tx_id, global_id FROM feed_checkpoints ORDER BY name")
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(name, tx_id, global_id)| (name, Position { tx_id, global_id }))
        .collect())
}

/// Moves the checkpoint of `name` forward to `to`, outside any other transaction, never back:
/// for readers whose effect is outside the database (the relay), which move it after the effect.
pub async fn advance(conn: &mut PgConnection, name: &str, to: Position) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE feed_checkpoints SET tx_id = $2, global_id = $3, updated_at = now() \
         WHERE name = $1 AND (tx_id, global_id) < ($2, $3)",
    )
    .bind(name)
    .bind(to.tx_id)
    .bind(to.global_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Locks the checkpoints of `names` (in name order, so two lockers never deadlock) until the end
/// of the transaction `conn` is in, and returns them.
pub async fn lock_all(
    conn: &mut PgConnection,
    names: &[&str],
) -> Result<BTreeMap<String, Position>, sqlx::Error> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT name, tx_id, global_id FROM feed_checkpoints WHERE name = ANY($1) \
         ORDER BY name FOR UPDATE",
    )
    .bind(names)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, tx_id, global_id)| (name, Position { tx_id, global_id }))
        .collect())
}

/// Moves the checkpoints of `names` forward to `to` (never back), inside the caller's
/// transaction.
pub async fn save_all(
    conn: &mut PgConnection,
    names: &[&str],
    to: Position,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE feed_checkpoints SET tx_id = $2, global_id = $3, updated_at = now() \
         WHERE name = ANY($1) AND (tx_id, global_id) < ($2, $3)",
    )
    .bind(names)
    .bind(to.tx_id)
    .bind(to.global_id)
    .execute(conn)
    .await?;
    Ok(())
}
