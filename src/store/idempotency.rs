//! The first answer to a person's command sent with an `Idempotency-Key`, kept so that a retry
//! gets the same answer and writes nothing. Keys are scoped to the person who sent them.

use serde_json::Value;
use sqlx::PgPool;

/// A stored answer.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAnswer {
    /// What identified the first call (method, path, body).
    pub fingerprint: String,
    /// Its HTTP status.
    pub status: u16,
    /// Its JSON body.
    pub body: Value,
}

/// The answer stored under (`principal`, `key`), if any.
pub async fn find(
    pool: &PgPool,
    principal: &str,
    key: &str,
) -> Result<Option<StoredAnswer>, sqlx::Error> {
    let row: Option<(String, i16, Value)> = sqlx::query_as(
        "SELECT fingerprint, status_code, body FROM idempotency_keys WHERE principal = $1 AND key = $2",
    )
    .bind(principal)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(fingerprint, status, body)| StoredAnswer {
        fingerprint,
        status: u16::try_from(status).unwrap_or(500),
        body,
    }))
}

/// Stores the first answer; a concurrent first answer under the same key wins and is returned.
pub async fn store(
    pool: &PgPool,
    principal: &str,
    key: &str,
    answer: &StoredAnswer,
) -> Result<StoredAnswer, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (principal, key, fingerprint, status_code, body) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (principal, key) DO NOTHING",
    )
    .bind(principal)
    .bind(key)
    .bind(&answer.fingerprint)
    .bind(i16::try_from(answer.status).unwrap_or(500))
    .bind(&answer.body)
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(answer.clone());
    }
    Ok(find(pool, principal, key)
        .await?
        .unwrap_or_else(|| answer.clone()))
}
