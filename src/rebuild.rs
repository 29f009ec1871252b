//! `projections rebuild`: builds a projection's read model afresh from the global feed while the
//! live one keeps serving, then swaps the new tables in.
//!
//! 1. Copies of the projection's tables are created empty in a schema of their own
//!    (`rebuild_<name>`), and the projection, constructed on that schema, folds the whole feed
//!    into them in large batches. Readers keep using the live tables meanwhile.
//! 2. One short transaction locks the projection's live checkpoint row (so its runner, in any
//!    process, applies nothing meanwhile), folds the last few events into the copies, sets the
//!    checkpoint to where the copies stand, and moves the live tables out (`retired_<name>`)
//!    and the copies in. Readers see the old tables until the commit and the new ones after:
//!    never an empty or half-built read model. The runner then finds its checkpoint moved and
//!    carries on from there, on the new tables.
//! 3. The retired tables and both schemas are dropped.
//!
//! One rebuild per projection at a time (a session advisory lock). The audit reader is never
//! rebuilt: folding a tampered store afresh would bless the tampering.

use std::sync::Arc;
use std::time::{Duration, Instant};

use approval_projections::absences::AbsencesProjection;
use approval_projections::analytics::AnalyticsProjection;
use approval_projections::inbox::InboxProjection;
use approval_projections::lists::ListsProjection;
use approval_projections::requests::RequestsProjection;
use approval_projections::{aside, Projection, ProjectionError, Schema};
use sqlx::{Connection, PgConnection, PgPool};

use crate::audit::reader::AuditReader;
use crate::feed::follower::{Applied, Consumer, FollowError, Follower, Pace, Read};
use crate::feed::{checkpoints, Batch, Feed, FeedError, Position};
use crate::metrics::Metrics;

/// How long the swap waits for a lock (the live checkpoint, the live tables) before it lets go
/// and tries again, so that readers never queue behind it for long.
const LOCK_TIMEOUT: &str = "2s";
/// How many times the swap is tried.
const SWAP_ATTEMPTS: u32 = 10;

/// Why a rebuild failed. The live read model is untouched by a failed rebuild.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// No projection has this name.
    #[error(
        "no projection is named {0:?}; the projections are requests, inbox, lists, absences and \
         analytics"
    )]
    Unknown(String),
    /// The audit reader was named.
    #[error(
        "the audit reader is never rebuilt: folding a tampered store afresh would bless the \
         tampering (see docs/decisions/0004-tamper-evidence.md)"
    )]
    Audit,
    /// Another rebuild of the same projection holds its lock.
    #[error("another rebuild of {0} is running")]
    Busy(&'static str),
    /// The live tables or checkpoint stayed locked through every attempt to swap.
    #[error("the live tables of {0} stayed locked; nothing was swapped, try again")]
    Locked(&'static str),
    /// The feed could not be read.
    #[error(transparent)]
    Feed(#[from] FeedError),
    /// The projection failed.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<FollowError> for RebuildError {
    fn from(e: FollowError) -> Self {
        match e {
            FollowError::Feed(e) => Self::Feed(e),
            FollowError::Database(e) => Self::Database(e),
            FollowError::Projection(e) => Self::Projection(e),
            FollowError::Consumer(message) => {
                Self::Projection(ProjectionError::Inconsistent(message))
            }
        }
    }
}

/// The first phase of a rebuild as a reader of the feed: every event from the start folded
/// into the copies aside, in large batches, telling `progress` how many so far.
struct Builder<'a, P> {
    projection: &'a P,
    events: u64,
    progress: &'a mut (dyn FnMut(u64) + Send),
}

impl<P: Projection> Consumer for Builder<'_, P> {
    async fn start(&mut self, _conn: &mut PgConnection) -> Result<Position, FollowError> {
        Ok(Position::START)
    }

    async fn apply(
        &mut self,
        conn: &mut PgConnection,
        batch: Batch,
    ) -> Result<Applied, FollowError> {
        let Some(last) = batch.events.last().map(|e| e.position) else {
            return Ok(Applied::NotYet);
        };
        let mut tx = conn.begin().await?;
        // The copies are not live yet: a crash here loses nothing that is not rebuilt again.
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
        self.projection.apply(&mut tx, &batch.events, None).await?;
        tx.commit().await?;
        self.events += batch.events.len() as u64;
        (self.progress)(self.events);
        Ok(Applied::Through(last))
    }
}

