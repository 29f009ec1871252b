//! Driving the service over HTTP with keep-alive connections, as legacy systems and phones do.
//!
//! - Phase 1, open loop at a fixed rate: every command has an intended send time on a fixed
//!   schedule and its latency is counted from then, so a slow answer cannot hide the commands
//!   queued behind it (no coordinated omission). One command in three is a signed submission,
//!   two are decisions by a pending approver of a pending request; inbox reads run alongside at
//!   their own rate. Pushes and callbacks noted by the fake endpoints are set against the
//!   `recorded_at` of the event they name.
//! - Phase 2, closed loop: a fixed number of commands in flight, each sent when the previous one
//!   is answered; every level is tried and the best with under 1% errors is the throughput.
//!
//! A request is decided by one caller at a time (as one approver's tap at a time), and the load
//! generator predicts each decision's effect with the aggregate itself, so every decision it
//! sends is one the service should accept: a failure is a failure of the service.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use approval_aggregates::{Request, Status, Verdict};
use approval_ledger::config::Settings;
use approval_ledger::signing::{issue_token, signature, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::fake;
use crate::model::{self, Population};
use crate::stats::{self, CpuCost, FixedRate, Level, Recorder, Results, Summary};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// The service, such as `http://127.0.0.1:8080`.
    pub base: String,
    /// The fake endpoints, when they run.
    pub fake: Option<String>,
    /// Phase 1's commands per second.
    pub rate: f64,
    /// Phase 1's inbox reads per second.
    pub inbox_rate: f64,
    /// Seconds of each measured phase (and of each level of phase 2).
    pub duration: Duration,
    /// Unmeasured seconds at phase 1's rate first.
    pub warmup: Duration,
    /// Phase 2's levels of commands in flight.
    pub concurrency: Vec<usize>,
    /// Devices to register (one per approver, up to this many).
    pub devices: usize,
    /// The people.
    pub population: Population,
    /// How long to wait for an answer.
    pub timeout: Duration,
    /// The service's process id, to read its CPU time.
    pub service_pid: Option<u32>,
}

/// CPU seconds (user + system) of process `pid` so far, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are plain.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    // utime and stime, in clock ticks of 1/100 s (USER_HZ on Linux).
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// Every process's CPU seconds so far, by pid, with its command name, from `/proc/<pid>/stat`.
fn all_processes() -> HashMap<u32, (String, f64)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_owned();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
            Some((pid, (comm, (ticks(11)? + ticks(12)?) / 100.0)))
        })
        .collect()
}

/// The machine's busy and idle CPU seconds so far, over every core, from `/proc/stat`.
fn machine_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0.0);
    let busy: f64 = ticks.iter().take(8).sum::<f64>() - idle;
    Some((busy / 100.0, idle / 100.0))
}

/// The processes RabbitMQ runs as.
const RABBITMQ: [&str; 4] = ["beam.smp", "erl_child_setup", "epmd", "inet_gethost"];

/// CPU time of every process of the machine, sorted by what it is, and of the machine as a
/// whole, so that a phase can be priced in CPU per command: a measure that the other work on a
/// shared machine disturbs far less than throughput.
#[derive(Debug, Clone, Default)]
struct CpuClock {
    service: Option<f64>,
    /// The PostgreSQL backends serving this database.
    backends: HashMap<u32, f64>,
    /// Every other PostgreSQL process (WAL writer, checkpointer, autovacuum, other databases).
    postgres: HashMap<u32, f64>,
    rabbitmq: HashMap<u32, f64>,
    /// The fake legacy and FCM endpoints (the other `loadgen` processes).
    fakes: HashMap<u32, f64>,
    loadgen: Option<f64>,
    /// The machine's busy and idle seconds.
    machine: Option<(f64, f64)>,
    /// Transactions committed and rolled back in this database so far (every statement outside
    /// a transaction is one), as PostgreSQL's statistics show them (flushed about every second).
    transactions: Option<i64>,
    /// Rows inserted, updated and deleted in this database's tables so far (the same
    /// statistics, so the same lag), in all and by table.
    rows_written: Option<i64>,
    rows_by_table: HashMap<String, [i64; 3]>,
}

