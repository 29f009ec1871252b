//! `POST /v1/decisions`: several decisions at once, each on its own: one failing item does not
//! undo the others, and the results come back in the order of the items.

use crate::feed::Position;
use actix_web::{post, web, HttpRequest, HttpResponse};
use approval_aggregates::{validation, ApprovalCommand, Decision, Verdict};
use chrono::Utc;
use futures_util::stream::{self, StreamExt};

use crate::http::auth::Person;
use crate::http::dto::{request_id, BulkAnswer, BulkBody, BulkResult};
use crate::http::errors::{ApiError, ErrorBody};
use crate::http::idempotency::{self, KeyHeader, Reply};
use crate::http::requests::person_meta;
use crate::http::{parse_json, AppState};
use crate::ledger::LedgerError;

/// Items decided at once; the rest wait their turn, in order.
const CONCURRENCY: usize = 4;

/// Decide several requests at once.
#[utoipa::path(
    post, path = "/v1/decisions", tag = "requests",
    params(KeyHeader),
    request_body = BulkBody,
    responses(
        (status = 200, description = "One result per item, in order", body = BulkAnswer),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 422, description = "No items, too many items, a comment that breaks the rules, or `idempotency_key_reused`", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[post("/v1/decisions")]
pub async fn bulk(
    state: web::Data<AppState>,
    req: HttpRequest,
    person: Person,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency::key(&req)?;
    let fingerprint = idempotency::fingerprint(&req, &body);
    let actor = person.0;
    let authority = state.policy.authority_of(&actor);
    idempotency::once(
        &state,
        actor.user.as_str(),
        key.as_deref(),
        &fingerprint,
        || async {
            let input: BulkBody = parse_json(&body)?;
            if input.items.is_empty() {
                return Err(ApiError::invalid("items must not be empty"));
            }
            if input.items.len() > state.limits.bulk {
                return Err(ApiError::invalid(format!(
                    "at most {} items per call",
                    state.limits.bulk
                )));
            }
            // One comment for every item: when it breaks the rules, the whole call does.
            validation::comment("comment", input.comment.as_deref())?;
            let at = Utc::now();
            let outcomes: Vec<(BulkResult, Option<Position>)> =
                stream::iter(input.items.into_iter().enumerate())
                    .map(|(index, item)| {
                        let state = &state;
                        let actor = &actor;
                        let authority = &authority;
                        let req = &req;
                        let comment = input.comment.clone();
                        // Each item gets its own key, so a retry after a lost answer finds each one.
                        let item_key = key.as_ref().map(|k| format!("{k}#{index}"));
                        async move {
                            let failed = |e: ApiError| {
                                (
                                    BulkResult {
                                        id: item.id.clone(),
                                        ok: false,
                                        status: None,
                                        version: None,
                                        error: Some(e.body().error),
                                    },
                                    None,
                                )
                            };
                            let id = match request_id(&item.id) {
                                Ok(id) => id,
                                Err(e) => return failed(e),
                            };
                            let command = ApprovalCommand::Decide(Decision {
                                authority: authority.clone(),
                                actor: actor.clone(),
                                verdict: Verdict::from(item.decision),
                                comment,
                                expected_version: item.expected_version,
                                at,
                            });
                            let meta = person_meta(req, actor, item_key.clone());
                            match state.ledger.execute_unseen(id, command, &meta).await {
                                Ok(executed) => (
                                    BulkResult {
                                        id: item.id.clone(),
                                        ok: true,
                                        status: Some(executed.request.status.as_str().to_owned()),
                                        version: Some(executed.request.version),
                                        error: None,
                                    },
                                    executed.position,
                                ),
                                Err(e @ (LedgerError::Domain(_) | LedgerError::Conflict(_))) => {
                                    let earlier = match &item_key {
                                        Some(k) => state
                                            .ledger
                                            .answer_of_key(id, actor.user.as_str(), k)
                                            .await
                                            .ok()
                                            .flatten(),
                                        None => None,
                                    };
                                    match earlier {
                                        Some(request) => (
                                            BulkResult {
                                                id: item.id.clone(),
                                                ok: true,
                                                status: Some(request.status.as_str().to_owned()),
                                                version: Some(request.version),
                                                error: None,
                                            },
                                            None,
                                        ),
                                        None => failed(e.into()),
                                    }
                                }
                                Err(e) => failed(e.into()),
                            }
                        }
                    })
                    .buffered(CONCURRENCY)
                    .collect()
                    .await;
            if let Some(last) = outcomes.iter().filter_map(|(_, p)| *p).max() {
                state.ledger.wait_visible(last).await;
            }
            Reply::ok(BulkAnswer {
                results: outcomes.into_iter().map(|(r, _)| r).collect(),
            })
        },
    )
    .await
}
