//! A legacy system's reference to its request, with the request's status and version, for
//! `GET /v1/systems/{system}/requests/{external_ref}`. No read model of its own: a request's id
//! is derived from its system and reference (`RequestId::for_submission`), so the request
//! detail's row is found by its primary key. (A projection `lookup` kept a row per request and
//! rewrote it at every event until 0009; the benchmark counted a write of it per command.)

use approval_aggregates::{RequestId, SystemId};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::ProjectionError;

/// A request as its system's reference finds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LookupRow {
    /// The request.
    #[sqlx(rename = "id")]
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
        "SELECT id, status, version, updated_at FROM rm_requests \
         WHERE id = $1 AND system = $2 AND external_ref = $3",
    )
    .bind(RequestId::for_submission(&SystemId::new(system), external_ref).0)
    .bind(system)
    .bind(external_ref)
    .fetch_optional(pool)
    .await?)
}
