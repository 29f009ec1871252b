//! What every integration test shares: the real service on port 0 with its own database (dropped
//! afterwards, even when the test fails) and its own exchange name, plus helpers to call it as a
//! signed legacy system or as a person with a token.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod browser;
pub mod cli;
pub mod fake;
pub mod sse;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use approval_ledger::config::Settings;
use approval_ledger::signing::{issue_token, signature};
use approval_ledger::startup::{Application, Roles};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

/// The secrets of the test systems.
pub const ERP_SECRET: &str = "erp-test-secret";
pub const HR_SECRET: &str = "hr-test-secret";

/// The server every test database lives on.
pub const SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// A test's own database, dropped when this is dropped.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub fn new() -> Self {
        Self {
            name: format!("test_{}", Uuid::new_v4().simple()),
        }
    }

    pub fn url(&self) -> String {
        format!("{SERVER}/{}", self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async; a thread with its own runtime drops the database.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&format!("{SERVER}/postgres")).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .execute(&mut conn)
                            .await;
                }
            });
        });
        let _ = dropped.join();
    }
}

/// A test's own exchange (and the queues named after it), deleted when this is dropped.
pub struct TestBroker {
    pub exchange: String,
}

impl TestBroker {
    pub fn new() -> Self {
        Self {
            exchange: format!("test.{}", Uuid::new_v4().simple()),
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let topology = approval_ledger::broker::Topology::new(&self.exchange);
        let deleted = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let Ok(conn) =
                    lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default()).await
                else {
                    return;
                };
                if let Ok(channel) = conn.create_channel().await {
                    let _ = topology.delete(&channel).await;
                }
                let _ = conn.close(200, "bye".into()).await;
            });
        });
        let _ = deleted.join();
    }
}

/// The broker every test uses.
pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The settings of a test that runs no worker (so declares nothing in RabbitMQ) on `db`.
pub fn settings_for(db: &TestDb, extra: &[(&str, &str)]) -> Settings {
    settings_with_broker(db, &format!("test.{}", Uuid::new_v4().simple()), extra)
}

