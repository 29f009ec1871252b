//! Runs a projection: reads the global feed after the projection's checkpoint and applies each
//! batch in one transaction that also moves the checkpoint. Exactly once, restart-safe, and safe
//! with several instances (the checkpoint row is locked for the transaction; an instance that
//! finds it moved re-reads from there).

use std::sync::Arc;
use std::time::Duration;

use approval_projections::{Position, Projection};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::FeedSettings;
use crate::metrics::Metrics;
use crate::progress::Progress;
use crate::shutdown::pause;
use crate::store::checkpoints;
use crate::store::feed::Feed;

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
    /// Applied events up to here.
    Applied(Position),
    /// Nothing to read; `held_back` says whether committed events wait behind a transaction.
    Idle { held_back: bool },
    /// Another instance moved the checkpoint; continue from there.
    Moved(Position),
}

/// Applies one batch after `at`.
async fn step<P: Projection>(
    projection: &P,
    feed: &Feed,
    ctx: &RunnerContext,
    at: Position,
) -> Result<Step, StepError> {
    let batch = feed.read_after(at, ctx.feed.batch_size).await?;
    let Some(last) = batch.events.last().map(|e| e.position) else {
        return Ok(Step::Idle {
            held_back: batch.held_back,
        });
    };
    // The read model and its checkpoint are derived data: if a crash loses this commit, both
    // roll back together and the batch is applied again, so the commit need not wait for disk.
    // Sent with the BEGIN, in one round trip.
    let mut tx = ctx
        .pool
        .begin_with("BEGIN; SET LOCAL synchronous_commit = off")
        .await?;
    let stored = checkpoints::lock(&mut tx, projection.name()).await?;
    if stored != at {
        tx.rollback().await?;
        return Ok(Step::Moved(stored));
    }
    projection.apply(&mut tx, &batch.events).await?;
    checkpoints::save(&mut tx, projection.name(), last).await?;
    tx.commit().await?;
    Ok(Step::Applied(last))
}

/// Runs `projection` until `stop`, woken by `wake` and by polling.
pub async fn run<P: Projection>(
    projection: P,
    ctx: RunnerContext,
    mut wake: watch::Receiver<u64>,
    stop: CancellationToken,
) {
    let name = projection.name();
    let feed = Feed::new(ctx.pool.clone());
    let idle = Duration::from_millis(ctx.feed.poll_interval_ms);
    let mut backoff = Duration::from_millis(50);
    let mut at: Option<Position> = None;
    while !stop.is_cancelled() {
        let position = match at {
            Some(p) => p,
            None => match checkpoints::load(&ctx.pool, name).await {
                Ok(p) => {
                    ctx.progress.advance(name, p);
                    at = Some(p);
                    p
                }
                Err(e) => {
                    tracing::warn!(projection = name, error = %e, "cannot load the checkpoint");
                    pause(&stop, backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        // Marked before reading, so a commit during the read wakes the next wait at once.
        wake.borrow_and_update();
        match step(&projection, &feed, &ctx, position).await {
            Ok(Step::Applied(to)) => {
                backoff = Duration::from_millis(50);
                at = Some(to);
                ctx.progress.advance(name, to);
            }
            Ok(Step::Moved(to)) => {
                at = Some(to);
                ctx.progress.advance(name, to);
            }
            Ok(Step::Idle { held_back: true }) => pause(&stop, HELD_BACK_RETRY).await,
            Ok(Step::Idle { held_back: false }) => {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = wake.changed() => {}
                    _ = tokio::time::sleep(idle) => {}
                }
            }
            Err(e) => {
                ctx.metrics
                    .reader_errors
                    .get_or_create(&Metrics::reader(name))
                    .inc();
                tracing::warn!(projection = name, error = %e, retry_in_ms = backoff.as_millis() as u64, "projection batch failed");
                // Re-read the checkpoint: the failed transaction may or may not have committed.
                at = None;
                pause(&stop, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
