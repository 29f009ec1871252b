//! Runs projections: reads the global feed after their checkpoints and applies each batch in one
//! transaction that also moves the checkpoints. Exactly once, restart-safe, and safe with several
//! instances (the checkpoint rows are locked for the transaction; an instance that finds them
//! moved re-reads from there). The read models run as one group, so a batch costs one feed read
//! and one commit for all of them; each still has its own checkpoint, so one can be rebuilt alone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use approval_projections::{Position, Projection};
use sqlx::{Connection, PgPool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::FeedSettings;
use crate::metrics::Metrics;
use crate::progress::Progress;
use crate::shutdown::pause;
use crate::store::checkpoints;
use crate::store::feed::{Feed, StatesQuery};

/// How soon to look again when committed events wait behind a running transaction.
const HELD_BACK_RETRY: Duration = Duration::from_millis(2);

/// What a projection runner needs besides its projection.
#[derive(Clone)]
pub struct RunnerContext {
    /// The database.
    pub pool: PgPool,
    /// Batch size and polling.
    pub feed: FeedSettings,
    /// Where to report positions.
    pub progress: Progress,
    /// Errors.
    pub metrics: Arc<Metrics>,
    /// How long to let events gather after a batch that was not full before reading again:
    /// fewer, larger transactions. Short for the read models, which commands wait for; longer
    /// for a reader nobody waits for.
    pub linger: Duration,
}

/// Why one batch failed.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Feed(#[from] crate::store::feed::FeedError),
    #[error(transparent)]
    Projection(#[from] approval_projections::ProjectionError),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// What one step did.
enum Step {
    /// Applied events up to here; `full` when the batch was as large as allowed (more wait);
    /// `written`: when this batch last wrote each checkpoint.
    Applied {
        to: Position,
        full: bool,
        written: Written,
    },
    /// Nothing to read; `held_back` says whether committed events wait behind a transaction.
    Idle { held_back: bool },
    /// Another instance moved the checkpoints; continue from there.
    Moved(BTreeMap<String, Position>),
}

/// When this runner last wrote each checkpoint of its group (`updated_at`).
type Written = BTreeMap<String, DateTime<Utc>>;

/// The names of a group's projections.
fn names<P: Projection>(group: &[P]) -> Vec<&'static str> {
    group.iter().map(Projection::name).collect()
}

/// Applies one batch after the group's slowest checkpoint: each projection gets the events past
/// its own checkpoint, all in one transaction that also moves every checkpoint.
async fn step<P: Projection>(
    group: &[P],
    feed: &Feed,
    states: &StatesQuery,
    ctx: &RunnerContext,
    at: &BTreeMap<String, Position>,
    written: Option<&Written>,
) -> Result<Step, StepError> {
    let from = at.values().min().copied().unwrap_or(Position::START);
    // One connection for the read and the transaction: one checkout of the pool per batch.
    let mut conn = ctx.pool.acquire().await?;
    // The batch, and the stored states of its requests for the projections that keep them.
    let (batch, loaded) = feed
        .read_with_states_on(&mut conn, states, from, ctx.feed.batch_size)
        .await?;
    let Some(last) = batch.events.last().map(|e| e.position) else {
        return Ok(Step::Idle {
            held_back: batch.held_back,
        });
    };
    // The read models and their checkpoints are derived data: if a crash loses this commit, all
    // roll back together and the batch is applied again, so the commit need not wait for disk.
    // Sent with the BEGIN, in one round trip.
    let mut tx = conn
        .begin_with("BEGIN; SET LOCAL synchronous_commit = off")
        .await?;
    // The checkpoints are locked and moved first, in one round trip; if another instance moved
    // them, the batch is rolled back.
    let found = checkpoints::move_all(&mut tx, at, last).await?;
    let stored: BTreeMap<String, Position> = found
        .iter()
        .map(|(name, f)| (name.clone(), f.position))
        .collect();
    if stored != *at {
        tx.rollback().await?;
        return Ok(Step::Moved(stored));
    }
    // The states were read before the lock: they are those of `at` when nobody but this runner
    // has written the checkpoints since its last batch. A rebuild's swap can leave a checkpoint
    // where it was over new tables; then each projection reads its states again, under the lock.
    let ours = written.is_some_and(|w| found.iter().all(|(n, f)| w.get(n) == Some(&f.written)));
    let mut loaded = loaded.filter(|_| ours).map(Vec::into_iter);
    for projection in group {
        let mine = at
            .get(projection.name())
            .copied()
            .unwrap_or(Position::START);
        let start = batch.events.partition_point(|e| e.position <= mine);
        // The loaded maps follow the group's order of the projections that keep states.
        let states = match (&mut loaded, projection.state_table()) {
            (Some(maps), Some(_)) => maps.next(),
            _ => None,
        };
        if start < batch.events.len() {
            projection
                .apply(&mut tx, &batch.events[start..], states)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(Step::Applied {
        to: last,
        full: batch.events.len() as i64 >= ctx.feed.batch_size,
        written: found
            .into_iter()
            .map(|(name, f)| (name, f.rewritten))
            .collect(),
    })
}

/// Loads (creating when missing) the checkpoints of `group`.
async fn load<P: Projection>(
    group: &[P],
    pool: &sqlx::PgPool,
) -> Result<BTreeMap<String, Position>, sqlx::Error> {
    let mut at = BTreeMap::new();
    for projection in group {
        at.insert(
            projection.name().to_owned(),
            checkpoints::load(pool, projection.name()).await?,
        );
    }
    Ok(at)
}

/// Runs a group of projections until `stop`, woken by `wake` and by polling. One feed read and
/// one transaction per batch serve the whole group.
pub async fn run<P: Projection>(
    group: Vec<P>,
    ctx: RunnerContext,
    mut wake: watch::Receiver<u64>,
    stop: CancellationToken,
) {
    let label = names(&group).join("+");
    let reader = Metrics::reader(&label);
    let feed = Feed::new(ctx.pool.clone());
    let tables: Vec<(&str, &str)> = group.iter().filter_map(Projection::state_table).collect();
    let states = StatesQuery::new(&tables);
    let idle = Duration::from_millis(ctx.feed.poll_interval_ms);
    let mut backoff = Duration::from_millis(50);
    let mut at: Option<BTreeMap<String, Position>> = None;
    let mut written: Option<Written> = None;
    let report = |positions: &BTreeMap<String, Position>| {
        for (name, position) in positions {
            ctx.progress.advance(name, *position);
        }
    };
    while !stop.is_cancelled() {
        let Some(positions) = at.as_mut() else {
            match load(&group, &ctx.pool).await {
                Ok(loaded) => {
                    report(&loaded);
                    at = Some(loaded);
                }
                Err(e) => {
                    tracing::warn!(projections = %label, error = %e, "cannot load the checkpoints");
                    pause(&stop, backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            continue;
        };
        // Marked before reading, so a commit during the read wakes the next wait at once.
        wake.borrow_and_update();
        let started = std::time::Instant::now();
        let result = step(&group, &feed, &states, &ctx, positions, written.as_ref()).await;
        match result {
            Ok(Step::Applied {
                to,
                full,
                written: w,
            }) => {
                written = Some(w);
                ctx.metrics
                    .reader_batch_duration
                    .get_or_create(&reader)
                    .observe(started.elapsed().as_secs_f64());
                backoff = Duration::from_millis(50);
                for position in positions.values_mut() {
                    *position = (*position).max(to);
                }
                report(positions);
                if !full && !ctx.linger.is_zero() {
                    pause(&stop, ctx.linger).await;
                }
            }
            Ok(Step::Moved(stored)) => {
                written = None;
                report(&stored);
                *positions = stored;
            }
            Ok(Step::Idle { held_back: true }) => {
                ctx.metrics.reader_held_back.get_or_create(&reader).inc();
                pause(&stop, HELD_BACK_RETRY.max(ctx.linger)).await
            }
            Ok(Step::Idle { held_back: false }) => {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = wake.changed() => {}
                    _ = tokio::time::sleep(idle) => {}
                }
            }
            Err(e) => {
                for name in names(&group) {
                    ctx.metrics
                        .reader_errors
                        .get_or_create(&Metrics::reader(name))
                        .inc();
                }
                tracing::warn!(projections = %label, error = %e, retry_in_ms = backoff.as_millis() as u64, "projection batch failed");
                // Re-read the checkpoints: the failed transaction may or may not have committed.
                at = None;
                written = None;
                pause(&stop, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
