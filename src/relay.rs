//! The relay: the global feed, published to RabbitMQ; a consumer of the feed
//! ([`crate::feed::follower`]) that leads: one relay publishes at a time, holding a session-level
//! advisory lock on a database connection of its own, so no transaction stays open while it
//! publishes.
//!
//! Each batch is published persistent and `mandatory` on a confirm channel without waiting
//! between messages, then every confirm is awaited with a timeout. Only when all are acked and
//! none was returned does the checkpoint move; otherwise the batch is published again (at least
//! once; receivers deduplicate on `event_id`). A returned (unroutable) publish also makes the
//! relay declare the topology again, so bindings removed by hand come back. Per-request order
//! holds because the feed keeps it and one channel publishes the batch in order. After a commit
//! wakes it, it lets [`RELAY_GATHER`] of commits join, so that a batch, whose cost hardly depends
//! on its size, carries several events at a moderate rate.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::Confirmation;
use lapin::{BasicProperties, Channel};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

use crate::broker::{bounded, Broker, BrokerCallError, Sources, Topology};
use crate::config::BrokerSettings;
use crate::feed::follower::{Applied, Consumer, FollowError};
use crate::feed::{checkpoints, Batch, FeedEvent, Position};
use crate::metrics::Metrics;

/// The relay's checkpoint name.
pub const RELAY: &str = "relay";

/// The key of the relay's advisory lock.
pub const LEADER_LOCK: i64 = 0x6170_7072_6f76_616c; // "approval"

/// How long the relay lets events gather after a commit wakes it, before it reads them: at
/// 300 commands/s a batch then holds several events instead of one or two, and every batch
/// costs a feed read, a checkpoint and a round of confirms whatever its size. It adds that much
/// to the time from commit to push and callback (docs/benchmarks.md).
pub const RELAY_GATHER: Duration = Duration::from_millis(10);

/// Why a batch was not published.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("{0}")]
    Refused(String),
    /// A publish came back: no queue is bound for its routing key.
    #[error("{0}")]
    Unroutable(String),
}

impl From<RelayError> for FollowError {
    fn from(e: RelayError) -> Self {
        Self::Consumer(e.to_string())
    }
}

impl From<BrokerCallError> for FollowError {
    fn from(e: BrokerCallError) -> Self {
        Self::Consumer(format!("broker: {e}"))
    }
}

/// The relay, as a consumer of the feed.
pub struct Relay {
    broker: Broker,
    settings: BrokerSettings,
    metrics: Arc<Metrics>,
    /// The confirm channel and the connection it is on, while it is open.
    channel: Option<(Channel, Arc<lapin::Connection>)>,
    sources: Sources,
}

impl Relay {
    /// A relay publishing through `broker`.
    pub fn new(broker: Broker, settings: BrokerSettings, metrics: Arc<Metrics>) -> Self {
        Self {
            broker,
            settings,
            metrics,
            channel: None,
            sources: Sources::default(),
        }
    }

    /// Declares the topology again (idempotent); a failure is logged, the retry tries again.
    async fn redeclare(&self, connection: &lapin::Connection) {
        let declared = async {
            let channel = bounded("open a channel", connection.create_channel()).await?;
            bounded(
                "declare the topology",
                self.broker
                    .topology()
                    .declare(&channel, self.settings.delivery_limit),
            )
            .await?;
            bounded(
                "close a channel",
                channel.close(200, ShortString::from("declared")),
            )
            .await
        };
        match declared.await {
            Ok(()) => tracing::info!("the relay declared the topology again"),
            Err(e) => tracing::warn!(error = %e, "the relay cannot declare the topology"),
        }
    }

