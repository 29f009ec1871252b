//! The operators' console: the page `GET /console/` (served to anyone, HTML, CSS and script
//! embedded in the binary from `pages/console/`) and the data it shows, from routes that need
//! the role `admin`: `GET /v1/admin/overview` (feed readers and their lag, the relay, RabbitMQ's
//! queues, deliveries per system, SLA breaches, the last hour per minute), `GET
//! /v1/admin/dead-letters` and `POST /v1/admin/dead-letters/{id}/retry`, which re-drives one
//! as `approval-ledger dead-letters retry ID` does, through the same store function.
//!
//! Every read here is an admin's and may cost a little; none is on the command path. The
//! queues are counted by passive declares, on the supervised connection where this process has
//! one, else on a short-lived one; a broker that is down makes `queues` null with an error, never
//! a 5xx.

use std::time::Duration;

use actix_web::http::header::HeaderValue;
use actix_web::{get, post, web, HttpResponse};
use approval_aggregates::Actor;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use crate::broker::{queues, Topology};
use crate::config::Secret;
use crate::feed::{checkpoints, read as feed, Position};
use crate::http::auth::Person;
use crate::http::embedded::{self, Asset};
use crate::http::errors::{ApiError, Code, ErrorBody};
use crate::http::{AppState, BrokerProbe};
use crate::relay::RELAY;
use crate::store::deliveries;

/// The part of the OpenAPI document these routes make; [`crate::http::api_doc`] merges it in.
#[derive(OpenApi)]
#[openapi(
    paths(overview, dead_letters, retry_dead_letter),
    components(schemas(
        Overview,
        PositionOut,
        ReaderOut,
        RelayOut,
        QueueOut,
        DeliveryOut,
        SlaOut,
        OverdueOut,
        SeriesOut,
        MinuteOut,
        DeadLettersAnswer,
        DeadLetterOut,
        RetryAnswer,
    ))
)]
pub struct ConsoleDoc;

/// What the console needs of the configuration.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Each configured legacy system: its key and its name.
    pub systems: Vec<(String, String)>,
    /// Where RabbitMQ is, for a process that supervises no connection (`--role api`).
    pub broker_url: Secret,
    /// The names the service declares in RabbitMQ.
    pub topology: Topology,
}

/// Events a reader's lag is counted up to: past it the page says "at least".
const LAG_CAP: i64 = 10_000;
/// Overdue steps listed.
const OVERDUE_SHOWN: i64 = 20;
/// Dead letters listed.
const DEAD_LETTERS_SHOWN: i64 = 500;
/// How long the queues' count may take before the overview answers without it.
const QUEUES_TIMEOUT: Duration = Duration::from_secs(3);

/// The console's data routes are for administrators alone.
fn admin(person: Person, what: &str) -> Result<Actor, ApiError> {
    if person.0.roles.admin {
        Ok(person.0)
    } else {
        Err(ApiError::new(
            Code::Forbidden,
            format!("{what} needs the role admin"),
        ))
    }
}

/// A position in the global feed.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct PositionOut {
    /// The id of the transaction that wrote the event.
    pub tx_id: i64,
    /// The event's identity.
    pub global_id: i64,
}

impl From<Position> for PositionOut {
    fn from(p: Position) -> Self {
        Self {
            tx_id: p.tx_id,
            global_id: p.global_id,
        }
    }
}

/// A reader of the feed with a checkpoint.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReaderOut {
    /// Its checkpoint's name (`requests`, `inbox`, `lists`, `absences`, `audit`, `relay`,
    /// `sweeper`).
    pub name: String,
    /// Where it stands.
    pub position: PositionOut,
    /// When its checkpoint last moved.
    pub updated_at: DateTime<Utc>,
    /// Events it has yet to read, counted up to `lag_capped`'s cap.
    pub lag_events: i64,
    /// Whether there are at least as many as counted (10000).
    pub lag_capped: bool,
    /// Age of the oldest event it has yet to read, in seconds (0 when it is caught up).
    pub lag_seconds: f64,
}

