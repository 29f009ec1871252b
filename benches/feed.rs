//! Micro-benchmark of the global feed's reader (`Feed::read_after_on`) against a seeded database
//! of its own on the local PostgreSQL (`BENCH_DATABASE_SERVER`, default
//! `postgres://postgres@127.0.0.1:5432`), dropped afterwards. Run with
//! `cargo bench -p approval-ledger --bench feed`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use approval_ledger::config::{DatabaseSettings, Secret};
use approval_ledger::feed::{Feed, Position};
use approval_ledger::store::db;
use criterion::{criterion_group, criterion_main, Criterion};
use sqlx::{Connection, PgConnection, PgPool};

/// Requests seeded; each gets `EVENTS_PER_REQUEST` events, in transactions of 100 requests.
const REQUESTS: i64 = 20_000;
const EVENTS_PER_REQUEST: i64 = 5;

fn server() -> String {
    std::env::var("BENCH_DATABASE_SERVER")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

async fn seed(pool: &PgPool) {
    let payload = serde_json::json!({"ApprovalRecorded": {"step": 0, "approver": "a00042",
        "comment": null, "at": "2026-01-05T09:00:00Z"}});
    for first in (0..REQUESTS).step_by(100) {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                                 payload, metadata) \
             SELECT 'ApprovalRequest', q.id, s, 'ApprovalRecorded', '1.0', $3, \
                    '{\"actor\": \"a00042\"}'::jsonb \
             FROM (SELECT r, gen_random_uuid()::text AS id \
                   FROM generate_series($1::int8, $1 + 99) r) q, \
                  generate_series(1, $2::int8) s \
             ORDER BY q.r, s",
        )
        .bind(first)
        .bind(EVENTS_PER_REQUEST)
        .bind(&payload)
        .execute(pool)
        .await
        .unwrap();
    }
    sqlx::query("ANALYZE events").execute(pool).await.unwrap();
}

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let name = format!("bench_feed_{}", uuid::Uuid::new_v4().simple());
    let settings = DatabaseSettings {
        url: Secret::new(format!("{}/{name}", server())),
        max_connections: 2,
        acquire_timeout_ms: 5000,
    };
    let pool = match runtime.block_on(db::prepare(&settings)) {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("feed bench skipped: no database ({e})");
            return;
        }
    };
    runtime.block_on(seed(&pool));
    let feed = Feed::new();
    let positions: Vec<Position> = runtime.block_on(async {
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("SELECT tx_id, global_id FROM events ORDER BY tx_id, global_id")
                .fetch_all(&pool)
                .await
                .unwrap();
        rows.into_iter()
            .step_by(997)
            .map(|(tx_id, global_id)| Position { tx_id, global_id })
            .collect()
    });

    let mut group = c.benchmark_group("feed");
    for limit in [1_i64, 100, 500] {
        let mut next = 0;
        group.bench_function(format!("read_after, batches of {limit}"), |b| {
            b.iter(|| {
                next = (next + 1) % positions.len();
                let batch = runtime
                    .block_on(async {
                        let mut conn = pool.acquire().await?;
                        feed.read_after_on(&mut conn, positions[next], black_box(limit))
                            .await
                    })
                    .unwrap();
                black_box(batch.events.len())
            })
        });
    }
    group.finish();

    runtime.block_on(async {
        pool.close().await;
        if let Ok(mut admin) = PgConnection::connect(&format!("{}/postgres", server())).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut admin)
                .await;
        }
    });
}

criterion_group!(feed, benches);
criterion_main!(feed);
