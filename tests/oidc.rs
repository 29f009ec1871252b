//! OpenID Connect tokens: RS256 and ES256 tokens checked against a provider's key set (JWKS),
//! beside the HS256 development tokens. The provider is a local endpoint serving keys this test
//! makes, counting every fetch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use approval_ledger::startup::Roles;
use base64::Engine as _;
use common::{eventually, TestApp};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::EncodePrivateKey as _;
use reqwest::StatusCode;
use rsa::pkcs1::{EncodeRsaPrivateKey as _, EncodeRsaPublicKey as _};
use serde_json::{json, Value};

const ISSUER: &str = "https://idp.test/realms/ledger";
const AUDIENCE: &str = "approval-api";

/// A signing key of the fake provider.
struct Key {
    kid: &'static str,
    alg: Algorithm,
    encoding: EncodingKey,
    /// Its public half as the provider publishes it.
    jwk: Jwk,
    /// For RSA keys, the public key's PKCS#1 DER: what an alg-confusion attack signs with.
    public_der: Vec<u8>,
}

impl Key {
    fn rsa(kid: &'static str) -> Self {
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA key");
        let der = private.to_pkcs1_der().expect("PKCS#1");
        let public_der = private
            .to_public_key()
            .to_pkcs1_der()
            .expect("public PKCS#1")
            .as_bytes()
            .to_vec();
        Self::from_encoding(
            kid,
            Algorithm::RS256,
            EncodingKey::from_rsa_der(der.as_bytes()),
            public_der,
        )
    }

    fn ec(kid: &'static str) -> Self {
        let private = p256::ecdsa::SigningKey::random(&mut rsa::rand_core::OsRng);
        let der = private.to_pkcs8_der().expect("PKCS#8");
        Self::from_encoding(
            kid,
            Algorithm::ES256,
            EncodingKey::from_ec_der(der.as_bytes()),
            vec![],
        )
    }

    fn from_encoding(
        kid: &'static str,
        alg: Algorithm,
        encoding: EncodingKey,
        public_der: Vec<u8>,
    ) -> Self {
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).expect("JWK");
        jwk.common.key_id = Some(kid.to_owned());
        Self {
            kid,
            alg,
            encoding,
            jwk,
            public_der,
        }
    }

    /// A token signed with this key, naming `kid`, with `claims`.
    fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("token")
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(self.kid, claims)
    }
}

/// The keys, made once for every test of this file (RSA key generation is slow).
struct Keys {
    rsa: Key,
    ec: Key,
    /// The key the provider rotates to.
    next: Key,
    /// Not the provider's: a forger's key, published by no one.
    forger: Key,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa: Key::rsa("rsa-1"),
        ec: Key::ec("ec-1"),
        next: Key::rsa("rsa-2"),
        forger: Key::rsa("rsa-1"),
    })
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims as a provider writes them for `sub`.
fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 600})
}

/// The fake provider's JWKS endpoint.
struct Provider {
    url: String,
    keys: Arc<Mutex<Vec<Jwk>>>,
    hits: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    handle: actix_web::dev::ServerHandle,
}

