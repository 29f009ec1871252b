//! The read side of approval-ledger: how events fold into the read models the API serves, and the
//! queries that read them.
//!
//! # Layout
//! - [`FeedEvent`], [`Position`]: an event as the global feed delivers it, and where it stands
//!   (defined in the `approval_feed` crate, re-exported here for the projections' signatures).
//! - [`Projection`]: one read model; `apply` folds a batch of feed events inside the caller's
//!   transaction, the same transaction that moves the projection's checkpoint (the service's
//!   projection runner owns that part), so each event takes effect exactly once. `write` gives
//!   the same writes as parts of one statement, which can also move the checkpoints.
//! - [`requests`]: the request detail (the folded aggregate state) and its timeline.
//! - [`inbox`]: what awaits each person at the current step, delegates included.
//! - [`lookup`]: a system's reference to its request, for reconciliation (a query of
//!   [`requests`]'s table, by the id the reference derives).
//! - [`lists`]: each person's own requests and the ones they decided, searchable.
//! - [`absences`]: every person's absences and deputies, and the queries that follow chains of
//!   deputies.
//! - [`analytics`]: each round, step occurrence and decision, for the approvals report (counts,
//!   times from a step becoming current to its decision, deadlines missed), and its query.
//! - [`timers`]: the queries of the timers table, which [`requests`] writes from each request's
//!   deadlines (reminders, overdue notices, escalations, expiry).
//! - [`fold`]: loading, folding and saving per-request state, shared by the projections that
//!   need it. It folds with the aggregate's own `apply`, so no rule is written twice.
//! - [`write`]: one statement for a whole batch, each projection's writes a part of it.
//!
//! - [`aside`]: copies of a projection's tables in another schema, filled by a rebuild and
//!   swapped in for the live ones.
//!
//! Every projection takes its tables' schema at construction, so a rebuild can fill a copy of
//! the tables aside and swap it in. Nothing here reads the feed or owns a connection pool.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::future::Future;

pub use approval_feed::{FeedEvent, Position};
use sqlx::PgConnection;
use uuid::Uuid;

pub mod absences;
pub mod analytics;
pub mod aside;
pub mod fold;
pub mod inbox;
pub mod lists;
pub mod lookup;
pub mod requests;
pub mod timers;
pub mod write;

use crate::write::BatchWrite;

/// Why a projection could not apply a batch.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The database refused or failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored state could not be read or written as JSON.
    #[error("state encoding: {0}")]
    Encoding(#[from] serde_json::Error),
    /// The stored events disagree with what the feed delivered (an event vanished or changed
    /// under the reader): the batch is not applied.
    #[error("inconsistent store: {0}")]
    Inconsistent(String),
}

/// A read model folded from the feed.
pub trait Projection: Send + Sync + 'static {
    /// Its name: the key of its checkpoint and the argument of `projections rebuild`.
    fn name(&self) -> &'static str;

    /// Folds `events`, in feed order, into the read model through `conn`, which is inside the
    /// transaction that will also move the checkpoint. Applying an event twice must change
    /// nothing (each projection skips what a request's version shows it has seen), so a
    /// rebuild can replay over a live copy.
    ///
    /// `states`: for a projection with a [`Projection::state_table`], the stored states of the
    /// batch's requests when the caller read them with the batch, as of this projection's
    /// checkpoint, which it holds locked (a request missing from them has none yet); `None`, and
    /// the projection reads its own. Projections without states ignore it.
    ///
    /// By default: the states (read when not given), then [`Projection::write`] as one statement.
    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [FeedEvent],
        states: Option<LoadedStates>,
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send + 'a {
        apply_by_writing(self, conn, events, states)
    }

    /// Adds to `write` what folding `events` changes, with no read: `states` are the stored
    /// states of the batch's requests as [`Projection::apply`] takes them (empty for a
    /// projection without states). Every write is a CTE under `write`'s gate, so a runner can
    /// apply a group's batch and move its checkpoints in one statement. `Ok(false)`: this
    /// projection cannot (it reads more than its states), and the runner uses `apply`.
    fn write(
        &self,
        _write: &mut BatchWrite,
        _events: &[FeedEvent],
        _states: LoadedStates,
    ) -> Result<bool, ProjectionError> {
        Ok(false)
    }

    /// The tables it owns, unqualified, in the order they can be created.
    fn tables(&self) -> &'static [&'static str];

    /// Where it keeps one folded state per request, if it does: the table (schema-qualified) and
    /// its request-id column, each row's state in a `jsonb` column named `state`. A runner can
    /// then read the states a batch needs in the same statement as the batch and hand them to
    /// [`Projection::write`] (or [`Projection::apply`]).
    fn state_table(&self) -> Option<(&str, &'static str)> {
        None
    }
}

