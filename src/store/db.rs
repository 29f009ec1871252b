//! The database: connecting (creating it when missing) and the embedded migrations.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use crate::config::DatabaseSettings;

/// The migrations in `migrations/`, compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Why the database could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL does not parse.
    #[error("database.url is not a PostgreSQL URL: {0}")]
    Url(sqlx::Error),
    /// The server refused or failed.
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The event store holds transaction ids this server has not handed out yet: it was restored
    /// into another cluster from a logical dump. Every reader of the feed would then skip the new
    /// events, which sort before its checkpoint.
    #[error(
        "the event store holds transaction id {stored}, ahead of this server's next ({next}): \
         it was restored from a logical dump into another cluster, and the feed would skip every \
         new event. Restore from a physical backup instead (docs/operations.md, backup and restore)"
    )]
    AheadOfServer {
        /// The highest transaction id in `events`.
        stored: i64,
        /// The next transaction id this server will hand out.
        next: i64,
    },
}

/// The connect options of `settings`, named so the server's activity view shows who we are.
pub fn options(settings: &DatabaseSettings) -> Result<PgConnectOptions, DbError> {
    let url = settings.url.expose();
    let mut options = PgConnectOptions::from_str(url)
        .map_err(DbError::Url)?
        .application_name("approval-ledger")
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(2))
        // Every statement here is short. PostgreSQL's JIT goes by cost estimates, and a generic
        // plan takes `LIMIT $n` as a tenth of the table: it compiled statements that run in a
        // fraction of a millisecond for far longer than they run (docs/benchmarks.md).
        .options([("jit", "off")]);
    // TLS to a server on the same host protects nothing and costs a good part of the service's
    // CPU (docs/benchmarks.md); a URL that names an sslmode keeps it.
    if !url.contains("sslmode=") && is_local(options.get_host()) {
        options = options.ssl_mode(PgSslMode::Disable);
    }
    Ok(options)
}

/// Whether `host` is this machine: loopback or a Unix socket directory.
fn is_local(host: &str) -> bool {
    host.starts_with('/') || matches!(host, "localhost" | "127.0.0.1" | "::1" | "[::1]")
}

/// Creates the database named in `settings` when it does not exist (connecting to the server's
/// `postgres` database to do so).
pub async fn create_if_missing(settings: &DatabaseSettings) -> Result<(), DbError> {
    let target = options(settings)?;
    let Some(name) = target.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = PgConnection::connect_with(&target.clone().database("postgres")).await?;
    let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut admin)
        .await?;
    if exists.is_none() {
        let quoted = name.replace('"', "\"\"");
        match sqlx::query(&format!("CREATE DATABASE \"{quoted}\""))
            .execute(&mut admin)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created the database"),
            // Another process created it meanwhile.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e.into()),
        }
    }
    admin.close().await?;
    Ok(())
}

/// A connection pool to the database of `settings`.
pub async fn connect(settings: &DatabaseSettings) -> Result<PgPool, DbError> {
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        // A ping before every use doubles the round trips of a short query. A connection that
        // died (a database restart) fails its next query instead, which answers 503 and is
        // dropped from the pool; the caller's retry gets a fresh one.
        .test_before_acquire(false)
        .connect_with(options(settings)?)
        .await?)
}

/// A pool of one connection for the read models' runner, whose writes are derived data: its
/// commits do not wait for the disk (`synchronous_commit = off` for the session), so a batch
/// written in one statement, with no transaction to `SET LOCAL` in, commits as cheaply as the
/// transactions do (decision 0003). Its own connection also keeps the runner from queueing
/// behind the command path for the shared pool. Connects on first use.
///
/// The runner sends a handful of statements again and again, each reaching its rows through an
/// index. Left to itself, PostgreSQL plans a prepared statement afresh at every call whenever
/// its first five plans looked cheaper than a generic one; for the one-statement batch that
/// depended on how large the first batches happened to be, and some runs planned it at every
/// call, as long again as running it (docs/benchmarks.md). So this
/// session plans each statement once (`plan_cache_mode = force_generic_plan`) and never by
/// scanning a table whole (`enable_seqscan = off`). A plan made once is made on the tables as
/// they are then, and a join's order chosen on near-empty tables can scan the larger one whole
/// through an index at every call once they have grown (seen with the delivery claim, which is
/// why only this runner and the relay's leader, whose reads join nothing, do it): the connection
/// is replaced every [`DERIVED_LIFETIME`], so each statement is planned again on the tables'
/// current sizes at least that often.
pub fn connect_derived(settings: &DatabaseSettings) -> Result<PgPool, DbError> {
    Ok(planned_once_pool(settings, 1, derived_options(settings)?))
}

