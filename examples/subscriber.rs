//! A third-party subscriber: binds its own queue to approval-ledger's exchange and prints every
//! event of one system, deduplicating on `event_id` (delivery is at least once).
//!
//! ```sh
//! cargo run --example subscriber -- erp            # events of the `erp` system
//! AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f EXCHANGE=approval.events \
//!     cargo run --example subscriber -- '*'        # every system
//! ```
//!
//! The queue is durable and quorum, so events published while the subscriber is down wait for
//! it. A real subscriber keeps the ids it has processed in its own store, in the same
//! transaction as its effect.

use std::collections::HashSet;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let exchange = std::env::var("EXCHANGE").unwrap_or_else(|_| "approval.events".into());
    let system = std::env::args().nth(1).unwrap_or_else(|| "erp".into());
    let queue = format!(
        "example-subscriber.{}",
        if system == "*" { "all" } else { &system }
    );

    let connection = Connection::connect(&url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let mut arguments = FieldTable::default();
    arguments.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await?;
    // Routing keys are approval.<system>.<event_type>.
    let binding = format!("approval.{system}.#");
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            binding.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    eprintln!("queue {queue} bound to {exchange} with {binding}; waiting for events");

    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "example-subscriber".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut seen = HashSet::new();
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        let envelope: Value = serde_json::from_slice(&delivery.data)?;
        let event_id = envelope["event_id"].as_str().unwrap_or_default().to_owned();
        if seen.insert(event_id.clone()) {
            println!(
                "{} {} {} v{} {}",
                envelope["occurred_at"].as_str().unwrap_or_default(),
                envelope["external_ref"].as_str().unwrap_or_default(),
                envelope["event_type"].as_str().unwrap_or_default(),
                envelope["sequence"],
                event_id
            );
        }
        delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}
