//! Who is calling: people by a bearer JWT, legacy systems by an HMAC-SHA256 signature over
//! `"{timestamp}.{raw body}"` with the system's secret, within a window around now. Signatures
//! are compared in constant time. How tokens and signatures are made is in [`crate::signing`].
//!
//! People's tokens come in two kinds, told apart by the header's `alg`:
//! - HS256 with `auth.jwt_secret` (development, tests, `approval-ledger token`);
//! - RS256 or ES256 from an OpenID Connect provider, when `auth.jwks_url` is set: checked with
//!   the key of the provider's key set ([`Jwks`]) that the header's `kid` names. Each key is
//!   pinned to the one algorithm its `kty`/`crv`/`alg` allow, so a token cannot choose how it
//!   is checked (an HS256 token is never checked with a public key, an RS256 one never with the
//!   HS256 secret). The set is cached; a token naming an unknown `kid` fetches it again, at most
//!   once per `auth.jwks_min_refetch` however many such tokens arrive, and concurrent callers
//!   share that one fetch (docs/decisions/0010-openid-connect-tokens.md).
//!
//! Both kinds check `exp`, `nbf`, `iss`, `aud` (a string or an array) with [`LEEWAY_SECS`] of
//! leeway, and `sub`. A token that any of this refuses is `401 unauthorized`; `503 unavailable`
//! only when the token's key is unknown and the key set cannot be fetched.
//!
//! The common case (an HS256 token, or one whose key is cached) is decided at once, without
//! waiting on I/O: it is on every command.

use std::collections::{BTreeMap, HashMap};
use std::future::{ready, Ready};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use approval_aggregates::{validation, Actor, Roles, UserId};
use base64::Engine as _;
use chrono::Utc;
use futures_util::future::{Either, LocalBoxFuture};
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::{AuthSettings, Secret, Settings};
use crate::http::errors::ApiError;
use crate::http::AppState;
use crate::signing::{verifies, Claims, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// How far past `exp` or before `nbf` a token is still accepted, for clocks a little apart.
pub const LEEWAY_SECS: u64 = 30;

/// The largest key set read: real ones are a few KiB; a larger answer is refused, not buffered.
const MAX_KEY_SET_BYTES: usize = 1 << 20;

/// The shortest RSA modulus accepted, in bytes (2048 bits), as RFC 7518 section 3.3 requires.
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// Checks people's tokens and systems' signatures.
pub struct Authenticator {
    hs256: DecodingKey,
    hs256_validation: Validation,
    jwks: Option<Arc<Jwks>>,
    systems: BTreeMap<String, Secret>,
    window_secs: i64,
}

/// What could be decided about a token at once.
pub enum Checked {
    /// Decided without waiting on I/O.
    Done(Result<Actor, ApiError>),
    /// The token names a key the cached set does not hold: decided after the set is fetched
    /// again (or not, when it was fetched too recently).
    UnknownKey(Refetch),
}

/// A token to check once the key set has been fetched again.
pub struct Refetch {
    jwks: Arc<Jwks>,
    token: String,
    alg: Algorithm,
    kid: String,
    /// The count of fetches when the cache was consulted: a fetch after it is as good as ours.
    seen: u64,
}

impl Refetch {
    /// Fetches the key set again, unless it was fetched too recently, and decides.
    pub async fn decide(self) -> Result<Actor, ApiError> {
        let fetched = self.jwks.refetch_after(self.seen).await;
        match self.jwks.lookup(&self.token, self.alg, &self.kid) {
            Some(decided) => decided,
            None if fetched => {
                tracing::debug!(kid = %self.kid, "token refused: its key is not in the key set");
                Err(refused())
            }
            None => Err(ApiError::unavailable(
                &"the identity provider's key set cannot be fetched",
            )),
        }
    }
}

fn refused() -> ApiError {
    ApiError::unauthorized("the token is not valid")
}

/// The checks of one algorithm: issuer, audience, expiry, not-before, subject present.
fn validation(alg: Algorithm, issuer: &str, audience: &str) -> Validation {
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = LEEWAY_SECS;
    validation
}

/// The person a token's verified claims name.
fn actor(claims: Claims) -> Result<Actor, ApiError> {
    let user = UserId::new(claims.sub);
    validation::user("sub", &user)
        .map_err(|_| ApiError::unauthorized("the token's subject is not a valid user id"))?;
    Ok(Actor {
        user,
        roles: Roles {
            auditor: claims.roles.iter().any(|r| r == "auditor"),
            admin: claims.roles.iter().any(|r| r == "admin"),
        },
        // Names that break the rules of a group name could never match a step's group.
        groups: claims
            .groups
            .into_iter()
            .filter(|g| validation::group("groups", g).is_ok())
            .collect(),
    })
}

/// The token of an `Authorization: Bearer` header.
fn bearer(authorization: Option<&str>) -> Result<&str, ApiError> {
    authorization
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthorized("a bearer token is required"))
}

