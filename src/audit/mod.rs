//! The audit ledger: proof that the stored history is intact, and the history itself.
//!
//! - [`chain`]: the hashes, computed as the database's trigger computes them: each event's hash
//!   chains it to the previous event of its request; a running hash folds every event's hash
//!   in feed order.
//! - [`reader`]: the audit reader (worker role), which keeps the running hash, the last event
//!   of each request and periodic checkpoints, moved with its feed checkpoint.
//! - [`anchors`]: checkpoints from the database and from exported, countersigned files.
//! - [`verify`]: `audit verify`, the whole store or one request.
//! - [`replay`]: a request as it stood at a moment or version, for `audit replay` and
//!   `GET /v1/requests/{id}/history`.
//! - [`export`]: `audit export`, every event as stored, JSON lines or CSV.
//!
//! The SQL is in `crate::store::audit`; the design and its limits in
//! docs/decisions/0004-tamper-evidence.md. Nothing here writes an event.

pub mod anchors;
pub mod chain;
pub mod export;
pub mod reader;
pub mod replay;
pub mod verify;

/// Why an audit command could not do its work (as opposed to finding the store not intact,
/// which is a [`verify::Report`]).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored event does not decode.
    #[error(transparent)]
    Feed(#[from] crate::feed::FeedError),
    /// A file of checkpoints cannot be used, or a stored one is malformed.
    #[error("checkpoints: {0}")]
    Anchors(String),
    /// Writing the output failed.
    #[error("output: {0}")]
    Output(#[from] std::io::Error),
    /// A background read or an encoding failed.
    #[error("interrupted: {0}")]
    Interrupted(String),
}
