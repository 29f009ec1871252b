//! The sweeper: the safety net under the work queues. A message can be published and confirmed
//! yet never reach a work queue (a binding removed by hand routes an event to the other queue
//! only, and `mandatory` cannot tell), or reach it and be dead-lettered after its delivery limit
//! (consumers killed again and again). So the sweeper follows the feed `broker.sweep_after_ms`
//! behind, never past what the relay has published, and runs the handlers for every event that
//! should have a callback or push job and has none. The handlers are idempotent (one job per
//! event and target), so an event both paths handle still gets one job; and the legacy-sync
//! handler builds every earlier callback of the request too, so per-request order holds.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use approval_projections::FeedEvent;
use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::handlers::legacy_sync::{callback_type, LegacySync};
use crate::handlers::push::{may_notify, Push};
use crate::handlers::{Handler, HandlerError};
use crate::relay::{Envelope, RELAY};
use crate::shutdown::pause;
use crate::store::checkpoints;
use crate::store::events;
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
            match self.start_at_the_relay().await {
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

    /// A new sweeper starts where the relay stands: what was published before it existed was
    /// handled by the consumers of that time. (Without a relay checkpoint yet, `load` starts it
    /// at the beginning of the feed.)
    async fn start_at_the_relay(&self) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO feed_checkpoints (name, tx_id, global_id) \
             SELECT $1, tx_id, global_id FROM feed_checkpoints WHERE name = $2 \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(SWEEPER)
        .bind(RELAY)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// One batch; returns the events it passed.
    async fn sweep_once(&self, feed: &Feed) -> Result<usize, HandlerError> {
        let from = checkpoints::load(&self.pool, SWEEPER).await?;
        let published = checkpoints::load(&self.pool, RELAY).await?;
        let batch = feed.read_after(from, self.batch).await?;
        let cutoff = Utc::now()
            - chrono::Duration::from_std(self.after).unwrap_or(chrono::Duration::seconds(30));
        let due: Vec<&FeedEvent> = batch
            .events
            .iter()
            .take_while(|e| e.position <= published && e.recorded_at <= cutoff)
            .collect();
        let Some(last) = due.last() else {
            return Ok(0);
        };
        let ids: Vec<Uuid> = due.iter().map(|e| e.event_id).collect();
        let jobs = self.jobs_of(&ids).await?;
        let requests: Vec<String> = due
            .iter()
            .map(|e| e.request_id.to_string())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let sources: HashMap<String, (String, String)> = events::sources(&self.pool, &requests)
            .await?
            .into_iter()
            .map(|(id, system, external_ref)| (id, (system, external_ref)))
            .collect();
        let mut swept = 0;
        for event in &due {
            let Some((system, external_ref)) = sources.get(&event.request_id.to_string()) else {
                continue;
            };
            let progress = self
                .legacy
                .systems
                .get(system)
                .is_some_and(|s| s.progress_callbacks);
            let envelope = Envelope::of(event, system, external_ref);
            let missing_callback = callback_type(&event.event, progress).is_some()
                && !jobs.contains(&(event.event_id, "callback".to_owned()));
            let missing_push = may_notify(&event.event_type)
                && !jobs.contains(&(event.event_id, "push".to_owned()));
            if missing_callback {
                swept += settle(self.legacy.handle(&envelope).await, &envelope)?;
            }
            if missing_push {
                swept += settle(self.push.handle(&envelope).await, &envelope)?;
            }
        }
        if swept > 0 {
            // Most events handled again simply have nobody to tell; say so only when jobs appeared.
            let created = self.jobs_of(&ids).await?.len().saturating_sub(jobs.len());
            if created > 0 {
                tracing::warn!(
                    created,
                    "the sweeper made jobs for events the work queues missed"
                );
            }
        }
        let mut conn = self.pool.acquire().await?;
        checkpoints::advance(&mut conn, SWEEPER, last.position).await?;
        Ok(due.len())
    }
}

impl Sweeper {
    /// The channels that have jobs for each of `ids`.
    async fn jobs_of(&self, ids: &[Uuid]) -> Result<HashSet<(Uuid, String)>, sqlx::Error> {
        let rows: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT DISTINCT event_id, channel FROM deliveries \
             WHERE channel IN ('callback', 'push') AND event_id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }
}

/// A transient failure stops the batch (it is swept again); a permanent one is the same
/// refusal the consumer would have dead-lettered: logged and passed.
fn settle(result: Result<(), HandlerError>, envelope: &Envelope) -> Result<usize, HandlerError> {
    match result {
        Ok(()) => Ok(1),
        Err(HandlerError::Permanent(reason)) => {
            tracing::warn!(event_id = %envelope.event_id, reason = %reason, "the sweeper cannot handle an event");
            Ok(0)
        }
        Err(e) => Err(e),
    }
}
