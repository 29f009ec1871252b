//! `GET /v1/requests/{id}/history`: a request as it stood at a moment (or a version), folded from
//! the event store by the audit replay (`crate::audit::replay`), the same code as
//! `approval-ledger audit replay`. Visible to the request's participants (requester, approvers,
//! delegates) and to auditors and admins, like the detail; a 404 to anyone else.

use actix_web::{get, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::audit::replay::{Cut, History, Replay};
use crate::http::auth::Person;
use crate::http::dto::{request_id, RequestDetail};
use crate::http::errors::{ApiError, Code, ErrorBody};
use crate::http::AppState;

/// The query of a history.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// The moment to show, RFC 3339 (`2026-11-20T09:30:00Z`; encode a `+` offset as `%2B`).
    /// Events recorded up to and including it count. Default: now.
    pub at: Option<DateTime<Utc>>,
    /// A version to show: the request after its event with this sequence. With `at` too, the
    /// request at whichever of the two comes first.
    pub version: Option<u64>,
}

impl HistoryParams {
    /// Where to stop folding.
    pub fn cut(&self) -> Result<Cut, ApiError> {
        match (self.at, self.version) {
            // The document says int64, as every version is one.
            (_, Some(version)) if i64::try_from(version).is_err() => Err(ApiError::bad_request(
                "version must be a whole number from 0 to 2^63 - 1",
            )),
            (Some(at), Some(version)) => Ok(Cut::AtAndVersion(at, version)),
            (Some(at), None) => Ok(Cut::At(at)),
            (None, Some(version)) => Ok(Cut::Version(version)),
            (None, None) => Ok(Cut::Latest),
        }
    }
}

/// A request as it stood then: the detail's shape, with the moment it describes.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HistoryAnswer {
    /// The moment shown: the one asked for, or else when the last event shown was recorded.
    pub as_of: DateTime<Utc>,
    /// The request at that moment; its `timeline` holds the events up to it.
    #[serde(flatten)]
    pub request: RequestDetail,
}

impl HistoryAnswer {
    /// The answer of a replay.
    pub fn of(replay: Replay) -> Self {
        Self {
            as_of: replay.as_of,
            request: RequestDetail::of(&replay.request, replay.timeline, replay.as_of),
        }
    }
}

/// A request as it stood at a moment or version, rebuilt from the event store alone.
#[utoipa::path(
    get, path = "/v1/requests/{id}/history", tag = "requests",
    params(("id" = uuid::Uuid, Path), HistoryParams),
    responses(
        (status = 200, body = HistoryAnswer),
        (status = 400, description = "A malformed `at`, or both `at` and `version`", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "Unknown, not visible to the caller, or not yet submitted at that moment", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[get("/v1/requests/{id}/history")]
pub async fn history(
    state: web::Data<AppState>,
    person: Person,
    path: web::Path<String>,
    query: web::Query<HistoryParams>,
) -> Result<HttpResponse, ApiError> {
    let id = request_id(&path)?;
    let cut = query.cut()?;
    let history = History::load(&state.pool, id).await?;
    // Visibility follows the request as it stands now, as for the detail: a delegate added
    // later may read what happened before they joined.
    history
        .current()
        .filter(|r| r.is_visible_to(&person.0))
        .ok_or_else(ApiError::not_found)?;
    let replay = history.as_of(cut).ok_or_else(|| {
        ApiError::new(
            Code::NotFound,
            "the request had not been submitted yet then",
        )
    })?;
    Ok(HttpResponse::Ok().json(HistoryAnswer::of(replay)))
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    use super::*;
    use crate::http::openapi::ApiDoc;

    #[test]
    fn the_openapi_document_describes_the_history_as_the_detail_plus_as_of() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        let operation = &doc["paths"]["/v1/requests/{id}/history"]["get"];
        let params: Vec<&str> = operation["parameters"]
            .as_array()
            .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(params, ["id", "at", "version"]);
        let schema = doc["components"]["schemas"]["HistoryAnswer"].to_string();
        assert!(schema.contains("as_of"), "{schema}");
        assert!(
            schema.contains("#/components/schemas/RequestDetail"),
            "{schema}"
        );
    }

    #[test]
    fn at_and_version_together_cut_at_whichever_comes_first() {
        let now = Utc::now();
        let both = HistoryParams {
            at: Some(now),
            version: Some(2),
        };
        assert_eq!(both.cut().ok(), Some(Cut::AtAndVersion(now, 2)));
        let too_far = HistoryParams {
            at: None,
            version: Some(u64::MAX),
        };
        assert!(too_far.cut().is_err());
        let neither = HistoryParams {
            at: None,
            version: None,
        };
        assert_eq!(neither.cut().ok(), Some(Cut::Latest));
    }
}
