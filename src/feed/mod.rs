//! The global feed: the spine every reader of the ledger follows.
//!
//! - [`read`]: reading the feed in commit order without ever skipping an event, and the rule of
//!   what a reader may see (the only place that names the snapshot horizon).
//! - [`follower`]: the one loop behind every reader: cursor, wake-up, held-back retry, linger,
//!   backoff, metrics, and an optional leader lock; a reader is a [`follower::Consumer`].
//! - [`checkpoints`]: where each durable reader stands, moved with its effect.
//! - [`signal`]: how every process learns of commits (its own at once, the others' by
//!   LISTEN/NOTIFY), and of the read models' progress.
//! - [`progress`]: how far the read models are, for read-your-writes.
//! - [`interest`]: which event types a reader wants, declared once.
//!
//! The feed's types ([`Position`], [`FeedEvent`]) and the decoding of a stored row live in the
//! `approval_feed` crate, which the read models share. The readers themselves live with what
//! they do: the read models' runner in `crate::projector`, the relay in `crate::relay`, the
//! sweeper in `crate::handlers::sweep`, the live stream in `crate::stream`, the rebuild in
//! `crate::rebuild`.

pub mod checkpoints;
pub mod follower;
pub mod interest;
pub mod progress;
pub mod read;
pub mod signal;

pub use approval_feed::{DecodeError, FeedEvent, Position};
pub use read::{Batch, Feed, FeedError, StatesQuery, HELD_BACK_RETRY};
