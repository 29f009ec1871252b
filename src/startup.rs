//! Builds and runs the service: prepares the database, wires the command path, starts the
//! roles asked for (`api`: the HTTP server; `worker`: projections and background work), and
//! stops them in order on shutdown. Tests build the same [`Application`] on port 0.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use approval_projections::inbox::InboxProjection;
use approval_projections::lists::ListsProjection;
use approval_projections::requests::RequestsProjection;
use approval_projections::{Projection, ReadModel, Schema};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::audit::reader::AuditReader;
use crate::broker::Broker;
use crate::config::Settings;
use crate::feed::follower::{Consumer, Follower, Leader, Pace, Read};
use crate::feed::progress::Progress;
use crate::feed::signal::CommitSignal;
use crate::handlers::legacy_sync::LegacySync;
use crate::handlers::push::Push;
use crate::handlers::scheduler::Scheduler;
use crate::handlers::sweep::{Sweeper, SWEEPER};
use crate::handlers::{self, JobSignal};
use crate::http::{self, AppState, BrokerProbe, Limits};
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::projector::Projector;
use crate::relay::{Relay, LEADER_LOCK, RELAY, RELAY_GATHER};
use crate::store::db;
use crate::timers::TimerLoop;

/// How long the read models let events gather between batches that are not full. Commands wait
/// for them, so it is short; enough for fewer, larger batches under load (docs/benchmarks.md).
const READ_MODEL_LINGER: Duration = Duration::from_millis(2);

/// How long the audit reader lets events gather between batches that are not full: it follows
/// the feed a fraction of a second behind, in a few transactions a second rather than one per
/// commit.
const AUDIT_LINGER: Duration = Duration::from_millis(200);

/// How long the report's read model lets events gather between batches that are not full:
/// nobody waits for it, so it follows the feed a fraction of a second behind in a few larger
/// batches a second, as the audit reader does (docs/benchmarks.md).
const REPORT_LINGER: Duration = Duration::from_millis(200);

/// Events the live stream reads at a time.
const STREAM_BATCH: i64 = 500;

/// The names of the projections commands wait for (read-your-writes), in the order they run.
pub const PROJECTIONS: [&str; 4] = [
    RequestsProjection::NAME,
    InboxProjection::NAME,
    ListsProjection::NAME,
    approval_projections::absences::AbsencesProjection::NAME,
];

/// The read models that follow the feed on their own, a moment behind, which commands do not
/// wait for: the approvals report's (contract section 10).
pub const REPORTS: [&str; 1] = [approval_projections::analytics::AnalyticsProjection::NAME];

/// Every read model: [`PROJECTIONS`], then [`REPORTS`].
pub fn read_models() -> impl Iterator<Item = &'static str> {
    PROJECTIONS.into_iter().chain(REPORTS)
}

/// Which parts of the service run in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// The HTTP API and the command path.
    pub api: bool,
    /// Projections and background work.
    pub worker: bool,
}

impl Roles {
    /// Every part.
    pub const ALL: Self = Self {
        api: true,
        worker: true,
    };
}

/// A running service.
pub struct Application {
    port: Option<u16>,
    pool: PgPool,
    /// The pools of the worker's own sessions (the read models', the delivery pipeline's), when
    /// this process runs them.
    own_pools: Vec<PgPool>,
    stop: CancellationToken,
    server: Option<(
        actix_web::dev::ServerHandle,
        JoinHandle<std::io::Result<()>>,
    )>,
    tasks: Vec<JoinHandle<()>>,
    /// The broker's supervisor stops last, so consumers can still acknowledge while draining.
    broker: Option<(CancellationToken, JoinHandle<()>)>,
}

/// `host:port` of an AMQP URL, for the readiness probe.
fn broker_address(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host_port = rest.split('/').next().unwrap_or("127.0.0.1");
    if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5672")
    }
}

