//! The sweeper: the safety net under the work queues, a consumer of the feed
//! ([`crate::feed::follower`]). A message can be published and confirmed yet never reach a work
//! queue (a binding removed by hand routes an event to the other queue only, and `mandatory`
//! cannot tell), or reach it and be dead-lettered after its delivery limit (consumers killed
//! again and again). So the sweeper follows the feed `broker.sweep_after_ms` behind, never past
//! what the relay has published, and runs the handlers for every event that should have a
//! callback or push job and has none. The handlers are idempotent (one job per event and
//! target), so an event both paths handle still gets one job; and the legacy-sync handler builds
//! every earlier callback of the request too, so per-request order holds.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::broker::{Envelope, Sources};
use crate::feed::follower::{Applied, Consumer, FollowError};
use crate::feed::{checkpoints, Batch, Position};
use crate::handlers::legacy_sync::{callback_type, LegacySync};
use crate::handlers::push::Push;
use crate::handlers::{handle_batch, message_span, HandlerError};
use crate::relay::RELAY;
use crate::store::deliveries::{self, Channel};

/// The sweeper's checkpoint name.
pub const SWEEPER: &str = "sweeper";

/// What the sweeper needs.
pub struct Sweeper {
    /// The legacy-sync handler.
    pub legacy: Arc<LegacySync>,
    /// The push handler.
    pub push: Arc<Push>,
    /// How far behind the feed's commits it stays.
    pub after: Duration,
}

impl From<HandlerError> for FollowError {
    fn from(e: HandlerError) -> Self {
        Self::Consumer(e.to_string())
    }
}

impl Sweeper {
    /// How long it waits between looks: a quarter of how far behind it stays.
    pub fn poll(&self) -> Duration {
        (self.after / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// Makes the missing jobs of `due`'s events; returns how many it made.
    async fn sweep(
        &self,
        conn: &mut PgConnection,
        due: &[crate::feed::FeedEvent],
    ) -> Result<u64, FollowError> {
        let ids: Vec<Uuid> = due.iter().map(|e| e.event_id).collect();
        let jobs = deliveries::channels_of(&mut *conn, &ids).await?;
        let mut sources = Sources::default();
        sources.resolve(&mut *conn, due).await?;
        let mut callbacks = vec![];
        let mut pushes = vec![];
        for event in due {
            let Some((system, external_ref)) = sources.of(event.request_id.0) else {
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
            if Push::INTEREST.wants(&event.event_type)
                && !jobs.contains(&(event.event_id, Channel::Push))
            {
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
                message_span(&envelopes[*index]).in_scope(|| {
                    tracing::warn!(reason = %reason, "the sweeper cannot handle an event");
                });
            }
            created += handled.created;
        }
        Ok(created)
    }
}

impl Consumer for Sweeper {
    async fn start(&mut self, conn: &mut PgConnection) -> Result<Position, FollowError> {
        // A new sweeper starts where the relay stands: what was published before it existed
        // was handled by the consumers of that time.
        checkpoints::start_where(&mut *conn, SWEEPER, RELAY).await?;
        Ok(checkpoints::load(conn, SWEEPER).await?)
    }

    async fn apply(
        &mut self,
        conn: &mut PgConnection,
        batch: Batch,
    ) -> Result<Applied, FollowError> {
        let published = checkpoints::load(&mut *conn, RELAY).await?;
        let cutoff = Utc::now()
            - chrono::Duration::from_std(self.after).unwrap_or(chrono::Duration::seconds(30));
        let ready = batch
            .events
            .iter()
            .take_while(|e| e.position <= published && e.recorded_at <= cutoff)
            .count();
        let due = &batch.events[..ready];
        let Some(last) = due.last().map(|e| e.position) else {
            return Ok(Applied::NotYet);
        };
        let created = self.sweep(conn, due).await?;
        // Most events handled again simply have nobody to tell; say so only when jobs appeared.
        if created > 0 {
            tracing::warn!(
                created,
                "the sweeper made jobs for events the work queues missed"
            );
        }
        checkpoints::advance(conn, SWEEPER, last).await?;
        if ready < batch.events.len() {
            Ok(Applied::Until(last))
        } else {
            Ok(Applied::Through(last))
        }
    }
}
