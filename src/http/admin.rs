//! `/v1/admin/...`: what administrators do to other people's work. A reassignment moves every
//! pending place of one person to another, one request at a time, each on its own (one failing
//! request does not undo the others), answered like a bulk decision. The aggregate checks the
//! role again on every request, and every rule of a hand-over.

use actix_web::{post, web, HttpRequest, HttpResponse};
use approval_aggregates::{validation, ApprovalCommand, Reassignment, RequestId, UserId};
use chrono::Utc;
use futures_util::stream::{self, StreamExt};

use crate::feed::Position;
use crate::http::auth::Person;
use crate::http::dto::{BulkAnswer, BulkResult, ReassignBody};
use crate::http::errors::{ApiError, Code, ErrorBody};
use crate::http::requests::person_meta;
use crate::http::{parse_json, AppState};

/// Requests reassigned at once; the rest wait their turn, in order.
const CONCURRENCY: usize = 4;

/// Reassign every pending place of `from` in a current step to `to` (role `admin`).
#[utoipa::path(
    post, path = "/v1/admin/reassign", tag = "admin",
    request_body = ReassignBody,
    responses(
        (status = 200, description = "One result per request that awaited `from`, oldest due first", body = BulkAnswer),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller lacks the role admin", body = ErrorBody),
        (status = 422, description = "`validation_failed`, `invalid_delegate`", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[post("/v1/admin/reassign")]
pub async fn reassign(
    state: web::Data<AppState>,
    req: HttpRequest,
    person: Person,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let actor = person.0;
    // Reading someone's inbox is for administrators alone; each reassignment checks it again.
    if !actor.roles.admin {
        return Err(ApiError::new(
            Code::Forbidden,
            "reassigning needs the role admin",
        ));
    }
    let input: ReassignBody = parse_json(&body)?;
    let from = UserId::new(input.from);
    let to = UserId::new(input.to);
    validation::user("from", &from)?;
    validation::user("to", &to)?;
    validation::comment("comment", input.comment.as_deref())?;
    if from == to {
        return Err(ApiError::new(
            Code::InvalidDelegate,
            "from and to are the same person",
        ));
    }
    let ids = approval_projections::inbox::awaiting(&state.pool, from.as_str()).await?;
    let at = Utc::now();
    let outcomes: Vec<(BulkResult, Option<Position>)> = stream::iter(ids)
        .map(|id| {
            let state = &state;
            let meta = person_meta(&req, &actor, None);
            let command = ApprovalCommand::Reassign(Reassignment {
                actor: actor.clone(),
                from: from.clone(),
                to: to.clone(),
                comment: input.comment.clone(),
                at,
            });
            async move {
                match state
                    .ledger
                    .execute_unseen(RequestId(id), command, &meta)
                    .await
                {
                    Ok(executed) => (
                        BulkResult {
                            id: id.to_string(),
                            ok: true,
                            status: Some(executed.request.status.as_str().to_owned()),
                            version: Some(executed.request.version),
                            error: None,
                        },
                        executed.position,
                    ),
                    Err(e) => (
                        BulkResult {
                            id: id.to_string(),
                            ok: false,
                            status: None,
                            version: None,
                            error: Some(ApiError::from(e).body().error),
                        },
                        None,
                    ),
                }
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    if let Some(last) = outcomes.iter().filter_map(|(_, p)| *p).max() {
        state.ledger.wait_visible(last).await;
    }
    Ok(HttpResponse::Ok().json(BulkAnswer {
        results: outcomes.into_iter().map(|(r, _)| r).collect(),
    }))
}
