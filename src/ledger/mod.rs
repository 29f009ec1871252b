//! The command path: load the request, let the aggregate decide, append the events, and wait
//! (bounded) until the read models show them, so the caller reads their own write.
//!
//! One load (cqrs-es on postgres-es), or none when the request is in the command path's cache
//! ([`cache`]) or is a submission presumed new; one append: a single INSERT statement that writes the rows postgres-es would
//! write and returns the feed position, so the append is one round trip and atomic on its own
//! (`store::events::append`). An optimistic-lock conflict (another command appended first, or
//! the cached state was older than the store) is retried here a bounded number of times when the
//! caller gave no `expected_version`, so a caller only hears of a conflict when the request
//! really moved on under them.

pub mod absences;
pub mod cache;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::feed::Position;
use approval_aggregates::{ApprovalCommand, ApprovalRequest, DomainError, Request, RequestId};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventStore as _};
use sqlx::PgPool;

use crate::config::LedgerSettings;
use crate::feed::progress::Progress;
use crate::feed::signal::CommitSignal;
use crate::ledger::cache::Cache;
use crate::metrics::Metrics;
use crate::store::events::AppendError;
use crate::store::{self, EventStore};

/// Why a command did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The aggregate refused it.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Another command changed the request first and this one no longer applies.
    #[error("{0}")]
    Conflict(String),
    /// The database is not reachable now.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// A fault in the service; the details are logged, not shown.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What a command did.
#[derive(Debug, Clone)]
pub struct Executed {
    /// The request after the command.
    pub request: Request,
    /// Whether events were appended (a repeated submission appends none).
    pub written: bool,
    /// The feed position of the last appended event.
    pub position: Option<Position>,
}

/// What the command path records beside the events: who and what caused them.
#[derive(Debug, Clone, Default)]
pub struct CommandMeta {
    /// The HTTP request id, to follow a decision from phone to legacy system.
    pub request_id: Option<String>,
    /// The person who acted.
    pub actor: Option<String>,
    /// The system that acted.
    pub system: Option<String>,
    /// The caller's idempotency key.
    pub idempotency_key: Option<String>,
}

impl CommandMeta {
    pub(crate) fn to_map(&self) -> HashMap<String, String> {
        [
            ("request_id", &self.request_id),
            ("actor", &self.actor),
            ("system", &self.system),
            ("idempotency_key", &self.idempotency_key),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_string(), v.clone())))
        .collect()
    }
}

/// The command path.
#[derive(Clone)]
pub struct Ledger {
    store: Arc<EventStore>,
    absences: Arc<crate::store::AbsenceStore>,
    cache: Arc<Cache>,
    pool: PgPool,
    signal: CommitSignal,
    progress: Progress,
    settings: LedgerSettings,
    metrics: Arc<Metrics>,
}

