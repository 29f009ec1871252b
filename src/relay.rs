//! The relay: the global feed, published to RabbitMQ.
//!
//! One relay publishes at a time (it holds a session-level advisory lock on its own database
//! connection, so no transaction stays open while it publishes). It reads a batch after its
//! checkpoint, publishes every event persistent and `mandatory` on a confirm channel without
//! waiting between messages, then awaits every confirm with a timeout. Only when all are acked
//! and none was returned does the checkpoint move; otherwise the batch is published again
//! (at least once; receivers deduplicate on `event_id`). A returned (unroutable) publish also makes
//! the relay declare the topology again, so bindings removed by hand come back. Per-request order holds because the feed
//! keeps it and one channel publishes the batch in order. After a batch that was not full it waits
//! for the next commit and lets [`RELAY_LINGER`] of commits gather, so that a batch, whose cost
//! hardly depends on its size, carries several events at a moderate rate.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use approval_aggregates::ApprovalEvent;
use approval_projections::{FeedEvent, Position};
use chrono::{DateTime, Utc};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::Confirmation;
use lapin::{BasicProperties, Channel};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::broker::{bounded, Broker, BrokerCallError, Topology};
use crate::config::{BrokerSettings, FeedSettings};
use crate::metrics::Metrics;
use crate::shutdown::pause;
use crate::store::feed::{Feed, HELD_BACK_RETRY};
use crate::store::{self, checkpoints};

/// The relay's checkpoint name.
pub const RELAY: &str = "relay";

/// The key of the relay's advisory lock.
const LEADER_LOCK: i64 = 0x6170_7072_6f76_616c; // "approval"

/// A message on the exchange: one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The event's stable id; also the message's `message_id`. Deduplicate on it.
    pub event_id: Uuid,
    /// Its place in the global feed; compare as the pair (`tx_id`, `global_id`).
    pub position: Position,
    /// The request.
    pub request_id: Uuid,
    /// The request's legacy system.
    pub system: String,
    /// The system's reference of the request.
    pub external_ref: String,
    /// The event's sequence in its request (the request's version after it).
    pub sequence: i64,
    /// The event's type, such as `RequestApproved`.
    pub event_type: String,
    /// The version of the payload's shape.
    pub event_version: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// When it was committed.
    pub recorded_at: DateTime<Utc>,
    /// The event's fields.
    pub payload: Value,
    /// Who caused it: `actor`, `system`, `request_id` (the HTTP request id).
    pub metadata: HashMap<String, String>,
}

impl Envelope {
    /// The envelope of `event` of a request from `system` under `external_ref`.
    pub fn of(event: &FeedEvent, system: &str, external_ref: &str) -> Self {
        Self {
            event_id: event.event_id,
            position: event.position,
            request_id: event.request_id.0,
            system: system.to_owned(),
            external_ref: external_ref.to_owned(),
            sequence: event.sequence,
            event_type: event.event_type.clone(),
            event_version: event.event_version.clone(),
            occurred_at: event.event.at(),
            recorded_at: event.recorded_at,
            payload: event.payload.clone(),
            metadata: event.metadata.clone(),
        }
    }
}

/// What the relay needs.
#[derive(Clone)]
pub struct RelayContext {
    /// The database.
    pub pool: PgPool,
    /// The supervised connection.
    pub broker: Broker,
    /// Batch size, timeouts.
    pub broker_settings: BrokerSettings,
    /// Polling.
    pub feed: FeedSettings,
    /// Latency and errors.
    pub metrics: Arc<Metrics>,
}

/// Why a batch was not published.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("feed: {0}")]
    Feed(#[from] store::feed::FeedError),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("{0}")]
    Refused(String),
    /// A publish came back: no queue is bound for its routing key.
    #[error("{0}")]
    Unroutable(String),
}

