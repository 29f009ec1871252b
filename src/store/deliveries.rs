//! The durable delivery jobs of the legacy-sync and push handlers: created idempotently (one per
//! event and target), claimed with a lease so a crashed worker's jobs come back, and recorded as
//! delivered, retried, dead (a dead letter) or dropped.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// Where a job goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// A signed callback to a legacy system; `target` is the system's key.
    Callback,
    /// A push notification; `target` is the device token.
    Push,
}

impl Channel {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Callback => "callback",
            Self::Push => "push",
        }
    }

    fn parse(text: &str) -> Self {
        if text == "push" {
            Self::Push
        } else {
            Self::Callback
        }
    }
}

/// A job to create.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Callback or push.
    pub channel: Channel,
    /// The event it carries.
    pub event_id: Uuid,
    /// The event's request.
    pub request_id: Uuid,
    /// The event's sequence in its request (callbacks go out in this order).
    pub sequence: i64,
    /// The system key or device token.
    pub target: String,
    /// The body to send, fixed at creation so every attempt sends the same.
    pub body: Value,
    /// The event's commit time.
    pub committed_at: DateTime<Utc>,
}

/// A claimed job.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    /// Its id.
    pub id: i64,
    #[sqlx(rename = "channel")]
    channel_name: String,
    /// The event it carries.
    pub event_id: Uuid,
    /// The event's request.
    pub request_id: Uuid,
    /// The event's sequence.
    pub sequence: i64,
    /// The system key or device token.
    pub target: String,
    /// The body.
    pub body: Value,
    /// Attempts so far, this one included.
    pub attempts: i32,
    /// The event's commit time.
    pub committed_at: DateTime<Utc>,
}

impl Job {
    /// Callback or push.
    pub fn channel(&self) -> Channel {
        Channel::parse(&self.channel_name)
    }

    /// A push job of no event, for tests of code that only moves jobs around.
    #[cfg(test)]
    pub(crate) fn for_test(id: i64) -> Self {
        Self {
            id,
            channel_name: "push".into(),
            event_id: Uuid::nil(),
            request_id: Uuid::nil(),
            sequence: 1,
            target: String::new(),
            body: Value::Null,
            attempts: 1,
            committed_at: DateTime::<Utc>::MIN_UTC,
        }
    }
}

/// Which of `event_ids` have jobs, on which channel.
pub async fn channels_of(
    executor: impl sqlx::PgExecutor<'_>,
    event_ids: &[Uuid],
) -> Result<HashSet<(Uuid, Channel)>, sqlx::Error> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT DISTINCT event_id, channel FROM deliveries \
         WHERE channel IN ('callback', 'push') AND event_id = ANY($1)",
    )
    .bind(event_ids)
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, channel)| (id, Channel::parse(&channel)))
        .collect())
}

/// Creates the jobs that do not exist yet; returns how many were new.
pub async fn create(
    executor: impl sqlx::PgExecutor<'_>,
    jobs: &[NewJob],
) -> Result<u64, sqlx::Error> {
    Ok(insert(executor, jobs, None).await?.len() as u64)
}

/// Creates the jobs that do not exist yet already leased for `lease` (their first attempt
/// counted), for a scheduler of this process to send without claiming them; returns the new ones
/// as claimed jobs. One that already existed (a redelivered message's) is not returned: whoever
/// made it sends it.
pub async fn create_leased(
    executor: impl sqlx::PgExecutor<'_>,
    jobs: &[NewJob],
    lease: std::time::Duration,
) -> Result<Vec<Job>, sqlx::Error> {
    insert(executor, jobs, Some(lease.as_secs_f64())).await
}

