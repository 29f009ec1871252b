//! Seeding: many requests and their decisions written straight into the event store, in batched
//! transactions over parallel connections, then folded into the read models by the service's
//! own projections.
//!
//! What is written is what the service writes: each request's commands go through the DTO and
//! the aggregate's `decide_command`; each event is serialized by cqrs-es
//! (`SerializedEvent::try_from(&EventEnvelope)`, exactly as `PersistedEventStore::commit` does)
//! and inserted into the columns postgres-es names, with the metadata the command path records.
//! The table's defaults fill `event_id`, `global_id`, `tx_id` and `recorded_at` as for every
//! append. Only the grouping differs: many requests per transaction instead of one command.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use approval_aggregates::{ApprovalEvent, ApprovalRequest, Status, Verdict};
use approval_ledger::feed::checkpoints;
use approval_ledger::startup::read_models;
use chrono::{DateTime, Utc};
use cqrs_es::persist::SerializedEvent;
use cqrs_es::{Aggregate, EventEnvelope};
use serde_json::Value;
use sqlx::PgPool;

use crate::model::{self, Population};

/// What to seed.
#[derive(Debug, Clone)]
pub struct SeedPlan {
    /// How many requests.
    pub requests: usize,
    /// Requests per transaction.
    pub batch: usize,
    /// Parallel connections.
    pub connections: usize,
    /// The people.
    pub population: Population,
    /// The random seed: the same seed gives the same data set.
    pub seed: u64,
}

/// The columns postgres-es writes, one vector each, for one UNNEST insert.
#[derive(Default)]
struct Rows {
    aggregate_type: Vec<&'static str>,
    aggregate_id: Vec<String>,
    sequence: Vec<i64>,
    event_type: Vec<String>,
    event_version: Vec<String>,
    payload: Vec<Value>,
    metadata: Vec<Value>,
}

impl Rows {
    fn push(
        &mut self,
        id: &str,
        sequence: &mut usize,
        events: Vec<ApprovalEvent>,
        metadata: &std::collections::HashMap<String, String>,
    ) -> anyhow::Result<()> {
        for payload in events {
            *sequence += 1;
            let envelope = EventEnvelope::<ApprovalRequest> {
                aggregate_id: id.to_owned(),
                sequence: *sequence,
                payload,
                metadata: metadata.clone(),
            };
            let serialized = SerializedEvent::try_from(&envelope)?;
            self.aggregate_type.push(ApprovalRequest::TYPE);
            self.aggregate_id.push(serialized.aggregate_id);
            self.sequence.push(i64::try_from(serialized.sequence)?);
            self.event_type.push(serialized.event_type);
            self.event_version.push(serialized.event_version);
            self.payload.push(serialized.payload);
            self.metadata.push(serialized.metadata);
        }
        Ok(())
    }
}

/// Request `index`'s whole history: its submission, then decisions until it is approved, rejected
/// (about 5%), or left pending part-way (about 25%, for the load to decide).
fn history(
    index: usize,
    plan: &SeedPlan,
    now: DateTime<Utc>,
    rows: &mut Rows,
) -> anyhow::Result<()> {
    let mut rng = fastrand::Rng::with_seed(plan.seed ^ (index as u64).wrapping_mul(0x9E37_79B9));
    let system = index % model::SYSTEMS.len();
    let external_ref = format!("SEED-{index:07}");
    let mut at = now - chrono::Duration::minutes(rng.i64(60..=43_200));
    let body = model::submission_body(&mut rng, &plan.population, system, &external_ref, now);
    let (mut request, events) = model::submitted(model::SYSTEMS[system], &body, at)?;
    let id = request.id.to_string();
    let mut sequence = 0;
    rows.push(
        &id,
        &mut sequence,
        events,
        &model::system_metadata(model::SYSTEMS[system]),
    )?;
    let needed = model::approvals_needed(&request);
    let fate = rng.u8(0..100);
    let (decisions, reject_last) = match fate {
        0..=69 => (needed, false),
        70..=74 => (rng.usize(1..=needed), true),
        _ => (rng.usize(0..needed.max(1)), false),
    };
    for n in 0..decisions {
        if request.status != Status::Pending {
            break;
        }
        let Some(user) = model::pick_approver(&mut rng, &request) else {
            break;
        };
        at += chrono::Duration::seconds(rng.i64(30..7_200)).min(now - at);
        let (verdict, comment) = if reject_last && n + 1 == decisions {
            (Verdict::Reject, Some("over budget".to_owned()))
        } else {
            (Verdict::Approve, None)
        };
        let events = model::decide(&mut request, &user, verdict, comment, at)?;
        rows.push(&id, &mut sequence, events, &model::person_metadata(&user))?;
    }
    Ok(())
}

