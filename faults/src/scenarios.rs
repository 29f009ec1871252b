//! The scenarios. Each starts the service in a world of its own, runs the load, injects its fault,
//! lets the load go on, stops it, waits for the receivers to drain, and checks (see [`check`]).

use std::time::{Duration, Instant};

use approval_aggregates::{ApprovalEvent, RequestId, Rule, StepSpec, SystemId, UserId};
use std::process::Command;

use crate::check::{self, Findings};
use crate::fake::Mode;
use crate::load::{self, Load, Tally};
use crate::world::{Run, World};

/// A scenario: what it is called and shows, and what its world needs.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Its name on the command line.
    pub name: &'static str,
    /// What it shows, in a line.
    pub what: &'static str,
    /// In the quick subset CI runs (it disturbs neither PostgreSQL nor RabbitMQ as a whole).
    pub quick: bool,
    /// Service instances it runs.
    instances: usize,
    /// It removes the exchange's bindings: no observer queue (one would keep every event
    /// routable), and the sweeper is expected to make the jobs no consumer got to make. Anywhere
    /// else a job of the sweeper's making means the consumers dropped something.
    removes_bindings: bool,
}

const fn scenario(name: &'static str, what: &'static str, quick: bool) -> Scenario {
    Scenario {
        name,
        what,
        quick,
        instances: 1,
        removes_bindings: false,
    }
}

/// The scenarios, in the order they run.
pub const ALL: [Scenario; 11] = [
    scenario("postgres-restart", "PostgreSQL restarted under load", false),
    scenario(
        "rabbitmq-restart",
        "RabbitMQ stopped and started under load",
        false,
    ),
    scenario(
        "rabbitmq-connections-cut",
        "every broker connection closed by the broker",
        false,
    ),
    scenario(
        "kill-9",
        "the service killed with deliveries failing and retries pending",
        true,
    ),
    scenario(
        "crash-before-ack",
        "a worker killed between its effects and their acks",
        true,
    ),
    scenario(
        "long-transaction",
        "a long-open and a rolled-back transaction while events commit",
        true,
    ),
    scenario("poison", "a poison message on each work queue", true),
    Scenario {
        removes_bindings: true,
        ..scenario(
            "unroutable",
            "every binding removed: publishes come back unroutable",
            false,
        )
    },
    scenario(
        "slow-legacy",
        "the legacy system slower than the timeout, then 429, then well",
        false,
    ),
    Scenario {
        instances: 2,
        ..scenario(
            "instance-kill-loop",
            "two instances, one killed again and again",
            false,
        )
    },
    Scenario {
        instances: 2,
        ..scenario(
            "timers-kill-9",
            "two instances, one killed with kill -9 while step deadlines fall due",
            false,
        )
    },
];

/// Clients of the load and their pause between commands.
const CLIENTS: usize = 6;
const PAUSE: Duration = Duration::from_millis(20);
/// The longest wait for the receivers to catch up after the load.
const DRAIN: Duration = Duration::from_secs(180);

fn say(world: &World, what: &str) {
    eprintln!("  {}: {what}", world.name);
}

