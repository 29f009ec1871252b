//! `GET /v1/stream`: the caller's inbox changes arrive as server-sent events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::sse::Sse;
use common::{single_step, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_request_and_a_decision_arrive_on_the_approvers_stream() {
    let app = TestApp::spawn().await;
    let mut stream = Sse::open(&app.client, &app.address, &app.token("alice")).await;
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