impl Ledger {
    /// A command path over `pool`.
    pub fn new(
        pool: PgPool,
        signal: CommitSignal,
        progress: Progress,
        settings: LedgerSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store: Arc::new(store::event_store(pool.clone())),
            absences: Arc::new(store::absence_store(pool.clone())),
            cache: Arc::new(Cache::new(settings.cache_requests)),
            pool,
            signal,
            progress,
            settings,
            metrics,
        }
    }

    /// Executes `command` on request `id` and waits until the read models show its effect.
    pub async fn execute(
        &self,
        id: RequestId,
        command: ApprovalCommand,
        meta: &CommandMeta,
    ) -> Result<Executed, LedgerError> {
        let executed = self.execute_unseen(id, command, meta).await?;
        if let Some(position) = executed.position {
            self.wait_visible(position).await;
        }
        Ok(executed)
    }

    /// Waits (bounded) until every read model has applied the event at `position`.
    pub async fn wait_visible(&self, position: Position) {
        let timeout = Duration::from_millis(self.settings.read_your_writes_ms);
        let started = Instant::now();
        let seen = self.progress.wait_for(position, timeout).await;
        self.metrics
            .read_your_writes_wait
            .observe(started.elapsed().as_secs_f64());
        if !seen {
            self.metrics.read_your_writes_timeouts.inc();
            tracing::debug!(?position, "answering before the read models show the write");
        }
    }

    /// Executes `command` on request `id` without waiting for the read models.
    pub async fn execute_unseen(
        &self,
        id: RequestId,
        command: ApprovalCommand,
        meta: &CommandMeta,
    ) -> Result<Executed, LedgerError> {
        let name = command.name();
        // A decision whose actor may turn out to stand in for someone: kept to try again.
        let decision = match &command {
            ApprovalCommand::Decide(d) if d.authority.principals.is_none() => Some(d.clone()),
            _ => None,
        };
        let mut result = self.append(id, command, meta).await;
        if let Some(decision) = decision {
            if let Some(deputising) = self.as_deputy(decision, &result).await? {
                result = self.append(id, deputising, meta).await;
            }
        }
        let outcome = match &result {
            Ok(e) if e.written => "ok",
            Ok(_) => "noop",
            Err(LedgerError::Domain(_)) => "refused",
            Err(LedgerError::Conflict(_)) => "conflict",
            Err(LedgerError::Unavailable(_)) => "unavailable",
            Err(LedgerError::Internal(_)) => "internal",
        };
        self.metrics.command(name, outcome);
        result
    }

    async fn append(
        &self,
        id: RequestId,
        command: ApprovalCommand,
        meta: &CommandMeta,
    ) -> Result<Executed, LedgerError> {
        let aggregate_id = id.to_string();
        let metadata = meta.to_map();
        let pinned_version = command.expected_version().is_some();
        let mut lost_race = false;
        let mut attempt = 0;
        // Whether the next try must load the request rather than take it from the cache.
        let mut load = false;
        let submission = matches!(command, ApprovalCommand::Submit(_));
        loop {
            let cached = if load { None } else { self.cache.get(id) };
            // A submission the cache does not know is presumed new: decided on the empty
            // request and appended as its first event, which conflicts if the request exists
            // (a repeated or clashing submission), and then is decided again on a load.
            let presumed = cached.is_none() && !load && submission;
            let from_cache = cached.is_some() || presumed;
            let (mut aggregate, sequence) = match cached {
                Some(held) => {
                    self.metrics.cache("hit");
                    held
                }
                None if presumed => {
                    self.metrics.cache("new");
                    (ApprovalRequest::default(), 0)
                }
                None => {
                    if !load {
                        self.metrics.cache("miss");
                    }
                    let started = Instant::now();
                    let mut context = self
                        .store
                        .load_aggregate(&aggregate_id)
                        .await
                        .map_err(storage_error)?;
                    self.metrics.command_step("load", started);
                    (
                        std::mem::take(context.aggregate()),
                        context.current_sequence,
                    )
                }
            };
            let sink = EventSink::default();
            if let Err(refusal) = aggregate.handle(command.clone(), &(), &sink).await {
                if from_cache && !matches!(refusal, DomainError::NotPending(_)) {
                    // Perhaps refused only because the cached state is older than the store.
                    self.metrics.cache("stale");
                    self.cache.forget(id);
                    load = true;
                    continue;
                }
                return Err(after_race(refusal, lost_race));
            }
            let events = sink.collect().await;
            let Some(request) = aggregate.request.clone() else {
                return Err(LedgerError::Domain(DomainError::NotFound));
            };
            if events.is_empty() {
                if from_cache {
                    // Nothing to append, so no lock checks the cached state: answer from the
                    // store's.
                    load = true;
                    continue;
                }
                return Ok(Executed {
                    request,
                    written: false,
                    position: None,
                });
            }
            let appended_through = sequence + events.len();
            let started = Instant::now();
            let appended = store::events::append(&self.pool, id, sequence, events, &metadata).await;
            self.metrics.command_step("append", started);
            match appended {
                Ok(position) => {
                    self.signal.committed();
                    self.cache.put(id, aggregate, appended_through);
                    return Ok(Executed {
                        request,
                        written: true,
                        position,
                    });
                }
                Err(AppendError::Conflict) if from_cache => {
                    // The cached state was older than the store: decide again on a fresh load,
                    // which is no lost race unless that one conflicts too.
                    self.metrics.cache("stale");
                    self.cache.forget(id);
                    load = true;
                }
                Err(AppendError::Conflict) if pinned_version => {
                    self.cache.forget(id);
                    return Err(LedgerError::Conflict(
                        "another decision changed the request first; reload it and decide again"
                            .into(),
                    ));
                }
                Err(AppendError::Conflict) => {
                    self.cache.forget(id);
                    attempt += 1;
                    lost_race = true;
                    load = true;
                    self.metrics.command_retries.inc();
                    if attempt > self.settings.conflict_retries {
                        return Err(LedgerError::Conflict(
                            "the request kept changing; try again".into(),
                        ));
                    }
                    // A little jitter spreads racers apart.
                    let pause = fastrand::u64(0..=2 * u64::from(attempt));
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(AppendError::Serialize(e)) => {
                    self.cache.forget(id);
                    return Err(LedgerError::Internal(e.to_string()));
                }
                Err(AppendError::Database(e)) => {
                    // The append may or may not have committed.
                    self.cache.forget(id);
                    return Err(sql_error(e));
                }
            }
        }
    }

    /// The request as it stood just after event `sequence`, folded from the event store: the
    /// answer a command that wrote up to `sequence` gave.
    pub async fn state_at(
        &self,
        id: RequestId,
        sequence: u64,
    ) -> Result<Option<Request>, LedgerError> {
        let events = self
            .store
            .load_events(&id.to_string())
            .await
            .map_err(storage_error)?;
        let mut aggregate = ApprovalRequest::default();
        for envelope in events
            .into_iter()
            .take_while(|e| e.sequence as u64 <= sequence)
        {
            aggregate.apply(envelope.payload);
        }
        Ok(aggregate.request)
    }

    /// The request after the command `actor` sent with idempotency key `key`, if that command
    /// was appended: how a retry finds its first answer when the answer itself was lost.
    pub async fn answer_of_key(
        &self,
        id: RequestId,
        actor: &str,
        key: &str,
    ) -> Result<Option<Request>, LedgerError> {
        let sequence = store::events::sequence_of_key(&self.pool, id, actor, key)
            .await
            .map_err(sql_error)?;
        match sequence {
            Some(s) => self.state_at(id, s).await,
            None => Ok(None),
        }
    }
}