async fn sleep_secs(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

/// Runs a command that disturbs the machine's servers; fails when it fails.
async fn sh(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    let status = tokio::task::spawn_blocking(move || command.status()).await??;
    anyhow::ensure!(status.success(), "{program} {args:?}: {status}");
    Ok(())
}

/// The PostgreSQL cluster's version (the directory under /etc/postgresql).
fn pg_version() -> anyhow::Result<String> {
    let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    versions.sort();
    versions
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no PostgreSQL cluster under /etc/postgresql"))
}

async fn pg_ctl(action: &str) -> anyhow::Result<()> {
    let version = pg_version()?;
    sh(
        "pg_ctlcluster",
        &["--skip-systemctl-redirect", &version, "main", action],
    )
    .await
}

/// Runs `scenario` in a world of its own and tears the world down, whatever happens.
pub async fn run(run: &Run, scenario: &Scenario) -> anyhow::Result<Findings> {
    let name = scenario.name;
    let mut world = World::new(run, name, !scenario.removes_bindings).await?;
    let result = async {
        for _ in 0..scenario.instances {
            world.start_instance().await?;
        }
        load::register_devices(&world).await?;
        let load = Load::start(&world, CLIENTS, PAUSE)?;
        let (tally, mut extra) = match name {
            "postgres-restart" => postgres_restart(&mut world, load).await?,
            "rabbitmq-restart" => rabbitmq_restart(&mut world, load).await?,
            "rabbitmq-connections-cut" => connections_cut(&mut world, load).await?,
            "kill-9" => kill_nine(&mut world, load).await?,
            "crash-before-ack" => crash_before_ack(&mut world, load).await?,
            "long-transaction" => long_transaction(&mut world, load).await?,
            "poison" => poison(&mut world, load).await?,
            "unroutable" => unroutable(&mut world, load).await?,
            "slow-legacy" => slow_legacy(&mut world, load).await?,
            "instance-kill-loop" => instance_kill_loop(&mut world, load).await?,
            "timers-kill-9" => timers_kill_nine(&mut world, load).await?,
            other => anyhow::bail!("no scenario {other}"),
        };
        say(&world, "load stopped; waiting for the receivers to drain");
        let took = check::drain(&world, DRAIN).await?;
        let mut findings = check::check(&world, &tally).await?;
        findings.note(format!(
            "drained {:.1} s after the load",
            took.as_secs_f64()
        ));
        let swept = world.swept_jobs();
        findings.note(format!("{swept} jobs made by the sweeper"));
        if scenario.removes_bindings {
            findings.require(
                swept > 0,
                "the sweeper made no job for the events no queue took",
            );
        } else {
            findings.require(
                swept == 0,
                format!("the sweeper had to make {swept} jobs the consumers should have made"),
            );
        }
        findings.failures.append(&mut extra.failures);
        findings.notes.splice(0..0, extra.notes.drain(..));
        Ok(findings)
    }
    .await;
    if result.is_err() {
        eprintln!(
            "  {name}: the service's log is {}",
            world.log_of(0).display()
        );
    }
    world.tear_down().await;
    result
}

type Step = anyhow::Result<(Tally, Findings)>;

/// Lets the load run for `secs`.
async fn load_for(world: &World, load: &Load, secs: u64) {
    let before = load.acknowledged();
    sleep_secs(secs).await;
    say(
        world,
        &format!(
            "{} commands acknowledged in {secs} s",
            load.acknowledged() - before
        ),
    );
}

async fn postgres_restart(world: &mut World, load: Load) -> Step {
    let mut f = Findings::default();
    load_for(world, &load, 5).await;
    say(world, "stopping PostgreSQL for 6 s");
    pg_ctl("stop").await?;
    // Longer than `database.acquire_timeout_ms` (3 s): a shorter outage can pass with every
    // caller still waiting for a connection, and no 503 to check.
    sleep_secs(6).await;
    say(world, "starting PostgreSQL");
    pg_ctl("start").await?;
    load_for(world, &load, 8).await;
    let tally = load.stop().await;
    f.require(
        tally.unavailable > 0,
        "no client saw a 503 while PostgreSQL was down",
    );
    f.require(
        tally.unavailable_with_retry_after == tally.unavailable,
        format!(
            "{} of {} 503 answers lacked Retry-After",
            tally.unavailable - tally.unavailable_with_retry_after,
            tally.unavailable
        ),
    );
    f.note(format!(
        "{} answers were 503 with Retry-After; 0 restarts",
        tally.unavailable
    ));
    Ok((tally, f))
}

async fn rabbitmq_restart(world: &mut World, load: Load) -> Step {
    let mut f = Findings::default();
    load_for(world, &load, 4).await;
    say(world, "rabbitmqctl stop_app");
    sh("rabbitmqctl", &["stop_app"]).await?;
    let down = Instant::now();
    load_for(world, &load, 5).await;
    say(world, "rabbitmqctl start_app");
    let started = sh("rabbitmqctl", &["start_app"]).await;
    sh("rabbitmqctl", &["await_startup"]).await?;
    started?;
    f.note(format!(
        "RabbitMQ down {:.1} s, commands kept succeeding",
        down.elapsed().as_secs_f64()
    ));
    load_for(world, &load, 6).await;
    Ok((load.stop().await, f))
}

async fn connections_cut(world: &mut World, load: Load) -> Step {
    let f = Findings::default();
    load_for(world, &load, 4).await;
    for _ in 0..2 {
        say(world, "rabbitmqctl close_all_connections");
        sh("rabbitmqctl", &["close_all_connections", "fault suite"]).await?;
        load_for(world, &load, 3).await;
    }
    load_for(world, &load, 3).await;
    Ok((load.stop().await, f))
}

async fn kill_nine(world: &mut World, load: Load) -> Step {
    let mut f = Findings::default();
    say(world, "the legacy system and FCM answer 503");
    world.fake.set_mode(Mode::Unavailable);
    load_for(world, &load, 6).await;
    let failed = world.fake.callbacks().len() + world.fake.pushes().len();
    say(
        world,
        "kill -9 with every delivery failing and retries pending",
    );
    world.kill9(0).await?;
    load_for(world, &load, 2).await;
    world.restart(0).await?;
    say(world, "restarted; the legacy system and FCM recover");
    world.fake.set_mode(Mode::Ok);
    load_for(world, &load, 5).await;
    f.require(failed > 0, "no delivery had failed before the kill");
    f.note(format!("{failed} failed attempts before the kill"));
    Ok((load.stop().await, f))
}

/// Unacknowledged messages on the service's work queues, as RabbitMQ counts them.
async fn unacknowledged(world: &World) -> anyhow::Result<u64> {
    let mut command = Command::new("rabbitmqctl");
    command
        .args([
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages_unacknowledged",
        ])
        .stdin(std::process::Stdio::null());
    let out = tokio::task::spawn_blocking(move || command.output()).await??;
    let topology = world.topology();
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let name = parts.next()?;
            let n: u64 = parts.next()?.parse().ok()?;
            (name == topology.legacy_sync || name == topology.push).then_some(n)
        })
        .sum())
}

