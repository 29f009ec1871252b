//! Several instances on one database: every process hears the others' commits at once, whatever
//! its roles, and an instance stops promptly even with a stream open.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use approval_aggregates::{RequestId, SystemId};
use approval_ledger::startup::Roles;
use common::sse::Sse;
use common::{single_step, TestApp, ERP_SECRET};

const API_ONLY: Roles = Roles {
    api: true,
    worker: false,
};

/// A counter of `/metrics` at `address`.
async fn metric(client: &reqwest::Client, address: &str, name: &str) -> f64 {
    common::metrics_at(client, address)
        .await
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0)
}

/// Submits `body` as the ERP system through the instance at `address`.
async fn submit_at(client: &reqwest::Client, address: &str, body: &serde_json::Value) {
    let body = body.to_string();
    let ts = chrono::Utc::now().timestamp();
    let response = client
        .post(format!("{address}/v1/systems/erp/requests"))
        .header("X-Ledger-Timestamp", ts.to_string())
        .header(
            "X-Ledger-Signature",
            approval_ledger::signing::signature(ERP_SECRET, ts, body.as_bytes()),
        )
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

/// No reader polls in this test (a minute between polls): whatever arrives, arrives because a
/// process announced a commit and the others heard it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_one_api_instance_hears_a_submission_made_through_another() {
    let full = TestApp::spawn_with(
        Roles::ALL,
        &[
            ("APPROVAL_LEDGER_FEED__POLL_INTERVAL_MS", "60000"),
            ("APPROVAL_LEDGER_LEDGER__READ_YOUR_WRITES_MS", "3000"),
        ],
    )
    .await;
    let a = full.another_instance(API_ONLY).await;
    let b = full.another_instance(API_ONLY).await;
    let (a_at, b_at) = (
        format!("http://127.0.0.1:{}", a.port().unwrap()),
        format!("http://127.0.0.1:{}", b.port().unwrap()),
    );
    let mut stream = Sse::open(&full.client, &a_at, &full.token("alice")).await;
    stream.read_until("event: ready").await;

    let mut latencies = vec![];
    for n in 0..5 {
        let external_ref = format!("X-{n}");
        let id = RequestId::for_submission(&SystemId::new("erp"), &external_ref).to_string();
        let sent = Instant::now();
        submit_at(&full.client, &b_at, &single_step(&external_ref, &["alice"])).await;
        let answered = sent.elapsed();
        stream.read_until(&id).await;
        latencies.push((answered, sent.elapsed()));
    }
    for (answered, seen) in &latencies {
        println!(
            "submitted through one api instance: answered in {:.1} ms, on the other's stream after \
             {:.1} ms",
            answered.as_secs_f64() * 1e3,
            seen.as_secs_f64() * 1e3
        );
    }
    // The api-only instance that took the submissions released each one as soon as the read
    // models' runner announced it had applied it: none waited out its read-your-writes bound.
    let timeouts = metric(
        &full.client,
        &b_at,
        "approval_ledger_read_your_writes_timeouts_total",
    )
    .await;
    assert_eq!(timeouts, 0.0, "no submission waited out read-your-writes");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// `approval-ledger serve` as its own process on the test's database, with `roles`.
fn serve(app: &TestApp, role: &str, bind: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_approval-ledger"))
        .args(["serve", "--role", role])
        .env("APPROVAL_LEDGER_DATABASE__URL", app.db.url())
        .env("APPROVAL_LEDGER_DATABASE__MAX_CONNECTIONS", "4")
        .env("APPROVAL_LEDGER_HTTP__BIND", bind)
        .env("APPROVAL_LEDGER_AUTH__JWT_SECRET", "test-jwt-secret")
        .env("APPROVAL_LEDGER_BROKER__EXCHANGE", &app.broker.exchange)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("the binary starts")
}

/// The port a `serve` child says it serves HTTP on, from its log; the rest of its log is kept
/// in `log`.
fn served_port(
    child: &mut std::process::Child,
    log: &std::sync::Arc<std::sync::Mutex<String>>,
) -> u16 {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let log = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(port) = line
                .split("port=")
                .nth(1)
                .filter(|_| line.contains("serving HTTP"))
                .and_then(|p| p.trim().parse::<u16>().ok())
            {
                let _ = tx.send(port);
            }
            log.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the service says where it serves")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_instance_stops_at_once_on_sigterm_with_a_stream_open() {
    let app = TestApp::spawn().await;
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut child = serve(&app, "api", "127.0.0.1:0");
    let port = served_port(&mut child, &log);
    let address = format!("http://127.0.0.1:{port}");
    let mut stream = Sse::open(&app.client, &address, &app.token("alice")).await;
    stream.read_until("event: ready").await;

    let asked = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // actix waits up to its shutdown timeout (30 s) for open responses: an open stream used to
    // hold every stop that long. It ends the moment the stop begins now.
    assert!(
        stream.ends_within(Duration::from_secs(10)).await,
        "the stream ended when the service stopped"
    );
    let status = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
    .await
    .unwrap();
    let took = asked.elapsed();
    println!("stopped {:.0} ms after SIGTERM", took.as_secs_f64() * 1e3);
    let log = log.lock().unwrap().clone();
    let status = status.unwrap_or_else(|| panic!("the service did not stop:\n{log}"));
    assert!(status.success(), "exit {status}:\n{log}");
    assert!(log.contains("stopped"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_cannot_listen_ends_with_one_clear_line() {
    let app = TestApp::spawn().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = taken.local_addr().unwrap().to_string();
    let output = serve(&app, "api,worker", &bind).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("approval-ledger: cannot start the service: cannot listen on")
            && last.contains(&bind),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !stderr.contains("RabbitMQ"),
        "nothing else started: {stderr}"
    );
}

/// `user` decides `verdict` on request `id` through the instance at `address`.
async fn approve_at(app: &TestApp, address: &str, user: &str, id: &str) -> reqwest::Response {
    app.client
        .post(format!("{address}/v1/requests/{id}/approve"))
        .bearer_auth(app.token(user))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
}

/// Each instance keeps the requests it last wrote in memory. One that another instance moved on
/// since is caught (a refusal or a conflict decided on the old state is decided again on a fresh
/// load), so a cached state never decides anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_request_that_another_instance_moved_on_is_loaded_again() {
    let full = TestApp::spawn().await;
    let other = full.another_instance(API_ONLY).await;
    let other_at = format!("http://127.0.0.1:{}", other.port().unwrap());
    let id = full
        .submit_ok(&serde_json::json!({
            "external_ref": "CACHE-1", "kind": "leave", "title": "Leave", "requester": "dina",
            "steps": [{"approvers": ["alice", "carol"], "rule": "all"},
                      {"approvers": ["bob"], "rule": "any"},
                      {"approvers": ["erin", "frank"], "rule": "all"}]
        }))
        .await;
    // The full instance holds the request with alice's approval; the other completes step 1.
    assert_eq!(full.approve("alice", &id).await.status(), 200);
    assert_eq!(
        approve_at(&full, &other_at, "carol", &id).await.status(),
        200
    );
    // On its old state, bob is no approver of the current step: refused, then loaded again.
    assert_eq!(full.approve("bob", &id).await.status(), 200);
    // The other instance holds step 1 complete; erin's approval there conflicts, then succeeds.
    assert_eq!(full.approve("erin", &id).await.status(), 200);
    let answer = approve_at(&full, &other_at, "frank", &id).await;
    assert_eq!(answer.status(), 200);
    let answer: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(answer["status"], "approved");
    assert_eq!(answer["version"], 10);
    let client = &full.client;
    let stale = |address: String| async move {
        metric(
            client,
            &address,
            "approval_ledger_command_cache_total{result=\"stale\"}",
        )
        .await
    };
    assert!(
        stale(full.address.clone()).await >= 1.0,
        "bob's refusal was checked"
    );
    assert!(
        stale(other_at.clone()).await >= 1.0,
        "frank's conflict was caught"
    );
    // The store holds each decision once.
    assert_eq!(full.event_count().await, 10);
    other.shutdown().await.unwrap();
}
