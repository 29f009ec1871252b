//! The sweeper: the safety net under the work queues. A message can be published and confirmed
//! yet never reach a work queue (a binding removed by hand routes an event to the other queue
//! only, and `mandatory` cannot tell), or reach it and be dead-lettered after its delivery limit
//! (consumers killed again and again). So the sweeper follows the feed `broker.sweep_after_ms`
//! behind, never past what the relay has published, and runs the handlers for every event that
//! should have a callback or push job and has none. The handlers are idempotent (one job per
//! event and target), so an event both paths handle still gets one job; and the legacy-sync
//! handler builds every earlier callback of the request too, so per-request order holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::handlers::legacy_sync::{callback_type, LegacySync};
use crate::handlers::push::{may_notify, Push};
use crate::handlers::{handle_batch, HandlerError};
use crate::relay::{resolve_sources, Envelope, RELAY};
use crate::shutdown::pause;
use crate::store::checkpoints;
use crate::store::deliveries::{self, Channel};
use crate::store::feed::Feed;

/// The sweeper's checkpoint name.
pub const SWEEPER: &str = "sweeper";

/// What the sweeper needs.
pub struct Sweeper {
    /// The database.
    pub pool: PgPool,
    /// The legacy-sync handler.
    pub legacy: Arc<LegacySync>,
    /// The push handler.
    pub push: Arc<Push>,
    /// How far behind the feed's commits it stays.
    pub after: Duration,
    /// Events per batch.
    pub batch: i64,
}

impl Sweeper {
    /// Sweeps until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let feed = Feed::new(self.pool.clone());
        let idle = (self.after / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        while !stop.is_cancelled() {
            // A new sweeper starts where the relay stands: what was published before it existed
            // was handled by the consumers of that time.
            match checkpoints::start_where(&self.pool, SWEEPER, RELAY).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "the sweeper cannot start; it will try again");
                    pause(&stop, idle).await;
                }
            }
        }
        while !stop.is_cancelled() {
            match self.sweep_once(&feed).await {
                Ok(0) => pause(&stop, idle).await,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the sweeper failed a batch; it will try again");
                    pause(&stop, idle).await;
                }
            }
        }
    }

    /// One batch; returns the events it passed.
    async fn sweep_once(&self, feed: &Feed) -> Result<usize, HandlerError> {
        let from = checkpoints::load(&self.pool, SWEEPER).await?;
        let published = checkpoints::load(&self.pool, RELAY).await?;
        let batch = feed.read_after(from, self.batch).await?;
        let cutoff = Utc::now()
            - chrono::Duration::from_std(self.after).unwrap_or(chrono::Duration::seconds(30));
        let ready = batch
            .events
            .iter()
            .take_while(|e| e.position <= published && e.recorded_at <= cutoff)
            .count();
        let due = &batch.events[..ready];
        let Some(last) = due.last() else {
            return Ok(0);
        };
        let ids: Vec<Uuid> = due.iter().map(|e| e.event_id).collect();
        let jobs = deliveries::channels_of(&self.pool, &ids).await?;
        let mut sources = HashMap::new();
        resolve_sources(&self.pool, due, &mut sources).await?;
        let mut callbacks = vec![];
        let mut pushes = vec![];
        for event in due {
            let Some((system, external_ref)) = sources.get(&event.request_id.0) else {
                continue;
            };
            let progress = self
                .legacy
                .systems
                .get(system)
                .is_some_and(|s| s.progress_callbacks);
            if callback_type(&event.event, progress).is_some()
                && !jobs.contains(&(event.event_id, Channel::Callback))
            {
                callbacks.push(Envelope::of(event, system, external_ref));
            }
            // Most of these simply have nobody with a device to tell; the handler finds out for
            // the whole batch in two reads.
            if may_notify(&event.event_type) && !jobs.contains(&(event.event_id, Channel::Push)) {
                pushes.push(Envelope::of(event, system, external_ref));
            }
        }
        let mut created = 0;
        for (handled, envelopes) in [
            (
                handle_batch(self.legacy.as_ref(), &callbacks).await?,
                &callbacks,
            ),
            (handle_batch(self.push.as_ref(), &pushes).await?, &pushes),
        ] {
            // The same refusals the consumer would have dead-lettered: logged and passed.
            for (index, reason) in &handled.refused {
                tracing::warn!(event_id = %envelopes[*index].event_id, reason = %reason, "the sweeper cannot handle an event");
            }
            created += handled.created;
        }
        // Most events handled again simply have nobody to tell; say so only when jobs appeared.
        if created > 0 {
            tracing::warn!(
                created,
                "the sweeper made jobs for events the work queues missed"
            );
        }
        let mut conn = self.pool.acquire().await?;
        checkpoints::advance(&mut conn, SWEEPER, last.position).await?;
        Ok(due.len())
    }
}
