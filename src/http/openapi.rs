//! The OpenAPI document, assembled from the handlers' annotations and the DTOs' schemas, so it
//! cannot drift from the code, and its route `GET /openapi.json`. [`ApiDoc`] holds the API's
//! resources; [`crate::http::api_doc`] adds the operators' routes, which [`crate::http::ops`]
//! describes itself, so neither module needs the other. A test checks that docs/api.md
//! names every path it lists; tests/schema.rs has schemathesis check the service against it.

use std::sync::OnceLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{get, web, HttpRequest, HttpResponse, ResponseError};
use serde_json::{json, Value};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http::errors::{ApiError, Code};
use crate::http::{
    absences, admin, api_doc, decisions, devices, dto, errors, history, inbox, requests, stream,
    systems, AppState, Limits,
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
        absences::create, absences::list, absences::end,
        admin::reassign,
        serve,
    ),
    components(schemas(
        errors::ErrorBody, errors::ErrorDetail,
        dto::SubmitBody, dto::StepDto, dto::RuleDto, dto::MoneyDto, dto::CommandAnswer,
        dto::CancelBody, dto::SystemRequestStatus,
        dto::DecisionBody, dto::CommentedDecisionBody, dto::DelegateBody, dto::WithdrawBody,
        dto::BulkBody, dto::BulkItem, dto::BulkVerdict, dto::BulkResult, dto::BulkAnswer,
        dto::InboxAnswer, dto::InboxItem,
        dto::RequestDetail, dto::StepOut, dto::DecisionOut, dto::DelegationOut, dto::OutcomeOut,
        dto::TimelineOut,
        devices::DeviceBody,
        history::HistoryAnswer,
        crate::stream::InboxChange,
        dto::AbsenceBody, dto::AbsenceOut, dto::AbsencesAnswer, dto::ReassignBody,
    )),
    modifiers(&Security),
    tags(
        (name = "systems", description = "Called by legacy systems, signed with HMAC-SHA256"),
        (name = "inbox", description = "The caller's pending decisions"),
        (name = "requests", description = "Requests and the decisions people make on them"),
        (name = "devices", description = "Devices registered for push notifications"),
        (name = "absences", description = "The caller's absences and their deputies"),
        (name = "admin", description = "What administrators do to other people's work"),
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
                        "A JWT: HS256 with auth.jwt_secret, or RS256/ES256 from the provider at auth.jwks_url; sub is the user id; exp, iss, aud are checked; roles and groups are read from its claims",
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

/// The document as this service runs: [`api_doc`] with the configured limits in place of the
/// defaults, and the schema of the stream's events, which `utoipa` cannot write.
pub fn document(limits: &Limits) -> Value {
    let mut doc = serde_json::to_value(api_doc()).unwrap_or_default();
    if let Some(params) = doc["paths"]["/v1/inbox"]["get"]["parameters"].as_array_mut() {
        for param in params.iter_mut().filter(|p| p["name"] == "limit") {
            param["schema"]["maximum"] = json!(limits.page);
        }
    }
    doc["components"]["schemas"]["BulkBody"]["properties"]["items"]["maxItems"] =
        json!(limits.bulk);
    doc["paths"]["/v1/stream"]["get"]["responses"]["200"]["content"]["text/event-stream"]
        ["schema"] = stream::event_schema();
    doc
}

/// This API's OpenAPI document, generated from the code.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations", operation_id = "openapi",
    responses((status = 200, content_type = "application/json", body = Object))
)]
#[get("/openapi.json")]
pub async fn serve(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(document(&state.limits))
}

/// A path template of the document (`/v1/requests/{id}`) split into segments, with the methods
/// it declares as an `Allow` header lists them.
struct Route {
    segments: Vec<String>,
    allow: String,
}

impl Route {
    fn matches(&self, path: &str) -> bool {
        let mut given = path.split('/');
        let mut segments = self.segments.iter();
        loop {
            match (segments.next(), given.next()) {
                (None, None) => return true,
                (Some(template), Some(segment)) => {
                    let variable = template.starts_with('{') && template.ends_with('}');
                    let fits = if variable {
                        !segment.is_empty()
                    } else {
                        template == segment
                    };
                    if !fits {
                        return false;
                    }
                }
                _ => return false,
            }
        }
    }
}

/// Every path of the document with its methods, read once.
fn routes() -> &'static [Route] {
    static ROUTES: OnceLock<Vec<Route>> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let doc = serde_json::to_value(api_doc()).unwrap_or_default();
        doc["paths"]
            .as_object()
            .map(|paths| {
                paths
                    .iter()
                    .map(|(path, operations)| Route {
                        segments: path.split('/').map(str::to_owned).collect(),
                        allow: operations
                            .as_object()
                            .map(|o| o.keys().map(|m| m.to_uppercase()).collect())
                            .unwrap_or_else(Vec::<String>::new)
                            .join(", "),
                    })
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// What no route took: `405 method_not_allowed` with `Allow` naming the methods the document
/// declares for the path, whatever the method (`TRACE`, `OPTIONS`, `QUERY`...); `404 not_found`
/// for a path the document does not have.
pub async fn undeclared(req: HttpRequest) -> HttpResponse {
    let method = req.method().as_str();
    let route = routes().iter().find(|r| r.matches(req.path()));
    // A declared method that no route took met a path the router does not take as the
    // template (an encoded slash, say): that resource does not exist.
    let Some(route) = route.filter(|r| !r.allow.split(", ").any(|m| m == method)) else {
        return ApiError::new(Code::NotFound, "no such route").error_response();
    };
    let mut response = ApiError::new(
        Code::MethodNotAllowed,
        format!("this route takes {} only", route.allow),
    )
    .error_response();
    if let Ok(allow) = HeaderValue::from_str(&route.allow) {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_matches_its_template_segment_by_segment() {
        let route = Route {
            segments: "/v1/requests/{id}/approve"
                .split('/')
                .map(str::to_owned)
                .collect(),
            allow: "POST".into(),
        };
        assert!(route.matches("/v1/requests/abc/approve"));
        assert!(route.matches("/v1/requests/a%2Fb/approve"));
        assert!(!route.matches("/v1/requests//approve"));
        assert!(!route.matches("/v1/requests/abc/approve/"));
        assert!(!route.matches("/v1/requests/abc"));
        assert!(!route.matches("/v1/requests/abc/reject"));
    }

    #[test]
    fn every_path_of_the_document_has_its_methods() {
        let inbox = routes().iter().find(|r| r.matches("/v1/inbox"));
        assert_eq!(inbox.map(|r| r.allow.as_str()), Some("GET"));
        let device = routes().iter().find(|r| r.matches("/v1/devices/t0k3n"));
        assert_eq!(device.map(|r| r.allow.as_str()), Some("DELETE"));
        let health = routes().iter().find(|r| r.matches("/healthz"));
        assert_eq!(health.map(|r| r.allow.as_str()), Some("GET"));
    }
}
