//! `/v1/systems/{system}/...`: what legacy systems call, each call signed with the system's
//! secret. A request's id derives from (system, external_ref), so these routes need no look-up
//! to find the aggregate.

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use approval_aggregates::{ApprovalCommand, Cancellation, RequestId, SystemId};
use chrono::Utc;

use crate::http::dto::{CancelBody, CommandAnswer, SubmitBody, SystemRequestStatus};
use crate::http::errors::{ApiError, ErrorBody};
use crate::http::{http_request_id, parse_json, AppState};
use crate::ledger::CommandMeta;

pub(crate) fn meta(req: &HttpRequest, system: &str) -> CommandMeta {
    CommandMeta {
        request_id: http_request_id(req),
        system: Some(system.to_owned()),
        ..CommandMeta::default()
    }
}

/// Submit a request for approval.
#[utoipa::path(
    post, path = "/v1/systems/{system}/requests", tag = "systems",
    params(("system" = String, Path, description = "The system's key in the configuration")),
    request_body = SubmitBody,
    responses(
        (status = 201, description = "Submitted", body = CommandAnswer),
        (status = 200, description = "This reference was submitted before; nothing was written", body = CommandAnswer),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("system_signature" = []))
)]
#[post("/v1/systems/{system}/requests")]
pub async fn submit(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let system = path.into_inner();
    state.auth.system(&system, &req, &body)?;
    let input: SubmitBody = parse_json(&body)?;
    let submission = input.into_submission(
        SystemId::new(system.clone()),
        Utc::now(),
        &state.remind_before,
    )?;
    crate::http::attachments::check_limits(&submission.attachments, &state.attachments.settings)?;
    let id = submission.request_id;
    let executed = state
        .ledger
        .execute(
            id,
            ApprovalCommand::Submit(submission),
            &meta(&req, &system),
        )
        .await?;
    let code = if executed.written {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(code).json(CommandAnswer::from(&executed.request)))
}

/// The source system withdrew its request.
#[utoipa::path(
    post, path = "/v1/systems/{system}/requests/{external_ref}/cancel", tag = "systems",
    params(("system" = String, Path), ("external_ref" = String, Path)),
    request_body = Option<CancelBody>,
    responses(
        (status = 200, description = "Cancelled", body = CommandAnswer),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Already final (`not_pending`)", body = ErrorBody),
        (status = 422, description = "A reason that breaks the rules", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("system_signature" = []))
)]
#[post("/v1/systems/{system}/requests/{external_ref}/cancel")]
pub async fn cancel(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (system, external_ref) = path.into_inner();
    state.auth.system(&system, &req, &body)?;
    let input: CancelBody = parse_json(&body)?;
    let system_id = SystemId::new(system.clone());
    let id = RequestId::for_submission(&system_id, &external_ref);
    let command = ApprovalCommand::Cancel(Cancellation {
        system: system_id,
        reason: input.reason,
        at: Utc::now(),
    });
    let executed = state
        .ledger
        .execute(id, command, &meta(&req, &system))
        .await?;
    Ok(HttpResponse::Ok().json(CommandAnswer::from(&executed.request)))
}

/// Where the system's request stands, for reconciliation.
#[utoipa::path(
    get, path = "/v1/systems/{system}/requests/{external_ref}", tag = "systems",
    params(("system" = String, Path), ("external_ref" = String, Path)),
    responses(
        (status = 200, body = SystemRequestStatus),
        (status = 400, description = "`%00` in the URL", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("system_signature" = []))
)]
#[get("/v1/systems/{system}/requests/{external_ref}")]
pub async fn status(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (system, external_ref) = path.into_inner();
    state.auth.system(&system, &req, &body)?;
    let row = approval_projections::lookup::get(&state.pool, &system, &external_ref)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::Ok().json(SystemRequestStatus {
        id: row.request_id,
        system,
        external_ref,
        status: row.status,
        version: row.version,
        updated_at: row.updated_at,
    }))
}
