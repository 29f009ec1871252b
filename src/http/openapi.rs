//! The OpenAPI document, assembled from the handlers' annotations and the DTOs' schemas, so it
//! cannot drift from the code, and its route `GET /openapi.json`. A test checks that docs/api.md
//! names every path it lists; tests/schema.rs has schemathesis check the service against it.

use actix_web::{get, HttpResponse};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http::{
    decisions, devices, dto, errors, history, inbox, ops, requests, stream, systems,
};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "approval-ledger",
        description = "One approval inbox in front of many legacy systems. Errors are always \
            {\"error\": {\"code\", \"message\"}} with a stable code; docs/api.md lists the codes."
    ),
    paths(
        systems::submit, systems::cancel, systems::status,
        inbox::list,
        requests::detail, requests::approve, requests::reject, requests::return_,
        requests::delegate, requests::withdraw,
        history::history,
        decisions::bulk,
        devices::register, devices::unregister,
        stream::stream,
        ops::healthz, ops::readyz, ops::metrics, serve,
    ),
    components(schemas(
        errors::ErrorBody, errors::ErrorDetail,
        dto::SubmitBody, dto::StepDto, dto::RuleDto, dto::MoneyDto, dto::CommandAnswer,
        dto::CancelBody, dto::SystemRequestStatus,
        dto::DecisionBody, dto::DelegateBody, dto::WithdrawBody,
        dto::BulkBody, dto::BulkItem, dto::BulkVerdict, dto::BulkResult, dto::BulkAnswer,
        dto::InboxAnswer, dto::InboxItem,
        dto::RequestDetail, dto::StepOut, dto::DecisionOut, dto::DelegationOut, dto::OutcomeOut,
        dto::TimelineOut,
        devices::DeviceBody,
        ops::Health, ops::Readiness,
        history::HistoryAnswer,
    )),
    modifiers(&Security),
    tags(
        (name = "systems", description = "Called by legacy systems, signed with HMAC-SHA256"),
        (name = "inbox", description = "The caller's pending decisions"),
        (name = "requests", description = "Requests and the decisions people make on them"),
        (name = "devices", description = "Devices registered for push notifications"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "HS256 JWT; sub is the user id; exp, iss, aud are checked",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "system_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Ledger-Signature",
                "v1=<hex HMAC-SHA256(secret, \"{X-Ledger-Timestamp}.{raw body}\")>, with \
                 X-Ledger-Timestamp in unix seconds within 300 s of now",
            ))),
        );
    }
}

/// This API's OpenAPI document, generated from the code.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations", operation_id = "openapi",
    responses((status = 200, content_type = "application/json", body = Object))
)]
#[get("/openapi.json")]
pub async fn serve() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
