//! The outside world the service calls, as a scenario needs it: a legacy system's callback endpoint
//! that behaves as the contract asks a receiver to (it applies an event once, deduplicating on
//! `X-Ledger-Event-Id`) and FCM's send endpoint. Both note every call and can be told to misbehave:
//! answer 503, answer 429 with `Retry-After`, or answer later than the service's call timeout.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{dev::ServerHandle, post, web, App, HttpRequest, HttpResponse, HttpServer};

/// How the endpoints answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 200 at once.
    Ok,
    /// 503, as a system that is down.
    Unavailable,
    /// 429 with `Retry-After: N` seconds.
    TooMany(u32),
    /// 200, but only after this long (longer than the service's call timeout).
    Slow(Duration),
}

/// One call that reached a fake endpoint.
#[derive(Debug, Clone)]
pub struct Call {
    /// `X-Ledger-Event-Id` of a callback, `message.data.event_id` of a push.
    pub event_id: String,
    /// The request it is about.
    pub request_id: String,
    /// A callback's `version` (the event's sequence); 0 for a push.
    pub version: i64,
    /// A push's device token; empty for a callback.
    pub token: String,
    /// Whether the answer was a 2xx in time (the call was delivered).
    pub delivered: bool,
    /// How the endpoint was told to answer it.
    pub mode: Mode,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Default)]
struct State {
    mode: Option<Mode>,
    callbacks: Vec<Call>,
    pushes: Vec<Call>,
}

/// The running endpoints.
pub struct Fake {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    state: Arc<Mutex<State>>,
    server: ServerHandle,
}

type Shared = web::Data<Arc<Mutex<State>>>;

fn mode_of(state: &Shared) -> Mode {
    state
        .lock()
        .map(|s| s.mode.unwrap_or(Mode::Ok))
        .unwrap_or(Mode::Ok)
}

/// Answers as the mode says; returns the answer and whether it is a 2xx.
async fn answer(mode: Mode) -> (HttpResponse, bool) {
    match mode {
        Mode::Ok => (HttpResponse::Ok().finish(), true),
        Mode::Unavailable => (HttpResponse::ServiceUnavailable().finish(), false),
        Mode::TooMany(secs) => (
            HttpResponse::TooManyRequests()
                .insert_header(("Retry-After", secs.to_string()))
                .finish(),
            false,
        ),
        Mode::Slow(delay) => {
            tokio::time::sleep(delay).await;
            // The service gave up before this answer: it is not delivered, whatever it says.
            (HttpResponse::Ok().finish(), false)
        }
    }
}

#[post("/callbacks/{system}")]
async fn callback(state: Shared, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let at = Instant::now();
    let event_id = req
        .headers()
        .get(approval_ledger::handlers::scheduler::EVENT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let mode = mode_of(&state);
    let (response, delivered) = answer(mode).await;
    let call = Call {
        event_id,
        request_id: body["request_id"].as_str().unwrap_or_default().to_owned(),
        version: body["version"].as_i64().unwrap_or_default(),
        token: String::new(),
        delivered,
        mode,
        at,
    };
    if let Ok(mut s) = state.lock() {
        s.callbacks.push(call);
    }
    response
}

#[post("/v1/projects/{project}/messages:send")]
async fn push(state: Shared, body: web::Bytes) -> HttpResponse {
    let at = Instant::now();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let message = &body["message"];
    let mode = mode_of(&state);
    let (response, delivered) = answer(mode).await;
    let call = Call {
        event_id: message["data"]["event_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        request_id: message["data"]["request_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        version: 0,
        token: message["token"].as_str().unwrap_or_default().to_owned(),
        delivered,
        mode,
        at,
    };
    if let Ok(mut s) = state.lock() {
        s.pushes.push(call);
    }
    if delivered {
        HttpResponse::Ok().json(serde_json::json!({"name": "projects/faults/messages/1"}))
    } else {
        response
    }
}

impl Fake {
    /// Starts both endpoints on a free local port.
    pub fn start() -> anyhow::Result<Self> {
        let state = Arc::new(Mutex::new(State::default()));
        let data = web::Data::new(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let base = format!("http://{}", listener.local_addr()?);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(1 << 20))
                .service(callback)
                .service(push)
        })
        .workers(2)
        .disable_signals()
        .listen(listener)?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(Self {
            base,
            state,
            server: handle,
        })
    }

    /// From now on, answer as `mode` says.
    pub fn set_mode(&self, mode: Mode) {
        if let Ok(mut s) = self.state.lock() {
            s.mode = Some(mode);
        }
    }

    /// Every callback so far, in arrival order.
    pub fn callbacks(&self) -> Vec<Call> {
        self.state
            .lock()
            .map(|s| s.callbacks.clone())
            .unwrap_or_default()
    }

    /// Every push so far, in arrival order.
    pub fn pushes(&self) -> Vec<Call> {
        self.state
            .lock()
            .map(|s| s.pushes.clone())
            .unwrap_or_default()
    }

    /// Stops the server.
    pub async fn stop(&self) {
        self.server.stop(false).await;
    }
}