impl CpuClock {
    async fn read(pool: &PgPool, service_pid: Option<u32>) -> Self {
        let pids: Vec<(i32,)> =
            sqlx::query_as("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
                .fetch_all(pool)
                .await
                .unwrap_or_default();
        let backend_pids: Vec<u32> = pids
            .into_iter()
            .filter_map(|(pid,)| u32::try_from(pid).ok())
            .collect();
        let transactions: Option<(i64,)> = sqlx::query_as(
            "SELECT (xact_commit + xact_rollback)::int8 FROM pg_stat_database \
             WHERE datname = current_database()",
        )
        .fetch_optional(pool)
        .await
        .ok()
        .flatten();
        let by_table: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT relname::text, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables",
        )
        .fetch_all(pool)
        .await
        .unwrap_or_default();
        let rows_written = (!by_table.is_empty())
            .then(|| by_table.iter().map(|(_, i, u, d)| i + u + d).sum::<i64>());
        let rows_by_table = by_table
            .into_iter()
            .map(|(table, i, u, d)| (table, [i, u, d]))
            .collect();
        let own = std::process::id();
        let mut clock = Self {
            transactions: transactions.map(|(n,)| n),
            rows_written,
            rows_by_table,
            service: service_pid.and_then(cpu_seconds),
            loadgen: cpu_seconds(own),
            machine: machine_seconds(),
            ..Self::default()
        };
        for (pid, (comm, seconds)) in all_processes() {
            if Some(pid) == service_pid || pid == own {
                continue;
            }
            let bucket = if backend_pids.contains(&pid) {
                &mut clock.backends
            } else if comm == "postgres" {
                &mut clock.postgres
            } else if RABBITMQ.contains(&comm.as_str()) {
                &mut clock.rabbitmq
            } else if comm == "loadgen" {
                &mut clock.fakes
            } else {
                continue;
            };
            bucket.insert(pid, seconds);
        }
        clock
    }

    /// CPU milliseconds per command between `self` and `later`, for `commands` commands.
    fn per_command(&self, later: &Self, commands: u64) -> CpuCost {
        let n = commands.max(1) as f64;
        let ms = |seconds: f64| seconds * 1000.0 / n;
        let delta = |a: Option<f64>, b: Option<f64>| Some(ms(b? - a?));
        // A process that started during the phase counts from zero; one that ended is lost to
        // its bucket and lands in "the rest".
        let grown = |before: &HashMap<u32, f64>, after: &HashMap<u32, f64>| {
            ms(after
                .iter()
                .map(|(pid, end)| end - before.get(pid).copied().unwrap_or(0.0))
                .sum())
        };
        let machine = match (self.machine, later.machine) {
            (Some((busy0, idle0)), Some((busy1, idle1))) => {
                Some((ms(busy1 - busy0), ms(idle1 - idle0)))
            }
            _ => None,
        };
        let mut cost = CpuCost {
            service_ms: delta(self.service, later.service),
            postgres_ms: Some(grown(&self.backends, &later.backends)),
            loadgen_ms: delta(self.loadgen, later.loadgen),
            postgres_other_ms: Some(grown(&self.postgres, &later.postgres)),
            rabbitmq_ms: Some(grown(&self.rabbitmq, &later.rabbitmq)),
            fakes_ms: Some(grown(&self.fakes, &later.fakes)),
            machine_ms: machine.map(|(busy, _)| busy),
            idle_ms: machine.map(|(_, idle)| idle),
            rest_ms: None,
            transactions: match (self.transactions, later.transactions) {
                (Some(a), Some(b)) => Some((b - a) as f64 / n),
                _ => None,
            },
            rows_written: match (self.rows_written, later.rows_written) {
                (Some(a), Some(b)) => Some((b - a) as f64 / n),
                _ => None,
            },
            rows_by_table: {
                let mut rows: Vec<(String, [f64; 3])> = later
                    .rows_by_table
                    .iter()
                    .map(|(table, after)| {
                        let before = self.rows_by_table.get(table).copied().unwrap_or_default();
                        let per = |k: usize| (after[k] - before[k]) as f64 / n;
                        (table.clone(), [per(0), per(1), per(2)])
                    })
                    .filter(|(_, r)| r.iter().sum::<f64>() >= 0.05)
                    .collect();
                rows.sort_by(|a, b| b.1.iter().sum::<f64>().total_cmp(&a.1.iter().sum::<f64>()));
                rows
            },
        };
        cost.rest_ms = cost.machine_ms.map(|busy| busy - cost.known_ms());
        cost
    }
}

