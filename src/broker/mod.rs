//! RabbitMQ: the one task that owns the connection, the topology every name of which derives
//! from `broker.exchange` ([`topology`]), and the messages the relay publishes and the
//! consumers read ([`envelope`]).
//!
//! The supervisor connects with backoff and jitter, declares the topology (idempotently) on
//! every connection, and publishes the live connection through a watch channel. The relay and
//! the consumers open their own channels on it and, when it fails, wait for the next one. lapin's
//! own recovery stays off: correctness comes from the relay's checkpoint and the consumers'
//! idempotent handlers, not from replaying a connection's state.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::types::{LongString, ShortString};
use lapin::{Connection, ConnectionProperties};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::BrokerSettings;

pub mod envelope;
pub mod queues;
pub mod topology;

pub use envelope::{Envelope, Sources};
pub use topology::Topology;

/// The longest any single call to RabbitMQ may take (open or close a channel, consume, ack):
/// lapin can wait for ever on a connection that died under it, and a consumer waiting there
/// never starts again on the new one (the fault suite's `rabbitmq-restart` caught one).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// `call`, or an error once it has taken [`CALL_TIMEOUT`].
pub async fn bounded<T>(
    what: &'static str,
    call: impl std::future::Future<Output = lapin::Result<T>>,
) -> Result<T, BrokerCallError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(BrokerCallError::Failed),
        Err(_) => Err(BrokerCallError::TimedOut(what)),
    }
}

/// Why a bounded call to RabbitMQ did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerCallError {
    /// RabbitMQ answered with an error, or the connection failed.
    #[error("{0}")]
    Failed(lapin::Error),
    /// No answer within [`CALL_TIMEOUT`].
    #[error("RabbitMQ did not answer ({0}) within {secs} s", secs = CALL_TIMEOUT.as_secs())]
    TimedOut(&'static str),
}

/// A live connection, as the supervisor hands it out.
#[derive(Clone)]
pub struct Session {
    /// The connection; open channels on it.
    pub connection: Arc<Connection>,
    /// Counts connections: a new number means a new connection.
    pub generation: u64,
}

/// The handle on the supervised connection.
#[derive(Clone)]
pub struct Broker {
    session: watch::Receiver<Option<Session>>,
    topology: Topology,
}

impl Broker {
    /// Starts the supervisor, which declares `topology` on every connection; it runs until
    /// `stop`.
    pub fn start(
        settings: BrokerSettings,
        topology: Topology,
        stop: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(supervise(settings, topology.clone(), tx, stop));
        (
            Self {
                session: rx,
                topology,
            },
            task,
        )
    }

    /// The names in use.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Whether a connection is up now.
    pub fn is_connected(&self) -> bool {
        self.session
            .borrow()
            .as_ref()
            .is_some_and(|s| s.connection.status().connected())
    }

    /// The live connection now, if one is up; never waits.
    pub fn current(&self) -> Option<Session> {
        self.session
            .borrow()
            .as_ref()
            .filter(|s| s.connection.status().connected())
            .cloned()
    }

    /// The live connection, waiting for one; `None` once `stop` is cancelled.
    pub async fn session(&self, stop: &CancellationToken) -> Option<Session> {
        let mut rx = self.session.clone();
        tokio::select! {
            _ = stop.cancelled() => None,
            result = rx.wait_for(|s| s.as_ref().is_some_and(|s| s.connection.status().connected())) => {
                result.ok().and_then(|s| s.clone())
            }
        }
    }

    /// Resolves once the session of `generation` is no longer the live one (its connection
    /// failed, or a new one replaced it).
    pub async fn gone(&self, generation: u64) {
        let mut rx = self.session.clone();
        let _ = rx
            .wait_for(|s| {
                !s.as_ref().is_some_and(|s| {
                    s.generation == generation && s.connection.status().connected()
                })
            })
            .await;
    }
}

/// Connects, declares, hands out the connection, watches it, and starts again when it fails.
async fn supervise(
    settings: BrokerSettings,
    topology: Topology,
    tx: watch::Sender<Option<Session>>,
    stop: CancellationToken,
) {
    let first_pause = Duration::from_millis(100);
    let max_pause = Duration::from_millis(settings.reconnect_max_ms.max(100));
    let mut pause = first_pause;
    let mut generation = 0;
    while !stop.is_cancelled() {
        match connect(&settings, &topology).await {
            Ok(connection) => {
                generation += 1;
                pause = first_pause;
                tracing::info!(generation, "connected to RabbitMQ");
                let connection = Arc::new(connection);
                let mut events = connection.events_listener();
                tx.send_replace(Some(Session {
                    connection: connection.clone(),
                    generation,
                }));
                let mut check = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        event = events.next() => match event {
                            Some(lapin::Event::Error(e)) => {
                                tracing::warn!(error = %e, "the RabbitMQ connection failed");
                                break;
                            }
                            Some(_) => {}
                            None => break,
                        },
                        _ = check.tick() => if !connection.status().connected() {
                            tracing::warn!("the RabbitMQ connection is gone");
                            break;
                        },
                    }
                }
                tx.send_replace(None);
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    connection.close(200, ShortString::from("bye")),
                )
                .await;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "cannot connect to RabbitMQ")
            }
        }
        if stop.is_cancelled() {
            break;
        }
        // Jitter keeps a fleet of instances from reconnecting in lockstep.
        let jitter = Duration::from_millis(fastrand::u64(0..=pause.as_millis() as u64 / 2));
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(pause + jitter) => {}
        }
        pause = (pause * 2).min(max_pause);
    }
}

/// Opens a connection and declares the topology on it, within a timeout.
async fn connect(
    settings: &BrokerSettings,
    topology: &Topology,
) -> Result<Connection, lapin::Error> {
    let attempt = async {
        let properties = ConnectionProperties::default()
            .with_connection_name(LongString::from("approval-ledger"));
        let connection = Connection::connect(settings.url.expose(), properties).await?;
        let channel = connection.create_channel().await?;
        topology.declare(&channel, settings.delivery_limit).await?;
        let _ = channel.close(200, ShortString::from("declared")).await;
        Ok(connection)
    };
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(result) => result,
        Err(_) => Err(lapin::Error::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connecting to RabbitMQ timed out",
        ))),
    }
}
