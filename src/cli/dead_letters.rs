//! `approval-ledger dead-letters list` and `dead-letters retry ID|--all`: the deliveries that
//! exhausted their retries or were refused, and re-driving them. A re-driven delivery starts
//! with fresh attempts, keeps its event id, and still waits for earlier events of its request.

use std::time::Duration;

use anyhow::{bail, Context};
use sqlx::PgPool;

use crate::broker::{queues, Topology};
use crate::config::Settings;
use crate::store::deliveries;

/// Prints every dead letter, then how many poison messages wait in RabbitMQ's dead-letter queues.
pub async fn list(settings: &Settings, pool: &PgPool) -> anyhow::Result<()> {
    let dead = deliveries::dead_letters(pool, None).await?;
    if dead.is_empty() {
        println!("no dead letters");
    } else {
        println!(
            "{:>8}  {:<8}  {:<36}  {:<36}  {:>4}  {:<20}  {:>8}  {:<25}  last error",
            "id", "channel", "event", "request", "seq", "target", "attempts", "since"
        );
        for d in &dead {
            let target = d.shown_target();
            println!(
                "{:>8}  {:<8}  {:<36}  {:<36}  {:>4}  {:<20}  {:>8}  {:<25}  {}",
                d.id,
                d.channel,
                d.event_id,
                d.request_id,
                d.sequence,
                target,
                d.attempts,
                d.updated_at.format("%Y-%m-%dT%H:%M:%SZ"),
                d.last_error.as_deref().unwrap_or("")
            );
        }
        println!(
            "{} dead letter(s); re-drive with `dead-letters retry ID` or `--all`",
            dead.len()
        );
    }
    match poison_counts(settings).await {
        Ok(counts) => {
            for (queue, n) in counts {
                println!("RabbitMQ {queue}: {n} undecodable message(s)");
            }
        }
        Err(e) => println!("RabbitMQ dead-letter queues: not reachable ({e})"),
    }
    Ok(())
}

/// Re-drives dead letter `id`, or all of them.
pub async fn retry(pool: &PgPool, id: Option<i64>, all: bool) -> anyhow::Result<()> {
    let target = match (id, all) {
        (Some(id), false) => Some(id),
        (None, true) => None,
        _ => bail!("name one dead letter's ID, or --all"),
    };
    let n = deliveries::retry_dead(pool, target).await?;
    if n == 0 {
        match target {
            Some(id) => bail!("no dead letter with id {id}"),
            None => println!("no dead letters to retry"),
        }
    } else {
        println!("re-driven: {n}");
    }
    Ok(())
}

/// Messages in each work queue's dead-letter queue.
async fn poison_counts(settings: &Settings) -> anyhow::Result<Vec<(String, u32)>> {
    let topology = Topology::new(&settings.broker.exchange);
    let counts = async {
        let connection =
            queues::connect(settings.broker.url.expose(), Duration::from_secs(5)).await?;
        let dead: Vec<String> = [&topology.legacy_sync, &topology.push]
            .into_iter()
            .map(|queue| Topology::dead_letter_queue(queue))
            .collect();
        let depths = queues::depths(&connection, &dead).await;
        let _ = connection.close(200, "bye".into()).await;
        depths
            .into_iter()
            .map(|(name, depth)| {
                depth
                    .map(|d| (name, d.messages))
                    .map_err(anyhow::Error::from)
            })
            .collect::<anyhow::Result<Vec<_>>>()
    };
    tokio::time::timeout(Duration::from_secs(5), counts)
        .await
        .context("timed out")?
}