/// Inserts one batch of rows in one transaction, in the order given (so `global_id` follows each
/// request's sequence within the transaction, as the feed requires).
async fn insert(pool: &PgPool, rows: &Rows) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                             payload, metadata) \
         SELECT t, i, s, et, ev, p, m \
         FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::jsonb[], \
                     $7::jsonb[]) WITH ORDINALITY AS u(t, i, s, et, ev, p, m, o) \
         ORDER BY o",
    )
    .bind(&rows.aggregate_type)
    .bind(&rows.aggregate_id)
    .bind(&rows.sequence)
    .bind(&rows.event_type)
    .bind(&rows.event_version)
    .bind(&rows.payload)
    .bind(&rows.metadata)
    .execute(pool)
    .await?;
    Ok(())
}

/// Writes the plan's requests into the event store; returns the number of events written.
pub async fn write(pool: &PgPool, plan: &SeedPlan) -> anyhow::Result<u64> {
    let next = Arc::new(AtomicUsize::new(0));
    let written = Arc::new(AtomicUsize::new(0));
    let now = Utc::now();
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..plan.connections.max(1) {
        let (pool, plan, next, written) =
            (pool.clone(), plan.clone(), next.clone(), written.clone());
        workers.spawn(async move {
            loop {
                let first = next.fetch_add(plan.batch, Ordering::Relaxed);
                if first >= plan.requests {
                    return anyhow::Ok(());
                }
                let last = (first + plan.batch).min(plan.requests);
                let rows = tokio::task::block_in_place(|| {
                    let mut rows = Rows::default();
                    for index in first..last {
                        history(index, &plan, now, &mut rows)?;
                    }
                    anyhow::Ok(rows)
                })?;
                insert(&pool, &rows).await.context("inserting a batch")?;
                let done = written.fetch_add(rows.sequence.len(), Ordering::Relaxed);
                if last % (plan.batch * 40) < plan.batch {
                    eprintln!(
                        "seed: {last} requests, {} events, {:.0} s",
                        done + rows.sequence.len(),
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        });
    }
    while let Some(result) = workers.join_next().await {
        result.context("a seeding worker panicked")??;
    }
    Ok(written.load(Ordering::Relaxed) as u64)
}

/// Moves the relay's checkpoint past every event in the store: the seeded past counts as
/// published (a ledger in steady state delivered its history long ago), so the benchmark measures
/// today's traffic, not a catch-up of a million old events through RabbitMQ and the handlers.
pub async fn mark_published(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO feed_checkpoints (name, tx_id, global_id)          SELECT $1, tx_id, global_id FROM events ORDER BY tx_id DESC, global_id DESC LIMIT 1          ON CONFLICT (name) DO UPDATE SET tx_id = EXCLUDED.tx_id, global_id = EXCLUDED.global_id",
    )
    .bind(approval_ledger::relay::RELAY)
    .execute(pool)
    .await?;
    Ok(())
}

/// Waits until every projection and the audit reader have applied every event in the store,
/// printing progress; fails after `limit`. Readers named in `ignore` are not waited for.
pub async fn wait_for_projections(
    pool: &PgPool,
    limit: Duration,
    ignore: &[String],
) -> anyhow::Result<()> {
    let head: Option<(i64, i64)> = sqlx::query_as(
        "SELECT tx_id, global_id FROM events ORDER BY tx_id DESC, global_id DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    let Some((tx_id, global_id)) = head else {
        return Ok(());
    };
    let head = approval_ledger::feed::Position { tx_id, global_id };
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let positions = checkpoints::all(pool).await?;
        let behind: Vec<&str> = read_models()
            .chain([approval_ledger::audit::reader::AuditReader::NAME])
            .filter(|name| !ignore.iter().any(|i| i == name))
            .filter(|name| {
                !positions
                    .iter()
                    .any(|(n, p)| n.as_str() == *name && *p >= head)
            })
            .collect();
        if behind.is_empty() {
            eprintln!(
                "seed: projections caught up in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if started.elapsed() > limit {
            anyhow::bail!("projections {behind:?} did not catch up within {limit:?}");
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            let (left,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM events WHERE (tx_id, global_id) > \
                 (SELECT tx_id, global_id FROM feed_checkpoints ORDER BY tx_id, global_id LIMIT 1)",
            )
            .fetch_one(pool)
            .await
            .unwrap_or((-1,));
            eprintln!("seed: waiting for {behind:?}; slowest has {left} events to go");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
