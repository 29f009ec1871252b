//! `GET /v1/analytics/approvals`: where approvals get stuck, for auditors and administrators;
//! counts of outcomes, the times from a step becoming current to its decision, and deadlines
//! missed, per system, kind, step or approver, from the projection `analytics`. The command
//! `approval-ledger report` answers the same through [`answer`], so both give the same body.

use actix_web::{get, web, HttpResponse};
use approval_projections::analytics::{self, GroupBy, GroupRow, ReportQuery};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{OpenApi, ToSchema};

use crate::http::auth::Person;
use crate::http::errors::{ApiError, Code, ErrorBody};
use crate::http::AppState;

/// The analytics part of the OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(approvals),
    components(schemas(AnalyticsAnswer, AnalyticsGroup, GroupByParam)),
    tags((name = "analytics", description = "Outcomes and decision times, for auditors and administrators"))
)]
pub struct AnalyticsDoc;

/// What the groups are.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum GroupByParam {
    /// The requests' system.
    #[default]
    System,
    /// The requests' kind.
    Kind,
    /// The step's index, from 0.
    Step,
    /// The person asked to decide a step, or who decided it.
    Approver,
}

impl From<GroupByParam> for GroupBy {
    fn from(g: GroupByParam) -> Self {
        match g {
            GroupByParam::System => Self::System,
            GroupByParam::Kind => Self::Kind,
            GroupByParam::Step => Self::Step,
            GroupByParam::Approver => Self::Approver,
        }
    }
}

/// The query of `GET /v1/analytics/approvals`.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsParams {
    /// Only rounds submitted at or after this moment (RFC 3339); default: 30 days before `to`.
    #[param(format = DateTime, value_type = Option<String>)]
    pub from: Option<String>,
    /// Only rounds submitted before this moment (RFC 3339); default: now.
    #[param(format = DateTime, value_type = Option<String>)]
    pub to: Option<String>,
    /// What the groups are (default `system`).
    pub group_by: Option<GroupByParam>,
}

/// One group of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AnalyticsGroup {
    /// The system, the kind, the step's index (from 0) or the person.
    pub key: String,
    /// Rounds submitted in the window (system, kind: a resubmission is a round of its own);
    /// step occurrences that became current (step); step occurrences the person was asked to
    /// decide or decided (approver).
    pub submitted: i64,
    /// Of those, the ones approved, rejected or returned (approver: their own decisions).
    pub decided: i64,
    /// Rounds approved; steps whose rule was met; the person's approvals.
    pub approved: i64,
    /// Rounds rejected; steps rejected at; the person's rejections.
    pub rejected: i64,
    /// Rounds returned; steps returned at; the person's returns.
    pub returned: i64,
    /// Rounds expired; steps open when their request expired; those the person had not
    /// decided.
    pub expired: i64,
    /// The median of the seconds from a step becoming current to its decision (approver:
    /// their own decision); null when nothing was decided.
    pub median_s: Option<f64>,
    /// The 90th percentile of the same (continuous); null when nothing was decided.
    pub p90_s: Option<f64>,
    /// Step occurrences whose deadline passed before they were decided or ended (approver:
    /// before the person decided), or that are still open past it.
    pub overdue: i64,
}

impl From<GroupRow> for AnalyticsGroup {
    fn from(r: GroupRow) -> Self {
        Self {
            key: r.key,
            submitted: r.submitted,
            decided: r.decided,
            approved: r.approved,
            rejected: r.rejected,
            returned: r.returned,
            expired: r.expired,
            median_s: r.median_s,
            p90_s: r.p90_s,
            overdue: r.overdue,
        }
    }
}

/// The report: one entry per group, ordered by key (steps by index).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AnalyticsAnswer {
    /// The groups that have any round in the window.
    pub groups: Vec<AnalyticsGroup>,
}

/// The report of the rounds submitted in `[from, to)` (defaults: the 30 days before now),
/// grouped by `group_by`: what the endpoint and `approval-ledger report` answer. A bad window
/// is a `bad_request`.
pub async fn answer(
    pool: &PgPool,
    from: Option<&str>,
    to: Option<&str>,
    group_by: GroupByParam,
) -> Result<AnalyticsAnswer, ApiError> {
    let now = Utc::now();
    let (from, to) =
        analytics::window(from, to, now).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let rows = analytics::report(
        pool,
        &ReportQuery {
            from,
            to,
            group_by: group_by.into(),
            now,
        },
    )
    .await?;
    Ok(AnalyticsAnswer {
        groups: rows.into_iter().map(AnalyticsGroup::from).collect(),
    })
}

/// Outcomes and decision times of the rounds submitted in a window, by group (roles `auditor`
/// or `admin`).
#[utoipa::path(
    get, path = "/v1/analytics/approvals", tag = "analytics",
    params(ApprovalsParams),
    responses(
        (status = 200, body = AnalyticsAnswer),
        (status = 400, description = "`bad_request`: a from or to that is not RFC 3339, from after to, an unknown group_by or parameter", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller has neither the role auditor nor admin", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[get("/v1/analytics/approvals")]
pub async fn approvals(
    state: web::Data<AppState>,
    person: Person,
    params: web::Query<ApprovalsParams>,
) -> Result<HttpResponse, ApiError> {
    let roles = &person.0.roles;
    if !(roles.auditor || roles.admin) {
        return Err(ApiError::new(
            Code::Forbidden,
            "analytics needs the role auditor or admin",
        ));
    }
    let params = params.into_inner();
    let body = answer(
        &state.pool,
        params.from.as_deref(),
        params.to.as_deref(),
        params.group_by.unwrap_or_default(),
    )
    .await?;
    Ok(HttpResponse::Ok().json(body))
}
