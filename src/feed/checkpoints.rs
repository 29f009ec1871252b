//! Where each reader of the feed stands. A reader locks its row where it applies a batch, at the
//! start of the transaction ([`lock_and_move`]) or in the one statement that writes the batch
//! ([`gated_move`]), and moves it there, so the effect and the checkpoint commit together, and a
//! second instance of the same reader waits instead of applying twice.

use std::collections::BTreeMap;

use approval_feed::Position;
use approval_projections::write::BatchWrite;
use approval_projections::ProjectionError;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

/// The checkpoint of `name`, created at the start of the feed when missing.
pub async fn load(conn: &mut PgConnection, name: &str) -> Result<Position, sqlx::Error> {
    sqlx::query("INSERT INTO feed_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    let (tx_id, global_id): (i64, i64) =
        sqlx::query_as("SELECT tx_id, global_id FROM feed_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_one(conn)
            .await?;
    Ok(Position { tx_id, global_id })
}

/// Creates the checkpoint of `name` where `like` stands, unless `name` has one already (or
/// `like` has none: then `load` starts it at the beginning of the feed).
pub async fn start_where(
    conn: &mut PgConnection,
    name: &str,
    like: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO feed_checkpoints (name, tx_id, global_id) \
         SELECT $1, tx_id, global_id FROM feed_checkpoints WHERE name = $2 \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(like)
    .execute(conn)
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

/// A checkpoint with when it last moved, as the operators' console shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The reader's name.
    pub name: String,
    /// Where it stands.
    pub position: Position,
    /// When it was last written.
    pub updated_at: DateTime<Utc>,
}

/// Every checkpoint with when it last moved, by name.
pub async fn listed(pool: &PgPool) -> Result<Vec<Listed>, sqlx::Error> {
    let rows: Vec<(String, i64, i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT name, tx_id, global_id, updated_at FROM feed_checkpoints ORDER BY name",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, tx_id, global_id, updated_at)| Listed {
            name,
            position: Position { tx_id, global_id },
            updated_at,
        })
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

/// A checkpoint as a batch's statement ([`run_gated`]) found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Where it stood.
    pub position: Position,
    /// When it was last written once the statement ran (`updated_at`): by the statement itself
    /// when it moved it, else as before.
    pub written: DateTime<Utc>,
}

/// The gate of a batch's statement ([`begin`]): whether every checkpoint stood where expected
/// (and, where asked, was last written when expected).
const GATE: &str = "(SELECT ok FROM ckpt_gate)";

/// Begins a batch's one statement, with no transaction around it: it locks the checkpoints named
/// in `expected` and checks that each stands where `expected` says and was last written at
/// `written`, which is when this runner last wrote it. If all do (the gate), nobody else applied a
/// batch since this runner's last one, and it moves them forward to `to` (never back). Every part
/// added after this runs only under the gate. `None` when `written` lacks a checkpoint of
/// `expected`.
pub fn gated_move(
    expected: &BTreeMap<String, Position>,
    written: &BTreeMap<String, DateTime<Utc>>,
    to: Position,
) -> Result<Option<BatchWrite>, ProjectionError> {
    let Some(writes) = expected
        .keys()
        .map(|name| written.get(name).copied().map(Some))
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(None);
    };
    begin(expected, &writes, to).map(Some)
}

/// Begins a batch's transaction: [`gated_move`] without the check of when the checkpoints were
/// written. Their rows stay locked until the transaction ends, and the move commits or rolls back
/// with it.
pub fn lock_and_move(
    expected: &BTreeMap<String, Position>,
    to: Position,
) -> Result<BatchWrite, ProjectionError> {
    begin(expected, &vec![None; expected.len()], to)
}

/// The checkpoints' part of a batch's statement: lock them (in name order, so two lockers never
/// deadlock), check them against `expected` and, where `writes` has a time, against it (the
/// gate), and move them to `to` if the gate holds.
fn begin(
    expected: &BTreeMap<String, Position>,
    writes: &[Option<DateTime<Utc>>],
    to: Position,
) -> Result<BatchWrite, ProjectionError> {
    let names: Vec<&str> = expected.keys().map(String::as_str).collect();
    let tx_ids: Vec<i64> = expected.values().map(|p| p.tx_id).collect();
    let global_ids: Vec<i64> = expected.values().map(|p| p.global_id).collect();
    let mut write = BatchWrite::new(GATE);
    write.bind(&names)?;
    write.bind(&tx_ids)?;
    write.bind(&global_ids)?;
    write.bind(writes)?;
    write.bind(to.tx_id)?;
    write.bind(to.global_id)?;
    write.cte(
        "ckpt_locked",
        "SELECT name, tx_id, global_id, updated_at FROM feed_checkpoints \
         WHERE name = ANY($1) ORDER BY name FOR UPDATE",
        0,
    );
    write.cte(
        "ckpt_gate",
        "SELECT count(*) = cardinality($1::text[]) \
                AND COALESCE(bool_and((l.tx_id, l.global_id) = (e.tx_id, e.global_id) \
                                      AND (e.written IS NULL OR l.updated_at = e.written)), \
                             false) AS ok \
         FROM ckpt_locked l \
         JOIN UNNEST($1::text[], $2::int8[], $3::int8[], $4::timestamptz[]) \
             AS e(name, tx_id, global_id, written) ON e.name = l.name",
        0,
    );
    write.cte(
        "ckpt_moved",
        "UPDATE feed_checkpoints c SET tx_id = $5, global_id = $6, updated_at = now() \
         FROM ckpt_locked l \
         WHERE c.name = l.name AND (l.tx_id, l.global_id) < ($5, $6) AND {gate} \
         RETURNING c.name, c.updated_at",
        0,
    );
    Ok(write)
}

/// Runs a statement begun by [`gated_move`] or [`lock_and_move`], in one round trip. Returns the
/// checkpoints as they stood, and whether the gate held (then the statement moved them and wrote
/// every part).
pub async fn run_gated(
    conn: &mut PgConnection,
    write: BatchWrite,
) -> Result<(BTreeMap<String, Found>, bool), sqlx::Error> {
    let (sql, args) = write.finish(
        "SELECT l.name, l.tx_id, l.global_id, COALESCE(m.updated_at, l.updated_at), \
                (SELECT ok FROM ckpt_gate) \
         FROM ckpt_locked l LEFT JOIN ckpt_moved m ON m.name = l.name ORDER BY l.name",
    );
    let rows: Vec<(String, i64, i64, DateTime<Utc>, bool)> =
        sqlx::query_as_with(&sql, args).fetch_all(conn).await?;
    let held = !rows.is_empty() && rows.iter().all(|row| row.4);
    let found = rows
        .into_iter()
        .map(|(name, tx_id, global_id, written, _)| {
            let position = Position { tx_id, global_id };
            (name, Found { position, written })
        })
        .collect();
    Ok((found, held))
}
