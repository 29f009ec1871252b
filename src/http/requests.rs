//! `/v1/requests/{id}`: a request's detail, and the decisions people make on it. Each handler
//! turns HTTP into a command and the outcome into HTTP; the rules are the aggregate's.

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use approval_aggregates::{
    Actor, ApprovalCommand, Authority, Decision, Delegation, RequestId, UserId, Verdict, Withdrawal,
};
use chrono::Utc;

use crate::http::auth::Person;
use crate::http::dto::{
    request_id, CommandAnswer, CommentedDecisionBody, DecisionBody, DelegateBody, RequestDetail,
    WithdrawBody,
};
use crate::http::errors::{ApiError, ErrorBody};
use crate::http::idempotency::{self, KeyHeader, Reply};
use crate::http::{http_request_id, parse_json, AppState};
use crate::ledger::{CommandMeta, LedgerError};

/// A request's detail: status, steps with every decision, details, link, version, timeline.
#[utoipa::path(
    get, path = "/v1/requests/{id}", tag = "requests",
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, body = RequestDetail),
        (status = 400, description = "`%00` in the URL", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "Unknown, or not visible to the caller", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[get("/v1/requests/{id}")]
pub async fn detail(
    state: web::Data<AppState>,
    person: Person,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = request_id(&path)?;
    let request = approval_projections::requests::get(&state.pool, id.0)
        .await?
        .ok_or_else(ApiError::not_found)?;
    // A deputy sees what the people they stand in for see; looked up only for a caller who
    // sees nothing in their own right.
    if !request.is_visible_to(&person.0) {
        let principals = state
            .ledger
            .principals_of(&person.0.user, Utc::now())
            .await?;
        if !request.is_visible_through(&person.0, &principals) {
            return Err(ApiError::not_found());
        }
    }
    let timeline = approval_projections::requests::timeline(&state.pool, id.0).await?;
    Ok(HttpResponse::Ok().json(RequestDetail::of(&request, timeline, Utc::now())))
}

/// Executes a person's command, finding the first answer in the event store when a retry with
/// the same idempotency key is refused because the first attempt already took effect.
pub async fn execute_for(
    state: &AppState,
    id: RequestId,
    actor: &Actor,
    command: ApprovalCommand,
    meta: &CommandMeta,
) -> Result<CommandAnswer, ApiError> {
    match state.ledger.execute(id, command, meta).await {
        Ok(executed) => Ok(CommandAnswer::from(&executed.request)),
        Err(e @ (LedgerError::Domain(_) | LedgerError::Conflict(_))) => {
            if let Some(key) = &meta.idempotency_key {
                if let Some(request) = state
                    .ledger
                    .answer_of_key(id, actor.user.as_str(), key)
                    .await?
                {
                    return Ok(CommandAnswer::from(&request));
                }
            }
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// The metadata of a person's command.
pub fn person_meta(req: &HttpRequest, actor: &Actor, key: Option<String>) -> CommandMeta {
    CommandMeta {
        request_id: http_request_id(req),
        actor: Some(actor.user.0.clone()),
        idempotency_key: key,
        ..CommandMeta::default()
    }
}

/// Runs a person's command on request `id` once per idempotency key; `build` turns the body
/// into the command.
pub(crate) async fn person_command<B, F>(
    state: web::Data<AppState>,
    req: HttpRequest,
    person: Person,
    path: web::Path<String>,
    body: web::Bytes,
    build: F,
) -> Result<HttpResponse, ApiError>
where
    B: serde::de::DeserializeOwned,
    F: FnOnce(Actor, B) -> ApprovalCommand,
{
    let id = request_id(&path)?;
    let key = idempotency::key(&req)?;
    let fingerprint = idempotency::fingerprint(&req, &body);
    let actor = person.0;
    let principal = actor.user.0.clone();
    idempotency::once(&state, &principal, key.as_deref(), &fingerprint, || async {
        let input: B = parse_json(&body)?;
        let meta = person_meta(&req, &actor, key.clone());
        let command = build(actor.clone(), input);
        Reply::ok(execute_for(&state, id, &actor, command, &meta).await?)
    })
    .await
}

fn decide(
    verdict: Verdict,
    authority: Authority,
) -> impl FnOnce(Actor, DecisionBody) -> ApprovalCommand {
    move |actor, body| {
        ApprovalCommand::Decide(Decision {
            authority,
            actor,
            verdict,
            comment: body.comment,
            expected_version: body.expected_version,
            at: Utc::now(),
        })
    }
}

macro_rules! decision_route {
    ($name:ident, $path:literal, $verdict:expr, $body:ty, $summary:literal) => {
        #[doc = $summary]
        #[utoipa::path(
            post, path = $path, tag = "requests",
            params(("id" = uuid::Uuid, Path), KeyHeader),
            request_body = $body,
            responses(
                (status = 200, body = CommandAnswer),
                (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
                (status = 403, description = "`not_an_approver`, `own_request`, `over_authority_limit`, `separation_of_duties`", body = ErrorBody),
                (status = 404, body = ErrorBody),
                (status = 409, description = "`version_conflict`, `not_pending`, `already_decided`", body = ErrorBody),
                (status = 422, description = "`comment_required`, `validation_failed`, `expected_version_required`, `idempotency_key_reused`", body = ErrorBody),
                (status = 503, body = ErrorBody),
            ),
            security(("bearer" = []))
        )]
        #[post($path)]
        pub async fn $name(
            state: web::Data<AppState>,
            req: HttpRequest,
            person: Person,
            path: web::Path<String>,
            body: web::Bytes,
        ) -> Result<HttpResponse, ApiError> {
            let authority = state.policy.authority_of(&person.0);
            person_command(state, req, person, path, body, decide($verdict, authority)).await
        }
    };
}

decision_route!(
    approve,
    "/v1/requests/{id}/approve",
    Verdict::Approve,
    Option<DecisionBody>,
    "Approve at the current step."
);
decision_route!(
    reject,
    "/v1/requests/{id}/reject",
    Verdict::Reject,
    CommentedDecisionBody,
    "Reject the request (a comment is required)."
);
decision_route!(
    return_,
    "/v1/requests/{id}/return",
    Verdict::Return,
    CommentedDecisionBody,
    "Send the request back to the requester (a comment is required)."
);

/// Hand the caller's place in the current step to another person.
#[utoipa::path(
    post, path = "/v1/requests/{id}/delegate", tag = "requests",
    params(("id" = uuid::Uuid, Path), KeyHeader),
    request_body = DelegateBody,
    responses(
        (status = 200, body = CommandAnswer),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "`not_an_approver`", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`version_conflict`, `not_pending`", body = ErrorBody),
        (status = 422, description = "`invalid_delegate`, `validation_failed`, `idempotency_key_reused`", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[post("/v1/requests/{id}/delegate")]
pub async fn delegate(
    state: web::Data<AppState>,
    req: HttpRequest,
    person: Person,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    person_command(state, req, person, path, body, |actor, b: DelegateBody| {
        ApprovalCommand::Delegate(Delegation {
            actor,
            to: UserId::new(b.to),
            comment: b.comment,
            expected_version: b.expected_version,
            at: Utc::now(),
        })
    })
    .await
}

/// The requester takes the request back.
#[utoipa::path(
    post, path = "/v1/requests/{id}/withdraw", tag = "requests",
    params(("id" = uuid::Uuid, Path), KeyHeader),
    request_body = Option<WithdrawBody>,
    responses(
        (status = 200, body = CommandAnswer),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "`not_requester`", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`version_conflict`, `not_pending`", body = ErrorBody),
        (status = 422, description = "`validation_failed`, `idempotency_key_reused`", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[post("/v1/requests/{id}/withdraw")]
pub async fn withdraw(
    state: web::Data<AppState>,
    req: HttpRequest,
    person: Person,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    person_command(state, req, person, path, body, |actor, b: WithdrawBody| {
        ApprovalCommand::Withdraw(Withdrawal {
            actor,
            comment: b.comment,
            expected_version: b.expected_version,
            at: Utc::now(),
        })
    })
    .await
}
