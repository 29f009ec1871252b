//! Who is calling: people by a bearer JWT (HS256 with `auth.jwt_secret`; `exp`, `iss`, `aud`
//! checked), legacy systems by an HMAC-SHA256 signature over `"{timestamp}.{raw body}"` with the
//! system's secret, within a window around now. Signatures are compared in constant time. How
//! tokens and signatures are made is in [`crate::signing`].

use std::collections::BTreeMap;
use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use approval_aggregates::{validation, Actor, Roles, UserId};
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::config::{Secret, Settings};
use crate::http::errors::ApiError;
use crate::http::AppState;
use crate::signing::{verifies, Claims, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// Checks people's tokens and systems' signatures.
pub struct Authenticator {
    decoding: DecodingKey,
    validation: Validation,
    systems: BTreeMap<String, Secret>,
    window_secs: i64,
}

impl Authenticator {
    /// An authenticator for `settings`.
    pub fn new(settings: &Settings) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&settings.auth.issuer]);
        validation.set_audience(&[&settings.auth.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        Self {
            decoding: DecodingKey::from_secret(settings.auth.jwt_secret.expose().as_bytes()),
            validation,
            systems: settings
                .systems
                .iter()
                .map(|(k, s)| (k.clone(), s.secret.clone()))
                .collect(),
            window_secs: settings.auth.signature_window_secs,
        }
    }

    /// The person an `Authorization` header names.
    pub fn person(&self, authorization: Option<&str>) -> Result<Actor, ApiError> {
        let token = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("a bearer token is required"))?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| {
                tracing::debug!(reason = %e, "token refused");
                ApiError::unauthorized("the token is not valid")
            })?;
        let user = UserId::new(data.claims.sub);
        validation::user("sub", &user)
            .map_err(|_| ApiError::unauthorized("the token's subject is not a valid user id"))?;
        Ok(Actor {
            user,
            roles: Roles {
                auditor: data.claims.roles.iter().any(|r| r == "auditor"),
                admin: data.claims.roles.iter().any(|r| r == "admin"),
            },
            // Names that break the rules of a group name could never match a step's group.
            groups: data
                .claims
                .groups
                .into_iter()
                .filter(|g| validation::group("groups", g).is_ok())
                .collect(),
        })
    }

    /// Checks that `system` signed `body` at the time it claims, within the window.
    pub fn system(&self, system: &str, req: &HttpRequest, body: &[u8]) -> Result<(), ApiError> {
        let refused =
            || ApiError::unauthorized("unknown system, or a missing, stale or wrong signature");
        let secret = self.systems.get(system).ok_or_else(refused)?;
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let timestamp: i64 = header(TIMESTAMP_HEADER)
            .and_then(|t| t.trim().parse().ok())
            .ok_or_else(refused)?;
        if (Utc::now().timestamp() - timestamp).abs() > self.window_secs {
            return Err(refused());
        }
        let signatures = header(SIGNATURE_HEADER).ok_or_else(refused)?;
        if verifies(secret.expose(), timestamp, body, signatures) {
            Ok(())
        } else {
            Err(refused())
        }
    }
}

/// The person calling, from their bearer token.
#[derive(Debug, Clone)]
pub struct Person(pub Actor);

impl FromRequest for Person {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = match req.app_data::<web::Data<AppState>>() {
            Some(state) => state
                .auth
                .person(
                    req.headers()
                        .get(actix_web::http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok()),
                )
                .map(Person),
            None => Err(ApiError::internal(&"the application state is missing")),
        };
        ready(result)
    }
}