    /// Publishes `events` with pipelined confirms; fails unless every one is acked and routed.
    async fn publish(&self, channel: &Channel, events: &[FeedEvent]) -> Result<(), RelayError> {
        let timeout = Duration::from_millis(self.settings.publish_timeout_ms);
        let exchange = self.broker.topology().exchange.as_str();
        let sending = async {
            let mut confirms = Vec::with_capacity(events.len());
            for event in events {
                let envelope = self.sources.envelope(event);
                let body = serde_json::to_vec(&envelope)
                    .map_err(|e| RelayError::Refused(format!("cannot encode an envelope: {e}")))?;
                let properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type(ShortString::from("application/json"))
                    .with_message_id(ShortString::from(event.event_id.to_string()))
                    .with_type(ShortString::from(event.event_type.as_str()))
                    .with_app_id(ShortString::from("approval-ledger"))
                    .with_timestamp(u64::try_from(event.recorded_at.timestamp()).unwrap_or(0));
                let confirm = channel
                    .basic_publish(
                        exchange.into(),
                        Topology::routing_key(&envelope.system, &event.event_type)
                            .as_str()
                            .into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..BasicPublishOptions::default()
                        },
                        &body,
                        properties,
                    )
                    .await?;
                confirms.push(confirm);
            }
            for confirm in confirms {
                match confirm.await? {
                    Confirmation::Ack(None) => {}
                    Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                        return Err(RelayError::Unroutable(format!(
                            "RabbitMQ returned an event ({} {}): no queue is bound for its \
                             routing key",
                            returned.reply_code, returned.reply_text
                        )));
                    }
                    Confirmation::Nack(None) => {
                        return Err(RelayError::Refused(
                            "RabbitMQ refused an event (nack)".into(),
                        ))
                    }
                    Confirmation::NotRequested => {
                        return Err(RelayError::Refused("the channel does not confirm".into()))
                    }
                }
            }
            Ok(())
        };
        match tokio::time::timeout(timeout, sending).await {
            Ok(result) => result,
            Err(_) => Err(RelayError::Refused(format!(
                "RabbitMQ did not confirm the batch within {} ms",
                timeout.as_millis()
            ))),
        }
    }
}

impl Consumer for Relay {
    /// Waits for the broker's connection and opens a confirm channel on it.
    async fn prepare(&mut self, stop: &CancellationToken) -> Result<(), FollowError> {
        let Some(session) = self.broker.session(stop).await else {
            return Ok(());
        };
        let channel = bounded("open a channel", session.connection.create_channel()).await?;
        bounded(
            "turn on confirms",
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        self.channel = Some((channel, session.connection));
        Ok(())
    }

    async fn start(&mut self, conn: &mut PgConnection) -> Result<Position, FollowError> {
        Ok(checkpoints::load(conn, RELAY).await?)
    }

    async fn apply(
        &mut self,
        conn: &mut PgConnection,
        batch: Batch,
    ) -> Result<Applied, FollowError> {
        let Some(last) = batch.events.last().map(|e| e.position) else {
            return Err(FollowError::Consumer("an empty batch".into()));
        };
        let Some((channel, connection)) = self.channel.clone() else {
            return Err(FollowError::Consumer("the relay has no channel".into()));
        };
        self.sources.resolve(&mut *conn, &batch.events).await?;
        if let Err(e) = self.publish(&channel, &batch.events).await {
            if matches!(e, RelayError::Unroutable(_)) {
                // Our own queues' bindings are gone (removed by hand, say): declare them again
                // so that the batch has somewhere to go.
                self.redeclare(&connection).await;
            }
            return Err(e.into());
        }
        // The checkpoint moves on the leader's connection, after the effect. Losing its last
        // update in a crash only republishes a batch (at least once), so its commit need not
        // wait for the disk (`db::background_session`).
        checkpoints::advance(conn, RELAY, last).await?;
        let now = Utc::now();
        for event in &batch.events {
            let seconds = (now - event.recorded_at)
                .num_microseconds()
                .unwrap_or(0)
                .max(0) as f64
                / 1e6;
            self.metrics.commit_to_publish.observe(seconds);
        }
        Ok(Applied::Through(last))
    }

    async fn reset(&mut self) {
        if let Some((channel, _)) = self.channel.take() {
            let _ = bounded(
                "close a channel",
                channel.close(200, ShortString::from("relay stops")),
            )
            .await;
        }
    }
}
