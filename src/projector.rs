//! Runs projections: reads the global feed after their checkpoints and applies each batch with
//! the move of the checkpoints, exactly once, restart-safe, and safe with several instances (the
//! checkpoint rows are locked while a batch is applied; an instance that finds them moved
//! re-reads from there). The read models run as one group, so a batch costs one feed read and one
//! write for all of them; each still has its own checkpoint, so one can be rebuilt alone.
//!
//! That write is one statement: it locks and checks the checkpoints, moves them, and applies the
//! batch from the states read with it, in one round trip. It takes a transaction instead (lock and
//! move, then each projection reads its states and applies) for the first batch after a start,
//! when another instance or a rebuild wrote the checkpoints since this runner's last batch, and
//! for a projection that must read more than its states (the audit reader).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use approval_projections::{FeedEvent, LoadedStates, Position, Projection};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::FeedSettings;
use crate::metrics::Metrics;
use crate::progress::Progress;
use crate::shutdown::pause;
use crate::store::checkpoints;
use crate::store::feed::{Feed, StatesQuery, HELD_BACK_RETRY};

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
    /// `written`: when this batch last wrote each checkpoint; `one_statement`: whether it took
    /// one statement rather than a transaction.
    Applied {
        to: Position,
        full: bool,
        written: Written,
        one_statement: bool,
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
/// its own checkpoint, in one statement, or one transaction, that also moves every checkpoint.
async fn step<P: Projection>(
    group: &[P],
    feed: &Feed,
    states: &StatesQuery,
    ctx: &RunnerContext,
    at: &BTreeMap<String, Position>,
    written: Option<&Written>,
) -> Result<Step, StepError> {
    let from = at.values().min().copied().unwrap_or(Position::START);
    // One connection for the read and the writes: one checkout of the pool per batch.
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
    let full = batch.events.len() as i64 >= ctx.feed.batch_size;
    if let (Some(written), Some(loaded)) = (written, loaded) {
        let batch = Batch {
            events: &batch.events,
            at,
            last,
            full,
        };
        if let Some(step) =
            write_in_one_statement(group, &mut conn, &batch, loaded, written).await?
        {
            return Ok(step);
        }
    }
    apply_in_a_transaction(group, &mut conn, &batch.events, at, last, full).await
}

/// A batch read, and where the group's checkpoints stand.
struct Batch<'a> {
    events: &'a [FeedEvent],
    at: &'a BTreeMap<String, Position>,
    last: Position,
    full: bool,
}

/// The events of `events` past `projection`'s checkpoint in `at`.
fn past<'a, P: Projection>(
    projection: &P,
    events: &'a [FeedEvent],
    at: &BTreeMap<String, Position>,
) -> &'a [FeedEvent] {
    let mine = at
        .get(projection.name())
        .copied()
        .unwrap_or(Position::START);
    &events[events.partition_point(|e| e.position <= mine)..]
}

/// The batch's usual way: one statement locks, checks and moves the checkpoints and applies the
/// batch to every projection, from the states read with it. Those states are the ones of the
/// checkpoints only if nobody but this runner has written them since its last batch: the
/// statement's gate checks it under the lock, and writes nothing if not (a rebuild's swap can
/// leave a checkpoint where it was over new tables). `None`: the gate did not hold but the
/// checkpoints stand where they did, or a projection cannot write this way; the caller then
/// applies the batch in a transaction.
async fn write_in_one_statement<P: Projection>(
    group: &[P],
    conn: &mut PgConnection,
    batch: &Batch<'_>,
    loaded: Vec<LoadedStates>,
    written: &Written,
) -> Result<Option<Step>, StepError> {
    let Some(mut write) = checkpoints::gated_move(batch.at, written, batch.last)? else {
        return Ok(None);
    };
    // The loaded maps follow the group's order of the projections that keep states.
    let mut loaded = loaded.into_iter();
    for projection in group {
        let states = match projection.state_table() {
            Some(_) => match loaded.next() {
                Some(states) => states,
                None => return Ok(None),
            },
            None => LoadedStates::new(),
        };
        let events = past(projection, batch.events, batch.at);
        if !events.is_empty() && !projection.write(&mut write, events, states)? {
            return Ok(None);
        }
    }
    // Derived data: on the read models' connection a commit does not wait for the disk (see
    // `apply_in_a_transaction`).
    let (found, held) = checkpoints::run_gated(conn, write).await?;
    let stored = positions(&found);
    if stored != *batch.at {
        return Ok(Some(Step::Moved(stored)));
    }
    if !held {
        return Ok(None);
    }
    Ok(Some(applied(batch.last, batch.full, found, true)))
}

/// The batch in a transaction: lock, check and move the checkpoints, then each projection reads
/// its states under the lock and applies its events.
async fn apply_in_a_transaction<P: Projection>(
    group: &[P],
    conn: &mut PgConnection,
    events: &[FeedEvent],
    at: &BTreeMap<String, Position>,
    last: Position,
    full: bool,
) -> Result<Step, StepError> {
    // The read models and their checkpoints are derived data: if a crash loses this commit, all
    // roll back together and the batch is applied again, so the commit need not wait for disk.
    // Sent with the BEGIN, in one round trip.
    let mut tx = conn
        .begin_with("BEGIN; SET LOCAL synchronous_commit = off")
        .await?;
    // The checkpoints are locked and moved first, in one round trip; if another instance moved
    // them, the batch is rolled back.
    let lock = checkpoints::lock_and_move(at, last)?;
    let (found, held) = checkpoints::run_gated(&mut tx, lock).await?;
    if !held {
        tx.rollback().await?;
        return Ok(Step::Moved(positions(&found)));
    }
    for projection in group {
        let events = past(projection, events, at);
        if !events.is_empty() {
            projection.apply(&mut tx, events, None).await?;
        }
    }
    tx.commit().await?;
    Ok(applied(last, full, found, false))
}

fn positions(found: &BTreeMap<String, checkpoints::Found>) -> BTreeMap<String, Position> {
    found
        .iter()
        .map(|(name, f)| (name.clone(), f.position))
        .collect()
}

fn applied(
    to: Position,
    full: bool,
    found: BTreeMap<String, checkpoints::Found>,
    one_statement: bool,
) -> Step {
    Step::Applied {
        to,
        full,
        written: found
            .into_iter()
            .map(|(name, f)| (name, f.written))
            .collect(),
        one_statement,
    }
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
                one_statement,
            }) => {
                written = Some(w);
                if one_statement {
                    ctx.metrics
                        .reader_one_statement
                        .get_or_create(&reader)
                        .inc();
                }
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
