//! The HTTP API (actix-web): one module per resource, each handler only translating HTTP to a
//! command or query and the result back. The error table is in [`errors`], authentication in
//! [`auth`], the JSON shapes in [`dto`], the OpenAPI document in [`openapi`]. [`history`] serves
//! the audit replay of a request. [`conversation`], [`attachments`] and [`lists`] serve the
//! work with the requester (contract section 8): questions, comments, resubmission, files, and
//! the caller's own lists. [`analytics`] serves the approvals report (contract section 10).
//! [`webapp`] serves the approvers' web app at `/app/` and its development sign-in; [`console`]
//! the operators' console page and its admin data.

use std::sync::Arc;

use actix_web::middleware::{from_fn, ErrorHandlers};
use actix_web::{web, HttpMessage, HttpRequest};
use serde::de::DeserializeOwned;
use sqlx::PgPool;
use utoipa::OpenApi;

use crate::http::errors::ApiError;
use crate::ledger::Ledger;
use crate::metrics::Metrics;

pub mod absences;
pub mod admin;
pub mod analytics;
pub mod attachments;
pub mod auth;
pub mod console;
pub mod conversation;
pub mod decisions;
pub mod devices;
pub mod dto;
pub mod embedded;
pub mod errors;
pub mod history;
pub mod idempotency;
pub mod inbox;
pub mod lists;
pub mod middleware;
pub mod openapi;
pub mod ops;
pub mod requests;
pub mod stream;
pub mod systems;
pub mod webapp;

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
    /// When a step with a deadline reminds (`[sla] remind_before`), recorded at submission.
    pub remind_before: Vec<approval_aggregates::Period>,
    /// Fetches attachments from the source systems; holds their limits.
    pub attachments: attachments::Fetcher,
    /// `[policy]`: each decision's authority is made from it.
    pub policy: crate::config::Policy,
    /// What the web app's routes need: how it signs people in.
    pub pages: webapp::Pages,
    /// What the operators' console reads of the configuration.
    pub console: console::Setup,
}

/// How `/readyz` checks the broker.
pub enum BrokerProbe {
    /// This process supervises a connection: ready while it is up.
    Supervised(crate::broker::Broker),
    /// This process has no connection (`--role api`): ready while the port accepts.
    Address(String),
}

/// The whole OpenAPI document: the API's resources ([`openapi::ApiDoc`]), the operators'
/// routes ([`ops::OpsDoc`]) and the console's data ([`console::ConsoleDoc`]).
pub fn api_doc() -> utoipa::openapi::OpenApi {
    openapi::ApiDoc::openapi()
        .merge_from(ops::OpsDoc::openapi())
        .merge_from(conversation::RequesterDoc::openapi())
        .merge_from(analytics::AnalyticsDoc::openapi())
        .merge_from(webapp::AppDoc::openapi())
        .merge_from(console::ConsoleDoc::openapi())
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
                    .wrap(from_fn(middleware::refuse_nul))
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
                    .service(lists::list)
                    .service(conversation::ask)
                    .service(conversation::answer)
                    .service(conversation::comment)
                    .service(conversation::system_answer)
                    .service(conversation::resubmit)
                    .service(attachments::download)
                    .service(absences::create)
                    .service(absences::list)
                    .service(absences::end)
                    .service(admin::reassign)
                    .service(analytics::approvals)
                    .configure(webapp::routes)
                    .configure(console::routes)
                    .service(ops::healthz)
                    .service(ops::readyz)
                    .service(ops::metrics)
                    .service(openapi::serve)
                    .default_service(web::to(openapi::undeclared)),
            );
    }
}

/// Parses a JSON body; an empty body, or `null`, reads as `{}` (the document marks the bodies
/// whose fields are all optional as optional). Malformed JSON, invalid UTF-8, wrong types
/// and unknown fields are a 400 that says where, and so is a NUL character (`\u0000`) in any
/// string or key: no text column or `jsonb` value can hold one.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body: &[u8] = if body.trim_ascii().is_empty() || body.trim_ascii() == b"null" {
        b"{}"
    } else {
        body
    };
    let parsed =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body: {e}")))?;
    if escapes_nul(body) {
        return Err(ApiError::bad_request(
            "body: text may not contain the NUL character (\\u0000)",
        ));
    }
    Ok(parsed)
}

/// Whether valid JSON text holds the escape `\u0000`. In valid JSON a backslash only starts an
/// escape inside a string, so stepping over each escape's first two characters finds every one.
fn escapes_nul(json: &[u8]) -> bool {
    let mut i = 0;
    while let Some(offset) = json[i..].iter().position(|b| *b == b'\\') {
        let at = i + offset;
        if json[at + 1..].starts_with(b"u0000") {
            return true;
        }
        i = at + 2;
        if i >= json.len() {
            return false;
        }
    }
    false
}

/// The id of the HTTP request being served.
pub fn http_request_id(req: &HttpRequest) -> Option<String> {
    req.extensions()
        .get::<middleware::HttpRequestId>()
        .map(|r| r.0.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nul_escape_is_found_in_keys_and_values_and_an_escaped_backslash_is_not_one() {
        assert!(escapes_nul(br#"{"a\u0000": 1}"#));
        assert!(escapes_nul(br#"["x", "\n\u0000"]"#));
        assert!(escapes_nul(br#"["\\\u0000"]"#));
        assert!(!escapes_nul(br#"["\\u0000"]"#));
        assert!(!escapes_nul(br#"["\u0001", "\\", "u0000"]"#));
        assert!(!escapes_nul(br#"{}"#));
    }

    #[test]
    fn a_body_with_a_nul_is_a_400_that_says_so() {
        let refused = parse_json::<serde_json::Value>(br#"{"title": "a\u0000"}"#).unwrap_err();
        assert_eq!(refused.code, errors::Code::BadRequest);
        assert!(refused.message.contains("NUL"), "{}", refused.message);
        let kept: serde_json::Value = parse_json(br#"{"title": "a\\u0000"}"#).unwrap();
        assert_eq!(kept["title"], "a\\u0000");
    }
}
