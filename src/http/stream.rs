//! `GET /v1/stream`: server-sent events of the caller's inbox changes while the app is open.
//!
//! The stream opens with `event: ready` once every later change will reach it; then each change of a request the caller takes part in
//! is an `event: inbox` whose data is `{"request_id", "event_type", "version", "status"}`, sent
//! once the read models show it (so a `GET /v1/inbox` right after sees it). A comment line every
//! 15 s keeps proxies from closing the connection.

use std::convert::Infallible;
use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{get, web, HttpResponse};
use serde_json::{json, Value};

use crate::http::auth::Person;
use crate::http::errors::ErrorBody;
use crate::http::AppState;

/// How often an idle stream sends a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The schema of one event of the stream, as the OpenAPI document (3.1, no `itemSchema`) states
/// it for `text/event-stream`: an object of the event's fields, whose `data` is JSON of the shape
/// its `event` names. `utoipa` cannot say `contentSchema`, so [`crate::http::openapi`] puts this
/// in place.
pub fn event_schema() -> Value {
    let event = |name: &str, data: Value| {
        json!({
            "type": "object",
            "required": ["event", "data"],
            "properties": {
                "event": {"const": name},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": data,
                },
            },
        })
    };
    json!({"oneOf": [
        event("ready", json!({"type": "object", "maxProperties": 0})),
        event("inbox", json!({"$ref": "#/components/schemas/InboxChange"})),
    ]})
}

/// Server-sent events of the caller's inbox changes.
#[utoipa::path(
    get, path = "/v1/stream", tag = "inbox",
    responses(
        (status = 200, description = "`event: ready` once the stream follows every change, then an `event: inbox` for each change of a request the caller takes part in", content_type = "text/event-stream", body = String),
        (status = 401, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[get("/v1/stream")]
pub async fn stream(state: web::Data<AppState>, person: Person) -> HttpResponse {
    let rx = state.hub.listen(person.0.user.as_str());
    // Ready only once the hub follows the feed from no later than now: from then on, no change
    // of this person's requests passes without a word.
    state.hub.following().await;
    let hub = state.hub.clone();
    let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
    keep_alive.reset();
    let events = futures_util::stream::unfold(
        (rx, keep_alive, true),
        move |(mut rx, mut keep_alive, first)| {
            let hub = hub.clone();
            async move {
                if first {
                    let ready = Bytes::from_static(b"event: ready\ndata: {}\n\n");
                    return Some((Ok::<_, Infallible>(ready), (rx, keep_alive, false)));
                }
                let chunk = tokio::select! {
                    change = rx.recv() => {
                        let change = change?;
                        let data = serde_json::to_string(&change).unwrap_or_else(|_| "{}".into());
                        Bytes::from(format!("event: inbox\ndata: {data}\n\n"))
                    }
                    _ = keep_alive.tick() => Bytes::from_static(b": keep-alive\n\n"),
                    // The service stops: the stream ends, so the stop need not wait for it.
                    () = hub.closed() => return None,
                };
                Some((Ok(chunk), (rx, keep_alive, false)))
            }
        },
    );
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(events)
}