/// How many times a round of `crash-before-ack` freezes the service looking for messages in
/// flight before it kills it anyway.
const FREEZES_PER_ROUND: u32 = 20;

async fn crash_before_ack(world: &mut World, load: Load) -> Step {
    let mut f = Findings::default();
    let mut in_flight = 0;
    for round in 1..=6 {
        load_for(world, &load, 3).await;
        // Frozen first, so that what RabbitMQ counts as unacknowledged is what dies with it. The
        // consumers hold a batch unacknowledged for the few milliseconds of its statements, and
        // the relay publishes in bursts (it lets 10 ms of commits gather): a freeze often finds
        // nothing in flight, so it thaws and tries again a moment later, a few times per round.
        let mut n = 0;
        for attempt in 1..=FREEZES_PER_ROUND {
            world.signal(0, "STOP").await?;
            n = unacknowledged(world).await?;
            if n > 0 || attempt == FREEZES_PER_ROUND {
                break;
            }
            world.signal(0, "CONT").await?;
            tokio::time::sleep(Duration::from_millis(fastrand::u64(20..150))).await;
        }
        in_flight += n;
        say(
            world,
            &format!("frozen with {n} messages unacknowledged; kill -9"),
        );
        world.kill9(0).await?;
        world.restart(0).await?;
        if round >= 3 && in_flight > 0 {
            break;
        }
    }
    load_for(world, &load, 3).await;
    f.require(
        in_flight > 0,
        "no kill caught a message between its effect and its ack",
    );
    f.note(format!("{in_flight} messages unacknowledged at the kills"));
    Ok((load.stop().await, f))
}

/// A submission as the store holds it, written straight into the events table (as
/// postgres-es does, with its column list, so the defaults apply).
async fn append_submission(
    conn: &mut sqlx::PgConnection,
    external_ref: &str,
) -> anyhow::Result<String> {
    let system = SystemId::new("erp");
    let id = RequestId::for_submission(&system, external_ref);
    let event = ApprovalEvent::RequestSubmitted {
        request_id: id,
        system,
        external_ref: external_ref.into(),
        kind: "leave".into(),
        title: format!("Leave {external_ref}"),
        requester: UserId::new("p0"),
        amount: None,
        steps: vec![StepSpec::new(vec![UserId::new("a00")], Rule::Any)],
        due_at: None,
        details: None,
        link: None,
        at: chrono::Utc::now(),
        attachments: vec![],
    };
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('ApprovalRequest', $1, 1, 'RequestSubmitted', '1.0', $2, '{}')",
    )
    .bind(id.to_string())
    .bind(serde_json::to_value(event)?)
    .execute(conn)
    .await?;
    Ok(id.to_string())
}