/// The stored states of a batch's requests, by request id, as read with the batch.
pub type LoadedStates = HashMap<Uuid, serde_json::Value>;

/// The default [`Projection::apply`]: reads the states when they are not given, and runs
/// [`Projection::write`]'s parts as one statement.
async fn apply_by_writing<P: Projection + ?Sized>(
    projection: &P,
    conn: &mut PgConnection,
    events: &[FeedEvent],
    states: Option<LoadedStates>,
) -> Result<(), ProjectionError> {
    let states = match (states, projection.state_table()) {
        (Some(states), _) => states,
        (None, Some(table)) => fold::read_states(conn, table, events).await?,
        (None, None) => LoadedStates::new(),
    };
    let mut write = BatchWrite::new("true");
    if !projection.write(&mut write, events, states)? {
        return Err(ProjectionError::Inconsistent(format!(
            "projection {} neither applies nor writes a batch",
            projection.name()
        )));
    }
    if !write.is_empty() {
        let (sql, args) = write.finish("SELECT 1");
        sqlx::query_with(&sql, args).execute(conn).await?;
    }
    Ok(())
}

/// The PostgreSQL schema a projection's tables live in: `public` for the live read models, another
/// one while a rebuild fills a copy aside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema(String);

impl Schema {
    /// The live read models' schema.
    pub fn live() -> Self {
        Self("public".into())
    }

    /// A schema name, if it is safe to splice into SQL: lower-case letters, digits, underscore.
    pub fn new(name: &str) -> Option<Self> {
        let ok = !name.is_empty()
            && name.len() <= 48
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        ok.then(|| Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `schema.table`, for SQL.
    pub fn table(&self, table: &str) -> String {
        format!("{}.{}", self.0, table)
    }
}

/// One of the read models the API serves, so they can run as one group: one feed read and one
/// transaction per batch for all of them.
#[derive(Debug, Clone)]
pub enum ReadModel {
    /// The request detail and timeline.
    Requests(requests::RequestsProjection),
    /// The inbox.
    Inbox(inbox::InboxProjection),
    /// The requester's and the decider's lists.
    Lists(lists::ListsProjection),
    /// People's absences and deputies.
    Absences(absences::AbsencesProjection),
    /// Rounds, step occurrences and decisions, for the approvals report.
    Analytics(analytics::AnalyticsProjection),
}

impl ReadModel {
    /// Every read model, writing to the tables of `schema`.
    pub fn all(schema: &Schema) -> Vec<Self> {
        vec![
            Self::Requests(requests::RequestsProjection::new(schema)),
            Self::Inbox(inbox::InboxProjection::new(schema)),
            Self::Lists(lists::ListsProjection::new(schema)),
            Self::Absences(absences::AbsencesProjection::new(schema)),
            Self::Analytics(analytics::AnalyticsProjection::new(schema)),
        ]
    }
}

impl Projection for ReadModel {
    fn name(&self) -> &'static str {
        match self {
            Self::Requests(p) => p.name(),
            Self::Inbox(p) => p.name(),
            Self::Lists(p) => p.name(),
            Self::Absences(p) => p.name(),
            Self::Analytics(p) => p.name(),
        }
    }

    fn tables(&self) -> &'static [&'static str] {
        match self {
            Self::Requests(p) => p.tables(),
            Self::Inbox(p) => p.tables(),
            Self::Lists(p) => p.tables(),
            Self::Absences(p) => p.tables(),
            Self::Analytics(p) => p.tables(),
        }
    }

    fn write(
        &self,
        write: &mut BatchWrite,
        events: &[FeedEvent],
        states: LoadedStates,
    ) -> Result<bool, ProjectionError> {
        match self {
            Self::Requests(p) => p.write(write, events, states),
            Self::Inbox(p) => p.write(write, events, states),
            Self::Lists(p) => p.write(write, events, states),
            Self::Absences(p) => p.write(write, events, states),
            Self::Analytics(p) => p.write(write, events, states),
        }
    }

    fn state_table(&self) -> Option<(&str, &'static str)> {
        match self {
            Self::Requests(p) => p.state_table(),
            Self::Inbox(p) => p.state_table(),
            Self::Lists(p) => p.state_table(),
            Self::Absences(p) => p.state_table(),
            Self::Analytics(p) => p.state_table(),
        }
    }
}