/// Inserts the jobs that do not exist yet, due now or (with `lease_secs`) leased from now, and
/// returns the new ones.
async fn insert(
    executor: impl sqlx::PgExecutor<'_>,
    jobs: &[NewJob],
    lease_secs: Option<f64>,
) -> Result<Vec<Job>, sqlx::Error> {
    if jobs.is_empty() {
        return Ok(vec![]);
    }
    let channel: Vec<&str> = jobs.iter().map(|j| j.channel.as_str()).collect();
    let event_id: Vec<Uuid> = jobs.iter().map(|j| j.event_id).collect();
    let request_id: Vec<Uuid> = jobs.iter().map(|j| j.request_id).collect();
    let sequence: Vec<i64> = jobs.iter().map(|j| j.sequence).collect();
    let target: Vec<&str> = jobs.iter().map(|j| j.target.as_str()).collect();
    let body: Vec<&Value> = jobs.iter().map(|j| &j.body).collect();
    let committed_at: Vec<DateTime<Utc>> = jobs.iter().map(|j| j.committed_at).collect();
    sqlx::query_as(
        "INSERT INTO deliveries (channel, event_id, request_id, sequence, target, body, committed_at, \
                                 attempts, next_attempt_at) \
         SELECT *, CASE WHEN $8::float8 IS NULL THEN 0 ELSE 1 END, \
                now() + make_interval(secs => coalesce($8::float8, 0)) \
         FROM UNNEST($1::text[], $2::uuid[], $3::uuid[], $4::int8[], $5::text[], $6::jsonb[], $7::timestamptz[]) \
         ON CONFLICT (channel, event_id, target) DO NOTHING \
         RETURNING id, channel, event_id, request_id, sequence, target, body, attempts, committed_at",
    )
    .bind(&channel)
    .bind(&event_id)
    .bind(&request_id)
    .bind(&sequence)
    .bind(&target)
    .bind(&body)
    .bind(&committed_at)
    .bind(lease_secs)
    .fetch_all(executor)
    .await
}

/// Claims up to `limit` due jobs, leasing each for `lease_secs`: a job whose worker dies comes
/// back when its lease ends. A callback waits while an earlier event of its request still has a
/// pending or dead callback to the same system, so a request's events never overtake each other.
///
/// Written so that no plan can read more than the jobs it claims, whatever the table's size when
/// it was planned (the delivery pool plans once, `db::connect_delivery`): the due jobs come in
/// order from their own index, the per-request check is one index probe per candidate, and the
/// update reaches the claimed rows by their ids (`= ANY` of the locked ids), not by a join whose
/// order a plan made on an empty table chose (such a join once read the whole primary key at
/// every claim; docs/benchmarks.md).
pub async fn claim(
    executor: impl sqlx::PgExecutor<'_>,
    limit: i64,
    lease_secs: f64,
) -> Result<Vec<Job>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE deliveries j \
            SET attempts = j.attempts + 1, \
                next_attempt_at = now() + make_interval(secs => $2), \
                updated_at = now() \
          WHERE j.id = ANY(ARRAY( \
             SELECT d.id FROM deliveries d \
             WHERE d.status = 'pending' AND d.next_attempt_at <= now() \
               AND NOT (d.channel = 'callback' AND EXISTS ( \
                   SELECT 1 FROM deliveries e \
                   WHERE e.channel = 'callback' AND e.request_id = d.request_id \
                     AND e.target = d.target AND e.sequence < d.sequence \
                     AND e.status IN ('pending', 'dead'))) \
             ORDER BY d.next_attempt_at, d.id \
             LIMIT $1 \
             FOR UPDATE SKIP LOCKED)) \
         RETURNING j.id, j.channel, j.event_id, j.request_id, j.sequence, j.target, j.body, \
                   j.attempts, j.committed_at",
    )
    .bind(limit)
    .bind(lease_secs)
    .fetch_all(executor)
    .await
}

/// Where an attempt leaves its job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum JobState {
    /// It reached its target.
    Delivered,
    /// Try again after this many milliseconds.
    RetryInMs(u64),
    /// A dead letter.
    Dead,
    /// The device is gone; the job is dropped.
    Dropped,
}

/// An attempt's outcome, to record.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The job.
    pub id: i64,
    /// Where it stands now.
    pub state: JobState,
    /// Why the attempt failed.
    pub error: Option<String>,
    /// A device token the provider reported unregistered, to remove.
    pub forget_device: Option<String>,
}

/// Records many attempts' outcomes, and removes the devices they found unregistered, in one
/// statement. The jobs are reached by their ids (`= ANY`) as well as joined to their outcomes, so
/// that whichever side a plan made once puts first, it reads only these jobs (see [`claim`]).
pub async fn record(
    executor: impl sqlx::PgExecutor<'_>,
    rows: &[Recorded],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut statuses = Vec::with_capacity(rows.len());
    let mut delays = Vec::with_capacity(rows.len());
    let mut errors = Vec::with_capacity(rows.len());
    for row in rows {
        ids.push(row.id);
        let (status, delay) = match row.state {
            JobState::Delivered => ("delivered", 0.0),
            JobState::RetryInMs(ms) => ("pending", ms as f64 / 1000.0),
            JobState::Dead => ("dead", 0.0),
            JobState::Dropped => ("dropped", 0.0),
        };
        statuses.push(status);
        delays.push(delay);
        errors.push(row.error.as_deref());
    }
    let forgotten: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.forget_device.as_deref())
        .collect();
    // One statement, so no transaction: the outcomes and the forgotten devices are written
    // together or not at all, in one round trip (a transaction took four).
    sqlx::query(
        "WITH forgotten AS (DELETE FROM devices WHERE token = ANY($5)) \
         UPDATE deliveries d SET status = t.status, last_error = t.error, updated_at = now(), \
             delivered_at = CASE WHEN t.status = 'delivered' THEN now() ELSE d.delivered_at END, \
             next_attempt_at = CASE WHEN t.status = 'pending' \
                 THEN now() + make_interval(secs => t.delay) ELSE d.next_attempt_at END \
         FROM UNNEST($1::int8[], $2::text[], $3::float8[], $4::text[]) AS t(id, status, delay, error) \
         WHERE d.id = t.id AND d.id = ANY($1)",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&delays)
    .bind(&errors)
    .bind(&forgotten)
    .execute(executor)
    .await?;
    Ok(())
}

