//! approval-ledger: one approval inbox in front of many legacy systems, on an event-sourced
//! PostgreSQL ledger.
//!
//! # Layout
//! - [`config`]: layered settings (defaults, file, environment) and the `Secret` type.
//! - [`store`]: the event store (cqrs-es on postgres-es), migrations, the gap-free global feed,
//!   feed checkpoints, idempotency answers, the commit signal. All write-side SQL is here.
//! - [`ledger`]: the command path: load, decide (the aggregate), append, read-your-writes.
//! - [`projector`]: runs the projections of the `approval_projections` crate over the feed as a
//!   group, checkpoints and read models in one transaction.
//! - [`progress`]: how far the projections are, for read-your-writes.
//! - [`expiry`]: expires overdue requests.
//! - [`audit`]: tamper evidence (hash chains, the audit reader and its checkpoints), `audit
//!   verify`, point-in-time replay and export; [`rebuild`]: `projections rebuild`.
//! - [`http`]: the API (actix-web), one module per resource, the error table, auth, OpenAPI.
//! - [`metrics`], [`telemetry`]: Prometheus metrics and tracing.
//! - [`broker`]: the RabbitMQ connection's supervisor and the topology; [`relay`]: the feed,
//!   published to RabbitMQ with confirms.
//! - [`handlers`]: the legacy-sync and push consumers and the delivery scheduler.
//! - [`stream`]: the live stream of inbox changes behind `GET /v1/stream`.
//! - [`startup`]: builds and runs the roles; [`shutdown`]: stopping; [`cli`]: the command line.
//!
//! The domain rules are not here: they are in the `approval_aggregates` crate, and the read
//! models' folding and queries in `approval_projections`.
#![forbid(unsafe_code)]

pub mod audit;
pub mod broker;
pub mod cli;
pub mod config;
pub mod expiry;
pub mod handlers;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod progress;
pub mod projector;
pub mod rebuild;
pub mod relay;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod stream;
pub mod telemetry;