/// A pool of up to `connections` sessions with `options`, each planning its statements once
/// (see [`connect_derived`]) and so replaced every [`DERIVED_LIFETIME`]. Connects on first use.
fn planned_once_pool(
    settings: &DatabaseSettings,
    connections: u32,
    options: PgConnectOptions,
) -> PgPool {
    PgPoolOptions::new()
        .max_connections(connections)
        .max_lifetime(DERIVED_LIFETIME)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .test_before_acquire(false)
        .connect_lazy_with(options)
}

/// How long the read models' connection, and the plans it made, live.
pub const DERIVED_LIFETIME: Duration = Duration::from_secs(60);

/// The session of [`connect_derived`].
fn derived_options(settings: &DatabaseSettings) -> Result<PgConnectOptions, DbError> {
    Ok(background_session(options(settings)?))
}

/// `options` for a background reader of the feed that sends a fixed few statements, each reaching
/// its rows through an index, and whose writes a crash may lose without harm (derived data, or a
/// checkpoint whose loss only repeats work): its commits do not wait for the disk, and each
/// statement is planned once and never by scanning a table whole (see [`connect_derived`]).
pub fn background_session(options: PgConnectOptions) -> PgConnectOptions {
    planned_once(options).options([("synchronous_commit", "off")])
}

/// `options` for a session whose statements are each planned once, at their first use on the
/// connection, and never by scanning a table whole. Only for statements whose every table is
/// reached through an index condition on the statement's own values, whatever order the planner
/// joins them in (see [`connect_delivery`]).
fn planned_once(options: PgConnectOptions) -> PgConnectOptions {
    options.options([
        ("plan_cache_mode", "force_generic_plan"),
        ("enable_seqscan", "off"),
    ])
}

/// A pool for the delivery pipeline: the consumers that turn events into jobs, and the scheduler
/// that claims, sends and records them. Connects on first use.
///
/// They send a fixed few statements hundreds of times a second, and PostgreSQL planned each of
/// them afresh at every call: the claim and the outcomes' update were sent unnamed for that, and
/// the histories' read and the devices' read kept custom plans, a good part of PostgreSQL's CPU
/// under load (docs/benchmarks.md). This
/// session plans each statement once, like the read models' ([`connect_derived`]). A plan made
/// once is made on the tables as they are then, often empty (`deliveries` on a new ledger, or at
/// the start of a burst): the statements are written so that no plan can read more than the rows
/// they name, whatever the tables' sizes (each table is reached through an index condition on the
/// statement's own values, or a lateral read per wanted row), and tests/delivery.rs checks it on
/// plans made on empty tables and run on full ones. The connections are still replaced every
/// [`DERIVED_LIFETIME`]. Commits wait for the disk as everywhere else: a job must be durable
/// before the message that made it is acknowledged, and an outcome before it is forgotten.
pub fn connect_delivery(settings: &DatabaseSettings) -> Result<PgPool, DbError> {
    Ok(planned_once_pool(
        settings,
        DELIVERY_CONNECTIONS,
        delivery_options(settings)?,
    ))
}

/// The session of [`connect_delivery`].
fn delivery_options(settings: &DatabaseSettings) -> Result<PgConnectOptions, DbError> {
    Ok(planned_once(options(settings)?))
}

/// The delivery pipeline's connections: one each for the two consumers, the scheduler's claims
/// and its recorder of outcomes.
pub const DELIVERY_CONNECTIONS: u32 = 4;

