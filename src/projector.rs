//! The read models' runner: a consumer of the feed ([`crate::feed::follower`]) that applies each
//! batch with the move of the read models' checkpoints, exactly once, restart-safe, and safe with
//! several instances (the checkpoint rows are locked while a batch is applied; an instance that
//! finds them moved reads again from there). The read models run as one group, so a batch costs
//! one feed read and one write for all of them; each still has its own checkpoint, so one can be
//! rebuilt alone.
//!
//! That write is one statement: it locks and checks the checkpoints, moves them, and applies the
//! batch from the states read with it, in one round trip. It takes a transaction instead (lock and
//! move, then each projection reads its states and applies) for the first batch after a start,
//! when another instance or a rebuild wrote the checkpoints since this runner's last batch, and
//! for a projection that must read more than its states (the audit reader, which runs as a group
//! of its own).

use std::collections::BTreeMap;
use std::sync::Arc;

use approval_projections::{LoadedStates, Projection};
use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};

use crate::feed::follower::{Applied, Consumer, FollowError};
use crate::feed::progress::Progress;
use crate::feed::signal::CommitSignal;
use crate::feed::{checkpoints, Batch, FeedEvent, Position, StatesQuery};
use crate::metrics::Metrics;

/// When this runner last wrote each checkpoint of its group (`updated_at`).
type Written = BTreeMap<String, DateTime<Utc>>;

/// A group of projections applied together, as one consumer of the feed.
pub struct Projector<P: Projection> {
    group: Vec<P>,
    label: String,
    /// Where each checkpoint of the group stands, once started.
    at: BTreeMap<String, Position>,
    /// When this runner last wrote them; `None` until its first batch after a start.
    written: Option<Written>,
    /// Told of every position, for read-your-writes (the read models' group only).
    progress: Option<Progress>,
    /// Told of every batch the whole group applied, for the other processes' read-your-writes.
    signal: Option<CommitSignal>,
    metrics: Arc<Metrics>,
}

impl<P: Projection> Projector<P> {
    /// A runner of `group`.
    pub fn new(group: Vec<P>, metrics: Arc<Metrics>) -> Self {
        let label = group
            .iter()
            .map(Projection::name)
            .collect::<Vec<_>>()
            .join("+");
        Self {
            group,
            label,
            at: BTreeMap::new(),
            written: None,
            progress: None,
            signal: None,
            metrics,
        }
    }

    /// Reports its positions to `progress` and announces them through `signal`: what commands
    /// wait for to read their own writes.
    pub fn reporting(mut self, progress: Progress, signal: CommitSignal) -> Self {
        self.progress = Some(progress);
        self.signal = Some(signal);
        self
    }

    /// Its name in logs and metrics: the projections' names joined with `+`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Its checkpoints' names.
    pub fn names(&self) -> Vec<String> {
        self.group.iter().map(|p| p.name().to_owned()).collect()
    }

    /// The read it needs: the batch with the states of the projections that keep them.
    pub fn states_query(&self) -> StatesQuery {
        let tables: Vec<(&str, &str)> = self
            .group
            .iter()
            .filter_map(Projection::state_table)
            .collect();
        StatesQuery::new(&tables)
    }

    /// The slowest checkpoint of the group: where its next read starts.
    fn slowest(&self) -> Position {
        self.at.values().min().copied().unwrap_or(Position::START)
    }

    fn report(&self) {
        if let Some(progress) = &self.progress {
            for (name, position) in &self.at {
                progress.advance(name, *position);
            }
        }
    }

