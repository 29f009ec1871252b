//! The consumers of the service's own RabbitMQ queues, and the scheduler that delivers what they
//! decide.
//!
//! - [`legacy_sync`]: turns status changes into signed callback jobs for the source system.
//! - [`push`]: turns new inbox items and final statuses into push jobs for people's devices.
//! - [`scheduler`]: sends due jobs, retries with growing delays, dead-letters what cannot go.
//! - [`sweep`]: the safety net: makes the jobs of events the work queues never delivered.
//! - [`handoff`]: how the consumers wake the scheduler, and hand it push jobs already leased.
//!
//! A consumer takes the messages it has at hand as one batch (up to its prefetch), so that a
//! busy queue costs a few statements per batch rather than per message. It acknowledges a batch
//! only once its jobs are durable in PostgreSQL, and a job is unique per event and target, so a
//! redelivered message (a consumer that died before its ack) never creates a second one. A
//! message that does not decode, or that its handler can never handle, is rejected without
//! requeue and lands in the queue's dead-letter queue; it never blocks the queue nor the other
//! messages of its batch. A database failure is retried in place, so the messages keep their
//! place.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::{FieldTable, ShortString};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::broker::{bounded, Broker, BrokerCallError, Envelope, Topology};
use crate::feed::{FeedError, FeedEvent};
use crate::shutdown::pause;
use crate::store::events;

pub mod handoff;
pub mod legacy_sync;
pub mod push;
pub mod scheduler;
pub mod sweep;

pub use handoff::JobSignal;

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

impl From<FeedError> for HandlerError {
    fn from(e: FeedError) -> Self {
        match e {
            FeedError::Database(db) => db.into(),
            decode @ FeedError::Decode(_) => Self::Permanent(decode.to_string()),
        }
    }
}

/// The service's topology on `exchange`: each handler's work queue, bound to the events its
/// handler declared an interest in.
pub fn topology(exchange: &str) -> Topology {
    let topology = Topology::new(exchange);
    let (legacy_sync, push) = (topology.legacy_sync.clone(), topology.push.clone());
    topology
        .bind(&legacy_sync, legacy_sync::LegacySync::INTEREST)
        .bind(&push, push::Push::INTEREST)
}

/// What a consumer does with the messages it has.
pub trait Handler: Send + Sync + 'static {
    /// Its name, for logs.
    fn name(&self) -> &'static str;

    /// Makes the effect of every message of `batch` durable (idempotently) and returns how many
    /// jobs it made that did not exist yet. A permanent error says that some message of the
    /// batch can never be handled; [`handle_batch`] then handles each alone to find which.
    fn handle<'a>(
        &'a self,
        batch: &'a [Envelope],
    ) -> impl Future<Output = Result<u64, HandlerError>> + Send + 'a;
}

/// What [`handle_batch`] did.
#[derive(Debug, Default)]
pub struct Handled {
    /// Jobs made that did not exist yet.
    pub created: u64,
    /// The messages that can never be handled, by index, with the reason.
    pub refused: Vec<(usize, String)>,
}

/// Handles `batch` at once or, when that fails for good, each message alone, so that only the
/// messages that can never be handled are refused. A transient failure (of the batch, or of a
/// message alone) is returned as it is.
pub async fn handle_batch<H: Handler>(
    handler: &H,
    batch: &[Envelope],
) -> Result<Handled, HandlerError> {
    match handler.handle(batch).await {
        Ok(created) => Ok(Handled {
            created,
            refused: vec![],
        }),
        Err(HandlerError::Permanent(reason)) if batch.len() == 1 => Ok(Handled {
            created: 0,
            refused: vec![(0, reason)],
        }),
        Err(HandlerError::Permanent(_)) => {
            let mut handled = Handled::default();
            for (index, envelope) in batch.iter().enumerate() {
                match handler.handle(std::slice::from_ref(envelope)).await {
                    Ok(created) => handled.created += created,
                    Err(HandlerError::Permanent(reason)) => handled.refused.push((index, reason)),
                    Err(transient) => return Err(transient),
                }
            }
            Ok(handled)
        }
        Err(transient) => Err(transient),
    }
}

/// The stored histories of the requests of a batch of messages, each up to the latest event of
/// its request among them: one read for the whole batch.
pub(crate) struct Histories(HashMap<Uuid, Vec<FeedEvent>>);

impl Histories {
    /// Reads them through `conn`.
    pub(crate) async fn read(
        conn: &mut PgConnection,
        envelopes: &[&Envelope],
    ) -> Result<Self, HandlerError> {
        let mut upto: HashMap<Uuid, i64> = HashMap::new();
        for envelope in envelopes {
            let last = upto.entry(envelope.request_id).or_default();
            *last = (*last).max(envelope.sequence);
        }
        Ok(Self(events::histories(conn, &upto).await?))
    }

