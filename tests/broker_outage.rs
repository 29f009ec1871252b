//! RabbitMQ stops while people decide: commands keep succeeding, and once it is back every
//! decision reaches the legacy system exactly once, without restarting the service.
//!
//! This stops the machine's RabbitMQ (`rabbitmqctl stop_app`), so it lives alone in its own test
//! binary: `cargo test` runs binaries one after another.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use approval_ledger::startup::Roles;
use common::fake::FakeEndpoint;
use common::{single_step, TestApp};
use reqwest::StatusCode;

fn rabbitmqctl(args: &[&str]) {
    let status = std::process::Command::new("rabbitmqctl")
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl {args:?}");
}

/// Starts RabbitMQ again even if the test fails half-way.
struct RestartOnDrop;

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .arg("start_app")
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_made_while_rabbitmq_is_stopped_are_delivered_once_it_is_back() {
    let legacy = FakeEndpoint::ok().await;
    let callback = format!("{}/cb", legacy.url);
    let app = TestApp::spawn_with(
        Roles::ALL,
        &[(
            "APPROVAL_LEDGER_SYSTEMS__ERP__CALLBACK_URL",
            callback.as_str(),
        )],
    )
    .await;
    let n = 12;
    let mut ids = vec![];
    for i in 0..n {
        ids.push(
            app.submit_ok(&single_step(&format!("OUT-{i}"), &["alice"]))
                .await,
        );
    }
    // Half decided before the outage, half during it.
    for id in &ids[..n / 2] {
        assert_eq!(app.approve("alice", id).await.status(), StatusCode::OK);
    }
    legacy
        .wait_for(Duration::from_secs(30), |c| c.len() >= n / 2)
        .await;

    let _guard = RestartOnDrop;
    rabbitmqctl(&["stop_app"]);
    for id in &ids[n / 2..] {
        assert_eq!(
            app.approve("alice", id).await.status(),
            StatusCode::OK,
            "commands succeed without the broker"
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);

    let calls = legacy
        .wait_for(Duration::from_secs(90), |c| c.len() >= n)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = if calls.len() >= n {
        legacy.calls()
    } else {
        calls
    };
    let mut per_event: HashMap<String, usize> = HashMap::new();
    for call in &calls {
        *per_event
            .entry(call.header("x-ledger-event-id").unwrap().to_owned())
            .or_default() += 1;
    }
    let delivered: std::collections::HashSet<&str> = calls
        .iter()
        .map(|c| c.body["request_id"].as_str().unwrap())
        .collect();
    for id in &ids {
        assert!(delivered.contains(id.as_str()), "{id} was delivered");
    }
    assert_eq!(per_event.len(), n, "one event per decision");
    assert!(
        per_event.values().all(|&count| count == 1),
        "none twice: {per_event:?}"
    );
}
