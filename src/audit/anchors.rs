//! Anchors: statements "after every event of the feed up to this position, this many events had
//! this running hash", which `audit verify` checks the store against. They come from the audit
//! checkpoints in the database, the audit reader's latest state, and files of checkpoints an
//! operator exported (`audit checkpoints`) and countersigned: the only anchors a database
//! superuser cannot rewrite.

use std::path::Path;

use crate::feed::Position;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::audit::chain::{self, Hash};
use crate::audit::AuditError;
use crate::store::audit::{self as sql, ChainState};

/// A statement of the running hash to check the store against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// Where it comes from, for messages.
    pub label: String,
    /// The audit checkpoint's number, when it is one.
    pub checkpoint: Option<i64>,
    /// The last event it covers.
    pub position: Position,
    /// How many events it covers.
    pub event_count: i64,
    /// The running hash after them.
    pub running_hash: Hash,
}

/// One line of an exported file of checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointLine {
    /// The checkpoint's number; `null` for the audit reader's latest state.
    pub checkpoint: Option<i64>,
    /// The feed position (transaction id) of the last event covered.
    pub tx_id: i64,
    /// The feed position (global id) of the last event covered.
    pub global_id: i64,
    /// How many events it covers.
    pub event_count: i64,
    /// The running hash after them, in hex.
    pub running_hash: String,
    /// When it was written (RFC 3339).
    pub at: String,
}

impl CheckpointLine {
    fn of(checkpoint: Option<i64>, state: &ChainState, at: DateTime<Utc>) -> Self {
        Self {
            checkpoint,
            tx_id: state.position.tx_id,
            global_id: state.position.global_id,
            event_count: state.event_count,
            running_hash: hex::encode(&state.running_hash),
            at: at.to_rfc3339_opts(SecondsFormat::Micros, true),
        }
    }

    fn anchor(&self, label: String) -> Option<Anchor> {
        let running_hash = chain::to_hash(&hex::decode(&self.running_hash).ok()?)?;
        Some(Anchor {
            label,
            checkpoint: self.checkpoint,
            position: Position {
                tx_id: self.tx_id,
                global_id: self.global_id,
            },
            event_count: self.event_count,
            running_hash,
        })
    }
}

/// Every audit checkpoint of the database, oldest first, then the audit reader's latest state:
/// the lines of `audit checkpoints`.
pub async fn export(pool: &PgPool) -> Result<Vec<CheckpointLine>, AuditError> {
    let mut lines: Vec<CheckpointLine> = sql::checkpoints(pool)
        .await?
        .iter()
        .map(|c| CheckpointLine::of(Some(c.id), &c.state, c.created_at))
        .collect();
    let (latest, at) = sql::latest(pool).await?;
    lines.push(CheckpointLine::of(None, &latest, at));
    Ok(lines)
}

/// The anchors the database holds: its checkpoints and the audit reader's latest state.
pub async fn from_database(pool: &PgPool) -> Result<Vec<Anchor>, AuditError> {
    let lines = export(pool).await?;
    lines
        .iter()
        .map(|line| {
            let label = match line.checkpoint {
                Some(id) => format!("audit checkpoint #{id} ({})", line.at),
                None => format!("the audit reader's latest state ({})", line.at),
            };
            line.anchor(label).ok_or_else(|| {
                AuditError::Anchors(format!(
                    "a stored audit checkpoint has a malformed hash: {line:?}"
                ))
            })
        })
        .collect()
}

/// The anchors of an exported file of checkpoints: one JSON object per line as
/// `audit checkpoints` writes them; blank lines and lines starting with `#` are skipped.
pub fn from_file(path: &Path) -> Result<Vec<Anchor>, AuditError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| AuditError::Anchors(format!("{}: {e}", path.display())))?;
    parse(&text, &path.display().to_string())
}

/// The anchors of the text of an exported file named `source`.
pub fn parse(text: &str, source: &str) -> Result<Vec<Anchor>, AuditError> {
    let mut anchors = vec![];
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: String| AuditError::Anchors(format!("{source} line {}: {why}", index + 1));
        let parsed: CheckpointLine = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let label = match parsed.checkpoint {
            Some(id) => format!("checkpoint #{id} of {source} ({})", parsed.at),
            None => format!("the latest state recorded in {source} ({})", parsed.at),
        };
        anchors.push(
            parsed
                .anchor(label)
                .ok_or_else(|| bad("running_hash is not 64 hex digits".into()))?,
        );
    }
    Ok(anchors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exported_line_reads_back_as_the_same_anchor() {
        let state = ChainState {
            position: Position {
                tx_id: 812,
                global_id: 1040,
            },
            event_count: 42,
            running_hash: vec![7; 32],
        };
        let line = CheckpointLine::of(Some(3), &state, DateTime::<Utc>::UNIX_EPOCH);
        let text = format!(
            "# countersigned by ops\n{}\n\n",
            serde_json::to_string(&line).unwrap_or_default()
        );
        let anchors = parse(&text, "cp.jsonl").unwrap_or_default();
        assert_eq!(anchors.len(), 1);
        assert_eq!(anchors[0].checkpoint, Some(3));
        assert_eq!(anchors[0].event_count, 42);
        assert_eq!(anchors[0].running_hash, [7; 32]);
        assert_eq!(anchors[0].position, state.position);
    }

    #[test]
    fn a_malformed_line_is_refused_with_its_number() {
        let result = parse("{\"nope\": 1}", "cp.jsonl");
        assert!(matches!(result, Err(AuditError::Anchors(m)) if m.contains("line 1")));
    }
}