async fn long_transaction(world: &mut World, load: Load) -> Step {
    use sqlx::Connection as _;
    let mut f = Findings::default();
    load_for(world, &load, 3).await;
    let url = world.settings.database.url.expose().to_owned();
    let mut held = sqlx::PgConnection::connect(&url).await?;
    let mut rolled = sqlx::PgConnection::connect(&url).await?;
    let mut held_tx = held.begin().await?;
    let held_id = append_submission(&mut held_tx, "HELD").await?;
    let mut rolled_tx = rolled.begin().await?;
    let rolled_id = append_submission(&mut rolled_tx, "ROLLED-BACK").await?;
    say(
        world,
        "one transaction holds an event open for 8 s; another rolls back",
    );
    sleep_secs(1).await;
    rolled_tx.rollback().await?;
    let before = load.acknowledged();
    sleep_secs(7).await;
    held_tx.commit().await?;
    let committed = Instant::now();
    say(
        world,
        &format!(
            "the long transaction committed; {} commands meanwhile",
            load.acknowledged() - before
        ),
    );
    let deadline = committed + Duration::from_secs(60);
    let arrived = loop {
        if let Some(call) = world
            .fake
            .pushes()
            .iter()
            .find(|c| c.request_id == held_id && c.delivered)
        {
            break Some(call.at.saturating_duration_since(committed));
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    load_for(world, &load, 3).await;
    let tally = load.stop().await;
    match arrived {
        Some(after) => f.note(format!(
            "the held event reached the phone {} ms after its commit",
            after.as_millis()
        )),
        None => f.require(false, "the held event never reached the phone"),
    }
    let (rolled_rows,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM events WHERE aggregate_id = $1")
            .bind(&rolled_id)
            .fetch_one(world.pool())
            .await?;
    f.require(rolled_rows == 0, "the rolled-back event is in the store");
    let _ = held.close().await;
    let _ = rolled.close().await;
    Ok((tally, f))
}

async fn poison(world: &mut World, load: Load) -> Step {
    let mut f = Findings::default();
    load_for(world, &load, 3).await;
    let topology = world.topology();
    for queue in [&topology.legacy_sync, &topology.push] {
        say(world, &format!("poison on {queue}"));
        world
            .publish_to_queue(queue, b"\xff\xfe this is not an envelope {")
            .await?;
    }
    load_for(world, &load, 5).await;
    let tally = load.stop().await;
    for queue in [&topology.legacy_sync, &topology.push] {
        let dead = approval_ledger::broker::Topology::dead_letter_queue(queue);
        let depth = world.queue_depth(&dead).await?;
        f.require(
            depth == 1,
            format!("{dead} holds {depth} messages, not the 1 poison"),
        );
    }
    f.note("each poison message dead-lettered");
    Ok((tally, f))
}

async fn unroutable(world: &mut World, load: Load) -> Step {
    let mut f = Findings::default();
    load_for(world, &load, 3).await;
    let topology = world.topology();
    say(world, "removing every binding of the exchange");
    for queue in [&topology.legacy_sync, &topology.push] {
        for key in topology.keys_of(queue) {
            world.unbind(queue, &key).await?;
        }
    }
    for key in topology.unclaimed_keys() {
        world.unbind(&topology.unclaimed, &key).await?;
    }
    load_for(world, &load, 6).await;
    let tally = load.stop().await;
    let metrics = world.metrics(0).await?;
    let refused = metrics
        .lines()
        .find(|l| l.starts_with("approval_ledger_feed_reader_errors_total{reader=\"relay\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(0.0);
    f.require(refused > 0.0, "the relay never saw a publish come back");
    f.note(format!(
        "{refused} relay batches came back unroutable and were published again"
    ));
    Ok((tally, f))
}

async fn slow_legacy(world: &mut World, load: Load) -> Step {
    let mut f = Findings::default();
    load_for(world, &load, 3).await;
    say(
        world,
        "the legacy system and FCM answer after 1.5 s (the timeout is 1 s)",
    );
    world.fake.set_mode(Mode::Slow(Duration::from_millis(1500)));
    load_for(world, &load, 5).await;
    say(world, "then 429 with Retry-After: 2");
    world.fake.set_mode(Mode::TooMany(2));
    load_for(world, &load, 5).await;
    say(world, "then well again");
    world.fake.set_mode(Mode::Ok);
    load_for(world, &load, 3).await;
    let tally = load.stop().await;
    let calls = world.fake.callbacks();
    let slow = calls
        .iter()
        .filter(|c| matches!(c.mode, Mode::Slow(_)))
        .count();
    let limited = calls
        .iter()
        .filter(|c| matches!(c.mode, Mode::TooMany(_)))
        .count();
    f.require(
        slow > 0 && limited > 0,
        "the legacy endpoint was never slow or never limited",
    );
    f.note(format!("{slow} callbacks timed out, {limited} got 429"));
    Ok((tally, f))
}

async fn instance_kill_loop(world: &mut World, load: Load) -> Step {
    let mut f = Findings::default();
    let rounds = 4;
    for _ in 0..rounds {
        load_for(world, &load, 3).await;
        say(world, "kill -9 instance 2 of 2");
        world.kill9(1).await?;
        sleep_secs(1).await;
        world.restart(1).await?;
    }
    load_for(world, &load, 3).await;
    f.note(format!("instance 2 killed {rounds} times"));
    Ok((load.stop().await, f))
}

/// Requests with a deadline in `timers-kill-9`.
const TIMED: u64 = 30;

/// Submits `TIMED` one-step requests due in 4 to 9 s (reminding 2 s before, escalating), as the
/// legacy system does; returns their ids.
async fn submit_timed(world: &World) -> anyhow::Result<Vec<String>> {
    let base = &world.bases()[1];
    let secret = world.system_secret();
    let mut ids = vec![];
    for n in 0..TIMED {
        let body = serde_json::json!({
            "external_ref": format!("T-{n}"),
            "kind": "purchase_order",
            "title": format!("Timed {n}"),
            "requester": "p0",
            "steps": [{"approvers": [format!("a{:02}", n % 5)], "rule": "any",
                       "due_in": format!("PT{}S", 4 + n % 6),
                       "escalate_to": [format!("a{:02}", 5 + n % 5)]}],
        })
        .to_string();
        let ts = chrono::Utc::now().timestamp();
        let answer: serde_json::Value = world
            .http
            .post(format!("{base}/v1/systems/erp/requests"))
            .header("content-type", "application/json")
            .header(approval_ledger::signing::TIMESTAMP_HEADER, ts.to_string())
            .header(
                approval_ledger::signing::SIGNATURE_HEADER,
                approval_ledger::signing::signature(&secret, ts, body.as_bytes()),
            )
            .body(body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = answer["id"].as_str().unwrap_or_default().to_owned();
        anyhow::ensure!(!id.is_empty(), "a timed submission gave no id: {answer}");
        ids.push(id);
    }
    Ok(ids)
}

/// The timer events of each of `ids`: (before-reminders, overdue notices, escalations).
async fn timer_events(
    world: &World,
    ids: &[String],
) -> anyhow::Result<Vec<(String, (u32, u32, u32))>> {
    let events = check::stored(world).await?;
    Ok(ids
        .iter()
        .map(|id| {
            let mut counts = (0, 0, 0);
            for e in events.iter().filter(|e| &e.request_id == id) {
                match &e.event {
                    Some(ApprovalEvent::ReminderSent { reminder, .. }) => {
                        if matches!(reminder, approval_aggregates::Reminder::Overdue) {
                            counts.1 += 1;
                        } else {
                            counts.0 += 1;
                        }
                    }
                    Some(ApprovalEvent::StepEscalated { .. }) => counts.2 += 1,
                    _ => {}
                }
            }
            (id.clone(), counts)
        })
        .collect())
}

async fn timers_kill_nine(world: &mut World, load: Load) -> Step {
    let mut f = Findings::default();
    load_for(world, &load, 2).await;
    say(world, &format!("{TIMED} requests due in 4 to 9 s"));
    let ids = submit_timed(world).await?;
    load_for(world, &load, 3).await;
    say(world, "kill -9 instance 1 of 2 while their timers fall due");
    world.kill9(0).await?;
    load_for(world, &load, 3).await;
    world.restart(0).await?;
    load_for(world, &load, 4).await;
    let tally = load.stop().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let counts = loop {
        let counts = timer_events(world, &ids).await?;
        let done = counts.iter().all(|(_, c)| c.1 >= 1 && c.2 >= 1);
        if done || Instant::now() > deadline {
            break counts;
        }
        sleep_secs(1).await;
    };
    let wrong: Vec<&(String, (u32, u32, u32))> =
        counts.iter().filter(|(_, c)| *c != (1, 1, 1)).collect();
    f.require(
        wrong.is_empty(),
        format!(
            "{} of {TIMED} timed requests did not fire each timer once (reminder, overdue, escalation): {:?}",
            wrong.len(),
            wrong.first()
        ),
    );
    let metrics = world.metrics(1).await? + &world.metrics(0).await?;
    let fired: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("approval_ledger_timers_fired_total") && l.contains("fired"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum();
    f.note(format!(
        "{} timers of {TIMED} requests fired once each across a kill -9 ({fired} by the instances' counters since their starts)",
        3 * TIMED
    ));
    Ok((tally, f))
}
