//! approval-ledger: one approval inbox in front of many legacy systems, on an event-sourced
//! PostgreSQL ledger. docs/architecture.md draws the whole trip of a decision; this is where
//! each part of it lives.
//!
//! # Layout
//! - [`config`]: layered settings (defaults, file, environment) and the `Secret` type.
//! - [`ledger`]: the command path: load, decide (the aggregate), append, read-your-writes.
//! - [`store`]: the event store (cqrs-es on postgres-es), the append, migrations, idempotency
//!   answers, deliveries, devices, the audit tables.
//! - [`feed`]: the global feed, the spine every reader follows: reading it gap-free, the one
//!   [`feed::follower::Follower`] loop, checkpoints, the commit signal every process announces
//!   and hears, the read models' progress, what each reader declares it wants.
//! - The readers of the feed, each a [`feed::follower::Consumer`]: [`projector`] (the read
//!   models, and the audit reader), [`relay`] (to RabbitMQ), [`handlers::sweep`] (the safety
//!   net under the work queues), [`stream`] (`GET /v1/stream`), [`rebuild`] (`projections
//!   rebuild`).
//! - [`broker`]: the RabbitMQ connection's supervisor, the topology, the message envelope.
//! - [`handlers`]: the legacy-sync and push consumers of RabbitMQ and the delivery scheduler.
//! - [`signing`]: HMAC signatures and bearer tokens, for the API, the scheduler and the CLI.
//! - [`audit`]: tamper evidence (hash chains, the audit reader and its checkpoints), `audit
//!   verify`, point-in-time replay and export.
//! - [`timers`]: the timer loop, firing due reminders, overdue notices, escalations and expiries.
//! - [`http`]: the API (actix-web), one module per resource, the error table, auth, OpenAPI;
//!   the approvers' web app at `/app/` (`http::webapp`, its files in `src/http/pages/app/`),
//!   and the operators' console page and its data (`http::console`).
//! - [`metrics`], [`telemetry`]: Prometheus metrics and tracing; [`series`]: the last hour per
//!   minute (commands per second, commit-to-push latency) for the operators' console.
//! - [`startup`]: builds and runs the roles; [`shutdown`]: stopping; [`cli`]: the command line.
//!
//! The domain rules are not here: they are in the `approval_aggregates` crate; the feed's types
//! in `approval_feed`; the read models' folding and queries in `approval_projections`.
#![forbid(unsafe_code)]

pub mod audit;
pub mod broker;
pub mod cli;
pub mod config;
pub mod feed;
pub mod handlers;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod projector;
pub mod rebuild;
pub mod relay;
pub mod series;
pub mod shutdown;
pub mod signing;
pub mod startup;
pub mod store;
pub mod stream;
pub mod telemetry;
pub mod timers;
