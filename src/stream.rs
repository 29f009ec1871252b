//! The live stream behind `GET /v1/stream`: a consumer of the feed
//! ([`crate::feed::follower`]) in each API instance. It follows the feed from its head while
//! anyone listens, waits until the read models show a batch, and tells every connected
//! participant of a touched request that their inbox may have changed. Nothing here is durable:
//! a client that reconnects re-reads its inbox. When the service stops, every stream ends at
//! once, so that a stop never waits for a client to hang up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use approval_aggregates::Request;
use serde::Serialize;
use sqlx::PgConnection;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::feed::follower::{Applied, Consumer, FollowError};
use crate::feed::progress::Progress;
use crate::feed::{read, Batch, FeedEvent, Position};

/// Messages a listener may hold before the newest are dropped for it.
const LISTENER_BUFFER: usize = 64;

/// How long the stream waits for the read models to show a batch before it tells anyway.
const READ_MODELS_WAIT: Duration = Duration::from_secs(5);

/// One change, as a listener receives it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
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
#[derive(Clone)]
pub struct StreamHub {
    listeners: Arc<Mutex<Listeners>>,
    joined: Arc<tokio::sync::Notify>,
    /// Whether the hub follows the feed from a position no later than now: a listener that joins
    /// then hears of every later change. Written under the listeners' lock.
    following: Arc<watch::Sender<bool>>,
    /// Cancelled when the service stops: every open stream ends.
    closing: CancellationToken,
}

/// How long a new listener waits for the hub to follow the feed before it is told it is ready
/// anyway (the database may be down; the client re-reads its inbox when it reconnects).
const FOLLOWING_WAIT: Duration = Duration::from_secs(5);

impl StreamHub {
    /// A hub whose streams end when `closing` is cancelled.
    pub fn new(closing: CancellationToken) -> Self {
        Self {
            listeners: Arc::default(),
            joined: Arc::default(),
            following: Arc::new(watch::channel(false).0),
            closing,
        }
    }

    /// A new listener for `user`.
    pub fn listen(&self, user: &str) -> mpsc::Receiver<InboxChange> {
        let (tx, rx) = mpsc::channel(LISTENER_BUFFER);
        if let Ok(mut listeners) = self.listeners.lock() {
            listeners.entry(user.to_owned()).or_default().push(tx);
        }
        self.joined.notify_one();
        rx
    }

    /// Resolves when the service stops: the moment a stream must end.
    pub async fn closed(&self) {
        self.closing.cancelled().await;
    }

    /// Resolves once every change committed from now on will reach the listeners that joined
    /// before (or after [`FOLLOWING_WAIT`], or when the service stops): when a stream can say it
    /// is ready.
    pub async fn following(&self) {
        let mut following = self.following.subscribe();
        tokio::select! {
            _ = following.wait_for(|f| *f) => {}
            _ = tokio::time::sleep(FOLLOWING_WAIT) => {}
            _ = self.closing.cancelled() => {}
        }
    }

    /// Forgets the listeners that left; whether none is left. When none is, the hub stops
    /// following, under the same lock a listener joins by, so a listener that joins meanwhile
    /// waits for the hub to start again from a later head.
    fn sweep_is_empty(&self) -> bool {
        let Ok(mut listeners) = self.listeners.lock() else {
            return true;
        };
        listeners.retain(|_, senders| {
            senders.retain(|tx| !tx.is_closed());
            !senders.is_empty()
        });
        let empty = listeners.is_empty();
        if empty {
            self.following.send_replace(false);
        }
        empty
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

    /// The hub as a consumer of the feed, telling of a batch once `progress` shows it.
    pub fn follower(&self, progress: Progress) -> StreamFeed {
        StreamFeed {
            hub: self.clone(),
            progress,
        }
    }

    fn fan_out(&self, events: &[FeedEvent], states: &HashMap<Uuid, Request>) {
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

/// The live stream as a reader of the feed.
pub struct StreamFeed {
    hub: StreamHub,
    progress: Progress,
}

impl Consumer for StreamFeed {
    /// Waits until someone listens.
    async fn prepare(&mut self, stop: &CancellationToken) -> Result<(), FollowError> {
        loop {
            if !self.hub.sweep_is_empty() {
                return Ok(());
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = self.hub.joined.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }

    /// From the head: a listener hears of what happens from now on.
    async fn start(&mut self, conn: &mut PgConnection) -> Result<Position, FollowError> {
        let head = read::head(conn).await?;
        self.hub.following.send_replace(true);
        Ok(head)
    }

    async fn apply(
        &mut self,
        conn: &mut PgConnection,
        batch: Batch,
    ) -> Result<Applied, FollowError> {
        if self.hub.sweep_is_empty() {
            return Ok(Applied::Restart);
        }
        let Some(last) = batch.events.last().map(|e| e.position) else {
            return Ok(Applied::Restart);
        };
        // Tell listeners only what their next read will show.
        self.progress.wait_for(last, READ_MODELS_WAIT).await;
        let mut ids: Vec<Uuid> = batch.events.iter().map(|e| e.request_id.0).collect();
        ids.sort_unstable();
        ids.dedup();
        let states = approval_projections::requests::states(conn, &ids).await?;
        self.hub.fan_out(&batch.events, &states);
        Ok(Applied::Through(last))
    }

    async fn reset(&mut self) {
        self.hub.following.send_replace(false);
    }
}
