//! What touches the event store's tables besides the feed (`crate::feed`): the cqrs-es event
//! store on postgres-es, the append, the database's creation and migrations, the idempotency
//! answers, the deliveries and devices, and the audit ledger's tables. The read models' SQL lives
//! in the projections crate.

use std::error::Error as StdError;

use approval_aggregates::upcasters::upcasters;
use approval_aggregates::ApprovalRequest;
use cqrs_es::persist::PersistedEventStore;
use postgres_es::PostgresEventRepository;
use sqlx::PgPool;

pub mod audit;
pub mod db;
pub mod deliveries;
pub mod devices;
pub mod events;
pub mod idempotency;

/// The cqrs-es event store of approval requests, on postgres-es.
pub type EventStore = PersistedEventStore<PostgresEventRepository, ApprovalRequest>;

/// The cqrs-es event store of people's absences, on postgres-es, in the same table.
pub type AbsenceStore = PersistedEventStore<PostgresEventRepository, approval_aggregates::Absences>;

/// The absences' event store over `pool`.
pub fn absence_store(pool: PgPool) -> AbsenceStore {
    PersistedEventStore::new_event_store(PostgresEventRepository::new(pool))
        .with_upcasters(upcasters())
}

/// The event store over `pool`, reading old event versions through the aggregate's upcasters.
pub fn event_store(pool: PgPool) -> EventStore {
    PersistedEventStore::new_event_store(PostgresEventRepository::new(pool))
        .with_upcasters(upcasters())
}

/// Whether a database failure means "the database is not reachable now" (answer 503 and let
/// the caller retry) rather than a fault in the service.
pub fn is_unavailable(err: &(dyn StdError + 'static)) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(sqlx_err) = e.downcast_ref::<sqlx::Error>() {
            return match sqlx_err {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Protocol(_) => true,
                sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                    // 08: connection exception; 53: insufficient resources;
                    // 57P: operator intervention (shutdown, restart); 40001/40P01: retryable;
                    // 25006: a read-only server (a standby, a demoted primary during failover).
                    code.starts_with("08")
                        || code.starts_with("53")
                        || code.starts_with("57P")
                        || code == "40001"
                        || code == "40P01"
                        || code == "25006"
                }),
                _ => false,
            };
        }
        if e.downcast_ref::<std::io::Error>().is_some() {
            return true;
        }
        current = e.source();
    }
    false
}
