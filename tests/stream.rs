//! `GET /v1/stream`: the caller's inbox changes arrive as server-sent events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{single_step, TestApp};
use futures_util::StreamExt;

type Body = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = reqwest::Result<actix_web::web::Bytes>> + Send>,
>;

/// What a stream has sent so far.
struct Sse {
    body: Body,
    text: String,
}

impl Sse {
    async fn read_until(&mut self, needle: &str) {
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            while !self.text.contains(needle) {
                let chunk = self.body.next().await.unwrap().unwrap();
                self.text.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await;
        assert!(
            found.is_ok(),
            "the stream did not show {needle}: {}",
            self.text
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_request_and_a_decision_arrive_on_the_approvers_stream() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .get(format!("{}/v1/stream", app.address))
        .bearer_auth(app.token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = Sse {
        body: Box::pin(response.bytes_stream()),
        text: String::new(),
    };
    stream.read_until("event: ready").await;

    let id = app.submit_ok(&single_step("S-1", &["alice"])).await;
    stream
        .read_until(&format!(
            r#""request_id":"{id}","event_type":"RequestSubmitted""#
        ))
        .await;
    app.approve("alice", &id).await;
    stream.read_until(r#""event_type":"RequestApproved""#).await;
    // Someone else's request never shows.
    app.submit_ok(&single_step("S-2", &["bob"])).await;
    let other = app.inbox("bob").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!stream.text.contains(&other));
}
