//! `GET /v1/inbox`: what awaits the caller's decision, oldest due first, a page at a time.

use actix_web::{get, web, HttpResponse};
use approval_projections::inbox::{self, InboxCursor, InboxQuery};

use crate::http::auth::Person;
use crate::http::dto::{InboxAnswer, InboxItem, InboxParams};
use crate::http::errors::{ApiError, ErrorBody};
use crate::http::AppState;

/// Items per page when the caller names no limit.
const DEFAULT_LIMIT: i64 = 50;

/// The requests awaiting the caller's decision at their current step.
#[utoipa::path(
    get, path = "/v1/inbox", tag = "inbox",
    params(InboxParams),
    responses(
        (status = 200, body = InboxAnswer),
        (status = 400, description = "A bad limit or cursor", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[get("/v1/inbox")]
pub async fn list(
    state: web::Data<AppState>,
    person: Person,
    params: web::Query<InboxParams>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let (limit, cursor) = page_request(
        &state,
        params.limit,
        params.cursor.as_deref(),
        InboxCursor::decode,
    )?;
    let page = inbox::list(
        &state.pool,
        person.0.user.as_str(),
        &InboxQuery {
            system: params.system,
            kind: params.kind,
            cursor,
            limit,
            groups: person.0.groups.clone(),
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(InboxAnswer {
        items: page.items.into_iter().map(InboxItem::from).collect(),
        next_cursor: page.next.map(|c| c.encode()),
        total: page.total,
    }))
}

/// A page's `limit` (the default when none, at most `[http] page`) and its `cursor` read by
/// `decode`: 400 for a limit out of range or a cursor that does not decode.
pub(crate) fn page_request<C>(
    state: &AppState,
    limit: Option<i64>,
    cursor: Option<&str>,
    decode: impl Fn(&str) -> Option<C>,
) -> Result<(i64, Option<C>), ApiError> {
    let max = state.limits.page;
    let limit = limit.unwrap_or(DEFAULT_LIMIT.min(max));
    if !(1..=max).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {max}"
        )));
    }
    let cursor = cursor
        .map(|c| decode(c).ok_or_else(|| ApiError::bad_request("cursor is not valid")))
        .transpose()?;
    Ok((limit, cursor))
}
