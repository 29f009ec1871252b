//! Local stand-ins for the outside world the service calls (contract section 5): a legacy
//! system's callback endpoint for every configured system, and FCM's HTTP v1 send endpoint. Each
//! notes the moment a call arrived and the event it is about; `GET /_arrivals` hands the notes to
//! the load generator, which sets them against the events' commit times.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{get, post, web, App, HttpRequest, HttpResponse, HttpServer};
use serde::{Deserialize, Serialize};

/// One call that reached a fake endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Arrival {
    /// `push` or `callback`.
    pub kind: String,
    /// The event the call was about, as the caller named it.
    pub event_id: String,
    /// When it arrived, microseconds since the Unix epoch.
    pub at_us: i64,
}

#[derive(Default)]
struct Notes {
    arrivals: Mutex<Vec<Arrival>>,
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

impl Notes {
    fn note(&self, kind: &str, event_id: Option<String>, at_us: i64) {
        if let Ok(mut arrivals) = self.arrivals.lock() {
            arrivals.push(Arrival {
                kind: kind.to_owned(),
                event_id: event_id.unwrap_or_default(),
                at_us,
            });
        }
    }
}

/// FCM's `messages:send`: the event id is in `message.data.event_id`.
#[post("/v1/projects/{project}/messages:send")]
async fn fcm_send(notes: web::Data<Notes>, body: web::Bytes) -> HttpResponse {
    let at = now_us();
    let event_id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.pointer("/message/data/event_id")
                .and_then(|e| e.as_str())
                .map(str::to_owned)
        });
    notes.note("push", event_id, at);
    HttpResponse::Ok().json(serde_json::json!({"name": format!("projects/bench/messages/{at}")}))
}

/// A legacy system's callback: the event id is in `X-Ledger-Event-Id`.
#[post("/callbacks/{system}")]
async fn callback(notes: web::Data<Notes>, req: HttpRequest, _body: web::Bytes) -> HttpResponse {
    let at = now_us();
    let event_id = req
        .headers()
        .get(approval_ledger::handlers::scheduler::EVENT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    notes.note("callback", event_id, at);
    HttpResponse::Ok().finish()
}

/// Every arrival so far.
#[get("/_arrivals")]
async fn list_arrivals(notes: web::Data<Notes>) -> HttpResponse {
    let all = notes.arrivals.lock().map(|a| a.clone()).unwrap_or_default();
    HttpResponse::Ok().json(all)
}

/// Serves the fake endpoints on `bind` until the process is stopped.
pub async fn serve(bind: &str) -> anyhow::Result<()> {
    let notes = web::Data::new(Notes::default());
    eprintln!("fake-endpoints: listening on {bind}");
    HttpServer::new(move || {
        App::new()
            .app_data(notes.clone())
            .app_data(web::PayloadConfig::new(1 << 20))
            .service(fcm_send)
            .service(callback)
            .service(list_arrivals)
    })
    .workers(1)
    .bind(bind)?
    .run()
    .await?;
    Ok(())
}

/// The arrivals noted by the fake endpoints at `base`.
pub async fn fetch(client: &reqwest::Client, base: &str) -> anyhow::Result<Vec<Arrival>> {
    Ok(client
        .get(format!("{base}/_arrivals"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}