impl Authenticator {
    /// An authenticator for `settings`; with `auth.jwks_url`, its key set is empty until
    /// [`Jwks::keep_fresh`] (or the first token) fetches it.
    pub fn new(settings: &Settings) -> Result<Self, reqwest::Error> {
        let auth = &settings.auth;
        let jwks = match auth.jwks_url() {
            Some(url) => Some(Arc::new(Jwks::new(url, auth)?)),
            None => None,
        };
        Ok(Self {
            hs256: DecodingKey::from_secret(auth.jwt_secret.expose().as_bytes()),
            hs256_validation: validation(Algorithm::HS256, &auth.issuer, &auth.audience),
            jwks,
            systems: settings
                .systems
                .iter()
                .map(|(k, s)| (k.clone(), s.secret.clone()))
                .collect(),
            window_secs: settings.auth.signature_window_secs,
        })
    }

    /// The identity provider's key set, when one is configured.
    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        self.jwks.as_ref()
    }

    /// Decides what can be decided about an `Authorization` header without waiting on I/O.
    pub fn check(&self, authorization: Option<&str>) -> Checked {
        let token = match bearer(authorization) {
            Ok(token) => token,
            Err(e) => return Checked::Done(Err(e)),
        };
        let Some(jwks) = &self.jwks else {
            // Only HS256 is allowed here, and `decode` refuses any other `alg`.
            return Checked::Done(self.hs256(token));
        };
        let header = match jsonwebtoken::decode_header(token) {
            Ok(header) => header,
            Err(e) => {
                // `alg: none` ends here too: it is no algorithm jsonwebtoken knows.
                tracing::debug!(reason = %e, "token refused: unreadable header");
                return Checked::Done(Err(refused()));
            }
        };
        match (header.alg, header.kid) {
            (Algorithm::HS256, _) => Checked::Done(self.hs256(token)),
            (alg @ (Algorithm::RS256 | Algorithm::ES256), Some(kid)) => jwks.check(token, alg, kid),
            (alg, _) => {
                tracing::debug!(?alg, "token refused: an algorithm not accepted, or no kid");
                Checked::Done(Err(refused()))
            }
        }
    }

    /// The person an `Authorization` header names, fetching the key set again if need be.
    pub async fn person(&self, authorization: Option<&str>) -> Result<Actor, ApiError> {
        match self.check(authorization) {
            Checked::Done(decided) => decided,
            Checked::UnknownKey(refetch) => refetch.decide().await,
        }
    }

    fn hs256(&self, token: &str) -> Result<Actor, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.hs256, &self.hs256_validation)
            .map_err(|e| {
                tracing::debug!(reason = %e, "token refused");
                refused()
            })?;
        actor(data.claims)
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

/// An OpenID Connect provider's key set (JWKS): fetched, cached, fetched again when a token
/// names a key it does not hold, at most once per `min_refetch`.
pub struct Jwks {
    url: String,
    client: reqwest::Client,
    rs256: Validation,
    es256: Validation,
    /// Read on every provider token; replaced whole by each successful fetch.
    keys: RwLock<Arc<KeySet>>,
    /// Fetches finished (either way), so a caller can tell whether one ran since it looked.
    fetches: AtomicU64,
    /// Held for the length of a fetch: concurrent callers wait for that one, not start theirs.
    last: tokio::sync::Mutex<LastFetch>,
    refresh: Duration,
    min_refetch: Duration,
}

