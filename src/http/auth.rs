//! Who is calling: people by a bearer JWT (HS256 with `auth.jwt_secret`; `exp`, `iss`, `aud`
//! checked), legacy systems by an HMAC-SHA256 signature over `"{timestamp}.{raw body}"` with the
//! system's secret, within a window around now. Signatures are compared in constant time.

use std::collections::BTreeMap;
use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use approval_aggregates::{validation, Actor, Roles, UserId};
use chrono::Utc;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::config::{AuthSettings, Secret, Settings};
use crate::http::errors::ApiError;
use crate::http::AppState;

/// The header naming a system's signing time.
pub const TIMESTAMP_HEADER: &str = "X-Ledger-Timestamp";
/// The header carrying a system's signature.
pub const SIGNATURE_HEADER: &str = "X-Ledger-Signature";

/// The claims of a person's token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// `auditor`, `admin`.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Signs a token for `user` with `roles`, valid for `ttl_secs`.
pub fn issue_token(
    auth: &AuthSettings,
    user: &str,
    roles: &[String],
    ttl_secs: i64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = Utc::now().timestamp();
    let claims = Claims {
        sub: user.to_owned(),
        exp: now + ttl_secs,
        iat: now,
        iss: auth.issuer.clone(),
        aud: auth.audience.clone(),
        roles: roles.to_vec(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(auth.jwt_secret.expose().as_bytes()),
    )
}

/// The value of `X-Ledger-Signature` for `body` signed at `timestamp` with `secret`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "v1={}",
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    )
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

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
        // Several signatures may be sent while a secret is rotated; one must match.
        let valid = signatures
            .split(',')
            .filter_map(|s| s.trim().strip_prefix("v1="))
            .filter_map(|hex_sig| hex::decode(hex_sig).ok())
            .any(|sig| {
                mac(secret.expose(), timestamp, body)
                    .verify_slice(&sig)
                    .is_ok()
            });
        if valid {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_hex_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: printf '1700000000.{}' | openssl dgst -sha256 -hmac secret
        let sig = signature("secret", 1_700_000_000, b"{}");
        assert_eq!(
            sig,
            "v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
        assert_ne!(sig, signature("secret", 1_700_000_001, b"{}"));
        assert_ne!(sig, signature("other", 1_700_000_000, b"{}"));
    }
}