    /// The requester of request `id`, from its submission among the histories read.
    pub(crate) fn requester_of(&self, id: Uuid) -> Option<&approval_aggregates::UserId> {
        match self.0.get(&id).and_then(|h| h.first()).map(|e| &e.event) {
            Some(approval_aggregates::ApprovalEvent::RequestSubmitted { requester, .. }) => {
                Some(requester)
            }
            _ => None,
        }
    }

    /// The history of `envelope`'s request and the index of its event in it; its event is the
    /// last one when no later message of the same request was read with it. A permanent error
    /// when this ledger never stored that event.
    pub(crate) fn of(&self, envelope: &Envelope) -> Result<(&[FeedEvent], usize), HandlerError> {
        let history = self
            .0
            .get(&envelope.request_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        history
            .iter()
            .position(|e| e.sequence == envelope.sequence)
            .filter(|&index| history[index].event_id == envelope.event_id)
            .map(|index| (history, index))
            .ok_or_else(|| {
                HandlerError::Permanent("the event is not in this ledger's store".into())
            })
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
            .ready_chunks(usize::from(prefetch.max(1)))
            .for_each(|chunk| {
                let handler = handler.clone();
                let stop = stop.clone();
                async move {
                    let mut deliveries = Vec::with_capacity(chunk.len());
                    for delivery in chunk {
                        match delivery {
                            Ok(delivery) => deliveries.push(delivery),
                            Err(e) => tracing::warn!(error = %e, "the consumer's channel failed"),
                        }
                    }
                    process(handler.as_ref(), deliveries, &stop).await;
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

/// Handles the deliveries at hand, in one batch: acknowledges them once their effects are
/// durable, rejects (dead-letters) the ones that do not decode or can never be handled, retries
/// a transient failure in place, and leaves them unacknowledged for redelivery when stopping.
///
/// Batches on a channel are handled one after the other and each ends with every delivery of it
/// settled (or the consumer stopping), so one acknowledgement with `multiple` settles a batch.
async fn process<H: Handler>(handler: &H, deliveries: Vec<Delivery>, stop: &CancellationToken) {
    if stop.is_cancelled() {
        return;
    }
    let mut batch = Vec::with_capacity(deliveries.len());
    let mut envelopes = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        match serde_json::from_slice::<Envelope>(&delivery.data) {
            Ok(envelope) => {
                batch.push(delivery);
                envelopes.push(envelope);
            }
            Err(e) => {
                tracing::warn!(handler = handler.name(), error = %e, "a message does not decode; dead-lettering it");
                reject(&delivery).await;
            }
        }
    }
    if batch.is_empty() {
        return;
    }
    let span = tracing::info_span!("messages", handler = handler.name(), count = batch.len());
    handle_decoded(handler, batch, &envelopes, stop)
        .instrument(span)
        .await;
}

/// The span of one message: its event, its request, and the HTTP request that caused it, so a
/// decision can be followed from the phone to the legacy system (docs/LOGGING.md).
pub(crate) fn message_span(envelope: &Envelope) -> tracing::Span {
    tracing::info_span!(
        "message",
        event_id = %envelope.event_id,
        request = %envelope.request_id,
        request_id = envelope.metadata.get("request_id").map(String::as_str),
        event_type = %envelope.event_type,
    )
}

async fn reject(delivery: &Delivery) {
    let _ = bounded(
        "reject a message",
        delivery.reject(BasicRejectOptions { requeue: false }),
    )
    .await;
}

async fn handle_decoded<H: Handler>(
    handler: &H,
    batch: Vec<Delivery>,
    envelopes: &[Envelope],
    stop: &CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    let refused = loop {
        match handle_batch(handler, envelopes).await {
            Ok(handled) => break handled.refused,
            Err(e) => {
                if stop.is_cancelled() {
                    return;
                }
                tracing::warn!(reason = %e, retry_in_ms = backoff.as_millis() as u64, "handling messages failed; retrying");
                pause(stop, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    for (index, reason) in &refused {
        let envelope = &envelopes[*index];
        message_span(envelope).in_scope(|| {
            tracing::warn!(reason = %reason, "a message cannot be handled; dead-lettering it");
        });
        reject(&batch[*index]).await;
    }
    // Everything before the last handled delivery is settled now: one ack for them all.
    let last = (0..batch.len())
        .rev()
        .find(|index| !refused.iter().any(|(refused, _)| refused == index));
    if let Some(last) = last {
        let all = BasicAckOptions { multiple: true };
        if let Err(e) = bounded("acknowledge", batch[last].ack(all)).await {
            // The effects are durable and idempotent: the redelivery will find them.
            tracing::debug!(error = %e, "could not acknowledge; the messages will come again");
        }
    }
}