/// The relay to RabbitMQ.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RelayOut {
    /// Where it stands (null before it first ran).
    pub position: Option<PositionOut>,
    /// Events it has yet to publish.
    pub lag_events: i64,
    /// Age of the oldest of them, in seconds.
    pub lag_seconds: f64,
    /// Whether the broker connection is up: this process's supervised one (`connection`
    /// `supervised`), or, in a process without one, a short-lived connection of the console's
    /// (`probe`).
    pub broker_connected: bool,
    /// `supervised` or `probe`.
    pub connection: String,
}

/// A queue the service declared, as RabbitMQ counts it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueueOut {
    /// Its name.
    pub name: String,
    /// Messages ready to be delivered (null when it could not be counted).
    pub messages_ready: Option<u32>,
    /// Consumers attached.
    pub consumers: Option<u32>,
    /// Why it could not be counted (a queue not declared yet, say).
    pub error: Option<String>,
}

/// The deliveries of one channel to one system (or, for pushes, to every device).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryOut {
    /// `callback` or `push`.
    pub channel: String,
    /// The system's key (callbacks); null for pushes.
    pub system: Option<String>,
    /// The system's name from the configuration, when it is configured.
    pub name: Option<String>,
    /// Jobs waiting for their first attempt, or in it.
    pub pending: i64,
    /// Jobs waiting for another attempt after a failed one.
    pub retrying: i64,
    /// Dead letters.
    pub dead: i64,
    /// The latest error of the jobs not delivered.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<DateTime<Utc>>,
}

/// A current step of a pending request past its deadline.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OverdueOut {
    /// The request.
    pub request_id: Uuid,
    /// Its source system.
    pub system: String,
    /// Its reference there.
    pub external_ref: String,
    /// Its title.
    pub title: String,
    /// The current step's index, from 0.
    pub step: i32,
    /// When the step was due.
    pub due_at: DateTime<Utc>,
}

/// SLA breaches: current steps past their deadline.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SlaOut {
    /// How many.
    pub overdue: i64,
    /// The longest overdue, up to 20, longest first.
    pub oldest: Vec<OverdueOut>,
}

/// One minute of the last hour.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MinuteOut {
    /// The minute's start.
    pub at: DateTime<Utc>,
    /// Commands appended per second (null for a minute before this process started).
    pub commands_per_second: Option<f64>,
    /// Pushes delivered.
    pub pushes: u64,
    /// Their median commit-to-push latency, in milliseconds (null without pushes).
    pub push_p50_ms: Option<f64>,
    /// Their 99th percentile, in milliseconds.
    pub push_p99_ms: Option<f64>,
}

/// The last hour per minute, as this process saw it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SeriesOut {
    /// `process`: the commands this process's API appended and the pushes its scheduler
    /// delivered, not the whole service's.
    pub scope: String,
    /// When this process started counting.
    pub since: DateTime<Utc>,
    /// Sixty minutes, oldest first, the current one last (so far).
    pub minutes: Vec<MinuteOut>,
}

/// Everything the console shows but the dead letters.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Overview {
    /// When it was read.
    pub at: DateTime<Utc>,
    /// The feed's head: the last event no running transaction can precede (null for an empty
    /// store).
    pub feed_head: Option<PositionOut>,
    /// Every reader with a checkpoint, by name.
    pub readers: Vec<ReaderOut>,
    /// The relay.
    pub relay: RelayOut,
    /// The queues the service declared; null when RabbitMQ could not be reached.
    pub queues: Option<Vec<QueueOut>>,
    /// Why `queues` is null.
    pub queues_error: Option<String>,
    /// Deliveries not yet made, per channel and system (every configured system, and pushes).
    pub deliveries: Vec<DeliveryOut>,
    /// SLA breaches.
    pub sla: SlaOut,
    /// Commands per second and commit-to-push latency over the last hour.
    pub series: SeriesOut,
}

