//! `Idempotency-Key` for people's commands: the first answer under a key (success or refusal,
//! never a 5xx) is stored and returned again to every retry, which writes nothing. The key also
//! travels into the events' metadata, so an answer lost between the append and its storing is
//! still found in the event store (see `Ledger::answer_of_key`).

use std::future::Future;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::IntoParams;

use crate::http::errors::{ApiError, Code};
use crate::http::AppState;
use crate::store::idempotency::{self, StoredAnswer};

/// The request header.
pub const HEADER: &str = "Idempotency-Key";
/// The answer header that marks a replayed answer.
pub const REPLAYED_HEADER: &str = "Idempotency-Replayed";

/// The request header, as the OpenAPI document describes it.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct KeyHeader {
    /// A retry with the same key returns the first answer and writes nothing; the same key with
    /// another body or path is 422 `idempotency_key_reused`.
    #[param(
        rename = "Idempotency-Key",
        min_length = 1,
        max_length = 128,
        pattern = "^[!-~]+$"
    )]
    pub key: Option<String>,
}

/// An answer before it becomes an HTTP response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Its status.
    pub status: StatusCode,
    /// Its JSON body.
    pub body: Value,
}

impl Reply {
    /// A 200 with `body`.
    pub fn ok(body: impl serde::Serialize) -> Result<Self, ApiError> {
        Ok(Self {
            status: StatusCode::OK,
            body: serde_json::to_value(body).map_err(|e| ApiError::internal(&e))?,
        })
    }

    fn response(&self, replayed: bool) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if replayed {
            response.insert_header((REPLAYED_HEADER, "true"));
        }
        response.json(&self.body)
    }
}

/// The caller's idempotency key, if sent: 1 to 128 visible ASCII characters.
pub fn key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get(HEADER) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 128 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::bad_request("Idempotency-Key must be 1 to 128 visible ASCII characters")
        })?;
    Ok(Some(key.to_owned()))
}

/// What identifies a call: its method, path and body.
pub fn fingerprint(req: &HttpRequest, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(req.method().as_str());
    hash.update(b" ");
    hash.update(req.path());
    hash.update(b"\n");
    hash.update(body);
    hex::encode(hash.finalize())
}

/// Runs `command` once per (`principal`, `key`): a retry gets the stored first answer.
pub async fn once<F, Fut>(
    state: &AppState,
    principal: &str,
    key: Option<&str>,
    fingerprint: &str,
    command: F,
) -> Result<HttpResponse, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Reply, ApiError>>,
{
    let Some(key) = key else {
        return command().await.map(|r| r.response(false));
    };
    if let Some(stored) = idempotency::find(&state.pool, principal, key).await? {
        return replay(stored, fingerprint);
    }
    let reply = match command().await {
        Ok(reply) => reply,
        Err(e) if e.code.status().is_server_error() => return Err(e),
        Err(e) => Reply {
            status: e.code.status(),
            body: serde_json::to_value(e.body()).map_err(|e| ApiError::internal(&e))?,
        },
    };
    let answer = StoredAnswer {
        fingerprint: fingerprint.to_owned(),
        status: reply.status.as_u16(),
        body: reply.body.clone(),
    };
    match idempotency::store(&state.pool, principal, key, &answer).await {
        Ok(first) if first.body != answer.body || first.status != answer.status => {
            // A concurrent call under the same key answered first: its answer is the answer.
            replay(first, fingerprint)
        }
        Ok(_) => Ok(reply.response(false)),
        Err(e) => {
            // The command's effect is durable; only the stored answer is missing, and the
            // event store still remembers the key for a retry.
            tracing::warn!(error = %e, "could not store an idempotent answer");
            Ok(reply.response(false))
        }
    }
}

fn replay(stored: StoredAnswer, fingerprint: &str) -> Result<HttpResponse, ApiError> {
    if stored.fingerprint != fingerprint {
        return Err(ApiError::new(
            Code::IdempotencyKeyReused,
            "this Idempotency-Key was used for a different call",
        ));
    }
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    Ok(Reply {
        status,
        body: stored.body,
    }
    .response(true))
}
