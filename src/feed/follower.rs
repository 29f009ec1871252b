//! The one loop behind every reader of the feed.
//!
//! A [`Follower`] keeps a reader's cursor, reads the feed after it, hands each batch to its
//! [`Consumer`] and then decides when to read again: at once after a full batch; soon when
//! committed events are held back behind a transaction still running; otherwise after the next
//! commit (or the poll interval), letting commits gather first where the reader asks for it.
//! It backs off after failures, counts batches, held-back reads and errors per reader, and where
//! asked it reads on a connection of its own that holds a session advisory lock, so that one
//! instance of the reader leads across every process.
//!
//! What a batch does is the consumer's: the read models write it with their checkpoints in one
//! statement, the relay publishes it and then moves its checkpoint, the stream tells the people
//! it concerns. The consumer says where it starts, and after each batch how far it got.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use approval_feed::Position;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::feed::read::{Batch, Feed, FeedError, StatesQuery, HELD_BACK_RETRY};
use crate::metrics::Metrics;
use crate::shutdown::pause;

/// Why a batch was not handled. The follower logs it, backs off and starts the consumer again
/// from its checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The feed could not be read.
    #[error(transparent)]
    Feed(#[from] FeedError),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A read model could not apply the batch.
    #[error(transparent)]
    Projection(#[from] approval_projections::ProjectionError),
    /// The consumer failed in its own way (the broker refused a batch, say).
    #[error("{0}")]
    Consumer(String),
}

/// How far a consumer got with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// It handled the batch up to here (its last event).
    Through(Position),
    /// It handled the batch up to here and wants no more for now (the sweeper, whose events
    /// must age first): the follower reads again after its poll interval.
    Until(Position),
    /// It took nothing of the batch yet (the sweeper, whose events must age first): the
    /// follower reads the same again after its poll interval.
    NotYet,
    /// Its cursor is elsewhere (another instance moved its checkpoints): read from there.
    MovedTo(Position),
    /// It wants to start again ([`Consumer::start`]).
    Restart,
}

/// A reader of the feed, driven by a [`Follower`].
pub trait Consumer: Send {
    /// What it waits for before it can start, such as a broker connection or a listener. Called
    /// before every [`Consumer::start`]; returning early once `stop` is cancelled.
    fn prepare<'a>(
        &'a mut self,
        _stop: &'a CancellationToken,
    ) -> impl Future<Output = Result<(), FollowError>> + Send + 'a {
        async { Ok(()) }
    }

    /// Where it starts: its checkpoint, or the feed's head.
    fn start<'a>(
        &'a mut self,
        conn: &'a mut PgConnection,
    ) -> impl Future<Output = Result<Position, FollowError>> + Send + 'a;

    /// Handles a batch read after where it stands, on the connection it was read on.
    fn apply<'a>(
        &'a mut self,
        conn: &'a mut PgConnection,
        batch: Batch,
    ) -> impl Future<Output = Result<Applied, FollowError>> + Send + 'a;

    /// Called after a failure, before it is started again: close what the failure left open.
    fn reset(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// How a reader paces its reads.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Events per read.
    pub batch: i64,
    /// After a batch that was not full, how long to let events gather before looking again:
    /// fewer, larger batches for a reader nobody waits for long.
    pub linger: Duration,
    /// After a commit wakes it, how long to let other commits join before reading.
    pub gather: Duration,
    /// The longest wait without a wake-up.
    pub poll: Duration,
    /// The longest pause after failures.
    pub max_backoff: Duration,
}

/// What a follower reads for its consumer.
pub enum Read {
    /// The events alone.
    Events,
    /// The events with their requests' stored states in these tables.
    WithStates(StatesQuery),
}

/// A session advisory lock that one instance of a reader holds while it reads: on a connection
/// of the reader's own (`options`), which lives as long as the lock.
pub struct Leader {
    /// The lock's key.
    pub key: i64,
    /// The connection's options.
    pub options: PgConnectOptions,
}

/// How often a leader checks that its connection, and so its lock, is still there.
const LEASE_CHECK: Duration = Duration::from_secs(1);

/// The shortest pause after a failure.
const BACKOFF: Duration = Duration::from_millis(50);

