//! Signing, for every part that signs or checks: legacy-system calls in both directions
//! (HMAC-SHA256 over `"{timestamp}.{raw body}"`, `X-Ledger-Signature: v1=<hex>`), and people's
//! bearer tokens (HS256) that `approval-ledger token` mints in development. The API checks with
//! these (`crate::http::auth`), the scheduler signs callbacks, the CLI mints tokens.

use chrono::Utc;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::config::AuthSettings;

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
    /// Audience: one, or several (identity providers send both forms).
    pub aud: Audience,
    /// `auditor`, `admin`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The groups the person is in: they may decide steps that name them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// A token's `aud`: RFC 7519 allows one string or an array of them, and providers send both.
/// Written back as it was read; `issue_token` writes one string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "approval-mobile"`.
    One(String),
    /// `"aud": ["approval-mobile", "other"]`.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `audience` is among the token's.
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Self::One(one) => one == audience,
            Self::Many(many) => many.iter().any(|a| a == audience),
        }
    }
}

impl<'de> Deserialize<'de> for Audience {
    // By hand rather than `untagged`: that buffers the value first, on every token checked.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Audience;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of strings")
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Audience, E> {
                Ok(Audience::One(value.to_owned()))
            }

            fn visit_string<E: serde::de::Error>(self, value: String) -> Result<Audience, E> {
                Ok(Audience::One(value))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Audience, A::Error> {
                let mut many = Vec::with_capacity(seq.size_hint().unwrap_or(1).min(16));
                while let Some(one) = seq.next_element::<String>()? {
                    many.push(one);
                }
                Ok(Audience::Many(many))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Signs a token for `user` with `roles`, valid for `ttl_secs`.
pub fn issue_token(
    auth: &AuthSettings,
    user: &str,
    roles: &[String],
    ttl_secs: i64,
) -> Result<String, jsonwebtoken::errors::Error> {
    issue_token_with_groups(auth, user, roles, &[], ttl_secs)
}

/// Signs a token for `user` with `roles` and a `groups` claim, valid for `ttl_secs`.
pub fn issue_token_with_groups(
    auth: &AuthSettings,
    user: &str,
    roles: &[String],
    groups: &[String],
    ttl_secs: i64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = Utc::now().timestamp();
    let claims = Claims {
        sub: user.to_owned(),
        exp: now + ttl_secs,
        iat: now,
        iss: auth.issuer.clone(),
        aud: Audience::One(auth.audience.clone()),
        roles: roles.to_vec(),
        groups: groups.to_vec(),
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

/// Whether `header`, the value of `X-Ledger-Signature`, holds a valid signature of `body` at
/// `timestamp` with `secret`. Several signatures may be sent while a secret is rotated; one must
/// match. Compared in constant time.
pub fn verifies(secret: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    header
        .split(',')
        .filter_map(|s| s.trim().strip_prefix("v1="))
        .filter_map(|hex_sig| hex::decode(hex_sig).ok())
        .any(|sig| mac(secret, timestamp, body).verify_slice(&sig).is_ok())
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
        assert!(verifies(
            "secret",
            1_700_000_000,
            b"{}",
            &format!("v1=00, {sig}")
        ));
        assert!(!verifies("secret", 1_700_000_001, b"{}", &sig));
    }

    #[test]
    fn an_audience_is_read_as_a_string_or_an_array_and_written_as_it_was_read(
    ) -> Result<(), serde_json::Error> {
        let one: Audience = serde_json::from_str(r#""approval-mobile""#)?;
        assert_eq!(one, Audience::One("approval-mobile".into()));
        assert!(one.contains("approval-mobile"));
        let many: Audience = serde_json::from_str(r#"["api://ledger", "approval-mobile"]"#)?;
        assert!(many.contains("approval-mobile") && !many.contains("other"));
        assert_eq!(serde_json::to_string(&one)?, r#""approval-mobile""#);
        assert_eq!(
            serde_json::to_string(&many)?,
            r#"["api://ledger","approval-mobile"]"#
        );
        assert!(serde_json::from_str::<Audience>("3").is_err());
        assert!(serde_json::from_str::<Audience>("[3]").is_err());
        Ok(())
    }
}