#[derive(Clone)]
struct Shared {
    keys: Arc<Mutex<Vec<Jwk>>>,
    hits: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

async fn jwks(shared: web::Data<Shared>) -> HttpResponse {
    shared.hits.fetch_add(1, Ordering::SeqCst);
    if shared.down.load(Ordering::SeqCst) {
        return HttpResponse::ServiceUnavailable().finish();
    }
    let keys = shared.keys.lock().unwrap().clone();
    HttpResponse::Ok().json(JwkSet { keys })
}

impl Provider {
    async fn start(keys: &[&Key]) -> Self {
        let shared = Shared {
            keys: Arc::new(Mutex::new(keys.iter().map(|k| k.jwk.clone()).collect())),
            hits: Arc::new(AtomicUsize::new(0)),
            down: Arc::new(AtomicBool::new(false)),
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://127.0.0.1:{}/protocol/openid-connect/certs",
            listener.local_addr().unwrap().port()
        );
        let data = web::Data::new(shared.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/protocol/openid-connect/certs", web::get().to(jwks))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url,
            keys: shared.keys,
            hits: shared.hits,
            down: shared.down,
            handle,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn publish(&self, keys: &[&Key]) {
        *self.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Waits until the service has fetched the set `n` times.
    async fn wait_for_hits(&self, n: usize) {
        let reached = eventually(Duration::from_secs(10), || async {
            (self.hits() >= n).then_some(())
        })
        .await;
        assert!(
            reached.is_some(),
            "the service fetched the key set {n} times"
        );
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// The API only (most of these tests need no read model, so no worker and no broker).
const API: Roles = Roles {
    api: true,
    worker: false,
};

/// The service running `roles`, trusting `provider`, refetching at most every `min_refetch`.
async fn app_with(provider: &Provider, min_refetch: &str, roles: Roles) -> TestApp {
    TestApp::spawn_with(
        roles,
        &[
            ("APPROVAL_LEDGER_AUTH__JWKS_URL", provider.url.as_str()),
            ("APPROVAL_LEDGER_AUTH__JWKS_ISSUER", ISSUER),
            ("APPROVAL_LEDGER_AUTH__JWKS_AUDIENCE", AUDIENCE),
            ("APPROVAL_LEDGER_AUTH__JWKS_MIN_REFETCH", min_refetch),
            ("APPROVAL_LEDGER_AUTH__JWKS_TIMEOUT", "PT2S"),
        ],
    )
    .await
}

/// The API trusting `provider`, refetching at most every `min_refetch`.
async fn app(provider: &Provider, min_refetch: &str) -> TestApp {
    app_with(provider, min_refetch, API).await
}

/// The status of `GET /v1/inbox` with `token`.
async fn inbox_with(app: &TestApp, token: &str) -> StatusCode {
    app.client
        .get(format!("{}/v1/inbox", app.address))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
        .status()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn rs256_and_es256_tokens_of_the_provider_and_hs256_development_tokens_are_accepted() {
    let keys = keys();
    let provider = Provider::start(&[&keys.rsa, &keys.ec]).await;
    // Every role: the auditor below reads a request's detail from the read models.
    let app = app_with(&provider, "PT30S", Roles::ALL).await;

    assert_eq!(
        inbox_with(&app, &keys.rsa.sign(&claims("alice"))).await,
        StatusCode::OK
    );
    assert_eq!(
        inbox_with(&app, &keys.ec.sign(&claims("bob"))).await,
        StatusCode::OK
    );
    // Providers send the audience as an array too (Keycloak, Okta with several audiences).
    let mut several = claims("carol");
    several["aud"] = json!(["account", AUDIENCE]);
    assert_eq!(
        inbox_with(&app, &keys.rsa.sign(&several)).await,
        StatusCode::OK
    );
    // A not-before in the past is fine.
    let mut nbf = claims("carol");
    nbf["nbf"] = json!(now() - 5);
    assert_eq!(inbox_with(&app, &keys.ec.sign(&nbf)).await, StatusCode::OK);
    assert_eq!(inbox_with(&app, &app.token("dave")).await, StatusCode::OK);

    // Roles come from the token's claims: an auditor may read the request of others.
    let id = app
        .submit_ok(&common::single_step("PO-OIDC-1", &["erin"]))
        .await;
    let detail = |token: String| {
        let app = &app;
        let id = id.clone();
        async move {
            app.client
                .get(format!("{}/v1/requests/{id}", app.address))
                .bearer_auth(token)
                .send()
                .await
                .expect("request")
                .status()
        }
    };
    assert_eq!(
        detail(keys.rsa.sign(&claims("mallory"))).await,
        StatusCode::NOT_FOUND
    );
    let mut auditor = claims("mallory");
    auditor["roles"] = json!(["auditor"]);
    assert_eq!(detail(keys.rsa.sign(&auditor)).await, StatusCode::OK);

    // One fetch at start did it all: no token above named an unknown key.
    assert_eq!(provider.hits(), 1);
}

#[tokio::test]
async fn forged_misaddressed_expired_and_algorithm_confused_tokens_are_refused() {
    let keys = keys();
    let provider = Provider::start(&[&keys.rsa, &keys.ec]).await;
    let app = app(&provider, "PT30S").await;
    assert_eq!(
        inbox_with(&app, &keys.rsa.sign(&claims("alice"))).await,
        StatusCode::OK
    );

    let with = |field: &str, value: Value| {
        let mut c = claims("alice");
        c[field] = value;
        c
    };
    let without = |field: &str| {
        let mut c = claims("alice");
        c.as_object_mut().unwrap().remove(field);
        c
    };
    let rsa_public_jwk = serde_json::to_vec(&keys.rsa.jwk).unwrap();
    let hs256_with = |secret: &[u8]| {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".into());
        jsonwebtoken::encode(&header, &claims("alice"), &EncodingKey::from_secret(secret)).unwrap()
    };
    let unsigned = |alg: &str| {
        format!(
            "{}.{}.",
            b64(json!({"alg": alg, "kid": "rsa-1", "typ": "JWT"})
                .to_string()
                .as_bytes()),
            b64(claims("alice").to_string().as_bytes())
        )
    };
    // A genuine token with its header rewritten to ES256: the RSA key verifies RS256 only.
    let genuine = keys.rsa.sign(&claims("alice"));
    let mut parts = genuine.splitn(2, '.');
    let (_, rest) = (parts.next().unwrap(), parts.next().unwrap());
    let relabelled = format!(
        "{}.{rest}",
        b64(json!({"alg": "ES256", "kid": "rsa-1", "typ": "JWT"})
            .to_string()
            .as_bytes())
    );

    let refused = [
        (
            "forged: another key, the same kid",
            keys.forger.sign(&claims("alice")),
        ),
        (
            "an ES256 key's kid on an RS256 token",
            keys.rsa.sign_as("ec-1", &claims("alice")),
        ),
        (
            "an RSA key's kid on an ES256 token",
            keys.ec.sign_as("rsa-1", &claims("alice")),
        ),
        ("relabelled ES256", relabelled),
        (
            "wrong issuer",
            keys.rsa.sign(&with("iss", json!("https://evil.test"))),
        ),
        (
            "wrong audience",
            keys.rsa.sign(&with("aud", json!("other-app"))),
        ),
        (
            "no audience of ours in the array",
            keys.rsa.sign(&with("aud", json!(["a", "b"]))),
        ),
        ("expired", keys.ec.sign(&with("exp", json!(now() - 120)))),
        (
            "not yet valid",
            keys.ec.sign(&with("nbf", json!(now() + 600))),
        ),
        ("no exp", keys.rsa.sign(&without("exp"))),
        ("no iss", keys.rsa.sign(&without("iss"))),
        ("no aud", keys.rsa.sign(&without("aud"))),
        ("no sub", keys.rsa.sign(&without("sub"))),
        (
            "a subject with white space",
            keys.rsa.sign(&with("sub", json!("al ice"))),
        ),
        (
            "HS256 keyed with the public key's DER",
            hs256_with(&keys.rsa.public_der),
        ),
        (
            "HS256 keyed with the public JWK",
            hs256_with(&rsa_public_jwk),
        ),
        ("alg none", unsigned("none")),
        ("alg RS256 without a signature", unsigned("RS256")),
        ("not a JWT", "abc.def".to_owned()),
    ];
    for (what, token) in &refused {
        let response = app
            .client
            .get(format!("{}/v1/inbox", app.address))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "unauthorized", "{what}");
    }
    // A provider token without a kid cannot name its key.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = None;
    let no_kid = jsonwebtoken::encode(&header, &claims("alice"), &keys.rsa.encoding).unwrap();
    assert_eq!(inbox_with(&app, &no_kid).await, StatusCode::UNAUTHORIZED);
    // The HS256 secret does not verify provider tokens either: an RS256 header over an HMAC.
    let signed_part = format!(
        "{}.{}",
        b64(json!({"alg": "RS256", "kid": "rsa-1", "typ": "JWT"})
            .to_string()
            .as_bytes()),
        b64(claims("alice").to_string().as_bytes())
    );
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(
        app.settings.auth.jwt_secret.expose().as_bytes(),
    )
    .unwrap();
    hmac::Mac::update(&mut mac, signed_part.as_bytes());
    let hs_as_rs = format!(
        "{signed_part}.{}",
        b64(&hmac::Mac::finalize(mac).into_bytes())
    );
    assert_eq!(inbox_with(&app, &hs_as_rs).await, StatusCode::UNAUTHORIZED);
    // Every token above named a known key (or none): not one fetched the set again.
    assert_eq!(provider.hits(), 1);
}

#[tokio::test]
async fn a_key_the_provider_rotates_to_is_accepted_after_one_refetch() {
    let keys = keys();
    let provider = Provider::start(&[&keys.rsa]).await;
    let app = app(&provider, "PT1S").await;
    provider.wait_for_hits(1).await;
    assert_eq!(
        inbox_with(&app, &keys.rsa.sign(&claims("alice"))).await,
        StatusCode::OK
    );

    // The provider rotates: the old key leaves, a new one comes.
    provider.publish(&[&keys.next]);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let token = keys.next.sign(&claims("alice"));
    assert_eq!(inbox_with(&app, &token).await, StatusCode::OK);
    assert_eq!(provider.hits(), 2, "one refetch for the new kid");
    assert_eq!(inbox_with(&app, &token).await, StatusCode::OK);
    assert_eq!(provider.hits(), 2, "the new key is cached");
    // The retired key's tokens no longer pass.
    assert_eq!(
        inbox_with(&app, &keys.rsa.sign(&claims("alice"))).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_the_key_set_at_most_once_per_interval() {
    let keys = keys();
    let provider = Provider::start(&[&keys.rsa]).await;
    let app = app(&provider, "PT3S").await;
    // Signed beforehand, so that the rounds below take far less than the interval even on a
    // busy machine (signing is slow in a debug build).
    let tokens = |n: usize, round: &str| -> Vec<String> {
        (0..n)
            .map(|i| keys.ec.sign_as(&format!("{round}-{i}"), &claims("alice")))
            .collect()
    };
    let (a, b, c) = (tokens(50, "a"), tokens(30, "b"), tokens(20, "c"));
    let known = keys.rsa.sign(&claims("alice"));
    let flood = |tokens: Vec<String>| {
        let app = &app;
        async move {
            let calls = tokens
                .into_iter()
                .map(|token| async move { inbox_with(app, &token).await });
            futures_util::future::join_all(calls).await
        }
    };
    provider.wait_for_hits(1).await;
    tokio::time::sleep(Duration::from_millis(3_100)).await;

    // Concurrent unknown kids share one fetch.
    let statuses = flood(a).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert_eq!(provider.hits(), 2);
    // More of them within the interval fetch nothing.
    let statuses = flood(b).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert_eq!(provider.hits(), 2);
    // Known keys keep working meanwhile.
    assert_eq!(inbox_with(&app, &known).await, StatusCode::OK);
    // After the interval, one more.
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    flood(c).await;
    assert_eq!(provider.hits(), 3);
}

#[tokio::test]
async fn while_the_provider_is_down_cached_keys_work_and_unknown_ones_answer_503() {
    let keys = keys();
    let provider = Provider::start(&[&keys.rsa]).await;
    let app = app(&provider, "PT1S").await;
    provider.wait_for_hits(1).await;
    provider.set_down(true);
    provider.publish(&[&keys.rsa, &keys.ec]);
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    assert_eq!(
        inbox_with(&app, &keys.rsa.sign(&claims("alice"))).await,
        StatusCode::OK
    );
    let response = app
        .client
        .get(format!("{}/v1/inbox", app.address))
        .bearer_auth(keys.ec.sign(&claims("alice")))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unavailable");
    assert_eq!(provider.hits(), 2);
    // A forged token with a cached kid is still simply refused.
    assert_eq!(
        inbox_with(&app, &keys.forger.sign(&claims("alice"))).await,
        StatusCode::UNAUTHORIZED
    );

    provider.set_down(false);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        inbox_with(&app, &keys.ec.sign(&claims("alice"))).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_service_starts_while_the_provider_is_down_and_accepts_its_tokens_once_it_is_back() {
    let keys = keys();
    let provider = Provider::start(&[&keys.ec]).await;
    provider.set_down(true);
    let app = app(&provider, "PT1S").await;
    provider.wait_for_hits(1).await;

    let token = keys.ec.sign(&claims("alice"));
    let status = inbox_with(&app, &token).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // HS256 development tokens need no provider.
    assert_eq!(inbox_with(&app, &app.token("bob")).await, StatusCode::OK);

    provider.set_down(false);
    // The background refresher retries every min_refetch; a token may also trigger it.
    let accepted = eventually(Duration::from_secs(10), || async {
        (inbox_with(&app, &token).await == StatusCode::OK).then_some(())
    })
    .await;
    assert!(
        accepted.is_some(),
        "the provider's token is accepted once it is back"
    );
}