/// Where every reader of the feed stands, the feed's head, and the relay (role `admin`).
#[utoipa::path(
    get, path = "/v1/admin/overview", tag = "admin",
    responses(
        (status = 200, description = "The console's view; `queues` is null with `queues_error` when RabbitMQ cannot be reached", body = Overview),
        (status = 401, body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller lacks the role admin", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[get("/v1/admin/overview")]
pub async fn overview(
    state: web::Data<AppState>,
    person: Person,
) -> Result<HttpResponse, ApiError> {
    admin(person, "the overview")?;
    let now = Utc::now();
    let pool = &state.pool;
    let (readers, summary, sla, queues) = tokio::join!(
        readers(pool, now),
        deliveries::summary(pool),
        approval_projections::requests::overdue_steps(pool, now, OVERDUE_SHOWN),
        count_queues(&state),
    );
    let (feed_head, readers) = readers?;
    let (overdue, oldest) = sla?;
    let relay = readers.iter().find(|r| r.name == RELAY);
    let (broker_connected, connection) = match &state.broker {
        BrokerProbe::Supervised(broker) => (broker.is_connected(), "supervised"),
        BrokerProbe::Address(_) => (queues.is_ok(), "probe"),
    };
    let relay = RelayOut {
        position: relay.map(|r| r.position),
        lag_events: relay.map_or(0, |r| r.lag_events),
        lag_seconds: relay.map_or(0.0, |r| r.lag_seconds),
        broker_connected,
        connection: connection.into(),
    };
    let (queues, queues_error) = match queues {
        Ok(q) => (Some(q), None),
        Err(e) => (None, Some(e)),
    };
    let series = &state.metrics.series;
    Ok(HttpResponse::Ok().json(Overview {
        at: now,
        feed_head,
        readers,
        relay,
        queues,
        queues_error,
        deliveries: per_system(&state.console.systems, summary?),
        sla: SlaOut {
            overdue,
            oldest: oldest
                .into_iter()
                .map(|o| OverdueOut {
                    request_id: o.request_id,
                    system: o.system,
                    external_ref: o.external_ref,
                    title: o.title,
                    step: o.step,
                    due_at: o.due_at,
                })
                .collect(),
        },
        series: SeriesOut {
            scope: "process".into(),
            since: series.started(),
            minutes: series
                .view(now)
                .into_iter()
                .map(|m| MinuteOut {
                    at: m.at,
                    commands_per_second: m.commands_per_second,
                    pushes: m.pushes,
                    push_p50_ms: m.push_p50_ms,
                    push_p99_ms: m.push_p99_ms,
                })
                .collect(),
        },
    }))
}

/// The feed's head and every reader with its lag; readers at the same position (the read
/// models move together) are counted once.
async fn readers(
    pool: &sqlx::PgPool,
    now: DateTime<Utc>,
) -> Result<(Option<PositionOut>, Vec<ReaderOut>), sqlx::Error> {
    let listed = checkpoints::listed(pool).await?;
    let head = {
        let mut conn = pool.acquire().await?;
        feed::head(&mut conn).await?
    };
    let mut counted: Vec<(Position, i64, Option<DateTime<Utc>>)> = vec![];
    let mut out = Vec::with_capacity(listed.len());
    for reader in listed {
        let (behind, oldest) = match counted.iter().find(|(p, _, _)| *p == reader.position) {
            Some((_, behind, oldest)) => (*behind, *oldest),
            None => {
                let (behind, oldest) = feed::lag(pool, reader.position, LAG_CAP).await?;
                counted.push((reader.position, behind, oldest));
                (behind, oldest)
            }
        };
        out.push(ReaderOut {
            name: reader.name,
            position: reader.position.into(),
            updated_at: reader.updated_at,
            lag_events: behind,
            lag_capped: behind >= LAG_CAP,
            lag_seconds: oldest
                .map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0),
        });
    }
    let head = (head != Position::START).then(|| head.into());
    Ok((head, out))
}

/// Every configured system's callbacks and the pushes, with what the store holds of them.
fn per_system(
    systems: &[(String, String)],
    summary: Vec<deliveries::TargetSummary>,
) -> Vec<DeliveryOut> {
    let name_of = |key: &str| {
        systems
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, name)| name.clone())
    };
    let mut out: Vec<DeliveryOut> = summary
        .into_iter()
        .map(|s| DeliveryOut {
            name: s.system.as_deref().and_then(name_of),
            channel: s.channel,
            system: s.system,
            pending: s.pending,
            retrying: s.retrying,
            dead: s.dead,
            last_error: s.last_error,
            last_error_at: s.last_error_at,
        })
        .collect();
    let idle = |channel: &str, system: Option<&str>| DeliveryOut {
        channel: channel.into(),
        system: system.map(str::to_owned),
        name: system.and_then(name_of),
        pending: 0,
        retrying: 0,
        dead: 0,
        last_error: None,
        last_error_at: None,
    };
    for (key, _) in systems {
        if !out
            .iter()
            .any(|d| d.channel == "callback" && d.system.as_deref() == Some(key))
        {
            out.push(idle("callback", Some(key)));
        }
    }
    if !out.iter().any(|d| d.channel == "push") {
        out.push(idle("push", None));
    }
    out.sort_by(|a, b| (&a.channel, &a.system).cmp(&(&b.channel, &b.system)));
    out
}

