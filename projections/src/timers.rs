//! The timers table (`rm_timers`), written by the projection `requests` from each request's
//! state ([`approval_aggregates::Request::timers`]): the queries of the worker's timer loop.
//!
//! A round claims the due rows with `FOR UPDATE SKIP LOCKED` in a transaction, fires them and
//! deletes them in that same transaction, so a second instance skips the rows being fired, and a
//! crash before the commit leaves them to be fired again (the aggregate then refuses what had
//! fired already). Nothing here fires anything.

use approval_aggregates::Timer;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::ProjectionError;

/// A due timer of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer {
    /// The request.
    pub request_id: Uuid,
    /// Its key among the request's timers.
    pub key: String,
    /// The timer, read from its key; `None` for a key this version does not know.
    pub timer: Option<Timer>,
}

/// Locks and returns up to `limit` timers due at `now`, earliest first, skipping those another
/// transaction holds. `conn` must be inside the transaction that will delete the fired ones.
pub async fn claim_due(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<DueTimer>, ProjectionError> {
    let rows: Vec<(Uuid, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT request_id, timer, fire_at FROM rm_timers WHERE fire_at <= $1 \
         ORDER BY fire_at, rank LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(request_id, key, fire_at)| DueTimer {
            timer: Timer::from_key(&key, fire_at),
            request_id,
            key,
        })
        .collect())
}

/// Deletes the timers `done` (fired, or no longer applying).
pub async fn delete(conn: &mut PgConnection, done: &[&DueTimer]) -> Result<(), ProjectionError> {
    if done.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = done.iter().map(|t| t.request_id).collect();
    let keys: Vec<&str> = done.iter().map(|t| t.key.as_str()).collect();
    sqlx::query(
        "DELETE FROM rm_timers WHERE (request_id, timer) IN \
         (SELECT * FROM UNNEST($1::uuid[], $2::text[]))",
    )
    .bind(&ids)
    .bind(&keys)
    .execute(conn)
    .await?;
    Ok(())
}

/// How many pending requests' current steps are past their deadline at `now`, and when the
/// next timer falls due after `now` (`None` when there is none), in one statement.
pub async fn overdue_steps_and_next(
    executor: impl sqlx::PgExecutor<'_>,
    now: DateTime<Utc>,
) -> Result<(i64, Option<DateTime<Utc>>), ProjectionError> {
    let row: (i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM rm_requests WHERE status = 'pending' AND step_due_at <= $1), \
                (SELECT min(fire_at) FROM rm_timers WHERE fire_at > $1)",
    )
    .bind(now)
    .fetch_one(executor)
    .await?;
    Ok(row)
}