impl Application {
    /// Prepares the database and starts `roles`.
    pub async fn build(settings: Settings, roles: Roles) -> anyhow::Result<Self> {
        // The port first: a start that cannot listen fails before anything else has started.
        let listener = if roles.api {
            Some(
                TcpListener::bind(&settings.http.bind)
                    .with_context(|| format!("cannot listen on {}", settings.http.bind))?,
            )
        } else {
            None
        };
        let pool = db::prepare(&settings.database)
            .await
            .context("cannot prepare the database")?;
        let stop = CancellationToken::new();
        let metrics = Arc::new(Metrics::default());
        let signal = CommitSignal::default();
        let progress = Progress::new(&PROJECTIONS);
        let ledger = Ledger::new(
            pool.clone(),
            signal.clone(),
            progress.clone(),
            settings.ledger.clone(),
            metrics.clone(),
        );
        let poll = Duration::from_millis(settings.feed.poll_interval_ms);
        let pace = Pace {
            batch: settings.feed.batch_size,
            linger: Duration::ZERO,
            gather: Duration::ZERO,
            poll,
            max_backoff: Duration::from_secs(5),
        };
        let follower =
            |name: &str, pool: &PgPool, read: Read, pace: Pace, counted: &[&str]| Follower {
                name: name.to_owned(),
                pool: pool.clone(),
                read,
                pace,
                leader: None,
                counted_as: counted.iter().map(|c| (*c).to_owned()).collect(),
                metrics: metrics.clone(),
            };
        // Every process announces what it commits and hears what the others commit.
        let mut tasks = vec![
            tokio::spawn(signal.clone().announce(pool.clone(), stop.clone())),
            tokio::spawn(signal.clone().listen(pool.clone(), stop.clone())),
            // The console's last hour, sampled off the command path.
            tokio::spawn(crate::series::Series::sample(metrics.clone(), stop.clone())),
        ];
        let mut broker_task = None;
        let mut own_pools = vec![];
        let mut probe = BrokerProbe::Address(broker_address(settings.broker.url.expose()));

        if roles.worker {
            let broker_stop = CancellationToken::new();
            let (broker, supervisor) = Broker::start(
                settings.broker.clone(),
                handlers::topology(&settings.broker.exchange),
                broker_stop.clone(),
            );
            broker_task = Some((broker_stop, supervisor));
            probe = BrokerProbe::Supervised(broker.clone());
            let mut relay = follower(
                RELAY,
                &pool,
                Read::Events,
                Pace {
                    batch: settings.broker.relay_batch,
                    gather: RELAY_GATHER,
                    max_backoff: Duration::from_millis(settings.broker.reconnect_max_ms.max(100)),
                    ..pace
                },
                &[RELAY],
            );
            // Its few statements each read one table by an index condition on their own
            // values, so each is planned once for the connection's life (docs/benchmarks.md).
            relay.leader = Some(Leader {
                key: LEADER_LOCK,
                options: db::background_session((*pool.connect_options()).clone()),
            });
            tasks.push(follow(
                relay,
                Relay::new(broker.clone(), settings.broker.clone(), metrics.clone()),
                Some(signal.subscribe()),
                &stop,
            ));
            let systems = Arc::new(settings.systems.clone());
            let jobs = JobSignal::default();
            let topology = broker.topology().clone();
            let delivery = db::connect_delivery(&settings.database)
                .context("cannot prepare the delivery pipeline's connections")?;
            own_pools.push(delivery.clone());
            let legacy = Arc::new(LegacySync {
                pool: delivery.clone(),
                systems: systems.clone(),
                jobs: jobs.clone(),
            });
            let push = Arc::new(Push {
                pool: delivery.clone(),
                jobs: jobs.clone(),
            });
            tasks.push(tokio::spawn(handlers::consume(
                legacy.clone(),
                broker.clone(),
                topology.legacy_sync.clone(),
                settings.broker.prefetch,
                stop.clone(),
            )));
            tasks.push(tokio::spawn(handlers::consume(
                push.clone(),
                broker.clone(),
                topology.push.clone(),
                settings.broker.prefetch,
                stop.clone(),
            )));
            let sweeper = Sweeper {
                legacy,
                push,
                after: Duration::from_millis(settings.broker.sweep_after_ms),
            };
            tasks.push(follow(
                follower(
                    SWEEPER,
                    &pool,
                    Read::Events,
                    Pace {
                        poll: sweeper.poll(),
                        ..pace
                    },
                    &[SWEEPER],
                ),
                sweeper,
                None,
                &stop,
            ));
            tasks.push(tokio::spawn(
                Scheduler {
                    pool: delivery,
                    settings: settings.delivery.clone(),
                    systems,
                    push: settings.push.clone(),
                    jobs,
                    metrics: metrics.clone(),
                }
                .run(stop.clone()),
            ));
            let read_models = db::connect_derived(&settings.database)
                .context("cannot prepare the read models' connection")?;
            own_pools.push(read_models.clone());
            let (waited, reports): (Vec<ReadModel>, Vec<ReadModel>) =
                ReadModel::all(&Schema::live())
                    .into_iter()
                    .partition(|m| PROJECTIONS.contains(&m.name()));
            let projector =
                Projector::new(waited, metrics.clone()).reporting(progress.clone(), signal.clone());
            let names = projector.names();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            tasks.push(follow(
                follower(
                    projector.label(),
                    &read_models,
                    Read::WithStates(projector.states_query()),
                    Pace {
                        linger: READ_MODEL_LINGER,
                        ..pace
                    },
                    &names,
                ),
                projector,
                Some(signal.subscribe()),
                &stop,
            ));
            // Not among PROJECTIONS: commands never wait for the report's read model, so it has
            // a connection of its own and lets events gather into larger batches.
            let report_pool = db::connect_derived(&settings.database)
                .context("cannot prepare the report's read model connection")?;
            own_pools.push(report_pool.clone());
            let report = Projector::new(reports, metrics.clone());
            let report_names = report.names();
            let report_names: Vec<&str> = report_names.iter().map(String::as_str).collect();
            tasks.push(follow(
                follower(
                    report.label(),
                    &report_pool,
                    Read::Events,
                    Pace {
                        linger: REPORT_LINGER,
                        ..pace
                    },
                    &report_names,
                ),
                report,
                Some(signal.subscribe()),
                &stop,
            ));
            // Not among PROJECTIONS: commands never wait for the audit reader, so it lets events
            // gather into larger batches.
            let audit = Projector::new(vec![AuditReader::new(&settings.audit)], metrics.clone());
            tasks.push(follow(
                follower(
                    audit.label(),
                    &pool,
                    Read::Events,
                    Pace {
                        linger: AUDIT_LINGER,
                        ..pace
                    },
                    &[AuditReader::NAME],
                ),
                audit,
                Some(signal.subscribe()),
                &stop,
            ));
            tasks.push(tokio::spawn(
                TimerLoop {
                    ledger: ledger.clone(),
                    pool: pool.clone(),
                    settings: settings.sla.clone(),
                    metrics: metrics.clone(),
                }
                .run(stop.clone()),
            ));
        }

        let mut port = None;
        let mut server = None;
        if let Some(listener) = listener {
            if !roles.worker {
                // The read models run elsewhere: follow what their runner announces.
                tasks.push(tokio::spawn(progress.clone().follow(
                    signal.clone(),
                    pool.clone(),
                    poll,
                    stop.clone(),
                )));
            }
            let hub = crate::stream::StreamHub::new(stop.clone());
            tasks.push(follow(
                follower(
                    "stream",
                    &pool,
                    Read::Events,
                    Pace {
                        batch: STREAM_BATCH,
                        ..pace
                    },
                    &[],
                ),
                hub.follower(progress.clone()),
                Some(signal.subscribe()),
                &stop,
            ));
            let auth = http::auth::Authenticator::new(&settings)
                .context("cannot build the client of the identity provider's key set")?;
            if let Some(jwks) = auth.jwks() {
                // In the background: a provider that is down must not keep the API from starting.
                tasks.push(tokio::spawn(jwks.clone().keep_fresh(stop.clone())));
            }
            let state = web::Data::new(AppState {
                ledger: ledger.clone(),
                pool: pool.clone(),
                auth,
                limits: Limits {
                    body: settings.http.body_limit,
                    bulk: settings.http.bulk_limit,
                    page: settings.http.page_limit,
                },
                metrics: metrics.clone(),
                broker: probe,
                hub,
                remind_before: settings.sla.remind_before.clone(),
                attachments: http::attachments::Fetcher::new(
                    &settings.attachments,
                    Arc::new(settings.systems.clone()),
                )
                .context("the attachments' HTTP client")?,
                policy: settings
                    .policy
                    .parsed()
                    .map_err(|e| anyhow::anyhow!("configuration: {e}"))?,
                console: http::console::Setup {
                    systems: settings
                        .systems
                        .iter()
                        .map(|(key, system)| (key.clone(), system.name.clone()))
                        .collect(),
                    broker_url: settings.broker.url.clone(),
                    topology: crate::broker::Topology::new(&settings.broker.exchange),
                },
                pages: http::webapp::Pages::new(&settings.auth),
            });
            port = Some(listener.local_addr()?.port());
            let mut http_server =
                HttpServer::new(move || App::new().configure(http::configure(state.clone())))
                    .disable_signals()
                    .shutdown_timeout(30)
                    .listen(listener)?;
            if settings.http.workers > 0 {
                http_server = http_server.workers(settings.http.workers);
            }
            let running = http_server.run();
            let handle = running.handle();
            server = Some((handle, tokio::spawn(running)));
        }

        Ok(Self {
            port,
            pool,
            own_pools,
            stop,
            server,
            tasks,
            broker: broker_task,
        })
    }