/// Runs the relay until `stop`.
pub async fn run(ctx: RelayContext, mut wake: watch::Receiver<u64>, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    while !stop.is_cancelled() {
        let Some(mut leader) = lead(&ctx, &stop).await else {
            return;
        };
        tracing::info!("the relay leads");
        let Some(session) = ctx.broker.session(&stop).await else {
            return;
        };
        let channel = match open_channel(&session.connection).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "the relay cannot open a confirm channel");
                pause(&stop, backoff).await;
                continue;
            }
        };
        let mut sources = HashMap::new();
        let result =
            relay_while_healthy(&ctx, &channel, &mut leader, &mut sources, &mut wake, &stop).await;
        let _ = bounded(
            "close a channel",
            channel.close(200, ShortString::from("relay stops")),
        )
        .await;
        let _ = leader.close().await;
        match result {
            Ok(()) => return,
            Err(e) => {
                ctx.metrics
                    .reader_errors
                    .get_or_create(&Metrics::reader(RELAY))
                    .inc();
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "the relay stopped a batch; it will publish it again");
                if matches!(e, RelayError::Unroutable(_)) {
                    // Our own queues' bindings are gone (removed by hand, say): declare them again
                    // so that the batch has somewhere to go.
                    redeclare(&ctx, &session.connection).await;
                }
                pause(&stop, backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(
                    ctx.broker_settings.reconnect_max_ms.max(100),
                ));
            }
        }
    }
}

