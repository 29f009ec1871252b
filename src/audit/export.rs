//! `audit export`: every stored event, one line each, in feed order, exactly as stored (payload
//! and metadata as PostgreSQL's jsonb text, the version as written, no upcasting) with its hash,
//! so that anyone holding an export can recompute the hash chains without the database.
//!
//! Read in keyset pages below the oldest transaction running at the start, written as each page
//! arrives: memory stays constant however long the history.

use std::io::Write;

use crate::feed::Position;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::audit::AuditError;
use crate::store::audit::{self as sql, StoredEvent};

/// Events per page read from the store.
const PAGE: i64 = 5_000;

/// The columns of both formats, in order.
pub const COLUMNS: [&str; 12] = [
    "tx_id",
    "global_id",
    "event_id",
    "aggregate_type",
    "request_id",
    "sequence",
    "event_type",
    "event_version",
    "recorded_at",
    "hash",
    "payload",
    "metadata",
];

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line; `payload` and `metadata` are JSON values.
    Jsonl,
    /// RFC 4180 CSV with a header line; `payload` and `metadata` are JSON text.
    Csv,
}

/// The fields of a line before the payload and metadata.
#[derive(Serialize)]
struct Fields<'a> {
    tx_id: i64,
    global_id: i64,
    event_id: String,
    aggregate_type: &'a str,
    request_id: &'a str,
    sequence: i64,
    event_type: &'a str,
    event_version: &'a str,
    recorded_at: String,
    hash: String,
}

impl<'a> Fields<'a> {
    fn of(e: &'a StoredEvent) -> Self {
        Self {
            tx_id: e.tx_id,
            global_id: e.global_id,
            event_id: e.event_id.to_string(),
            aggregate_type: &e.aggregate_type,
            request_id: &e.aggregate_id,
            sequence: e.sequence,
            event_type: &e.event_type,
            event_version: &e.event_version,
            recorded_at: e.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            hash: hex::encode(&e.hash),
        }
    }
}

/// Writes `e` as one line of `format`.
pub fn write_line(out: &mut dyn Write, format: Format, e: &StoredEvent) -> Result<(), AuditError> {
    let fields = Fields::of(e);
    match format {
        Format::Jsonl => {
            let head = serde_json::to_string(&fields)
                .map_err(|e| AuditError::Interrupted(e.to_string()))?;
            // The stored JSON goes in as the text PostgreSQL gave, byte for byte: it is what the
            // hash covers.
            let head = head.strip_suffix('}').unwrap_or(&head);
            writeln!(
                out,
                "{head},\"payload\":{},\"metadata\":{}}}",
                e.payload, e.metadata
            )?;
        }
        Format::Csv => {
            let cells = [
                fields.tx_id.to_string(),
                fields.global_id.to_string(),
                fields.event_id,
                csv_cell(fields.aggregate_type),
                csv_cell(fields.request_id),
                fields.sequence.to_string(),
                csv_cell(fields.event_type),
                csv_cell(fields.event_version),
                fields.recorded_at,
                fields.hash,
                csv_cell(&e.payload),
                csv_cell(&e.metadata),
            ];
            writeln!(out, "{}", cells.join(","))?;
        }
    }
    Ok(())
}

/// A CSV cell: quoted, with quotes doubled, when it holds a comma, a quote or a line break.
/// jsonb text never holds a raw line break, so every event stays on one line.
fn csv_cell(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// Writes every event recorded at or after `since` (all when `None`) to `out` in `format`,
/// calling `progress` with the number written after each page. Returns how many it wrote.
pub async fn export(
    pool: &PgPool,
    since: Option<DateTime<Utc>>,
    format: Format,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, AuditError> {
    if format == Format::Csv {
        writeln!(out, "{}", COLUMNS.join(","))?;
    }
    let horizon = crate::feed::read::horizon(pool).await?;
    let mut after = Position::START;
    let mut written = 0u64;
    loop {
        let page = sql::page(pool, after, horizon, since, PAGE).await?;
        for e in &page {
            write_line(out, format, e)?;
        }
        written += page.len() as u64;
        progress(written);
        match page.last() {
            Some(last) if page.len() as i64 == PAGE => after = last.position(),
            _ => break,
        }
    }
    out.flush()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use uuid::Uuid;

    use super::*;

    fn event() -> StoredEvent {
        StoredEvent {
            tx_id: 7,
            global_id: 3,
            aggregate_type: "ApprovalRequest".into(),
            aggregate_id: "r1".into(),
            sequence: 2,
            event_type: "ApprovalRecorded".into(),
            event_version: "1.1".into(),
            payload: r#"{"ApprovalRecorded": {"comment": "ok, \"fine\"\nreally"}}"#.into(),
            metadata: r#"{"actor": "alice"}"#.into(),
            event_id: Uuid::nil(),
            recorded_at: Utc
                .timestamp_opt(1_700_000_000, 5_000)
                .single()
                .unwrap_or_default(),
            hash: vec![0xab; 32],
        }
    }

    fn line(format: Format) -> String {
        let mut out = Vec::new();
        assert!(write_line(&mut out, format, &event()).is_ok());
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn a_jsonl_line_is_one_json_object_with_the_stored_json_inside() {
        let text = line(Format::Jsonl);
        assert_eq!(text.lines().count(), 1);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(value["request_id"], "r1");
        assert_eq!(value["sequence"], 2);
        assert_eq!(value["recorded_at"], "2023-11-14T22:13:20.000005Z");
        assert_eq!(value["metadata"]["actor"], "alice");
        assert_eq!(
            value["payload"]["ApprovalRecorded"]["comment"],
            "ok, \"fine\"\nreally"
        );
        assert_eq!(value["hash"], "ab".repeat(32));
    }

    #[test]
    fn a_csv_line_quotes_json_and_stays_on_one_line() {
        let text = line(Format::Csv);
        assert_eq!(text.lines().count(), 1);
        assert!(text.starts_with("7,3,00000000-0000-0000-0000-000000000000,ApprovalRequest,r1,2,"));
        assert!(text
            .contains(r#","{""ApprovalRecorded"": {""comment"": ""ok, \""fine\""\nreally""}}","#));
    }
}
