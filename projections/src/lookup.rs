//! Projection `lookup`: a legacy system's reference to its request, with the request's status and
//! version, for `GET /v1/systems/{system}/requests/{external_ref}`. It needs no folded state: the
//! submission names the reference, a final event names the status, the sequence is the version.

use std::collections::HashMap;

use approval_aggregates::{ApprovalEvent, Status};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{FeedEvent, Projection, ProjectionError, Schema};

/// The projection.
#[derive(Debug, Clone)]
pub struct LookupProjection {
    insert: String,
    update: String,
}

impl LookupProjection {
    /// Its name.
    pub const NAME: &'static str = "lookup";

    /// The projection writing to the tables of `schema`.
    pub fn new(schema: &Schema) -> Self {
        let lookup = schema.table("rm_lookup");
        Self {
            insert: format!(
                "INSERT INTO {lookup} (system, external_ref, request_id, status, version, updated_at) \
                 SELECT s, r, id, 'pending', v, at \
                 FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::int8[], $5::timestamptz[]) \
                     AS t(s, r, id, v, at) \
                 ON CONFLICT (system, external_ref) DO NOTHING"
            ),
            // Rows in feed order; a later row of the same request wins, an older version never does.
            update: format!(
                "UPDATE {lookup} AS l SET version = t.v, status = COALESCE(t.st, l.status), updated_at = t.at \
                 FROM UNNEST($1::uuid[], $2::int8[], $3::text[], $4::timestamptz[]) AS t(id, v, st, at) \
                 WHERE l.request_id = t.id AND l.version < t.v"
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

    async fn apply(
        &self,
        conn: &mut PgConnection,
        events: &[FeedEvent],
    ) -> Result<(), ProjectionError> {
        let (mut systems, mut refs, mut ids, mut versions, mut ats) =
            (vec![], vec![], vec![], vec![], vec![]);
        // One update row per request: its last event in the batch.
        let mut last: Vec<&FeedEvent> = Vec::new();
        let mut slot_of: HashMap<Uuid, usize> = HashMap::new();
        let mut final_status: HashMap<Uuid, Status> = HashMap::new();
        for e in events {
            if let ApprovalEvent::RequestSubmitted {
                system,
                external_ref,
                ..
            } = &e.event
            {
                systems.push(system.0.clone());
                refs.push(external_ref.clone());
                ids.push(e.request_id.0);
                versions.push(e.sequence);
                ats.push(e.event.at());
            }
            if let Some(status) = e.event.final_status() {
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
        if !ids.is_empty() {
            sqlx::query(&self.insert)
                .bind(&systems)
                .bind(&refs)
                .bind(&ids)
                .bind(&versions)
                .bind(&ats)
                .execute(&mut *conn)
                .await?;
        }
        let ids: Vec<Uuid> = last.iter().map(|e| e.request_id.0).collect();
        let versions: Vec<i64> = last.iter().map(|e| e.sequence).collect();
        let statuses: Vec<Option<&str>> = last
            .iter()
            .map(|e| final_status.get(&e.request_id.0).map(|s| s.as_str()))
            .collect();
        let ats: Vec<DateTime<Utc>> = last.iter().map(|e| e.event.at()).collect();
        sqlx::query(&self.update)
            .bind(&ids)
            .bind(&versions)
            .bind(&statuses)
            .bind(&ats)
            .execute(&mut *conn)
            .await?;
        Ok(())
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