/// Keys by `kid`.
#[derive(Default)]
struct KeySet(HashMap<String, PinnedKey>);

/// A key and the one algorithm it may verify.
struct PinnedKey {
    alg: Algorithm,
    key: DecodingKey,
}

/// The latest fetch of the key set.
#[derive(Default)]
struct LastFetch {
    at: Option<Instant>,
    ok: bool,
}

/// Why a fetch of the key set failed.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("cannot reach the key set: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the key set answered {0}")]
    Status(reqwest::StatusCode),
    #[error("the key set is larger than {MAX_KEY_SET_BYTES} bytes")]
    TooLarge,
    #[error("the key set is not a JWKS document: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the key set holds no RS256 or ES256 signing key with a kid ({0} skipped)")]
    NoUsableKey(usize),
}

impl Jwks {
    fn new(url: &str, auth: &AuthSettings) -> Result<Self, reqwest::Error> {
        let timeout = auth.jwks_timeout.to_std();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // Fetches are rare and run on several runtimes (the HTTP workers', the refresher's):
            // a pooled connection would be tied to the runtime that opened it.
            .pool_max_idle_per_host(0)
            .user_agent(concat!("approval-ledger/", env!("CARGO_PKG_VERSION")))
            .build()?;
        if auth.jwks_issuer.is_none() {
            tracing::warn!(
                issuer = %auth.issuer,
                "auth.jwks_issuer is not set: the provider's tokens must carry auth.issuer as \
                 their iss, which a real provider's do not"
            );
        }
        Ok(Self {
            url: url.to_owned(),
            client,
            rs256: validation(Algorithm::RS256, auth.jwks_issuer(), auth.jwks_audience()),
            es256: validation(Algorithm::ES256, auth.jwks_issuer(), auth.jwks_audience()),
            keys: RwLock::new(Arc::default()),
            fetches: AtomicU64::new(0),
            last: tokio::sync::Mutex::new(LastFetch::default()),
            refresh: auth.jwks_refresh.to_std(),
            min_refetch: auth.jwks_min_refetch.to_std(),
        })
    }

