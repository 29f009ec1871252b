//! The HTTP API (actix-web): one module per resource, each handler only translating HTTP to a
//! command or query and the result back. The error table is in [`errors`], authentication in
//! [`auth`], the JSON shapes in [`dto`], the OpenAPI document in [`openapi`]. [`history`] serves
//! the audit replay of a request.

use std::sync::Arc;

use actix_web::middleware::{from_fn, ErrorHandlers};
use actix_web::{web, HttpMessage, HttpRequest};
use serde::de::DeserializeOwned;
use sqlx::PgPool;

use crate::http::errors::ApiError;
use crate::ledger::Ledger;
use crate::metrics::Metrics;

pub mod auth;
pub mod decisions;
pub mod devices;
pub mod dto;
pub mod errors;
pub mod history;
pub mod idempotency;
pub mod inbox;
pub mod middleware;
pub mod openapi;
pub mod ops;
pub mod requests;
pub mod stream;
pub mod systems;

/// Size limits of the API.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest body, in bytes.
    pub body: usize,
    /// Most items of a bulk decision.
    pub bulk: usize,
    /// Largest inbox page.
    pub page: i64,
}

/// What every handler shares.
pub struct AppState {
    /// The command path.
    pub ledger: Ledger,
    /// The database, for the read models.
    pub pool: PgPool,
    /// Tokens and signatures.
    pub auth: auth::Authenticator,
    /// Size limits.
    pub limits: Limits,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// How to tell whether the broker is reachable, for readiness.
    pub broker: BrokerProbe,
    /// The live stream's listeners.
    pub hub: crate::stream::StreamHub,
}

/// How `/readyz` checks the broker.
pub enum BrokerProbe {
    /// This process supervises a connection: ready while it is up.
    Supervised(crate::broker::Broker),
    /// This process has no connection (`--role api`): ready while the port accepts.
    Address(String),
}

/// Registers every route, the body limit and the middleware on an actix `App`.
pub fn configure(state: web::Data<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        let limit = state.limits.body;
        cfg.app_data(state)
            .app_data(web::PayloadConfig::new(limit))
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|err, _| ApiError::bad_request(format!("query: {err}")).into()),
            )
            .app_data(web::PathConfig::default().error_handler(|_, _| ApiError::not_found().into()))
            .service(
                web::scope("")
                    .wrap(ErrorHandlers::new().default_handler(middleware::normalize_error))
                    .wrap(from_fn(middleware::context))
                    .service(systems::submit)
                    .service(systems::cancel)
                    .service(systems::status)
                    .service(inbox::list)
                    .service(decisions::bulk)
                    .service(requests::detail)
                    .service(history::history)
                    .service(requests::approve)
                    .service(requests::reject)
                    .service(requests::return_)
                    .service(requests::delegate)
                    .service(requests::withdraw)
                    .service(devices::register)
                    .service(devices::unregister)
                    .service(stream::stream)
                    .service(ops::healthz)
                    .service(ops::readyz)
                    .service(ops::metrics)
                    .service(ops::openapi),
            );
    }
}

/// Parses a JSON body; an empty body reads as `{}`. Malformed JSON, invalid UTF-8, wrong types
/// and unknown fields are a 400 that says where.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body: {e}")))
}

/// The id of the HTTP request being served.
pub fn http_request_id(req: &HttpRequest) -> Option<String> {
    req.extensions()
        .get::<middleware::HttpRequestId>()
        .map(|r| r.0.clone())
}
