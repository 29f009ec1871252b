//! How deep the service's queues are: a passive declare of each, which RabbitMQ answers with
//! its ready messages and its consumers without creating or changing anything. The operators'
//! console and `dead-letters list` read them, on the supervised connection where the process
//! has one, or on a short-lived connection of their own ([`connect`]).

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use lapin::{Connection, ConnectionProperties};

use crate::broker::{bounded, BrokerCallError, Topology};

/// A queue as RabbitMQ counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    /// Its name.
    pub name: String,
    /// Messages ready to be delivered (not those delivered and awaiting their ack).
    pub messages: u32,
    /// Consumers attached.
    pub consumers: u32,
}

/// Every queue the service declares for `topology`'s exchange: the two work queues, their
/// dead-letter queues, and the queue of the types no work queue wants.
pub fn declared(topology: &Topology) -> Vec<String> {
    vec![
        topology.legacy_sync.clone(),
        Topology::dead_letter_queue(&topology.legacy_sync),
        topology.push.clone(),
        Topology::dead_letter_queue(&topology.push),
        topology.unclaimed.clone(),
    ]
}

/// The depth of each queue of `names`, in order. Each is declared on a channel of its own: a
/// passive declare of a queue that does not exist closes its channel, and must not hide the
/// others.
pub async fn depths(
    connection: &Connection,
    names: &[String],
) -> Vec<(String, Result<QueueDepth, BrokerCallError>)> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        out.push((name.clone(), depth(connection, name).await));
    }
    out
}

async fn depth(connection: &Connection, name: &str) -> Result<QueueDepth, BrokerCallError> {
    let channel = bounded("open a channel", connection.create_channel()).await?;
    let declared = bounded(
        "declare a queue passively",
        channel.queue_declare(
            name.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await;
    if declared.is_ok() {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            channel.close(200, ShortString::from("counted")),
        )
        .await;
    }
    let declared = declared?;
    Ok(QueueDepth {
        name: name.to_owned(),
        messages: declared.message_count(),
        consumers: declared.consumer_count(),
    })
}

/// A short-lived connection to `url`, within `timeout`, for a process that supervises none.
/// Close it when done.
pub async fn connect(url: &str, timeout: Duration) -> Result<Connection, lapin::Error> {
    match tokio::time::timeout(
        timeout,
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(lapin::Error::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connecting to RabbitMQ timed out",
        ))),
    }
}