    /// The HTTP port, when the API runs.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The database pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Cancelling this token stops the service.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Runs until the stop token is cancelled, then stops accepting, drains in-flight requests
    /// and background work, and returns.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.stop.cancelled().await;
        self.shutdown().await
    }

    /// Stops now: the HTTP server gracefully, then the background tasks.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.cancel();
        if let Some((handle, task)) = self.server {
            handle.stop(true).await;
            task.await.context("the HTTP server task failed")??;
        }
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "a background task ended badly");
            }
        }
        if let Some((stop, supervisor)) = self.broker {
            stop.cancel();
            if let Err(e) = supervisor.await {
                tracing::warn!(error = %e, "the broker supervisor ended badly");
            }
        }
        for pool in self.own_pools {
            pool.close().await;
        }
        self.pool.close().await;
        Ok(())
    }
}

/// Runs `consumer` behind `follower` until `stop`.
fn follow<C: Consumer + 'static>(
    follower: Follower,
    mut consumer: C,
    wake: Option<watch::Receiver<u64>>,
    stop: &CancellationToken,
) -> JoinHandle<()> {
    let stop = stop.clone();
    tokio::spawn(async move { follower.run(&mut consumer, wake, &stop).await })
}

#[cfg(test)]
mod tests {
    use super::broker_address;

    #[test]
    fn the_broker_address_comes_from_the_amqp_url() {
        assert_eq!(
            broker_address("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "127.0.0.1:5672"
        );
        assert_eq!(broker_address("amqp://rabbit/vhost"), "rabbit:5672");
    }
}