/// A dead letter, as `dead-letters list` shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadLetter {
    /// The job's id: the argument of `dead-letters retry`.
    pub id: i64,
    /// `callback` or `push`.
    pub channel: String,
    /// The event.
    pub event_id: Uuid,
    /// The request.
    pub request_id: Uuid,
    /// The event's sequence.
    pub sequence: i64,
    /// The system or device.
    pub target: String,
    /// Attempts made.
    pub attempts: i32,
    /// Why the last one failed.
    pub last_error: Option<String>,
    /// When it died.
    pub updated_at: DateTime<Utc>,
}

impl DeadLetter {
    /// The target as it may be shown: a device token is a credential of its owner's phone, so
    /// only its start.
    pub fn shown_target(&self) -> String {
        if self.channel == "push" {
            format!("{}…", self.target.chars().take(8).collect::<String>())
        } else {
            self.target.clone()
        }
    }
}

/// The dead letters, oldest first: every one, or the first `limit`.
pub async fn dead_letters(
    pool: &PgPool,
    limit: Option<i64>,
) -> Result<Vec<DeadLetter>, sqlx::Error> {
    // `LIMIT NULL` is no limit.
    sqlx::query_as(
        "SELECT id, channel, event_id, request_id, sequence, target, attempts, last_error, updated_at \
         FROM deliveries WHERE status = 'dead' ORDER BY id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Where the deliveries of one channel to one target stand, for the operators' console.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TargetSummary {
    /// `callback` or `push`.
    pub channel: String,
    /// The system's key, for callbacks; `None` for pushes (their targets are devices).
    pub system: Option<String>,
    /// Jobs waiting for their first attempt (or in it).
    pub pending: i64,
    /// Jobs waiting for another attempt after a failed one.
    pub retrying: i64,
    /// Dead letters.
    pub dead: i64,
    /// The latest error among those jobs.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<DateTime<Utc>>,
}

/// The jobs not yet delivered, per channel and system: pending, retrying and dead, with the
/// latest error. It reads only pending and dead jobs, each kind by its own partial index, so
/// its cost follows the backlog, never the delivered history.
pub async fn summary(pool: &PgPool) -> Result<Vec<TargetSummary>, sqlx::Error> {
    sqlx::query_as(
        "SELECT channel, CASE WHEN channel = 'callback' THEN target END AS system, \
                count(*) FILTER (WHERE status = 'pending' AND last_error IS NULL) AS pending, \
                count(*) FILTER (WHERE status = 'pending' AND last_error IS NOT NULL) AS retrying, \
                count(*) FILTER (WHERE status = 'dead') AS dead, \
                (array_agg(last_error ORDER BY updated_at DESC) \
                     FILTER (WHERE last_error IS NOT NULL))[1] AS last_error, \
                max(updated_at) FILTER (WHERE last_error IS NOT NULL) AS last_error_at \
         FROM (SELECT channel, target, status, last_error, updated_at FROM deliveries \
                   WHERE status = 'pending' \
               UNION ALL \
               SELECT channel, target, status, last_error, updated_at FROM deliveries \
                   WHERE status = 'dead') undelivered \
         GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
}

/// Puts dead letter `id` (or every one, with `None`) back in line, with fresh attempts.
/// Returns how many were re-driven.
pub async fn retry_dead(pool: &PgPool, id: Option<i64>) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = now(), \
         updated_at = now() WHERE status = 'dead' AND ($1::int8 IS NULL OR id = $1)",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// Dead letters per channel, for the metrics.
pub async fn dead_counts(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT channel, count(*) FROM deliveries WHERE status = 'dead' GROUP BY channel",
    )
    .fetch_all(pool)
    .await
}
