//! `/v1/devices`: the devices a person registers for push notifications.

use actix_web::{delete, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::auth::Person;
use crate::http::errors::{ApiError, ErrorBody};
use crate::http::{parse_json, AppState};
use crate::store::devices;

/// A device to notify.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceBody {
    /// `android` or `ios`.
    #[schema(example = "android", pattern = "^(android|ios)$")]
    pub platform: String,
    /// The push provider's registration token (1 to 4096 visible ASCII characters).
    #[schema(min_length = 1, max_length = 4096, pattern = "^[!-~]+$")]
    pub token: String,
}

fn checked(body: &DeviceBody) -> Result<(), ApiError> {
    if body.platform != "android" && body.platform != "ios" {
        return Err(ApiError::invalid("platform must be \"android\" or \"ios\""));
    }
    let ok = !body.token.is_empty()
        && body.token.len() <= 4096
        && body.token.bytes().all(|b| b.is_ascii_graphic());
    if !ok {
        return Err(ApiError::invalid(
            "token must be 1 to 4096 visible ASCII characters",
        ));
    }
    Ok(())
}

/// Register a device of the caller's for push notifications.
#[utoipa::path(
    post, path = "/v1/devices", tag = "devices",
    request_body = DeviceBody,
    responses(
        (status = 201, description = "Registered (a token registered before moves to the caller)", body = DeviceBody),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[post("/v1/devices")]
pub async fn register(
    state: web::Data<AppState>,
    person: Person,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let device: DeviceBody = parse_json(&body)?;
    checked(&device)?;
    devices::register(
        &state.pool,
        person.0.user.as_str(),
        &device.platform,
        &device.token,
    )
    .await?;
    Ok(HttpResponse::Created().json(device))
}

/// Stop notifying a device of the caller's.
#[utoipa::path(
    delete, path = "/v1/devices/{token}", tag = "devices",
    params(("token" = String, Path)),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "`%00` in the URL", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "Not a device of the caller's", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[delete("/v1/devices/{token}")]
pub async fn unregister(
    state: web::Data<AppState>,
    person: Person,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if devices::unregister(&state.pool, person.0.user.as_str(), &path).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::new(
            crate::http::errors::Code::NotFound,
            "no such device",
        ))
    }
}