/// The settings of a test service on `db`, publishing to `exchange`.
pub fn settings_with_broker(db: &TestDb, exchange: &str, extra: &[(&str, &str)]) -> Settings {
    let exchange = exchange.to_owned();
    let mut env: BTreeMap<String, String> = [
        ("APPROVAL_LEDGER_DATABASE__URL", db.url()),
        ("APPROVAL_LEDGER_DATABASE__MAX_CONNECTIONS", "6".into()),
        ("APPROVAL_LEDGER_HTTP__BIND", "127.0.0.1:0".into()),
        ("APPROVAL_LEDGER_HTTP__WORKERS", "1".into()),
        ("APPROVAL_LEDGER_BROKER__EXCHANGE", exchange),
        ("APPROVAL_LEDGER_FEED__POLL_INTERVAL_MS", "100".into()),
        ("APPROVAL_LEDGER_DELIVERY__BASE_DELAY_MS", "50".into()),
        ("APPROVAL_LEDGER_DELIVERY__MAX_DELAY_MS", "400".into()),
        ("APPROVAL_LEDGER_DELIVERY__POLL_INTERVAL_MS", "50".into()),
        ("APPROVAL_LEDGER_BROKER__RECONNECT_MAX_MS", "1000".into()),
        ("APPROVAL_LEDGER_LEDGER__READ_YOUR_WRITES_MS", "5000".into()),
        ("APPROVAL_LEDGER_AUTH__JWT_SECRET", "test-jwt-secret".into()),
        ("APPROVAL_LEDGER_SYSTEMS__ERP__NAME", "ERP".into()),
        ("APPROVAL_LEDGER_SYSTEMS__ERP__SECRET", ERP_SECRET.into()),
        (
            "APPROVAL_LEDGER_SYSTEMS__ERP__CALLBACK_URL",
            "http://127.0.0.1:9/cb".into(),
        ),
        ("APPROVAL_LEDGER_SYSTEMS__HR__NAME", "HR".into()),
        ("APPROVAL_LEDGER_SYSTEMS__HR__SECRET", HR_SECRET.into()),
        (
            "APPROVAL_LEDGER_SYSTEMS__HR__CALLBACK_URL",
            "http://127.0.0.1:9/cb".into(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    Settings::load(None, Some(env)).expect("test settings")
}

/// A running service with its own database.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub settings: Settings,
    pub pool: PgPool,
    app: Option<Application>,
    pub db: TestDb,
    pub broker: TestBroker,
}

impl TestApp {
    /// Every role, default test settings.
    pub async fn spawn() -> Self {
        Self::spawn_with(Roles::ALL, &[]).await
    }

    /// The roles asked for, with extra settings.
    pub async fn spawn_with(roles: Roles, extra: &[(&str, &str)]) -> Self {
        let db = TestDb::new();
        let broker = TestBroker::new();
        let settings = settings_with_broker(&db, &broker.exchange, extra);
        Self::start(db, broker, settings, roles).await
    }

    /// Another instance of the service on this one's database and exchange.
    pub async fn another_instance(&self, roles: Roles) -> Application {
        Application::build(self.settings.clone(), roles)
            .await
            .expect("the other instance starts")
    }

    async fn start(db: TestDb, broker: TestBroker, settings: Settings, roles: Roles) -> Self {
        let app = Application::build(settings.clone(), roles)
            .await
            .expect("the service starts");
        let address = format!("http://127.0.0.1:{}", app.port().unwrap_or(0));
        let pool = PgPool::connect(&db.url()).await.expect("test pool");
        Self {
            address,
            client: reqwest::Client::new(),
            settings,
            pool,
            app: Some(app),
            db,
            broker,
        }
    }

    /// Stops the service and starts it again on the same database.
    pub async fn restart(mut self, roles: Roles) -> Self {
        if let Some(app) = self.app.take() {
            app.shutdown().await.expect("clean shutdown");
        }
        self.pool.close().await;
        let TestApp {
            settings,
            db,
            broker,
            ..
        } = self;
        Self::start(db, broker, settings, roles).await
    }

    /// Stops the service (the database stays until this is dropped).
    pub async fn stop(&mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await.expect("clean shutdown");
        }
    }

    /// Waits until `/readyz` answers 200 (a worker's broker connection is up).
    pub async fn wait_ready(&self) {
        let ready = eventually(Duration::from_secs(30), || async {
            let r = self
                .client
                .get(format!("{}/readyz", self.address))
                .send()
                .await
                .ok()?;
            (r.status() == StatusCode::OK).then_some(())
        })
        .await;
        assert!(ready.is_some(), "the service became ready");
    }

    pub fn token(&self, user: &str) -> String {
        self.token_with(user, &[])
    }

    pub fn token_with(&self, user: &str, roles: &[&str]) -> String {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        issue_token(&self.settings.auth, user, &roles, 3600).expect("token")
    }

    /// A token for `user` whose `groups` claim lists `groups`.
    pub fn token_in_groups(&self, user: &str, roles: &[&str], groups: &[&str]) -> String {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        approval_ledger::signing::issue_token_with_groups(
            &self.settings.auth,
            user,
            &roles,
            &groups,
            3600,
        )
        .expect("token")
    }

    /// `method` on `path` with the bearer `token` and, unless `None`, a JSON `body`.
    pub async fn call_with(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Response {
        let mut call = self
            .client
            .request(method, format!("{}{}", self.address, path))
            .bearer_auth(token);
        if let Some(body) = body {
            call = call.json(body);
        }
        call.send().await.expect("request")
    }

    /// A call signed as `system` with `secret`, now.
    pub async fn system_call(
        &self,
        method: reqwest::Method,
        secret: &str,
        path: &str,
        body: &str,
    ) -> Response {
        let ts = chrono::Utc::now().timestamp();
        self.client
            .request(method, format!("{}{}", self.address, path))
            .header("X-Ledger-Timestamp", ts.to_string())
            .header("X-Ledger-Signature", signature(secret, ts, body.as_bytes()))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("request")
    }

    /// Submits `body` as the ERP system.
    pub async fn submit(&self, body: &Value) -> Response {
        self.system_call(
            reqwest::Method::POST,
            ERP_SECRET,
            "/v1/systems/erp/requests",
            &body.to_string(),
        )
        .await
    }

    /// Submits `body` as the ERP system and returns the new request's id.
    pub async fn submit_ok(&self, body: &Value) -> String {
        let response = self.submit(body).await;
        assert_eq!(response.status(), StatusCode::CREATED, "submission");
        let answer: Value = response.json().await.expect("json");
        answer["id"].as_str().expect("id").to_owned()
    }

    pub async fn post_as(&self, user: &str, path: &str, body: &Value) -> Response {
        self.client
            .post(format!("{}{}", self.address, path))
            .bearer_auth(self.token(user))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get_as(&self, user: &str, path: &str) -> Response {
        self.client
            .get(format!("{}{}", self.address, path))
            .bearer_auth(self.token(user))
            .send()
            .await
            .expect("request")
    }

    /// `user` decides `verdict` on request `id`.
    pub async fn decide(&self, user: &str, id: &str, verdict: &str, body: &Value) -> Response {
        self.post_as(user, &format!("/v1/requests/{id}/{verdict}"), body)
            .await
    }

    pub async fn approve(&self, user: &str, id: &str) -> Response {
        self.decide(user, id, "approve", &json!({})).await
    }

    /// `user`'s inbox.
    pub async fn inbox(&self, user: &str) -> Value {
        let response = self.get_as(user, "/v1/inbox").await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("json")
    }

    /// Request `id` as `user` sees it.
    pub async fn detail(&self, user: &str, id: &str) -> Value {
        let response = self.get_as(user, &format!("/v1/requests/{id}")).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "detail of {id} as {user}"
        );
        response.json().await.expect("json")
    }

    /// Registers an Android device `token` of `user`.
    pub async fn register_device(&self, user: &str, token: &str) {
        let response = self
            .post_as(
                user,
                "/v1/devices",
                &json!({"platform": "android", "token": token}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }

    /// The JSON this instance answers to an unauthenticated `GET path`.
    pub async fn get_json(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }

    /// The text of this instance's `/metrics`.
    pub async fn metrics(&self) -> String {
        metrics_at(&self.client, &self.address).await
    }

    /// How many events the store holds.
    pub async fn event_count(&self) -> i64 {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
            .fetch_one(&self.pool)
            .await
            .expect("count");
        n
    }
}

/// The text of `/metrics` of the instance at `address`.
pub async fn metrics_at(client: &reqwest::Client, address: &str) -> String {
    client
        .get(format!("{address}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The contract's three-step purchase order, under `external_ref`.
pub fn purchase_order(external_ref: &str) -> Value {
    json!({
        "external_ref": external_ref,
        "kind": "purchase_order",
        "title": format!("{external_ref}: 12 laptops"),
        "requester": "dina",
        "amount": {"value": "1250.00", "currency": "USD"},
        "steps": [
            {"approvers": ["alice"], "rule": "any"},
            {"approvers": ["bob", "carol", "dave"], "rule": {"at_least": 2}},
            {"approvers": ["erin", "frank"], "rule": "all"}
        ],
        "due_at": "2099-12-01T17:00:00Z",
        "details": {"any": "JSON shown to approvers"},
        "link": "https://erp.example/po/4711"
    })
}

/// A one-step request decided by any one of `approvers`.
pub fn single_step(external_ref: &str, approvers: &[&str]) -> Value {
    json!({
        "external_ref": external_ref,
        "kind": "leave",
        "title": format!("Leave {external_ref}"),
        "requester": "dina",
        "steps": [{"approvers": approvers, "rule": "any"}]
    })
}

/// The error code of an error answer.
pub async fn error_code(response: Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.expect("an error body in JSON");
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or("<none>")
            .to_owned(),
    )
}

/// Asserts that `response` is an error with `status` and `code`.
pub async fn expect_error(response: Response, status: StatusCode, code: &str) {
    assert_eq!(error_code(response).await, (status, code.to_owned()));
}

/// Polls `check` until it returns `Some`, for at most `limit`; the outcome, never the time taken,
/// is what tests assert.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
