//! Working with the requester (contract section 8): an approver asks, the requester (in the app)
//! or the source system answers, participants comment, and the source system resubmits a
//! returned request as a new round. Each handler turns HTTP into a command; the rules are the
//! aggregate's (`approval_aggregates::conversation`).

use actix_web::{post, web, HttpRequest, HttpResponse};
use approval_aggregates::{
    Answer, Answerer, ApprovalCommand, Ask, OpenQuestion, Remark, Request, RequestId, SystemId,
    UserId,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::http::attachments::check_limits;
use crate::http::dto::{CommandAnswer, Name, RequiredComment, SubmitBody, Version};
use crate::http::errors::{ApiError, ErrorBody};
use crate::http::idempotency::KeyHeader;
use crate::http::requests::person_command;
use crate::http::systems::meta;
use crate::http::{parse_json, AppState};

/// The OpenAPI document of section 8's routes, merged into the service's by
/// [`crate::http::api_doc`].
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        ask,
        answer,
        comment,
        system_answer,
        resubmit,
        crate::http::attachments::download,
        crate::http::lists::list,
    ),
    components(schemas(
        AwaitingAnswer,
        AskBody,
        AnswerBody,
        CommentBody,
        SystemAnswerBody,
        ResubmitAnswer,
        crate::http::attachments::AttachmentDto,
        crate::http::attachments::AttachmentOut,
        crate::http::dto::RoundOut,
        crate::http::lists::ListAnswer,
        crate::http::lists::ListItem,
        crate::http::lists::ListRole,
        crate::http::lists::StatusFilter,
    ))
)]
pub struct RequesterDoc;

/// The question waiting for the requester's answer, in a request's detail.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AwaitingAnswer {
    /// What was asked.
    pub question: String,
    /// The approver who asked.
    pub asked_by: String,
    /// When.
    pub asked_at: DateTime<Utc>,
    /// The step they asked at, from 0.
    pub step: usize,
}

impl AwaitingAnswer {
    /// The detail's view of an open question.
    pub fn of(q: &OpenQuestion) -> Self {
        Self {
            question: q.question.clone(),
            asked_by: q.asked_by.0.clone(),
            asked_at: q.asked_at,
            step: q.step,
        }
    }
}

/// An approver's question to the requester.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AskBody {
    /// The question.
    #[schema(value_type = RequiredComment)]
    pub question: String,
    /// The version the approver saw; a newer one answers 409 `version_conflict`.
    #[serde(default, deserialize_with = "crate::http::dto::whole_version")]
    #[schema(value_type = Option<Version>)]
    pub expected_version: Option<u64>,
}

/// The requester's answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerBody {
    /// The answer.
    #[schema(value_type = RequiredComment)]
    pub answer: String,
}

/// A comment on a request's timeline.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentBody {
    /// The comment.
    #[schema(value_type = RequiredComment)]
    pub text: String,
}

/// The source system's answer, for the person who gave it there.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemAnswerBody {
    /// The answer.
    #[schema(value_type = RequiredComment)]
    pub answer: String,
    /// Who answered in the source system (usually the requester).
    #[schema(value_type = Name)]
    pub by: String,
}

/// Where a resubmitted request stands.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ResubmitAnswer {
    /// The request.
    pub id: Uuid,
    /// Its status: `pending`.
    #[schema(example = "pending")]
    pub status: String,
    /// Its version.
    pub version: u64,
    /// Its new round: 2, 3, ...
    pub round: u32,
}

impl From<&Request> for ResubmitAnswer {
    fn from(r: &Request) -> Self {
        Self {
            id: r.id.0,
            status: r.status.as_str().to_owned(),
            version: r.version,
            round: r.round,
        }
    }
}