/// Declares the topology again (idempotent); a failure is logged, the retry tries again.
async fn redeclare(ctx: &RelayContext, connection: &lapin::Connection) {
    let declared = async {
        let channel = bounded("open a channel", connection.create_channel()).await?;
        bounded(
            "declare the topology",
            ctx.broker
                .topology()
                .declare(&channel, ctx.broker_settings.delivery_limit),
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

/// Waits until this instance holds the relay's lock; `None` once `stop` is cancelled.
async fn lead(ctx: &RelayContext, stop: &CancellationToken) -> Option<PgConnection> {
    // The checkpoint moves on this connection. Losing its last update in a crash only
    // republishes a batch (at least once), so it need not wait for the disk. Its few statements
    // each read one table by an index condition on their own values, so each is planned once for
    // the connection's life rather than at every batch (docs/benchmarks.md): no join whose order
    // a plan made on a young ledger could get wrong as the tables grow.
    let options = store::db::background_session((*ctx.pool.connect_options()).clone());
    loop {
        if stop.is_cancelled() {
            return None;
        }
        match PgConnection::connect_with(&options).await {
            Ok(mut conn) => {
                let held: Result<(bool,), _> = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
                    .bind(LEADER_LOCK)
                    .fetch_one(&mut conn)
                    .await;
                if let Ok((true,)) = held {
                    return Some(conn);
                }
                let _ = conn.close().await;
            }
            Err(e) => tracing::debug!(error = %e, "the relay cannot reach the database"),
        }
        pause(stop, Duration::from_secs(1)).await;
    }
}

async fn open_channel(connection: &lapin::Connection) -> Result<Channel, BrokerCallError> {
    let channel = bounded("open a channel", connection.create_channel()).await?;
    bounded(
        "turn on confirms",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await?;
    Ok(channel)
}

/// Publishes batch after batch until `stop` (Ok) or a failure (Err, to start over).
async fn relay_while_healthy(
    ctx: &RelayContext,
    channel: &Channel,
    leader: &mut PgConnection,
    sources: &mut HashMap<Uuid, (String, String)>,
    wake: &mut watch::Receiver<u64>,
    stop: &CancellationToken,
) -> Result<(), RelayError> {
    let feed = Feed::new(ctx.pool.clone());
    let idle = Duration::from_millis(ctx.feed.poll_interval_ms);
    let mut at = checkpoints::load(&ctx.pool, RELAY).await?;
    let mut last_lease_check = tokio::time::Instant::now();
    while !stop.is_cancelled() {
        if last_lease_check.elapsed() > Duration::from_secs(1) {
            // The lock lives as long as its connection: if that is gone, so is the lead.
            sqlx::query("SELECT 1").execute(&mut *leader).await?;
            last_lease_check = tokio::time::Instant::now();
        }
        wake.borrow_and_update();
        // On the leader's own connection: no checkout of the pool per batch.
        let batch = feed
            .read_after_on(leader, at, ctx.broker_settings.relay_batch)
            .await?;
        let Some(last) = batch.events.last().map(|e| e.position) else {
            wait_for_more(batch.held_back, wake, idle, stop).await;
            continue;
        };
        resolve_sources(&mut *leader, &batch.events, sources).await?;
        publish(ctx, channel, &batch.events, sources).await?;
        checkpoints::advance(leader, RELAY, last).await?;
        at = last;
        let now = Utc::now();
        for event in &batch.events {
            let seconds = (now - event.recorded_at)
                .num_microseconds()
                .unwrap_or(0)
                .max(0) as f64
                / 1e6;
            ctx.metrics.commit_to_publish.observe(seconds);
        }
        if sources.len() > 100_000 {
            sources.clear();
        }
        // A full batch leaves more to read at once. A shorter one took everything committed
        // and not held back: reading again at once would find nothing (two statements for it).
        if batch.events.len() < usize::try_from(ctx.broker_settings.relay_batch).unwrap_or(0) {
            wait_for_more(batch.held_back, wake, idle, stop).await;
        }
    }
    Ok(())
}

/// How long the relay lets events gather after a commit wakes it, before it reads them: at
/// 300 commands/s a batch then holds several events instead of one or two, and every batch
/// costs a feed read, a checkpoint and a round of confirms whatever its size. It adds that much
/// to the time from commit to push and callback (measured, docs/benchmarks.md).
const RELAY_LINGER: Duration = Duration::from_millis(10);

/// Waits until there is more to publish: soon when events are held back behind a transaction
/// still running; otherwise until a commit wakes the relay (or `idle` passes), then a little
/// more for other commits to join the batch.
async fn wait_for_more(
    held_back: bool,
    wake: &mut watch::Receiver<u64>,
    idle: Duration,
    stop: &CancellationToken,
) {
    if held_back {
        pause(stop, HELD_BACK_RETRY).await;
        return;
    }
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = wake.changed() => {}
        _ = tokio::time::sleep(idle) => return,
    }
    pause(stop, RELAY_LINGER).await;
}

/// Fills in the system and reference of every request in `events` not yet known.
pub(crate) async fn resolve_sources(
    executor: impl sqlx::PgExecutor<'_>,
    events: &[FeedEvent],
    sources: &mut HashMap<Uuid, (String, String)>,
) -> Result<(), sqlx::Error> {
    // A submission in the batch says it itself (a third of all commands are submissions).
    for event in events {
        if let ApprovalEvent::RequestSubmitted {
            system,
            external_ref,
            ..
        } = &event.event
        {
            sources.insert(
                event.request_id.0,
                (system.as_str().to_owned(), external_ref.clone()),
            );
        }
    }
    let mut missing: Vec<String> = events
        .iter()
        .filter(|e| !sources.contains_key(&e.request_id.0))
        .map(|e| e.request_id.to_string())
        .collect();
    missing.sort();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    for (id, system, external_ref) in store::events::sources(executor, &missing).await? {
        if let Ok(id) = Uuid::parse_str(&id) {
            sources.insert(id, (system, external_ref));
        }
    }
    Ok(())
}

/// Publishes `events` with pipelined confirms; fails unless every one is acked and routed.
async fn publish(
    ctx: &RelayContext,
    channel: &Channel,
    events: &[FeedEvent],
    sources: &HashMap<Uuid, (String, String)>,
) -> Result<(), RelayError> {
    let timeout = Duration::from_millis(ctx.broker_settings.publish_timeout_ms);
    let exchange = ctx.broker.topology().exchange.clone();
    let sending = async {
        let mut confirms = Vec::with_capacity(events.len());
        for event in events {
            let (system, external_ref) = sources
                .get(&event.request_id.0)
                .cloned()
                .unwrap_or_default();
            let envelope = Envelope::of(event, &system, &external_ref);
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
                    exchange.as_str().into(),
                    Topology::routing_key(&system, &event.event_type)
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
                        "RabbitMQ returned an event ({} {}): no queue is bound for its routing key",
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