/// Follows the feed for one consumer.
pub struct Follower {
    /// The reader's name in logs and metrics.
    pub name: String,
    /// Where the reader's connection comes from when it does not lead.
    pub pool: PgPool,
    /// What it reads.
    pub read: Read,
    /// How it paces its reads.
    pub pace: Pace,
    /// The lock it leads with, if one instance reads at a time.
    pub leader: Option<Leader>,
    /// The names its failures are counted under (its checkpoints').
    pub counted_as: Vec<String>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// The connection a batch is read and handled on.
enum Conn<'a> {
    Pooled(PoolConnection<Postgres>),
    Leader(&'a mut PgConnection),
}

impl std::ops::Deref for Conn<'_> {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        match self {
            Self::Pooled(c) => c,
            Self::Leader(c) => c,
        }
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Self::Pooled(c) => c,
            Self::Leader(c) => c,
        }
    }
}

/// A leader's connection and when it last checked its lease.
struct Lead {
    conn: PgConnection,
    checked: Instant,
}

/// What one step of the loop found.
enum Step {
    Applied {
        applied: Applied,
        full: bool,
        held_back: bool,
    },
    Idle {
        held_back: bool,
    },
}

impl Follower {
    /// Follows the feed until `stop`, woken by `wake` (when given) and by polling.
    pub async fn run<C: Consumer>(
        &self,
        consumer: &mut C,
        mut wake: Option<watch::Receiver<u64>>,
        stop: &CancellationToken,
    ) {
        let feed = Feed::new();
        let labels = Metrics::reader(&self.name);
        let mut backoff = BACKOFF;
        let mut at: Option<Position> = None;
        let mut lead: Option<Lead> = None;
        while !stop.is_cancelled() {
            if let Some(w) = wake.as_mut() {
                // Marked before reading, so a commit during the read wakes the next wait at once.
                w.borrow_and_update();
            }
            let started = Instant::now();
            let step = self.step(&feed, consumer, &mut at, &mut lead, stop).await;
            let step = match step {
                Ok(Some(step)) => step,
                Ok(None) => continue,
                Err(e) => {
                    for name in &self.counted_as {
                        self.metrics
                            .reader_errors
                            .get_or_create(&Metrics::reader(name))
                            .inc();
                    }
                    tracing::warn!(reader = %self.name, error = %e, retry_in_ms = backoff.as_millis() as u64, "a feed reader failed; it starts again from its checkpoint");
                    consumer.reset().await;
                    at = None;
                    lead = None;
                    pause(stop, backoff).await;
                    backoff = (backoff * 2).min(self.pace.max_backoff);
                    continue;
                }
            };
            backoff = BACKOFF;
            match step {
                Step::Applied {
                    applied,
                    full,
                    held_back,
                } => {
                    match applied {
                        Applied::Through(to) => {
                            self.metrics
                                .reader_batch_duration
                                .get_or_create(&labels)
                                .observe(started.elapsed().as_secs_f64());
                            at = Some(to);
                            if full {
                                continue;
                            }
                        }
                        Applied::Until(to) => {
                            at = Some(to);
                            pause(stop, self.pace.poll).await;
                            continue;
                        }
                        Applied::NotYet => {
                            pause(stop, self.pace.poll).await;
                            continue;
                        }
                        Applied::MovedTo(to) => {
                            at = Some(to);
                            continue;
                        }
                        Applied::Restart => {
                            at = None;
                            continue;
                        }
                    }
                    // A batch that was not full took everything committed that is not held
                    // back: wait for more, as after an empty read.
                    if !self.pace.linger.is_zero() {
                        pause(stop, self.pace.linger).await;
                    }
                    self.wait_for_more(held_back, &labels, wake.as_mut(), stop)
                        .await;
                }
                Step::Idle { held_back } => {
                    self.wait_for_more(held_back, &labels, wake.as_mut(), stop)
                        .await
                }
            }
        }
        consumer.reset().await;
    }

