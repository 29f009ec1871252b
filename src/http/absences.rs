//! `/v1/me/absences`: the caller's absences with their deputies. Each handler turns HTTP into a
//! command to the caller's `Absences` aggregate (or a read of the `absences` read model); the
//! rules are the aggregate's. Whom the deputy's own absences lead to is looked up here and
//! handed to the aggregate, which refuses an absence that would close a circle.

use actix_web::{delete, get, post, web, HttpRequest, HttpResponse};
use approval_aggregates::{AbsenceCommand, Recording, UserId};
use chrono::Utc;
use uuid::Uuid;

use crate::http::auth::Person;
use crate::http::dto::{AbsenceBody, AbsenceOut, AbsencesAnswer};
use crate::http::errors::{ApiError, ErrorBody};
use crate::http::idempotency::{self, KeyHeader, Reply};
use crate::http::requests::person_meta;
use crate::http::{parse_json, AppState};

/// Record an absence: from `from` until `until`, `deputy` decides in the caller's place.
#[utoipa::path(
    post, path = "/v1/me/absences", tag = "absences",
    params(KeyHeader),
    request_body = AbsenceBody,
    responses(
        (status = 201, description = "Recorded", body = AbsenceOut),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, description = "`version_conflict`: the caller's absences kept changing", body = ErrorBody),
        (status = 422, description = "`invalid_absence`, `validation_failed`, `idempotency_key_reused`", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[post("/v1/me/absences")]
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    person: Person,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency::key(&req)?;
    let fingerprint = idempotency::fingerprint(&req, &body);
    let actor = person.0;
    let principal = actor.user.0.clone();
    // A retry with the same key answers as the first call did and records nothing more.
    idempotency::once(&state, &principal, key.as_deref(), &fingerprint, || async {
        record(&state, &req, &actor, &body).await
    })
    .await
}

async fn record(
    state: &AppState,
    req: &HttpRequest,
    actor: &approval_aggregates::Actor,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let input: AbsenceBody = parse_json(body)?;
    let deputy = UserId::new(input.deputy);
    // Only a well-formed absence is worth the look-up; the aggregate refuses the rest.
    let deputy_reach = if input.until > input.from && deputy != actor.user {
        approval_projections::absences::reach(&state.pool, deputy.as_str(), input.from, input.until)
            .await?
    } else {
        vec![]
    };
    let command = AbsenceCommand::Record(Recording {
        person: actor.user.clone(),
        absence_id: Uuid::new_v4(),
        deputy,
        from: input.from,
        until: input.until,
        comment: input.comment,
        deputy_reach,
        at: Utc::now(),
    });
    let AbsenceCommand::Record(recording) = &command else {
        return Err(ApiError::internal(&"an absence command changed its kind"));
    };
    let id = recording.absence_id;
    let meta = person_meta(req, actor, idempotency::key(req)?);
    let executed = state
        .ledger
        .execute_absence(&actor.user, command, &meta)
        .await?;
    let absence = executed
        .absences
        .get(id)
        .ok_or_else(|| ApiError::internal(&"a recorded absence is missing from its state"))?;
    let out = AbsenceOut {
        id,
        deputy: absence.deputy.0.clone(),
        from: absence.from,
        until: absence.until,
        comment: absence.comment.clone(),
    };
    Ok(Reply {
        status: actix_web::http::StatusCode::CREATED,
        body: serde_json::to_value(out).map_err(|e| ApiError::internal(&e))?,
    })
}

/// The caller's absences that are not over yet, earliest first.
#[utoipa::path(
    get, path = "/v1/me/absences", tag = "absences",
    responses(
        (status = 200, body = AbsencesAnswer),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[get("/v1/me/absences")]
pub async fn list(state: web::Data<AppState>, person: Person) -> Result<HttpResponse, ApiError> {
    let rows =
        approval_projections::absences::list(&state.pool, person.0.user.as_str(), Utc::now())
            .await?;
    Ok(HttpResponse::Ok().json(AbsencesAnswer {
        items: rows.into_iter().map(AbsenceOut::from).collect(),
    }))
}

/// End an absence of the caller's now (or withdraw one yet to start): from now on its deputy
/// no longer decides in the caller's place, and loses what they had not decided.
#[utoipa::path(
    delete, path = "/v1/me/absences/{id}", tag = "absences",
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 204, description = "Ended (or over already)"),
        (status = 400, description = "`%00` in the URL", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "Not an absence of the caller's", body = ErrorBody),
        (status = 409, description = "`version_conflict`: the caller's absences kept changing", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[delete("/v1/me/absences/{id}")]
pub async fn end(
    state: web::Data<AppState>,
    req: HttpRequest,
    person: Person,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let absence_id = Uuid::try_parse(&path)
        .map_err(|_| ApiError::new(crate::http::errors::Code::NotFound, "no such absence"))?;
    let actor = person.0;
    let meta = person_meta(&req, &actor, None);
    let command = AbsenceCommand::End {
        person: actor.user.clone(),
        absence_id,
        at: Utc::now(),
    };
    state
        .ledger
        .execute_absence(&actor.user, command, &meta)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