/// Creates the database when missing, connects, applies pending migrations, and checks that the
/// event store belongs to this server's transaction-id history.
pub async fn prepare(settings: &DatabaseSettings) -> Result<PgPool, DbError> {
    create_if_missing(settings).await?;
    let pool = connect(settings).await?;
    MIGRATOR.run(&pool).await?;
    check_transaction_ids(&pool).await?;
    Ok(pool)
}

/// Refuses an event store whose transaction ids are ahead of the server's: the feed is ordered
/// by them (decision 0002), so new events would sort before what every reader has passed.
/// On a server the store has always lived on, or restored from a physical backup, every stored id
/// is below the next one to be handed out. Reads the index's last entry; assigns no id.
pub async fn check_transaction_ids(pool: &PgPool) -> Result<(), DbError> {
    let (stored, next) = crate::feed::read::transaction_ids(pool).await?;
    match stored {
        Some(stored) if stored >= next => Err(DbError::AheadOfServer { stored, next }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::{
        connect_delivery, connect_derived, delivery_options, derived_options, is_local, options,
        DELIVERY_CONNECTIONS, DERIVED_LIFETIME,
    };
    use crate::config::{DatabaseSettings, Secret};

    fn settings(url: &str) -> DatabaseSettings {
        DatabaseSettings {
            url: Secret::new(url),
            max_connections: 1,
            acquire_timeout_ms: 1,
        }
    }

    /// Asserts that the session of `options` sets each of `wanted`; returns all it sets.
    fn session_sets(options: &sqlx::postgres::PgConnectOptions, wanted: &[&str]) -> String {
        let set = options.get_options().unwrap_or_default();
        for wanted in wanted {
            assert!(set.contains(wanted), "{wanted} in {set}");
        }
        set.to_owned()
    }

    #[test]
    fn the_service_turns_jit_off_and_keeps_what_the_url_asks() {
        let settings = settings("postgres://u@db.internal/x?options=-c%20statement_timeout%3D5000");
        let options = options(&settings).unwrap();
        let set = options.get_options().unwrap_or_default();
        assert!(set.contains("jit=off"), "{set}");
        assert!(set.contains("statement_timeout=5000"), "{set}");
    }

    #[test]
    fn the_read_models_session_commits_lazily_and_plans_once_by_index() {
        let settings = settings("postgres://u@127.0.0.1/x");
        session_sets(
            &derived_options(&settings).unwrap(),
            &[
                "jit=off",
                "synchronous_commit=off",
                "plan_cache_mode=force_generic_plan",
                "enable_seqscan=off",
            ],
        );
    }

    #[tokio::test]
    async fn the_read_models_connection_and_its_plans_are_replaced_every_minute() {
        let settings = settings("postgres://u@127.0.0.1/x");
        let pool = connect_derived(&settings).unwrap();
        assert_eq!(pool.options().get_max_lifetime(), Some(DERIVED_LIFETIME));
        assert_eq!(pool.options().get_max_connections(), 1);
    }

    #[tokio::test]
    async fn the_delivery_session_plans_once_by_index_and_commits_durably() {
        let settings = settings("postgres://u@127.0.0.1/x");
        let set = session_sets(
            &delivery_options(&settings).unwrap(),
            &[
                "jit=off",
                "plan_cache_mode=force_generic_plan",
                "enable_seqscan=off",
            ],
        );
        // A job must be durable before the message that made it is acknowledged.
        assert!(!set.contains("synchronous_commit"), "{set}");
        let pool = connect_delivery(&settings).unwrap();
        assert_eq!(pool.options().get_max_lifetime(), Some(DERIVED_LIFETIME));
        assert_eq!(pool.options().get_max_connections(), DELIVERY_CONNECTIONS);
    }

    #[test]
    fn only_this_machine_is_local() {
        assert!(is_local("127.0.0.1"));
        assert!(is_local("localhost"));
        assert!(is_local("/var/run/postgresql"));
        assert!(!is_local("db.internal"));
        assert!(!is_local("10.0.0.5"));
    }
}