    fn current(&self) -> Arc<KeySet> {
        // A writer only swaps an `Arc`; a poisoned lock still holds a whole set.
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn check(self: &Arc<Self>, token: &str, alg: Algorithm, kid: String) -> Checked {
        // Read before the keys: a fetch finishing in between then looks like one we have not
        // seen, which costs at most a look at the lock, never a missed key.
        let seen = self.fetches.load(Ordering::Acquire);
        match self.lookup(token, alg, &kid) {
            Some(decided) => Checked::Done(decided),
            None => Checked::UnknownKey(Refetch {
                jwks: self.clone(),
                token: token.to_owned(),
                alg,
                kid,
                seen,
            }),
        }
    }

    /// The decision on `token` when the cached set holds `kid`.
    fn lookup(&self, token: &str, alg: Algorithm, kid: &str) -> Option<Result<Actor, ApiError>> {
        let keys = self.current();
        let pinned = keys.0.get(kid)?;
        Some(self.verify(token, alg, pinned))
    }

    fn verify(&self, token: &str, alg: Algorithm, pinned: &PinnedKey) -> Result<Actor, ApiError> {
        if alg != pinned.alg {
            tracing::debug!(?alg, key_alg = ?pinned.alg, "token refused: not its key's algorithm");
            return Err(refused());
        }
        let validation = match pinned.alg {
            Algorithm::RS256 => &self.rs256,
            Algorithm::ES256 => &self.es256,
            _ => return Err(refused()),
        };
        let data = jsonwebtoken::decode::<Claims>(token, &pinned.key, validation).map_err(|e| {
            tracing::debug!(reason = %e, "provider token refused");
            refused()
        })?;
        actor(data.claims)
    }

    /// Fetches the set again unless another fetch finished since `seen` or the latest one is
    /// less than `min_refetch` old; whether the latest fetch succeeded.
    async fn refetch_after(&self, seen: u64) -> bool {
        let mut last = self.last.lock().await;
        let someone_fetched = self.fetches.load(Ordering::Acquire) != seen;
        let too_soon = last.at.is_some_and(|at| at.elapsed() < self.min_refetch);
        if !someone_fetched && !too_soon {
            self.fetch(&mut last).await;
        }
        last.ok
    }

    /// Fetches now; on success the fetched set replaces the cached one, on failure the cached
    /// one stays (its keys keep working while the provider is away).
    async fn fetch(&self, last: &mut LastFetch) {
        let started = Instant::now();
        let outcome = self.download().await;
        last.at = Some(started);
        match outcome {
            Ok(set) => {
                tracing::info!(url = %self.url, keys = set.0.len(), "fetched the identity provider's key set");
                *self
                    .keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(set);
                last.ok = true;
            }
            Err(e) => {
                tracing::error!(
                    url = %self.url,
                    error = %e,
                    retry_in_s = self.min_refetch.as_secs(),
                    "cannot fetch the identity provider's key set: tokens signed with a key not \
                     yet cached are answered 503 until a fetch succeeds"
                );
                last.ok = false;
            }
        }
        self.fetches.fetch_add(1, Ordering::Release);
    }

    async fn download(&self) -> Result<KeySet, FetchError> {
        let mut response = self
            .client
            .get(&self.url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_KEY_SET_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        key_set(&body)
    }

    /// Fetches the set now, then again every `auth.jwks_refresh` (every `auth.jwks_min_refetch`
    /// after a failure), until `stop`. A fetch for an unknown `kid` in between counts: the next
    /// one is due that long after the latest, whoever ran it.
    pub async fn keep_fresh(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let pause = tokio::select! {
                () = stop.cancelled() => return,
                pause = self.refresh_if_due() => pause,
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Fetches when the latest fetch is older than its interval; how long until the next is due.
    async fn refresh_if_due(&self) -> Duration {
        let mut last = self.last.lock().await;
        let interval = |ok| if ok { self.refresh } else { self.min_refetch };
        let due = last.at.map_or(Duration::ZERO, |at| {
            interval(last.ok).saturating_sub(at.elapsed())
        });
        if !due.is_zero() {
            return due;
        }
        self.fetch(&mut last).await;
        interval(last.ok)
    }
}

/// A JWKS document: `{"keys": [...]}`; each key read on its own, so one a provider adds in a
/// form this service does not know skips that key, not the set.
#[derive(Deserialize)]
struct RawKeySet {
    keys: Vec<serde_json::Value>,
}

fn key_set(body: &[u8]) -> Result<KeySet, FetchError> {
    let raw: RawKeySet = serde_json::from_slice(body)?;
    let mut keys = HashMap::with_capacity(raw.keys.len());
    let mut skipped = 0;
    for value in raw.keys {
        let pinned = serde_json::from_value::<Jwk>(value)
            .ok()
            .and_then(|jwk| pin(&jwk));
        match pinned {
            Some((kid, key)) if !keys.contains_key(&kid) => {
                keys.insert(kid, key);
            }
            Some((kid, _)) => {
                // Which of two keys a token means cannot be told: the first one stays.
                tracing::warn!(%kid, "the key set names one kid twice; the second key is ignored");
                skipped += 1;
            }
            None => skipped += 1,
        }
    }
    if keys.is_empty() {
        return Err(FetchError::NoUsableKey(skipped));
    }
    Ok(KeySet(keys))
}

/// The key's `kid` and the key pinned to the one algorithm it may verify, or `None` for a key
/// this service does not use: no `kid`, not for signatures, another algorithm or curve, an RSA
/// modulus under 2048 bits.
fn pin(jwk: &Jwk) -> Option<(String, PinnedKey)> {
    let kid = jwk.common.key_id.clone().filter(|k| !k.is_empty())?;
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    if matches!(&jwk.common.key_operations, Some(ops) if !ops.contains(&KeyOperations::Verify)) {
        return None;
    }
    let decoded_len = |b64: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b64)
            .map_or(0, |bytes| bytes.len())
    };
    let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(rsa), None | Some(KeyAlgorithm::RS256)) => {
            // A leading zero byte does not lengthen the modulus.
            let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&rsa.n)
                .ok()?;
            let significant = n.iter().skip_while(|b| **b == 0).count();
            (significant >= MIN_RSA_MODULUS_BYTES).then_some(Algorithm::RS256)?
        }
        (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256)) => {
            let on_p256 = ec.curve == EllipticCurve::P256
                && decoded_len(&ec.x) == 32
                && decoded_len(&ec.y) == 32;
            on_p256.then_some(Algorithm::ES256)?
        }
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some((kid, PinnedKey { alg, key }))
}