    /// Reads what the consumer has yet to see and hands it over. `None`: nothing was read (the
    /// consumer was started, or stop came while waiting for the lead).
    async fn step<C: Consumer>(
        &self,
        feed: &Feed,
        consumer: &mut C,
        at: &mut Option<Position>,
        lead: &mut Option<Lead>,
        stop: &CancellationToken,
    ) -> Result<Option<Step>, FollowError> {
        if let (Some(leader), None) = (&self.leader, lead.as_ref()) {
            let Some(conn) = self.lead(leader, stop).await else {
                return Ok(None);
            };
            tracing::info!(reader = %self.name, "this instance leads the reader");
            *lead = Some(Lead {
                conn,
                checked: Instant::now(),
            });
            // What the last leader did is in the checkpoint: start from there.
            *at = None;
        }
        if at.is_none() {
            // Before a pooled connection is taken: what it waits for may take long.
            consumer.prepare(stop).await?;
            if stop.is_cancelled() {
                return Ok(None);
            }
        }
        let mut conn = match lead.as_mut() {
            None => Conn::Pooled(self.pool.acquire().await?),
            Some(current) => {
                if current.checked.elapsed() > LEASE_CHECK {
                    // The lock lives as long as its connection: if that is gone, so is the lead.
                    sqlx::query("SELECT 1").execute(&mut current.conn).await?;
                    current.checked = Instant::now();
                }
                Conn::Leader(&mut current.conn)
            }
        };
        let Some(from) = *at else {
            *at = Some(consumer.start(&mut conn).await?);
            return Ok(None);
        };
        let batch = match &self.read {
            Read::Events => feed.read_after_on(&mut conn, from, self.pace.batch).await?,
            Read::WithStates(states) => {
                feed.read_with_states_on(&mut conn, states, from, self.pace.batch)
                    .await?
            }
        };
        if batch.events.is_empty() {
            return Ok(Some(Step::Idle {
                held_back: batch.held_back,
            }));
        }
        let full = batch.events.len() as i64 >= self.pace.batch;
        let held_back = batch.held_back;
        let applied = consumer.apply(&mut conn, batch).await?;
        Ok(Some(Step::Applied {
            applied,
            full,
            held_back,
        }))
    }

    /// Waits for more to read: soon when committed events are held back behind a transaction
    /// still running; otherwise until a commit wakes the reader (or the poll interval passes),
    /// then a little more for other commits to join.
    async fn wait_for_more(
        &self,
        held_back: bool,
        labels: &crate::metrics::ReaderLabels,
        wake: Option<&mut watch::Receiver<u64>>,
        stop: &CancellationToken,
    ) {
        if held_back {
            self.metrics.reader_held_back.get_or_create(labels).inc();
            pause(stop, HELD_BACK_RETRY.max(self.pace.linger)).await;
            return;
        }
        let woken = match wake {
            Some(wake) => tokio::select! {
                _ = stop.cancelled() => false,
                changed = wake.changed() => changed.is_ok(),
                _ = tokio::time::sleep(self.pace.poll) => false,
            },
            None => {
                pause(stop, self.pace.poll).await;
                false
            }
        };
        if woken && !self.pace.gather.is_zero() {
            pause(stop, self.pace.gather).await;
        }
    }

    /// Waits until this instance holds the leader's lock; `None` once `stop` is cancelled.
    async fn lead(&self, leader: &Leader, stop: &CancellationToken) -> Option<PgConnection> {
        loop {
            if stop.is_cancelled() {
                return None;
            }
            match PgConnection::connect_with(&leader.options).await {
                Ok(mut conn) => {
                    let held: Result<(bool,), _> =
                        sqlx::query_as("SELECT pg_try_advisory_lock($1)")
                            .bind(leader.key)
                            .fetch_one(&mut conn)
                            .await;
                    if let Ok((true,)) = held {
                        return Some(conn);
                    }
                    let _ = conn.close().await;
                }
                Err(e) => {
                    tracing::debug!(reader = %self.name, error = %e, "cannot reach the database to lead")
                }
            }
            pause(stop, Duration::from_secs(1)).await;
        }
    }

    /// Reads from where `consumer` starts until the feed has nothing more below its horizon,
    /// handing over every batch, and returns where it got: for a reader that catches up once
    /// (a rebuild) rather than follows. A failure ends it.
    pub async fn catch_up<C: Consumer>(&self, consumer: &mut C) -> Result<Position, FollowError> {
        let feed = Feed::new();
        let mut conn = self.pool.acquire().await?;
        let mut at = consumer.start(&mut conn).await?;
        loop {
            let batch = match &self.read {
                Read::Events => feed.read_after_on(&mut conn, at, self.pace.batch).await?,
                Read::WithStates(states) => {
                    feed.read_with_states_on(&mut conn, states, at, self.pace.batch)
                        .await?
                }
            };
            let Some(last) = batch.events.last().map(|e| e.position) else {
                return Ok(at);
            };
            let full = batch.events.len() as i64 >= self.pace.batch;
            match consumer.apply(&mut conn, batch).await? {
                Applied::Through(to) | Applied::Until(to) | Applied::MovedTo(to) => at = to,
                Applied::NotYet => return Ok(at),
                Applied::Restart => at = consumer.start(&mut conn).await?,
            }
            if !full && at >= last {
                return Ok(at);
            }
        }
    }
}