/// Ask the requester a question (an approver of the current step). The request stays pending.
#[utoipa::path(
    post, path = "/v1/requests/{id}/ask", tag = "requests",
    params(("id" = uuid::Uuid, Path), KeyHeader),
    request_body = AskBody,
    responses(
        (status = 200, body = CommandAnswer),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "`not_an_approver`", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`version_conflict`, `not_pending`, `question_open`", body = ErrorBody),
        (status = 422, description = "`validation_failed`, `idempotency_key_reused`", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[post("/v1/requests/{id}/ask")]
pub async fn ask(
    state: web::Data<AppState>,
    req: HttpRequest,
    person: crate::http::auth::Person,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    person_command(state, req, person, path, body, |actor, b: AskBody| {
        ApprovalCommand::Ask(Ask {
            actor,
            question: b.question,
            expected_version: b.expected_version,
            at: Utc::now(),
        })
    })
    .await
}

/// Answer the open question (the requester).
#[utoipa::path(
    post, path = "/v1/requests/{id}/answer", tag = "requests",
    params(("id" = uuid::Uuid, Path), KeyHeader),
    request_body = AnswerBody,
    responses(
        (status = 200, body = CommandAnswer),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "`not_requester`", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`not_pending`, `no_open_question`", body = ErrorBody),
        (status = 422, description = "`validation_failed`, `idempotency_key_reused`", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[post("/v1/requests/{id}/answer")]
pub async fn answer(
    state: web::Data<AppState>,
    req: HttpRequest,
    person: crate::http::auth::Person,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    person_command(state, req, person, path, body, |actor, b: AnswerBody| {
        ApprovalCommand::Answer(Answer {
            by: Answerer::Person(actor),
            answer: b.answer,
            at: Utc::now(),
        })
    })
    .await
}

/// Comment on the request's timeline (any participant: requester, approver, delegate).
#[utoipa::path(
    post, path = "/v1/requests/{id}/comments", tag = "requests",
    params(("id" = uuid::Uuid, Path), KeyHeader),
    request_body = CommentBody,
    responses(
        (status = 200, body = CommandAnswer),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "`not_a_participant` (an auditor or admin who takes no part)", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`version_conflict` (another command won the race)", body = ErrorBody),
        (status = 422, description = "`validation_failed`, `idempotency_key_reused`", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[post("/v1/requests/{id}/comments")]
pub async fn comment(
    state: web::Data<AppState>,
    req: HttpRequest,
    person: crate::http::auth::Person,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    person_command(state, req, person, path, body, |actor, b: CommentBody| {
        ApprovalCommand::Comment(Remark {
            actor,
            text: b.text,
            at: Utc::now(),
        })
    })
    .await
}

/// The source system answers the open question for the person who answered there.
#[utoipa::path(
    post, path = "/v1/systems/{system}/requests/{external_ref}/answer", tag = "systems",
    params(("system" = String, Path), ("external_ref" = String, Path)),
    request_body = SystemAnswerBody,
    responses(
        (status = 200, body = CommandAnswer),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`not_pending`, `no_open_question`", body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("system_signature" = []))
)]
#[post("/v1/systems/{system}/requests/{external_ref}/answer")]
pub async fn system_answer(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (system, external_ref) = path.into_inner();
    state.auth.system(&system, &req, &body)?;
    let input: SystemAnswerBody = parse_json(&body)?;
    let system_id = SystemId::new(system.clone());
    let id = RequestId::for_submission(&system_id, &external_ref);
    let command = ApprovalCommand::Answer(Answer {
        by: Answerer::System {
            system: system_id,
            by: UserId::new(input.by),
        },
        answer: input.answer,
        at: Utc::now(),
    });
    let executed = state
        .ledger
        .execute(id, command, &meta(&req, &system))
        .await?;
    Ok(HttpResponse::Ok().json(CommandAnswer::from(&executed.request)))
}

/// Send a returned request again, as a new round from its first step, with the body of a
/// submission (the same `external_ref`).
#[utoipa::path(
    post, path = "/v1/systems/{system}/requests/{external_ref}/resubmit", tag = "systems",
    params(("system" = String, Path), ("external_ref" = String, Path)),
    request_body = SubmitBody,
    responses(
        (status = 200, description = "Pending again, in its new round", body = ResubmitAnswer),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`not_returned`: the request is not returned", body = ErrorBody),
        (status = 422, description = "`validation_failed`: the body breaks a rule of a submission, names another external_ref or another requester", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("system_signature" = []))
)]
#[post("/v1/systems/{system}/requests/{external_ref}/resubmit")]
pub async fn resubmit(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (system, external_ref) = path.into_inner();
    state.auth.system(&system, &req, &body)?;
    let input: SubmitBody = parse_json(&body)?;
    if input.external_ref != external_ref {
        return Err(ApiError::invalid(
            "external_ref must be the one of the request resubmitted",
        ));
    }
    let submission = input.into_submission(
        SystemId::new(system.clone()),
        Utc::now(),
        &state.remind_before,
    )?;
    check_limits(&submission.attachments, &state.attachments.settings)?;
    let id = submission.request_id;
    let executed = state
        .ledger
        .execute(
            id,
            ApprovalCommand::Resubmit(submission),
            &meta(&req, &system),
        )
        .await?;
    Ok(HttpResponse::Ok().json(ResubmitAnswer::from(&executed.request)))
}