/// The depth of every queue the service declares, or why RabbitMQ could not be asked.
async fn count_queues(state: &AppState) -> Result<Vec<QueueOut>, String> {
    let names = queues::declared(&state.console.topology);
    let counted = async {
        match &state.broker {
            BrokerProbe::Supervised(broker) => match broker.current() {
                Some(session) => Ok(queues::depths(&session.connection, &names).await),
                None => Err("the connection to RabbitMQ is down".to_owned()),
            },
            BrokerProbe::Address(_) => {
                let connection = queues::connect(state.console.broker_url.expose(), QUEUES_TIMEOUT)
                    .await
                    .map_err(|e| format!("cannot connect to RabbitMQ: {e}"))?;
                let depths = queues::depths(&connection, &names).await;
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    connection.close(200, "counted".into()),
                )
                .await;
                Ok(depths)
            }
        }
    };
    let depths = tokio::time::timeout(QUEUES_TIMEOUT, counted)
        .await
        .map_err(|_| "RabbitMQ did not answer in time".to_owned())??;
    Ok(depths
        .into_iter()
        .map(|(name, depth)| match depth {
            Ok(d) => QueueOut {
                name,
                messages_ready: Some(d.messages),
                consumers: Some(d.consumers),
                error: None,
            },
            Err(e) => QueueOut {
                name,
                messages_ready: None,
                consumers: None,
                error: Some(e.to_string()),
            },
        })
        .collect())
}

/// A dead letter, with the fields `approval-ledger dead-letters list` shows.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetterOut {
    /// Its id: what `POST /v1/admin/dead-letters/{id}/retry` takes.
    pub id: i64,
    /// `callback` or `push`.
    pub channel: String,
    /// The event it carries.
    pub event_id: Uuid,
    /// The event's request.
    pub request_id: Uuid,
    /// The event's sequence in its request.
    pub sequence: i64,
    /// The system's key; for a push only the start of the device token.
    pub target: String,
    /// Attempts made.
    pub attempts: i32,
    /// When it became a dead letter.
    pub since: DateTime<Utc>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// The dead letters.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLettersAnswer {
    /// The oldest first, up to 500.
    pub items: Vec<DeadLetterOut>,
    /// How many there are in all.
    pub total: i64,
}

