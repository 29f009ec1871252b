//! The live stream behind `GET /v1/stream`: each API instance follows the global feed on its own
//! (from the head, when the first listener connects), waits until the read models show a batch,
//! and tells every connected participant of a touched request that their inbox may have
//! changed. Nothing here is durable: a client that reconnects re-reads its inbox.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use approval_aggregates::Request;
use approval_projections::Position;
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::progress::Progress;
use crate::shutdown::pause;
use crate::store::feed::{self, Feed, HELD_BACK_RETRY};

/// Messages a listener may hold before the newest are dropped for it.
const LISTENER_BUFFER: usize = 64;

/// One change, as a listener receives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InboxChange {
    /// The request that changed.
    pub request_id: Uuid,
    /// What happened, such as `StepCompleted`.
    pub event_type: String,
    /// The request's version after it.
    pub version: i64,
    /// Its status after it.
    pub status: String,
}

type Listeners = HashMap<String, Vec<mpsc::Sender<InboxChange>>>;

/// The connected listeners, by user.
#[derive(Clone, Default)]
pub struct StreamHub {
    listeners: Arc<Mutex<Listeners>>,
    joined: Arc<tokio::sync::Notify>,
}

impl StreamHub {
    /// A new listener for `user`.
    pub fn listen(&self, user: &str) -> mpsc::Receiver<InboxChange> {
        let (tx, rx) = mpsc::channel(LISTENER_BUFFER);
        if let Ok(mut listeners) = self.listeners.lock() {
            listeners.entry(user.to_owned()).or_default().push(tx);
        }
        self.joined.notify_one();
        rx
    }

    fn is_empty(&self) -> bool {
        self.listeners.lock().map_or(true, |l| l.is_empty())
    }

    /// The users with a listener among `users`.
    fn listening(&self, users: &[&str]) -> Vec<String> {
        self.listeners.lock().map_or_else(
            |_| vec![],
            |l| {
                users
                    .iter()
                    .filter(|u| l.contains_key(**u))
                    .map(|u| (*u).to_owned())
                    .collect()
            },
        )
    }

    /// Sends `change` to `user`'s listeners, forgetting the ones that left.
    fn send(&self, user: &str, change: &InboxChange) {
        if let Ok(mut listeners) = self.listeners.lock() {
            if let Some(senders) = listeners.get_mut(user) {
                senders.retain(|tx| match tx.try_send(change.clone()) {
                    Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => !tx.is_closed(),
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                });
                if senders.is_empty() {
                    listeners.remove(user);
                }
            }
        }
    }

    /// Forgets listeners that left, so an idle hub stops reading the feed.
    fn sweep(&self) {
        if let Ok(mut listeners) = self.listeners.lock() {
            listeners.retain(|_, senders| {
                senders.retain(|tx| !tx.is_closed());
                !senders.is_empty()
            });
        }
    }

    /// Follows the feed until `stop`.
    pub async fn run(
        self,
        pool: PgPool,
        progress: Progress,
        mut wake: watch::Receiver<u64>,
        poll: Duration,
        stop: CancellationToken,
    ) {
        let feed = Feed::new(pool.clone());
        let mut at: Option<Position> = None;
        while !stop.is_cancelled() {
            self.sweep();
            if self.is_empty() {
                at = None;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.joined.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
                continue;
            }
            let position = match at {
                Some(p) => p,
                None => match feed::head(&pool).await {
                    Ok(p) => {
                        at = Some(p);
                        p
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "the stream cannot find the feed's head");
                        pause(&stop, poll).await;
                        continue;
                    }
                },
            };
            wake.borrow_and_update();
            let batch = match feed.read_after(position, 500).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(error = %e, "the stream cannot read the feed");
                    pause(&stop, poll).await;
                    continue;
                }
            };
            let Some(last) = batch.events.last().map(|e| e.position) else {
                if batch.held_back {
                    pause(&stop, HELD_BACK_RETRY).await;
                } else {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = wake.changed() => {}
                        _ = self.joined.notified() => {}
                        _ = tokio::time::sleep(poll) => {}
                    }
                }
                continue;
            };
            // Tell listeners only what their next read will show.
            progress.wait_for(last, Duration::from_secs(5)).await;
            let mut ids: Vec<Uuid> = batch.events.iter().map(|e| e.request_id.0).collect();
            ids.sort_unstable();
            ids.dedup();
            match approval_projections::requests::states(&pool, &ids).await {
                Ok(states) => self.fan_out(&batch.events, &states),
                Err(e) => tracing::debug!(error = %e, "the stream cannot read requests"),
            }
            at = Some(last);
        }
    }

    fn fan_out(&self, events: &[approval_projections::FeedEvent], states: &HashMap<Uuid, Request>) {
        for event in events {
            let Some(request) = states.get(&event.request_id.0) else {
                continue;
            };
            let people: Vec<&str> = request
                .participants()
                .into_iter()
                .map(|u| u.as_str())
                .collect();
            let change = InboxChange {
                request_id: event.request_id.0,
                event_type: event.event_type.clone(),
                version: event.sequence,
                status: event
                    .event
                    .final_status()
                    .map_or("pending", |s| s.as_str())
                    .to_owned(),
            };
            for user in self.listening(&people) {
                self.send(&user, &change);
            }
        }
    }
}
