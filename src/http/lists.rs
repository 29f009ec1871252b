//! `GET /v1/requests`: the caller's own requests (`role=requester`) or the ones they decided
//! (`role=decided`), newest first, a page at a time, from the projection `lists`.
//!
//! The cursor is the last item's sort key, `<microseconds since 1970>.<request id in hex>`:
//! the next page starts strictly after it, so a page never repeats or skips an item however
//! many arrive meanwhile (new ones, and ones that move to the front by a resubmission or a
//! new decision, land before the first page).

use std::str::FromStr;

use actix_web::{get, web, HttpResponse};
use approval_projections::lists::{self, ListQuery, ListRow, Role};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::http::auth::Person;
use crate::http::dto::MoneyDto;
use crate::http::errors::{ApiError, ErrorBody};
use crate::http::inbox::page_request;
use crate::http::AppState;

/// The longest `q`, in characters.
const MAX_QUERY: usize = 200;

/// Whose list.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ListRole {
    /// The requests the caller submitted.
    Requester,
    /// The requests the caller approved, rejected or returned at some step.
    Decided,
}

/// A status to filter by.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StatusFilter {
    /// Waiting for a decision.
    Pending,
    /// Approved.
    Approved,
    /// Rejected.
    Rejected,
    /// Sent back to the requester.
    Returned,
    /// Withdrawn by the requester.
    Withdrawn,
    /// Cancelled by its system.
    Cancelled,
    /// Expired.
    Expired,
}

impl StatusFilter {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Returned => "returned",
            Self::Withdrawn => "withdrawn",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }
}

/// The query of `GET /v1/requests`.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// `requester`: the caller's own requests; `decided`: those they decided.
    pub role: ListRole,
    /// Only requests with this status.
    pub status: Option<StatusFilter>,
    /// Only requests whose title, external reference or requester contain this text, in any
    /// case: up to 200 characters.
    #[param(max_length = 200)]
    pub q: Option<String>,
    /// Items per page, 1 to `http.page_limit` (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = r"^-?[0-9]{1,16}\.[0-9a-fA-F]{32}$")]
    pub cursor: Option<String>,
}

/// One item of a list: an inbox item's fields, and the request's round and reference.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ListItem {
    /// The request.
    pub id: Uuid,
    /// Its system.
    pub system: String,
    /// The system's reference.
    pub external_ref: String,
    /// Its kind.
    pub kind: String,
    /// Its title.
    pub title: String,
    /// Its amount.
    pub amount: Option<MoneyDto>,
    /// Who asked.
    pub requester: String,
    /// When its current round was submitted.
    pub submitted_at: DateTime<Utc>,
    /// When it is due.
    pub due_at: Option<DateTime<Utc>>,
    /// Its current step's index, from 0 (the number of steps once approved).
    pub step: i32,
    /// Its status.
    pub status: String,
    /// Its version.
    pub version: i64,
    /// Its round: 1 until resubmitted.
    pub round: i32,
    /// When the caller last decided it (`role=decided`; null otherwise).
    pub decided_at: Option<DateTime<Utc>>,
}

impl From<ListRow> for ListItem {
    fn from(r: ListRow) -> Self {
        let amount = match (r.amount_value, r.amount_currency) {
            (Some(value), Some(currency)) => Some(MoneyDto { value, currency }),
            _ => None,
        };
        Self {
            id: r.request_id,
            system: r.system,
            external_ref: r.external_ref,
            kind: r.kind,
            title: r.title,
            amount,
            requester: r.requester,
            submitted_at: r.submitted_at,
            due_at: r.due_at,
            step: r.step,
            status: r.status,
            version: r.version,
            round: r.round,
            decided_at: r.decided_at,
        }
    }
}

/// A page of a list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ListAnswer {
    /// The items, newest first.
    pub items: Vec<ListItem>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// The cursor after `row`.
fn encode(row: &ListRow) -> String {
    format!(
        "{}.{}",
        row.sort_at.timestamp_micros(),
        row.request_id.simple()
    )
}

/// A cursor read back; `None` for anything that is not one.
fn decode(cursor: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let (micros, id) = cursor.split_once('.')?;
    let digits = micros.strip_prefix('-').unwrap_or(micros);
    if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    Some((at, Uuid::from_str(id).ok()?))
}

/// The caller's own requests, or the ones they decided, newest first.
#[utoipa::path(
    get, path = "/v1/requests", tag = "requests",
    params(ListParams),
    responses(
        (status = 200, body = ListAnswer),
        (status = 400, description = "A missing or unknown role or status, a bad limit or cursor, a q too long", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[get("/v1/requests")]
pub async fn list(
    state: web::Data<AppState>,
    person: Person,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let (limit, after) = page_request(&state, params.limit, params.cursor.as_deref(), decode)?;
    if let Some(q) = &params.q {
        if q.chars().count() > MAX_QUERY {
            return Err(ApiError::bad_request(format!(
                "q must be at most {MAX_QUERY} characters"
            )));
        }
        if q.contains('\0') {
            return Err(ApiError::bad_request("q may not contain the NUL character"));
        }
    }
    let role = match params.role {
        ListRole::Requester => Role::Requester,
        ListRole::Decided => Role::Decided,
    };
    let mut rows = lists::page(
        &state.pool,
        &ListQuery {
            user: person.0.user.as_str(),
            role,
            status: params.status.map(StatusFilter::as_str),
            // An empty search matches everything: it is no filter.
            q: params.q.as_deref().filter(|q| !q.is_empty()),
            limit: limit + 1,
            after,
        },
    )
    .await?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if more { rows.last().map(encode) } else { None };
    Ok(HttpResponse::Ok().json(ListAnswer {
        items: rows.into_iter().map(ListItem::from).collect(),
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_and_anything_else_is_refused() {
        let id = Uuid::from_u128(7);
        let at = DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap_or_default();
        let cursor = format!("{}.{}", at.timestamp_micros(), id.simple());
        assert_eq!(decode(&cursor), Some((at, id)));
        for bad in [
            "",
            ".",
            "1.",
            "x.00000000000000000000000000000007",
            "1.zz",
            "12345678901234567.00000000000000000000000000000007",
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