/// Every dead letter, oldest first (role `admin`).
#[utoipa::path(
    get, path = "/v1/admin/dead-letters", tag = "admin",
    responses(
        (status = 200, body = DeadLettersAnswer),
        (status = 401, body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller lacks the role admin", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[get("/v1/admin/dead-letters")]
pub async fn dead_letters(
    state: web::Data<AppState>,
    person: Person,
) -> Result<HttpResponse, ApiError> {
    admin(person, "listing dead letters")?;
    let (listed, counts) = tokio::join!(
        deliveries::dead_letters(&state.pool, Some(DEAD_LETTERS_SHOWN)),
        deliveries::dead_counts(&state.pool),
    );
    let items = listed?
        .into_iter()
        .map(|d| DeadLetterOut {
            target: d.shown_target(),
            id: d.id,
            channel: d.channel,
            event_id: d.event_id,
            request_id: d.request_id,
            sequence: d.sequence,
            attempts: d.attempts,
            since: d.updated_at,
            last_error: d.last_error,
        })
        .collect();
    Ok(HttpResponse::Ok().json(DeadLettersAnswer {
        items,
        total: counts?.iter().map(|(_, n)| n).sum(),
    }))
}

/// A re-driven dead letter.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RetryAnswer {
    /// Its id.
    pub id: i64,
    /// `pending`: in line again, with fresh attempts.
    pub status: String,
}

/// Re-drives dead letter `id` (role `admin`), as `approval-ledger dead-letters retry ID` does.
#[utoipa::path(
    post, path = "/v1/admin/dead-letters/{id}/retry", tag = "admin",
    params(("id" = i64, Path, description = "The dead letter's id, as the list gives it")),
    responses(
        (status = 200, description = "In line again with fresh attempts; it keeps its event id and still waits for earlier events of its request", body = RetryAnswer),
        (status = 400, description = "`%00` in the URL", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller lacks the role admin", body = ErrorBody),
        (status = 404, description = "`not_found`: no dead letter has this id (it may have been re-driven already)", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[post("/v1/admin/dead-letters/{id}/retry")]
pub async fn retry_dead_letter(
    state: web::Data<AppState>,
    person: Person,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    admin(person, "retrying a dead letter")?;
    let unknown = || ApiError::new(Code::NotFound, "no such dead letter");
    let id: i64 = path.into_inner().parse().map_err(|_| unknown())?;
    if deliveries::retry_dead(&state.pool, Some(id)).await? == 0 {
        return Err(unknown());
    }
    tracing::info!(dead_letter = id, "dead letter re-driven from the console");
    Ok(HttpResponse::Ok().json(RetryAnswer {
        id,
        status: "pending".into(),
    }))
}

/// The page's own rules: its script and style come from this origin only and it talks only to
/// it, so nothing it shows (an error text from a legacy system, say) can run as script.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The page's files.
static FILES: &[Asset] = &[
    Asset {
        path: "/console/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("pages/console/index.html"),
    },
    Asset {
        path: "/console/console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("pages/console/console.js"),
    },
    Asset {
        path: "/console/console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("pages/console/console.css"),
    },
];

/// Registers the console's routes: its data, and its page's files, which take GET and HEAD
/// only, like the web app's.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(overview)
        .service(dead_letters)
        .service(retry_dead_letter);
    embedded::register(cfg, "/console", FILES, |_, _| {
        Some(HeaderValue::from_static(PAGE_POLICY))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_configured_system_and_the_pushes_have_a_row_even_when_idle() {
        let systems = vec![
            ("erp".to_owned(), "ERP".to_owned()),
            ("hr".to_owned(), "HR".to_owned()),
        ];
        let held = vec![deliveries::TargetSummary {
            channel: "callback".into(),
            system: Some("hr".into()),
            pending: 1,
            retrying: 2,
            dead: 3,
            last_error: Some("answered 503".into()),
            last_error_at: None,
        }];
        let rows = per_system(&systems, held);
        let keys: Vec<(&str, Option<&str>)> = rows
            .iter()
            .map(|r| (r.channel.as_str(), r.system.as_deref()))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("callback", Some("erp")),
                ("callback", Some("hr")),
                ("push", None)
            ]
        );
        assert_eq!(rows[1].dead, 3);
        assert_eq!(rows[1].name.as_deref(), Some("HR"));
    }
}