/// The person calling, from their bearer token.
#[derive(Debug, Clone)]
pub struct Person(pub Actor);

impl FromRequest for Person {
    type Error = ApiError;
    // Ready for the common case; boxed only when the key set must be fetched first.
    type Future = Either<
        Ready<Result<Self, Self::Error>>,
        LocalBoxFuture<'static, Result<Self, Self::Error>>,
    >;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return Either::Left(ready(Err(ApiError::internal(
                &"the application state is missing",
            ))));
        };
        let authorization = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match state.auth.check(authorization) {
            Checked::Done(decided) => Either::Left(ready(decided.map(Person))),
            Checked::UnknownKey(refetch) => {
                Either::Right(Box::pin(async move { refetch.decide().await.map(Person) }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn rsa(kid: &str, modulus_bytes: usize) -> serde_json::Value {
        let mut n = vec![0xC1_u8; modulus_bytes];
        n[modulus_bytes - 1] = 0x01;
        json!({"kty": "RSA", "kid": kid, "n": b64(&n), "e": "AQAB"})
    }

    fn ec(kid: &str, crv: &str) -> serde_json::Value {
        json!({"kty": "EC", "kid": kid, "crv": crv, "x": b64(&[7; 32]), "y": b64(&[9; 32])})
    }

    fn set(keys: Vec<serde_json::Value>) -> Result<KeySet, FetchError> {
        key_set(json!({ "keys": keys }).to_string().as_bytes())
    }

    #[test]
    fn each_key_is_pinned_to_the_one_algorithm_its_type_and_curve_allow() -> Result<(), FetchError>
    {
        let keys = set(vec![rsa("r", 256), ec("e", "P-256")])?;
        assert_eq!(keys.0.get("r").map(|k| k.alg), Some(Algorithm::RS256));
        assert_eq!(keys.0.get("e").map(|k| k.alg), Some(Algorithm::ES256));
        Ok(())
    }

    #[test]
    fn keys_this_service_does_not_use_are_skipped_not_the_set() -> Result<(), FetchError> {
        let mut enc = rsa("enc", 256);
        enc["use"] = json!("enc");
        let mut oaep = rsa("oaep", 256);
        oaep["alg"] = json!("RSA-OAEP");
        let mut ps = rsa("ps", 256);
        ps["alg"] = json!("PS256");
        let mut claims_es_but_rsa = rsa("liar", 256);
        claims_es_but_rsa["alg"] = json!("ES256");
        let mut no_kid = rsa("", 256);
        no_kid.as_object_mut().map(|k| k.remove("kid"));
        let keys = set(vec![
            enc,
            oaep,
            ps,
            claims_es_but_rsa,
            no_kid,
            rsa("short", 128),
            ec("p384", "P-384"),
            json!({"kty": "oct", "kid": "secret", "k": b64(b"shared")}),
            json!({"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": b64(&[1; 32])}),
            json!({"kty": "weird", "kid": "w"}),
            rsa("good", 256),
        ])?;
        assert_eq!(keys.0.keys().collect::<Vec<_>>(), vec!["good"]);
        Ok(())
    }

    #[test]
    fn a_set_without_a_usable_key_is_a_failed_fetch() {
        assert!(matches!(set(vec![]), Err(FetchError::NoUsableKey(0))));
        assert!(matches!(
            set(vec![rsa("short", 128)]),
            Err(FetchError::NoUsableKey(1))
        ));
        assert!(matches!(key_set(b"<html>"), Err(FetchError::Json(_))));
    }

    #[test]
    fn the_first_of_two_keys_with_one_kid_stays() -> Result<(), FetchError> {
        let keys = set(vec![rsa("k", 256), ec("k", "P-256")])?;
        assert_eq!(keys.0.get("k").map(|k| k.alg), Some(Algorithm::RS256));
        Ok(())
    }
}
