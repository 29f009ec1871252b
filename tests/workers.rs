//! Several worker instances on one database and broker: every event is published, each
//! request's events in order, and when one instance stops another carries on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use approval_ledger::broker::Envelope;
use approval_ledger::startup::Roles;
use common::{eventually, single_step, TestApp, AMQP};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_publish_every_event_in_order_per_request_and_survive_one_stopping() {
    // An API without workers, and two workers beside it.
    let app = TestApp::spawn_with(
        Roles {
            api: true,
            worker: false,
        },
        &[],
    )
    .await;
    let first = app
        .another_instance(Roles {
            api: false,
            worker: true,
        })
        .await;
    let second = app
        .another_instance(Roles {
            api: false,
            worker: true,
        })
        .await;

    // A third-party subscriber binds its own queue to the exchange (as docs/events.md shows).
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .unwrap();
    let queue = format!("{}.test-subscriber", app.broker.exchange);
    // A bind to an exchange that does not exist yet closes the channel: a fresh one per try.
    let declared = eventually(Duration::from_secs(30), || async {
        let channel = conn.create_channel().await.ok()?;
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .ok()?;
        channel
            .queue_bind(
                queue.as_str().into(),
                app.broker.exchange.as_str().into(),
                "approval.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .ok()?;
        Some(channel)
    })
    .await;
    let channel = declared.expect("the workers declared the exchange");
    let received = std::sync::Arc::new(Mutex::new(Vec::<Envelope>::new()));
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "subscriber".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let sink = received.clone();
    let collector = tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let envelope: Envelope = serde_json::from_slice(&delivery.data).unwrap();
            sink.lock().await.push(envelope);
            delivery.ack(BasicAckOptions::default()).await.unwrap();
        }
    });

    let body = |i: usize| {
        let mut b = single_step(&format!("W-{i}"), &["alice", "bob"]);
        b["steps"] = json!([{"approvers": ["alice"], "rule": "any"}, {"approvers": ["bob", "carol"], "rule": "all"}]);
        b
    };
    let mut ids = vec![];
    for i in 0..10 {
        let response = app.submit(&body(i)).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        ids.push(
            response.json::<serde_json::Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    for id in &ids[..5] {
        app.approve("alice", id).await;
    }
    // One worker stops (cleanly); the other takes over the relay.
    first.shutdown().await.unwrap();
    for id in &ids[5..] {
        app.approve("alice", id).await;
    }
    for id in &ids {
        app.approve("bob", id).await;
        app.approve("carol", id).await;
    }

    let (stored,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let all_seen = eventually(Duration::from_secs(30), || async {
        let seen: HashSet<_> = received.lock().await.iter().map(|e| e.event_id).collect();
        (seen.len() as i64 == stored).then_some(())
    })
    .await;
    assert!(all_seen.is_some(), "every stored event was published");

    let messages = received.lock().await.clone();
    let mut last_sequence: HashMap<uuid::Uuid, i64> = HashMap::new();
    let mut seen = HashSet::new();
    for envelope in &messages {
        if !seen.insert(envelope.event_id) {
            continue; // a duplicate (at least once) is allowed; its first copy counts
        }
        let last = last_sequence.entry(envelope.request_id).or_insert(0);
        assert_eq!(
            envelope.sequence,
            *last + 1,
            "request {} in order",
            envelope.request_id
        );
        *last = envelope.sequence;
        assert_eq!(envelope.system, "erp");
        assert!(envelope.external_ref.starts_with("W-"));
    }
    assert_eq!(last_sequence.len(), 10);
    assert!(
        last_sequence.values().all(|&s| s == 7),
        "submitted, alice, step, bob, carol, step, approved"
    );

    collector.abort();
    let _ = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "bye".into()).await;
    second.shutdown().await.unwrap();
}
