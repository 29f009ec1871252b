//! A local HTTP endpoint that records every call and answers as a test scripts it: the stand-in
//! for a legacy system's callback URL and for FCM.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::Value;

/// One call the endpoint received.
#[derive(Debug, Clone)]
pub struct Call {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub raw: String,
    pub body: Value,
    pub at: Instant,
}

impl Call {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// What to answer: given the call and how many calls came before it with the same
/// `X-Ledger-Event-Id` (or the same body, without one), a status and an optional Retry-After.
pub type Responder = dyn Fn(&Call, usize) -> (u16, Option<u64>) + Send + Sync;

/// A service with every role whose ERP calls back to `legacy` and whose pushes go to `fcm`
/// (provider `fcm`), with `extra` settings.
pub async fn app_calling(
    legacy: &FakeEndpoint,
    fcm: &FakeEndpoint,
    extra: &[(&str, &str)],
) -> super::TestApp {
    let callback = format!("{}/approvals/callback", legacy.url);
    let mut settings = vec![
        (
            "APPROVAL_LEDGER_SYSTEMS__ERP__CALLBACK_URL",
            callback.as_str(),
        ),
        ("APPROVAL_LEDGER_PUSH__PROVIDER", "fcm"),
        ("APPROVAL_LEDGER_PUSH__FCM_ENDPOINT", fcm.url.as_str()),
        ("APPROVAL_LEDGER_PUSH__FCM_PROJECT", "ledger-test"),
        ("APPROVAL_LEDGER_PUSH__FCM_BEARER", "fcm-test-bearer"),
    ];
    settings.extend_from_slice(extra);
    super::TestApp::spawn_with(approval_ledger::startup::Roles::ALL, &settings).await
}

/// A running fake endpoint.
pub struct FakeEndpoint {
    pub url: String,
    calls: Arc<Mutex<Vec<Call>>>,
    handle: actix_web::dev::ServerHandle,
}

struct Shared {
    calls: Arc<Mutex<Vec<Call>>>,
    responder: Arc<Responder>,
}

async fn record(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let raw = String::from_utf8_lossy(&body).into_owned();
    let call = Call {
        path: req.path().to_owned(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or("").to_owned(),
                )
            })
            .collect(),
        body: serde_json::from_str(&raw).unwrap_or(Value::Null),
        raw,
        at: Instant::now(),
    };
    let key = call
        .header("x-ledger-event-id")
        .map(str::to_owned)
        .unwrap_or_else(|| call.raw.clone());
    let before = {
        let calls = shared.calls.lock().unwrap();
        calls
            .iter()
            .filter(|c| {
                c.header("x-ledger-event-id")
                    .map(str::to_owned)
                    .unwrap_or_else(|| c.raw.clone())
                    == key
            })
            .count()
    };
    let (status, retry_after) = (shared.responder)(&call, before);
    shared.calls.lock().unwrap().push(call);
    let mut response = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
    if let Some(seconds) = retry_after {
        response.insert_header(("Retry-After", seconds.to_string()));
    }
    response.finish()
}

impl FakeEndpoint {
    /// An endpoint that always answers 200.
    pub async fn ok() -> Self {
        Self::start(Arc::new(|_: &Call, _| (200, None))).await
    }

    /// An endpoint answering as `responder` says.
    pub async fn start(responder: Arc<Responder>) -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let shared = web::Data::new(Shared {
            calls: calls.clone(),
            responder,
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .default_service(web::to(record))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}"),
            calls,
            handle,
        }
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the calls, at most `limit`; returns the calls then.
    pub async fn wait_for(&self, limit: Duration, done: impl Fn(&[Call]) -> bool) -> Vec<Call> {
        let deadline = Instant::now() + limit;
        loop {
            let calls = self.calls();
            if done(&calls) || Instant::now() > deadline {
                return calls;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for FakeEndpoint {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        drop(handle.stop(false));
    }
}