/// A refusal that only arose because another command won the race reads as a conflict, unless
/// the request is now final (then the caller should hear that).
fn after_race(refusal: DomainError, lost_race: bool) -> LedgerError {
    match refusal {
        DomainError::NotPending(_) | DomainError::NotFound => LedgerError::Domain(refusal),
        other if lost_race => {
            LedgerError::Conflict(format!("another decision was recorded first: {other}"))
        }
        other => LedgerError::Domain(other),
    }
}

/// Sorts a failed query into "unavailable, retry" and "fault".
pub(crate) fn sql_error(err: sqlx::Error) -> LedgerError {
    if store::is_unavailable(&err) {
        LedgerError::Unavailable(err.to_string())
    } else {
        LedgerError::Internal(err.to_string())
    }
}

/// Sorts a storage failure into "unavailable, retry" and "fault".
pub(crate) fn storage_error(err: AggregateError<DomainError>) -> LedgerError {
    match err {
        AggregateError::UserError(e) => LedgerError::Domain(e),
        AggregateError::AggregateConflict => {
            LedgerError::Conflict("another decision changed the request first".into())
        }
        AggregateError::DatabaseConnectionError(e) => LedgerError::Unavailable(e.to_string()),
        AggregateError::DeserializationError(e) => LedgerError::Internal(e.to_string()),
        AggregateError::UnexpectedError(e) => {
            if store::is_unavailable(e.as_ref()) {
                LedgerError::Unavailable(e.to_string())
            } else {
                LedgerError::Internal(e.to_string())
            }
        }
    }
}