/// What every sender shares.
struct World {
    client: reqwest::Client,
    base: String,
    tokens: HashMap<String, String>,
    inbox_users: Vec<String>,
    secrets: Vec<(String, String)>,
    population: Population,
    idle: Mutex<VecDeque<Request>>,
    run_id: String,
    submitted: AtomicU64,
}

/// Which command a tick sends.
#[derive(Clone, Copy)]
enum Kind {
    Submit,
    Decide,
}

fn kind_of(tick: u64) -> Kind {
    match tick % 3 {
        0 => Kind::Submit,
        _ => Kind::Decide,
    }
}

fn failure(result: &Result<reqwest::Response, reqwest::Error>) -> String {
    match result {
        Ok(r) => format!("status {}", r.status().as_u16()),
        Err(e) if e.is_timeout() => "timeout".to_owned(),
        Err(e) if e.is_connect() => "connect".to_owned(),
        Err(_) => "transport".to_owned(),
    }
}

impl World {
    /// A signed submission from a random system; the new request joins the idle pool.
    async fn submit(&self, rng: &mut fastrand::Rng) -> Result<(), String> {
        let n = self.submitted.fetch_add(1, Ordering::Relaxed);
        let system = rng.usize(0..self.secrets.len());
        let (key, secret) = &self.secrets[system];
        let index = model::SYSTEMS.iter().position(|s| s == key).unwrap_or(0);
        let external_ref = format!("RUN-{}-{n}", self.run_id);
        let now = Utc::now();
        let mut body = model::submission_body(rng, &self.population, index, &external_ref, now);
        model::with_deadline(rng, &self.population, &mut body);
        let bytes = body.to_string();
        let ts = now.timestamp();
        let result = self
            .client
            .post(format!("{}/v1/systems/{key}/requests", self.base))
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(SIGNATURE_HEADER, signature(secret, ts, bytes.as_bytes()))
            .header("content-type", "application/json")
            .body(bytes)
            .send()
            .await;
        match &result {
            Ok(r) if r.status().as_u16() == 201 => {
                if let Ok((request, _)) = model::submitted(key, &body, now) {
                    if let Ok(mut idle) = self.idle.lock() {
                        idle.push_back(request);
                    }
                }
                Ok(())
            }
            _ => Err(failure(&result)),
        }
    }

    /// A decision by a pending approver of the longest-idle request; `None` when no request is
    /// idle.
    async fn decide(&self, rng: &mut fastrand::Rng) -> Option<Result<(), String>> {
        let mut request = self.idle.lock().ok()?.pop_front()?;
        let Some(user) = model::pick_approver(rng, &request) else {
            return Some(Err("no pending approver".to_owned()));
        };
        let (verdict, body) = if rng.u8(0..100) < 3 {
            (Verdict::Reject, json!({"comment": "over budget"}))
        } else if rng.bool() {
            (Verdict::Approve, json!({"comment": "ok"}))
        } else {
            (Verdict::Approve, json!({}))
        };
        let token = self.tokens.get(&user)?;
        let result = self
            .client
            .post(format!(
                "{}/v1/requests/{}/{}",
                self.base,
                request.id,
                verdict.as_str()
            ))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await;
        match &result {
            Ok(r) if r.status().is_success() => {
                let comment = body["comment"].as_str().map(str::to_owned);
                let predicted = model::decide(&mut request, &user, verdict, comment, Utc::now());
                if predicted.is_ok() && request.status == Status::Pending {
                    if let Ok(mut idle) = self.idle.lock() {
                        idle.push_back(request);
                    }
                }
                Some(Ok(()))
            }
            // The request's state is unknown now; it leaves the pool.
            _ => Some(Err(failure(&result))),
        }
    }

    /// One command of `kind`; a decision with no idle request submits instead.
    async fn command(&self, kind: Kind, rng: &mut fastrand::Rng) -> (Kind, Result<(), String>) {
        match kind {
            Kind::Submit => (Kind::Submit, self.submit(rng).await),
            Kind::Decide => match self.decide(rng).await {
                Some(result) => (Kind::Decide, result),
                None => (Kind::Submit, self.submit(rng).await),
            },
        }
    }