    /// The events of `events` past `projection`'s checkpoint.
    fn past<'a>(&self, projection: &P, events: &'a [FeedEvent]) -> &'a [FeedEvent] {
        let mine = self
            .at
            .get(projection.name())
            .copied()
            .unwrap_or(Position::START);
        &events[events.partition_point(|e| e.position <= mine)..]
    }

    /// The batch's usual way: one statement locks, checks and moves the checkpoints and applies
    /// the batch to every projection, from the states read with it. Those states are the ones of
    /// the checkpoints only if nobody but this runner has written them since its last batch: the
    /// statement's gate checks it under the lock, and writes nothing if not (a rebuild's swap can
    /// leave a checkpoint where it was over new tables). `None`: the gate did not hold but the
    /// checkpoints stand where they did, or a projection cannot write this way; the caller then
    /// applies the batch in a transaction.
    async fn write_in_one_statement(
        &self,
        conn: &mut PgConnection,
        events: &[FeedEvent],
        loaded: Vec<LoadedStates>,
        written: &Written,
        last: Position,
    ) -> Result<Option<Outcome>, FollowError> {
        let Some(mut write) = checkpoints::gated_move(&self.at, written, last)? else {
            return Ok(None);
        };
        // The loaded maps follow the group's order of the projections that keep states.
        let mut loaded = loaded.into_iter();
        for projection in &self.group {
            let states = match projection.state_table() {
                Some(_) => match loaded.next() {
                    Some(states) => states,
                    None => return Ok(None),
                },
                None => LoadedStates::new(),
            };
            let events = self.past(projection, events);
            if !events.is_empty() && !projection.write(&mut write, events, states)? {
                return Ok(None);
            }
        }
        // Derived data: on the read models' connection a commit does not wait for the disk (see
        // `apply_in_a_transaction`).
        let (found, held) = checkpoints::run_gated(conn, write).await?;
        let stored = positions(&found);
        if stored != self.at {
            return Ok(Some(Outcome::Moved(stored)));
        }
        if !held {
            return Ok(None);
        }
        Ok(Some(Outcome::Applied(written_at(found))))
    }

    /// The batch in a transaction: lock, check and move the checkpoints, then each projection
    /// reads its states under the lock and applies its events.
    async fn apply_in_a_transaction(
        &self,
        conn: &mut PgConnection,
        events: &[FeedEvent],
        last: Position,
    ) -> Result<Outcome, FollowError> {
        // The read models and their checkpoints are derived data: if a crash loses this commit,
        // all roll back together and the batch is applied again, so the commit need not wait
        // for disk. Sent with the BEGIN, in one round trip.
        let mut tx = conn
            .begin_with("BEGIN; SET LOCAL synchronous_commit = off")
            .await?;
        // The checkpoints are locked and moved first, in one round trip; if another instance
        // moved them, the batch is rolled back.
        let lock = checkpoints::lock_and_move(&self.at, last)?;
        let (found, held) = checkpoints::run_gated(&mut tx, lock).await?;
        if !held {
            tx.rollback().await?;
            return Ok(Outcome::Moved(positions(&found)));
        }
        for projection in &self.group {
            let events = self.past(projection, events);
            if !events.is_empty() {
                projection.apply(&mut tx, events, None).await?;
            }
        }
        tx.commit().await?;
        Ok(Outcome::Applied(written_at(found)))
    }
}

/// What writing a batch did.
enum Outcome {
    /// Applied; when each checkpoint was written.
    Applied(Written),
    /// Another instance moved the checkpoints; they stand here.
    Moved(BTreeMap<String, Position>),
}

fn positions(found: &BTreeMap<String, checkpoints::Found>) -> BTreeMap<String, Position> {
    found
        .iter()
        .map(|(name, f)| (name.clone(), f.position))
        .collect()
}

fn written_at(found: BTreeMap<String, checkpoints::Found>) -> Written {
    found
        .into_iter()
        .map(|(name, f)| (name, f.written))
        .collect()
}

impl<P: Projection> Consumer for Projector<P> {
    async fn start(&mut self, conn: &mut PgConnection) -> Result<Position, FollowError> {
        let mut at = BTreeMap::new();
        for projection in &self.group {
            let name = projection.name();
            at.insert(name.to_owned(), checkpoints::load(conn, name).await?);
        }
        self.at = at;
        self.written = None;
        self.report();
        Ok(self.slowest())
    }

    async fn apply(
        &mut self,
        conn: &mut PgConnection,
        batch: Batch,
    ) -> Result<Applied, FollowError> {
        let Some(last) = batch.events.last().map(|e| e.position) else {
            return Ok(Applied::Through(self.slowest()));
        };
        let mut outcome = None;
        if let (Some(written), Some(loaded)) = (self.written.as_ref(), batch.states) {
            outcome = self
                .write_in_one_statement(conn, &batch.events, loaded, written, last)
                .await?;
            if matches!(outcome, Some(Outcome::Applied(_))) {
                self.metrics
                    .reader_one_statement
                    .get_or_create(&Metrics::reader(&self.label))
                    .inc();
            }
        }
        let outcome = match outcome {
            Some(outcome) => outcome,
            None => {
                self.apply_in_a_transaction(conn, &batch.events, last)
                    .await?
            }
        };
        match outcome {
            Outcome::Applied(written) => {
                self.written = Some(written);
                for position in self.at.values_mut() {
                    *position = (*position).max(last);
                }
                self.report();
                if let Some(signal) = &self.signal {
                    signal.progressed(self.slowest());
                }
                Ok(Applied::Through(last))
            }
            Outcome::Moved(stored) => {
                self.written = None;
                self.at = stored;
                self.report();
                Ok(Applied::MovedTo(self.slowest()))
            }
        }
    }

    async fn reset(&mut self) {
        // The failed batch may or may not have committed: start reads the checkpoints again.
        self.written = None;
    }
}
