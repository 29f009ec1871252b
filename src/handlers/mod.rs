//! The consumers of the service's own RabbitMQ queues, and the scheduler that delivers what they
//! decide.
//!
//! - [`legacy_sync`]: turns status changes into signed callback jobs for the source system.
//! - [`push`]: turns new inbox items and final statuses into push jobs for people's devices.
//! - [`scheduler`]: sends due jobs, retries with growing delays, dead-letters what cannot go.
//! - [`sweep`]: the safety net: makes the jobs of events the work queues never delivered.
//!
//! A consumer acknowledges a message only once its jobs are durable in PostgreSQL, and a job is
//! unique per event and target, so a redelivered message (a consumer that died before its ack)
//! never creates a second one. A message that does not decode is rejected without requeue and
//! lands in the queue's dead-letter queue; it never blocks the queue. A database failure is
//! retried in place, so the message keeps its place.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::{FieldTable, ShortString};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::broker::{bounded, Broker, BrokerCallError};
use crate::relay::Envelope;
use crate::shutdown::pause;

pub mod legacy_sync;
pub mod push;
pub mod scheduler;
pub mod sweep;

/// Why a message could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Try again (the database is unreachable, say); the message keeps its place.
    #[error("{0}")]
    Transient(String),
    /// It will never work; the message goes to the dead-letter queue.
    #[error("{0}")]
    Permanent(String),
}

impl From<sqlx::Error> for HandlerError {
    fn from(e: sqlx::Error) -> Self {
        Self::Transient(format!("database: {e}"))
    }
}

impl From<crate::store::feed::FeedError> for HandlerError {
    fn from(e: crate::store::feed::FeedError) -> Self {
        match e {
            crate::store::feed::FeedError::Database(db) => db.into(),
            decode @ crate::store::feed::FeedError::Decode { .. } => {
                Self::Permanent(decode.to_string())
            }
        }
    }
}

/// What a consumer does with one message.
pub trait Handler: Send + Sync + 'static {
    /// Its name, for logs.
    fn name(&self) -> &'static str;

    /// Makes the message's effect durable (idempotently).
    fn handle<'a>(
        &'a self,
        envelope: &'a Envelope,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a;
}

/// Wakes the scheduler when jobs were created in this process.
#[derive(Clone, Default)]
pub struct JobSignal(Arc<Notify>);

impl JobSignal {
    /// New jobs are due.
    pub fn notify(&self) {
        self.0.notify_one();
    }

    /// Waits for new jobs.
    pub async fn notified(&self) {
        self.0.notified().await;
    }
}

/// Consumes `queue` with `handler` until `stop`, across reconnections.
pub async fn consume<H: Handler>(
    handler: Arc<H>,
    broker: Broker,
    queue: String,
    prefetch: u16,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let Some(session) = broker.session(&stop).await else {
            return;
        };
        let consumer = async {
            let channel = bounded("open a channel", session.connection.create_channel()).await?;
            bounded(
                "set the prefetch",
                channel.basic_qos(prefetch, BasicQosOptions::default()),
            )
            .await?;
            let tag = format!(
                "approval-ledger.{}.{}",
                handler.name(),
                uuid::Uuid::new_v4().simple()
            );
            let consumer = bounded(
                "start consuming",
                channel.basic_consume(
                    queue.as_str().into(),
                    ShortString::from(tag),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
            Ok::<_, BrokerCallError>((channel, consumer))
        };
        let (channel, consumer) = match consumer.await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(queue = %queue, error = %e, "cannot consume; waiting for the connection");
                pause(&stop, Duration::from_millis(500)).await;
                continue;
            }
        };
        tracing::info!(queue = %queue, "consuming");
        // Until stopped, or until this connection is gone: a stream on a dead connection may
        // never end by itself, and then this consumer would never start again on the next one.
        let gone = broker.gone(session.generation);
        consumer
            .take_until(stop.cancelled())
            .take_until(gone)
            .for_each_concurrent(usize::from(prefetch.max(1)), |delivery| {
                let handler = handler.clone();
                let stop = stop.clone();
                async move {
                    match delivery {
                        Ok(delivery) => process(handler.as_ref(), delivery, &stop).await,
                        Err(e) => tracing::warn!(error = %e, "the consumer's channel failed"),
                    }
                }
            })
            .await;
        let _ = bounded(
            "close a channel",
            channel.close(200, ShortString::from("consumer stops")),
        )
        .await;
        if !stop.is_cancelled() {
            pause(&stop, Duration::from_millis(200)).await;
        }
    }
}

/// Handles one delivery: ack when its effect is durable, reject a poison message, retry a
/// transient failure in place (or leave it unacknowledged for redelivery when stopping).
async fn process<H: Handler>(handler: &H, delivery: Delivery, stop: &CancellationToken) {
    let envelope: Envelope = match serde_json::from_slice(&delivery.data) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(handler = handler.name(), error = %e, "a message does not decode; dead-lettering it");
            let _ = bounded(
                "reject a message",
                delivery.reject(BasicRejectOptions { requeue: false }),
            )
            .await;
            return;
        }
    };
    let span = tracing::info_span!("message", handler = handler.name(), event_id = %envelope.event_id, request = %envelope.request_id);
    handle_decoded(handler, delivery, &envelope, stop)
        .instrument(span)
        .await;
}

async fn handle_decoded<H: Handler>(
    handler: &H,
    delivery: Delivery,
    envelope: &Envelope,
    stop: &CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match handler.handle(envelope).await {
            Ok(()) => {
                if let Err(e) =
                    bounded("acknowledge", delivery.ack(BasicAckOptions::default())).await
                {
                    // The effect is durable and idempotent: the redelivery will find it.
                    tracing::debug!(error = %e, "could not acknowledge; the message will come again");
                }
                return;
            }
            Err(HandlerError::Permanent(reason)) => {
                tracing::warn!(reason = %reason, "a message cannot be handled; dead-lettering it");
                let _ = bounded(
                    "reject a message",
                    delivery.reject(BasicRejectOptions { requeue: false }),
                )
                .await;
                return;
            }
            Err(HandlerError::Transient(reason)) => {
                if stop.is_cancelled() {
                    return;
                }
                tracing::warn!(reason = %reason, retry_in_ms = backoff.as_millis() as u64, "handling a message failed; retrying");
                pause(stop, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