    async fn inbox(&self, rng: &mut fastrand::Rng) -> Result<(), String> {
        let user = &self.inbox_users[rng.usize(0..self.inbox_users.len())];
        let token = self.tokens.get(user).ok_or("no token")?;
        let result = self
            .client
            .get(format!("{}/v1/inbox?limit=20", self.base))
            .bearer_auth(token)
            .send()
            .await;
        match result {
            Ok(r) if r.status().is_success() => r.bytes().await.map(|_| ()).map_err(|_| {
                // The body did not arrive.
                "transport".to_owned()
            }),
            other => Err(failure(&other)),
        }
    }
}

/// Starts `job(tick, intended)` on a fixed schedule of `rate` per second for `duration`, each in
/// its own task, whether or not the earlier ones have finished, and waits for all of them.
/// `intended` is the moment the schedule meant the job to start: latencies are taken from there.
async fn on_schedule<F, Fut>(rate: f64, duration: Duration, job: F)
where
    F: Fn(u64, tokio::time::Instant) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut tick: u64 = 0;
    loop {
        let intended = start + period.mul_f64(tick as f64);
        if intended.duration_since(start) >= duration {
            break;
        }
        tokio::time::sleep_until(intended).await;
        tasks.spawn(job(tick, intended));
        tick += 1;
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// Sends commands on a fixed schedule of `rate` per second for `duration`, recording each
/// latency from its intended send time.
async fn open_loop(
    world: &Arc<World>,
    rate: f64,
    duration: Duration,
    decide: &Arc<Recorder>,
    submit: &Arc<Recorder>,
) {
    on_schedule(rate, duration, |tick, intended| {
        let (world, decide, submit) = (world.clone(), decide.clone(), submit.clone());
        async move {
            let mut rng = fastrand::Rng::with_seed(tick.wrapping_mul(0x2545_F491_4F6C_DD1D));
            let (kind, result) = world.command(kind_of(tick), &mut rng).await;
            let recorder = match kind {
                Kind::Submit => submit,
                Kind::Decide => decide,
            };
            match result {
                Ok(()) => recorder.ok(intended.elapsed()),
                Err(what) => recorder.failed(what),
            }
        }
    })
    .await;
}

/// Inbox reads on a fixed schedule of `rate` per second for `duration`.
async fn inbox_loop(world: &Arc<World>, rate: f64, duration: Duration, recorder: &Arc<Recorder>) {
    on_schedule(rate, duration, |tick, intended| {
        let (world, recorder) = (world.clone(), recorder.clone());
        async move {
            let mut rng = fastrand::Rng::with_seed(tick ^ 0x5DEE_CE66);
            match world.inbox(&mut rng).await {
                Ok(()) => recorder.ok(intended.elapsed()),
                Err(what) => recorder.failed(what),
            }
        }
    })
    .await;
}

/// `concurrency` senders, each sending its next command when the last is answered.
async fn closed_loop(
    world: &Arc<World>,
    concurrency: usize,
    duration: Duration,
    pool: &PgPool,
    service_pid: Option<u32>,
) -> Level {
    let cpu_before = CpuClock::read(pool, service_pid).await;
    let recorder = Arc::new(Recorder::default());
    let ticks = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut senders = tokio::task::JoinSet::new();
    for sender in 0..concurrency {
        let (world, recorder, ticks) = (world.clone(), recorder.clone(), ticks.clone());
        senders.spawn(async move {
            let mut rng = fastrand::Rng::with_seed(0xC0FF_EE00 + sender as u64);
            while Instant::now() < deadline {
                let tick = ticks.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                match world.command(kind_of(tick), &mut rng).await.1 {
                    Ok(()) => recorder.ok(sent.elapsed()),
                    Err(what) => recorder.failed(what),
                }
            }
        });
    }
    while senders.join_next().await.is_some() {}
    let seconds = started.elapsed().as_secs_f64();
    let commands = recorder.summary();
    let all = commands.count + commands.failures;
    let cpu = cpu_before.per_command(&CpuClock::read(pool, service_pid).await, all);
    Level {
        cpu,
        concurrency,
        seconds,
        throughput: commands.count as f64 / seconds,
        error_rate: if all == 0 {
            0.0
        } else {
            commands.failures as f64 / all as f64
        },
        commands,
    }
}

/// Registers `user`'s phone; `None` when the service refuses or lacks the route.
async fn register_device(world: Arc<World>, user: String) -> Option<()> {
    let token = world.tokens.get(&user)?;
    let platform = if user.ends_with('1') {
        "ios"
    } else {
        "android"
    };
    let response = world
        .client
        .post(format!("{}/v1/devices", world.base))
        .bearer_auth(token)
        .json(&json!({"platform": platform, "token": format!("bench-device-{user}")}))
        .send()
        .await
        .ok()?;
    response.status().is_success().then_some(())
}

/// Registers one device per approver, up to `count`; returns how many were registered (0 when
/// the service has no device registration yet).
async fn register_devices(world: &Arc<World>, count: usize) -> usize {
    let users: Vec<String> = world
        .population
        .approver_names()
        .into_iter()
        .take(count)
        .collect();
    let Some((first, rest)) = users.split_first() else {
        return 0;
    };
    if register_device(world.clone(), first.clone())
        .await
        .is_none()
    {
        eprintln!("run: POST /v1/devices is not available: push latency will read n/a");
        return 0;
    }
    let registered = Arc::new(AtomicU64::new(1));
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in rest.chunks(rest.len().div_ceil(16).max(1)) {
        let (chunk, world, registered) = (chunk.to_vec(), world.clone(), registered.clone());
        tasks.spawn(async move {
            for user in chunk {
                if register_device(world.clone(), user).await.is_some() {
                    registered.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    usize::try_from(registered.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
}

/// Commit-to-arrival latencies of the pushes and callbacks about events recorded in
/// `[from, to]`.
async fn delivery(
    pool: &PgPool,
    arrivals: &[fake::Arrival],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<(Summary, Summary)> {
    let ids: Vec<Uuid> = arrivals
        .iter()
        .filter_map(|a| Uuid::try_parse(&a.event_id).ok())
        .collect();
    let mut recorded: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
    for chunk in ids.chunks(10_000) {
        let rows: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
            "SELECT event_id, recorded_at FROM events WHERE event_id = ANY($1) \
             AND recorded_at BETWEEN $2 AND $3",
        )
        .bind(chunk)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await?;
        recorded.extend(rows);
    }
    let (push, callback) = (Recorder::default(), Recorder::default());
    for a in arrivals {
        let Some(at) = Uuid::try_parse(&a.event_id)
            .ok()
            .and_then(|id| recorded.get(&id))
        else {
            continue;
        };
        let latency =
            Duration::from_micros(u64::try_from(a.at_us - at.timestamp_micros()).unwrap_or(0));
        match a.kind.as_str() {
            "push" => push.ok(latency),
            _ => callback.ok(latency),
        }
    }
    Ok((push.summary(), callback.summary()))
}

/// Runs phase 1 and phase 2 against the service and returns what they measured.
pub async fn run(settings: &Settings, pool: &PgPool, plan: &RunPlan) -> anyhow::Result<Results> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .timeout(plan.timeout)
        .build()?;
    let (seeded_requests,): (i64,) = sqlx::query_as("SELECT count(*) FROM rm_requests")
        .fetch_one(pool)
        .await?;
    let (seeded_events,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?;
    let states: Vec<(serde_json::Value,)> =
        sqlx::query_as("SELECT state FROM rm_requests WHERE status = 'pending'")
            .fetch_all(pool)
            .await?;
    let mut pending: Vec<Request> = states
        .into_iter()
        .filter_map(|(s,)| serde_json::from_value(s).ok())
        .collect();
    fastrand::Rng::with_seed(11).shuffle(&mut pending);
    eprintln!(
        "run: {seeded_requests} requests ({} pending), {seeded_events} events in the store",
        pending.len()
    );
    let mut tokens = HashMap::new();
    for user in plan.population.approver_names() {
        let token =
            issue_token(&settings.auth, &user, &[], 24 * 3600).context("minting a token")?;
        tokens.insert(user, token);
    }
    let inbox_users: Vec<String> = {
        let mut users: Vec<String> = pending
            .iter()
            .flat_map(|r| r.pending_approvers().into_iter().map(|u| u.0.clone()))
            .collect();
        users.sort();
        users.dedup();
        if users.is_empty() {
            plan.population.approver_names()
        } else {
            users
        }
    };
    let secrets: Vec<(String, String)> = settings
        .systems
        .iter()
        .filter(|(k, _)| model::SYSTEMS.contains(&k.as_str()))
        .map(|(k, s)| (k.clone(), s.secret.expose().to_owned()))
        .collect();
    anyhow::ensure!(
        !secrets.is_empty(),
        "the configuration names none of the systems {:?}",
        model::SYSTEMS
    );
    let world = Arc::new(World {
        client: client.clone(),
        base: plan.base.trim_end_matches('/').to_owned(),
        tokens,
        inbox_users,
        secrets,
        population: plan.population,
        idle: Mutex::new(pending.into()),
        run_id: Uuid::new_v4().simple().to_string()[..8].to_owned(),
        submitted: AtomicU64::new(0),
    });

    let devices = register_devices(&world, plan.devices).await;
    if !plan.warmup.is_zero() {
        eprintln!(
            "run: warming up for {:?} at {} commands/s",
            plan.warmup, plan.rate
        );
        let (d, s) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
        open_loop(&world, plan.rate, plan.warmup, &d, &s).await;
    }

    eprintln!(
        "run: phase 1, {} commands/s for {:?}",
        plan.rate, plan.duration
    );
    let (decide, submit, inbox) = (
        Arc::new(Recorder::default()),
        Arc::new(Recorder::default()),
        Arc::new(Recorder::default()),
    );
    let from = DateTime::<Utc>::from(SystemTime::now());
    let cpu_before = CpuClock::read(pool, plan.service_pid).await;
    let started = Instant::now();
    tokio::join!(
        open_loop(&world, plan.rate, plan.duration, &decide, &submit),
        inbox_loop(&world, plan.inbox_rate, plan.duration, &inbox),
    );
    let seconds = started.elapsed().as_secs_f64();
    let to = DateTime::<Utc>::from(SystemTime::now());
    let cpu_after = CpuClock::read(pool, plan.service_pid).await;
    let (push, callback) = match &plan.fake {
        Some(fake_base) => {
            // Stragglers of the phase still count; give them a moment.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let arrivals = fake::fetch(&client, fake_base).await.unwrap_or_else(|e| {
                eprintln!("run: cannot read the fake endpoints' arrivals: {e}");
                vec![]
            });
            delivery(pool, &arrivals, from, to).await?
        }
        None => (Summary::default(), Summary::default()),
    };
    let (decided, submitted) = (decide.summary(), submit.summary());
    let commands = decided.count + decided.failures + submitted.count + submitted.failures;
    let fixed = FixedRate {
        cpu: cpu_before.per_command(&cpu_after, commands),
        rate: plan.rate,
        seconds,
        decide: decided,
        submit: submitted,
        inbox: inbox.summary(),
        push,
        callback,
        devices,
    };

    let mut saturation = vec![];
    for &concurrency in &plan.concurrency {
        eprintln!(
            "run: phase 2, {concurrency} in flight for {:?}",
            plan.duration
        );
        let level = closed_loop(&world, concurrency, plan.duration, pool, plan.service_pid).await;
        eprintln!(
            "run:   {:.0} commands/s, {:.2}% errors",
            level.throughput,
            level.error_rate * 100.0
        );
        saturation.push(level);
    }
    let best = saturation
        .iter()
        .filter(|l| l.error_rate < 0.01)
        .max_by(|a, b| a.throughput.total_cmp(&b.throughput))
        .cloned();
    // The timers the run's deadlines set fired in the service; it measures their lag itself.
    let timers = match client.get(format!("{}/metrics", world.base)).send().await {
        Ok(answer) => stats::timer_lag(&answer.text().await.unwrap_or_default()),
        Err(e) => {
            eprintln!("run: cannot read the service's metrics: {e}");
            stats::TimerLag::default()
        }
    };
    Ok(Results {
        timers,
        seeded_requests,
        seeded_events,
        fixed,
        saturation,
        best,
    })
}
