//! Projection `lookup`: a legacy system's reference to its request, with the request's status and
//! version, for `GET /v1/systems/{system}/requests/{external_ref}`. It needs no folded state: the
//! submission names the reference, a final event names the status, the sequence is the version.

use std::collections::HashMap;

use approval_aggregates::{ApprovalEvent, Status};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::write::BatchWrite;
use crate::{FeedEvent, LoadedStates, Projection, ProjectionError, Schema};

/// The projection.
#[derive(Debug, Clone)]
pub struct LookupProjection {
    write_new: String,
    write_moved: String,
}

impl LookupProjection {
    /// Its name.
    pub const NAME: &'static str = "lookup";

    /// The projection writing to the tables of `schema`.
    pub fn new(schema: &Schema) -> Self {
        let lookup = schema.table("rm_lookup");
        Self {
            // The requests submitted in this batch are inserted as they stand at its end; the
            // rows that existed before it (the UPDATE sees the table as it was before the
            // statement) take the last event of their request in the batch, and an older version
            // never overwrites a newer one.
            write_new: format!(
                "INSERT INTO {lookup} (system, external_ref, request_id, status, version, \
                     updated_at) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::text[], \
                     $5::int8[], $6::timestamptz[]) WHERE {{gate}} \
                 ON CONFLICT (system, external_ref) DO NOTHING"
            ),
            write_moved: format!(
                "UPDATE {lookup} AS l SET version = t.v, status = COALESCE(t.st, l.status), \
                     updated_at = t.at \
                 FROM UNNEST($1::uuid[], $2::int8[], $3::text[], $4::timestamptz[]) \
                     AS t(id, v, st, at) \
                 WHERE l.request_id = t.id AND l.version < t.v AND {{gate}}"
            ),
        }
    }
}

impl Projection for LookupProjection {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_lookup"]
    }

    fn write(
        &self,
        write: &mut BatchWrite,
        events: &[FeedEvent],
        _states: LoadedStates,
    ) -> Result<bool, ProjectionError> {
        // One row per request: its last event in the batch, and the final status it reached.
        let mut last: Vec<&FeedEvent> = Vec::new();
        let mut slot_of: HashMap<Uuid, usize> = HashMap::new();
        let mut final_status: HashMap<Uuid, Status> = HashMap::new();
        let mut submitted: Vec<(&FeedEvent, &str, &str)> = Vec::new();
        for e in events {
            if let ApprovalEvent::RequestSubmitted {
                system,
                external_ref,
                ..
            } = &e.event
            {
                submitted.push((e, system.0.as_str(), external_ref.as_str()));
            }
            // A resubmission makes a returned request pending again.
            if let Some(status) = e.event.status_after() {
                final_status.insert(e.request_id.0, status);
            }
            match slot_of.get(&e.request_id.0) {
                Some(&slot) => last[slot] = e,
                None => {
                    slot_of.insert(e.request_id.0, last.len());
                    last.push(e);
                }
            }
        }
        let status_of = |id: &Uuid| final_status.get(id).map(|s| s.as_str());
        let ids: Vec<Uuid> = last.iter().map(|e| e.request_id.0).collect();
        let versions: Vec<i64> = last.iter().map(|e| e.sequence).collect();
        let statuses: Vec<Option<&str>> = ids.iter().map(status_of).collect();
        let ats: Vec<DateTime<Utc>> = last.iter().map(|e| e.event.at()).collect();
        // A request submitted here starts as its last event in the batch leaves it.
        let mut new = (vec![], vec![], vec![], vec![], vec![], vec![]);
        for (e, system, external_ref) in submitted {
            let latest = slot_of.get(&e.request_id.0).map_or(e, |&slot| last[slot]);
            new.0.push(system);
            new.1.push(external_ref);
            new.2.push(e.request_id.0);
            new.3.push(status_of(&e.request_id.0).unwrap_or("pending"));
            new.4.push(latest.sequence);
            new.5.push(latest.event.at());
        }
        if ids.is_empty() {
            return Ok(true);
        }
        let before = write.bound();
        write.bind(&new.0)?;
        write.bind(&new.1)?;
        write.bind(&new.2)?;
        write.bind(&new.3)?;
        write.bind(&new.4)?;
        write.bind(&new.5)?;
        write.cte("lookup_new", &self.write_new, before);
        let before = write.bound();
        write.bind(&ids)?;
        write.bind(&versions)?;
        write.bind(&statuses)?;
        write.bind(&ats)?;
        write.cte("lookup_moved", &self.write_moved, before);
        Ok(true)
    }
}

/// A system's reference and where its request stands.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct LookupRow {
    /// The request.
    pub request_id: Uuid,
    /// Its status.
    pub status: String,
    /// Its version.
    pub version: i64,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// The request `system` submitted as `external_ref`, if any.
pub async fn get(
    pool: &PgPool,
    system: &str,
    external_ref: &str,
) -> Result<Option<LookupRow>, ProjectionError> {
    Ok(sqlx::query_as(
        "SELECT request_id, status, version, updated_at FROM rm_lookup \
         WHERE system = $1 AND external_ref = $2",
    )
    .bind(system)
    .bind(external_ref)
    .fetch_optional(pool)
    .await?)
}
