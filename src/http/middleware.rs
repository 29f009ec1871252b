//! What wraps every request: a request id (the caller's `X-Request-Id` when sane, else a new
//! one) in a tracing span, echoed in the answer and recorded in event metadata; per-route
//! metrics; answers the framework makes itself (unknown route, wrong method, body too large)
//! reshaped into the API's error format; and a URL holding `%00` refused before any handler.

use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::{ErrorHandlerResponse, Next};
use actix_web::{web, HttpMessage, HttpResponse};
use tracing::Instrument;
use uuid::Uuid;

use crate::http::errors::{code_for_status, ApiError, Code};
use crate::http::AppState;
use crate::metrics::{HttpLabels, RouteLabels};

/// The request id header.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of the HTTP request being served.
#[derive(Debug, Clone)]
pub struct HttpRequestId(pub String);

fn caller_request_id(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let sane = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    sane.then(|| value.to_owned())
}

/// Request id, span, metrics.
pub async fn context(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = caller_request_id(&req).unwrap_or_else(|| Uuid::new_v4().to_string());
    req.extensions_mut()
        .insert(HttpRequestId(request_id.clone()));
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let method = req.method().to_string();
    let span =
        tracing::info_span!("http", request_id = %request_id, method = %method, path = %req.path());
    let started = Instant::now();
    let mut res = next.call(req).instrument(span.clone()).await?;
    let elapsed = started.elapsed();
    let status = res.status();
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    if let Some(metrics) = metrics {
        metrics
            .http_requests
            .get_or_create(&HttpLabels {
                method: method.clone(),
                route: route.clone(),
                status: status.as_u16(),
            })
            .inc();
        metrics
            .http_duration
            .get_or_create(&RouteLabels { method, route })
            .observe(elapsed.as_secs_f64());
    }
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!(
                status = status.as_u16(),
                ms = elapsed.as_millis() as u64,
                "answered"
            );
        } else {
            tracing::debug!(
                status = status.as_u16(),
                ms = elapsed.as_millis() as u64,
                "answered"
            );
        }
    });
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        res.headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    Ok(res)
}

/// Refuses a URL holding `%00` with a 400: a path segment or query parameter that decodes to a
/// NUL character can match no stored text, and PostgreSQL refuses it as a parameter.
pub async fn refuse_nul(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let nul = req
        .uri()
        .path_and_query()
        .is_some_and(|url| url.as_str().contains("%00"));
    if nul {
        let refused = ApiError::bad_request("the URL may not contain the NUL character (%00)");
        return Ok(req.error_response(refused).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// Reshapes an error answer that is not already ours into `{"error": {"code", "message"}}`.
pub fn normalize_error<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let ours = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if ours {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let code = code_for_status(status);
    let message = match code {
        Code::NotFound => "no such route".to_owned(),
        Code::MethodNotAllowed => "this route does not take this method".to_owned(),
        Code::PayloadTooLarge => "the body is larger than the limit".to_owned(),
        Code::Unavailable => "a dependency is unavailable; retry shortly".to_owned(),
        Code::Internal => "internal error".to_owned(),
        _ => res
            .response()
            .error()
            .map(|e| e.to_string())
            .filter(|m| m.len() <= 300)
            .unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("bad request")
                    .to_owned()
            }),
    };
    let body = ApiError::new(code, message).body();
    let (req, old) = res.into_parts();
    let mut response = HttpResponse::build(status);
    for (name, value) in old.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            response.insert_header((name.clone(), value.clone()));
        }
    }
    let res: ServiceResponse<EitherBody<B>> =
        ServiceResponse::new(req, response.json(body)).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(res))
}