/// What a rebuild did.
#[derive(Debug, Clone)]
pub struct Rebuilt {
    /// The projection.
    pub name: &'static str,
    /// Events folded into the new tables.
    pub events: u64,
    /// Where the new tables (and the checkpoint) stand.
    pub position: Position,
    /// How long it took, swap included.
    pub elapsed: Duration,
}

impl Rebuilt {
    /// Events folded per second.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Rebuilds projection `name`, folding `batch_size` events per transaction and calling
/// `progress` with the events folded so far.
pub async fn rebuild(
    pool: &PgPool,
    name: &str,
    batch_size: i64,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<Rebuilt, RebuildError> {
    match name {
        RequestsProjection::NAME => run(pool, RequestsProjection::new, batch_size, progress).await,
        InboxProjection::NAME => run(pool, InboxProjection::new, batch_size, progress).await,
        ListsProjection::NAME => run(pool, ListsProjection::new, batch_size, progress).await,
        AbsencesProjection::NAME => run(pool, AbsencesProjection::new, batch_size, progress).await,
        AnalyticsProjection::NAME => {
            run(pool, AnalyticsProjection::new, batch_size, progress).await
        }
        AuditReader::NAME => Err(RebuildError::Audit),
        other => Err(RebuildError::Unknown(other.to_owned())),
    }
}

async fn run<P: Projection>(
    pool: &PgPool,
    make: fn(&Schema) -> P,
    batch_size: i64,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<Rebuilt, RebuildError> {
    let name = make(&Schema::live()).name();
    let mut conn = pool.acquire().await?;
    let key = format!("approval-ledger rebuild {name}");
    let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock(hashtext($1))")
        .bind(&key)
        .fetch_one(&mut *conn)
        .await?;
    if !locked {
        return Err(RebuildError::Busy(name));
    }
    let result = build_and_swap(pool, &mut conn, make, batch_size, progress).await;
    // The lock ends with the session anyway; unlocking returns the pooled connection clean.
    if let Err(e) = sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
        .bind(&key)
        .execute(&mut *conn)
        .await
    {
        tracing::warn!(projection = name, error = %e, "cannot release the rebuild lock");
    }
    result
}

/// The schema a rebuild of `name` fills, and the one the live tables retire to.
fn schemas(name: &str) -> Result<(Schema, Schema), RebuildError> {
    let make = |prefix: &str| {
        Schema::new(&format!("{prefix}_{name}"))
            .ok_or_else(|| RebuildError::Unknown(name.to_owned()))
    };
    Ok((make("rebuild")?, make("retired")?))
}

async fn build_and_swap<P: Projection>(
    pool: &PgPool,
    conn: &mut PgConnection,
    make: fn(&Schema) -> P,
    batch_size: i64,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<Rebuilt, RebuildError> {
    let started = Instant::now();
    let live = make(&Schema::live());
    let (name, tables) = (live.name(), live.tables());
    let (aside_schema, retired) = schemas(name)?;
    // The live checkpoint row must exist to be locked for the swap.
    checkpoints::load(conn, name).await?;
    aside::drop(conn, &retired).await?;
    aside::create(conn, tables, &aside_schema).await?;
    let builder = make(&aside_schema);
    let feed = Feed::new();
    let follower = Follower {
        name: format!("rebuild {name}"),
        pool: pool.clone(),
        read: Read::Events,
        pace: Pace {
            batch: batch_size,
            linger: Duration::ZERO,
            gather: Duration::ZERO,
            poll: Duration::ZERO,
            max_backoff: Duration::ZERO,
        },
        leader: None,
        counted_as: vec![],
        metrics: Arc::new(Metrics::default()),
    };
    let mut folding = Builder {
        projection: &builder,
        events: 0,
        progress,
    };
    let at = follower.catch_up(&mut folding).await?;
    let (mut events, progress) = (folding.events, folding.progress);
    aside::analyze(conn, tables, &aside_schema).await?;

    let mut attempt = 0;
    let (at, caught_up) = loop {
        attempt += 1;
        match swap(
            conn,
            &feed,
            &builder,
            &aside_schema,
            &retired,
            at,
            batch_size,
        )
        .await
        {
            Ok(done) => break done,
            Err(e) if is_lock_conflict(&e) && attempt < SWAP_ATTEMPTS => {
                tracing::info!(
                    projection = name,
                    attempt,
                    "the live tables are busy; trying the swap again"
                );
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            Err(e) if is_lock_conflict(&e) => return Err(RebuildError::Locked(name)),
            Err(e) => return Err(e),
        }
    };
    events += caught_up;
    progress(events);
    aside::drop(conn, &retired).await?;
    aside::drop(conn, &aside_schema).await?;
    Ok(Rebuilt {
        name,
        events,
        position: at,
        elapsed: started.elapsed(),
    })
}

/// The swap transaction: lock the live checkpoint, fold what the copies still lack, move the
/// checkpoint to where they stand, trade the tables. Returns where the copies stand and how many
/// events it folded.
async fn swap<P: Projection>(
    conn: &mut PgConnection,
    feed: &Feed,
    builder: &P,
    aside_schema: &Schema,
    retired: &Schema,
    mut at: Position,
    batch_size: i64,
) -> Result<(Position, u64), RebuildError> {
    let name = builder.name();
    let mut tx = conn.begin().await?;
    sqlx::query(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        .execute(&mut *tx)
        .await?;
    let live_at = checkpoints::lock(&mut tx, name).await?;
    // Holding the lock gives this transaction an id, so the feed now stops below it: the loop
    // ends, and whatever commits later is the runner's to apply after the swap.
    let mut caught_up = 0u64;
    loop {
        let batch = feed.read_after_on(&mut tx, at, batch_size).await?;
        if let Some(last) = batch.events.last().map(|e| e.position) {
            builder.apply(&mut tx, &batch.events, None).await?;
            at = last;
            caught_up += batch.events.len() as u64;
        }
        if (batch.events.len() as i64) < batch_size {
            break;
        }
    }
    if at < live_at {
        // The live runner read events this transaction cannot see: impossible while both read
        // below the oldest running transaction, and not worth a half-right read model.
        return Err(ProjectionError::Inconsistent(format!(
            "the rebuilt {name} stands at {at:?}, behind the live checkpoint {live_at:?}"
        ))
        .into());
    }
    checkpoints::save(&mut tx, name, at).await?;
    aside::swap(&mut tx, builder.tables(), aside_schema, retired).await?;
    tx.commit().await?;
    Ok((at, caught_up))
}

/// Whether `e` is PostgreSQL giving up on a lock: `lock_timeout`, or a deadlock it broke by
/// cancelling the swap. The live runner's one-statement batch takes its row locks on the read
/// models' tables before it waits for the checkpoint the swap holds; the swap then waits for the
/// tables. PostgreSQL cancels the one that waited longer, almost always the runner, which
/// retries; when it is the swap, the swap is tried again like after a lock timeout.
fn is_lock_conflict(e: &RebuildError) -> bool {
    let sql = match e {
        RebuildError::Database(sql) | RebuildError::Projection(ProjectionError::Database(sql)) => {
            sql
        }
        _ => return false,
    };
    matches!(sql, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("55P03" | "40P01")))
}
