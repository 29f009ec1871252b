//! One scenario's world: its own database and exchange, the fake endpoints, the service's
//! processes (the real release binary, started, killed with SIGKILL and restarted as the scenario
//! says), an observer queue bound to the exchange like any third-party subscriber, and the means to
//! talk to the API as legacy systems and phones do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use approval_ledger::broker::Topology;
use approval_ledger::config::Settings;
use futures_util::StreamExt as _;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::fake::Fake;

/// What every scenario shares: where the service binary is, which servers to use, where logs go.
#[derive(Debug, Clone)]
pub struct Run {
    /// The service's binary.
    pub service: PathBuf,
    /// `postgres://user@host:port`, without a database.
    pub pg_server: String,
    /// `amqp://...`.
    pub amqp: String,
    /// Where each scenario keeps its configuration and the service's logs.
    pub out: PathBuf,
}

/// One service process (killed when dropped, so a failed scenario leaves none behind).
struct Instance {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    starts: u32,
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A scenario's world.
pub struct World {
    /// The scenario's name.
    pub name: String,
    /// The database (fresh, dropped at the end).
    pub db: String,
    /// The service's configuration, as loaded from the file it was given.
    pub settings: Settings,
    /// The fake legacy and FCM endpoints.
    pub fake: Fake,
    /// The observer queue, if the scenario keeps one.
    pub observer: Option<String>,
    run: Run,
    config: PathBuf,
    dir: PathBuf,
    instances: Vec<Instance>,
    pool: PgPool,
    /// The HTTP client of the checks (not of the load).
    pub http: reqwest::Client,
}

/// A free local TCP port (bound and released).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl World {
    /// Creates the world of scenario `name`: a configuration, the fake endpoints and, when
    /// `observer`, the exchange with an observer queue bound to every routing key. No service
    /// runs yet.
    pub async fn new(run: &Run, name: &str, observer: bool) -> anyhow::Result<Self> {
        let db = format!(
            "faults_{}_{}_{}",
            name.replace('-', "_"),
            std::process::id(),
            chrono::Utc::now().timestamp()
        );
        let dir = run.out.join(name);
        std::fs::create_dir_all(&dir)?;
        let fake = Fake::start()?;
        let config = dir.join("service.toml");
        std::fs::write(&config, config_text(run, &db, &fake.base))?;
        let settings = Settings::load(Some(&config), Some(BTreeMap::new()))
            .context("the scenario's configuration")?;
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&format!("{}/postgres", run.pg_server))
            .await?;
        sqlx::query(&format!("CREATE DATABASE \"{db}\""))
            .execute(&admin)
            .await?;
        admin.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy(&format!("{}/{db}", run.pg_server))?;
        let mut world = Self {
            name: name.to_owned(),
            db,
            settings,
            fake,
            observer: None,
            run: run.clone(),
            config,
            dir,
            instances: vec![],
            pool,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        };
        if observer {
            let queue = format!("{}.observer", world.settings.broker.exchange);
            let channel = world.channel().await?;
            world
                .topology()
                .declare(&channel, world.settings.broker.delivery_limit)
                .await?;
            channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            channel
                .queue_bind(
                    queue.as_str().into(),
                    world.settings.broker.exchange.as_str().into(),
                    "approval.#".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            world.observer = Some(queue);
        }
        Ok(world)
    }

    /// The scenario's database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The service's topology.
    pub fn topology(&self) -> Topology {
        approval_ledger::handlers::topology(&self.settings.broker.exchange)
    }

    /// A fresh channel to RabbitMQ.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        let connection = tokio::time::timeout(
            Duration::from_secs(10),
            Connection::connect(&self.run.amqp, ConnectionProperties::default()),
        )
        .await
        .context("RabbitMQ does not answer")??;
        Ok(connection.create_channel().await?)
    }

    /// Starts one more service instance (every role) and waits until it answers.
    pub async fn start_instance(&mut self) -> anyhow::Result<usize> {
        let port = free_port()?;
        let index = self.instances.len();
        self.instances.push(Instance {
            child: None,
            port,
            log: self.dir.join(format!("service-{index}.log")),
            starts: 0,
        });
        self.restart(index).await?;
        Ok(index)
    }

    /// Starts instance `index` again (it must not be running).
    pub async fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        let instance = &mut self.instances[index];
        instance.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&instance.log)?;
        let child = Command::new(&self.run.service)
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env(
                "APPROVAL_LEDGER_HTTP__BIND",
                format!("127.0.0.1:{}", instance.port),
            )
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.run.service.display()))?;
        instance.child = Some(child);
        let url = format!("http://127.0.0.1:{}/healthz", instance.port);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self.http.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if let Some(child) = self.instances[index].child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    anyhow::bail!(
                        "the service exited at start ({status}); see {}",
                        self.instances[index].log.display()
                    );
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the service did not start in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills instance `index` with SIGKILL: no shutdown, no flushing, in-flight work cut off.
    pub async fn kill9(&mut self, index: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.instances[index].child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Sends signal `name` (`STOP`, `TERM`...) to instance `index`.
    pub async fn signal(&self, index: usize, name: &str) -> anyhow::Result<()> {
        if let Some(pid) = self.instances[index].child.as_ref().map(Child::id) {
            let status = Command::new("kill")
                .arg(format!("-{name}"))
                .arg(pid.to_string())
                .status()?;
            anyhow::ensure!(status.success(), "kill -{name} {pid}: {status}");
        }
        Ok(())
    }

    /// The base URLs of the instances (running or not).
    pub fn bases(&self) -> Vec<String> {
        self.instances
            .iter()
            .map(|i| format!("http://127.0.0.1:{}", i.port))
            .collect()
    }

    /// Instance `index`'s metrics in Prometheus text form.
    pub async fn metrics(&self, index: usize) -> anyhow::Result<String> {
        let base = &self.bases()[index];
        Ok(self
            .http
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await?)
    }

    /// A token for `user`, signed with the scenario's secret.
    pub fn token(&self, user: &str) -> anyhow::Result<String> {
        Ok(approval_ledger::signing::issue_token(
            &self.settings.auth,
            user,
            &[],
            6 * 3600,
        )?)
    }

    /// The system `erp`'s HMAC secret.
    pub fn system_secret(&self) -> String {
        self.settings
            .systems
            .get("erp")
            .map(|s| s.secret.expose().to_owned())
            .unwrap_or_default()
    }

    /// Runs the service binary's CLI (`audit verify`, say) against the scenario's database;
    /// returns whether it succeeded and what it printed.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<(bool, String)> {
        let mut command = Command::new(&self.run.service);
        command
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        let out = tokio::task::spawn_blocking(move || command.output()).await??;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    }

    /// Publishes `body` straight to queue `queue` (through the default exchange).
    pub async fn publish_to_queue(&self, queue: &str, body: &[u8]) -> anyhow::Result<()> {
        let channel = self.channel().await?;
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?
            .await?;
        Ok(())
    }

    /// Messages waiting in `queue` (declared passively).
    pub async fn queue_depth(&self, queue: &str) -> anyhow::Result<u32> {
        let channel = self.channel().await?;
        let q = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(q.message_count())
    }

    /// Removes the binding of `queue` to the exchange under `key`.
    pub async fn unbind(&self, queue: &str, key: &str) -> anyhow::Result<()> {
        let channel = self.channel().await?;
        channel
            .queue_unbind(
                queue.into(),
                self.settings.broker.exchange.as_str().into(),
                key.into(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }

    /// Takes every message from the observer queue, stopping once it has been quiet for `quiet`.
    pub async fn drain_observer(&self, quiet: Duration) -> anyhow::Result<Vec<serde_json::Value>> {
        let Some(queue) = &self.observer else {
            return Ok(vec![]);
        };
        let channel = self.channel().await?;
        channel
            .basic_qos(1000, lapin::options::BasicQosOptions::default())
            .await?;
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "fault-suite-observer".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let mut messages = vec![];
        while let Ok(Some(delivery)) = tokio::time::timeout(quiet, consumer.next()).await {
            let delivery = delivery?;
            messages.push(serde_json::from_slice(&delivery.data).unwrap_or_default());
        }
        Ok(messages)
    }

    /// The jobs the service's sweeper made for events the work queues missed, as its logs say
    /// (`the sweeper made jobs ... created=N`), over every instance.
    pub fn swept_jobs(&self) -> u64 {
        self.instances
            .iter()
            .filter_map(|i| std::fs::read_to_string(&i.log).ok())
            .flat_map(|log| {
                log.lines()
                    .filter(|l| l.contains("the sweeper made jobs"))
                    .filter_map(|l| l.split("created=").nth(1))
                    .filter_map(|n| n.split_whitespace().next()?.parse::<u64>().ok())
                    .collect::<Vec<_>>()
            })
            .sum()
    }

    /// The service log of instance `index`.
    pub fn log_of(&self, index: usize) -> &Path {
        &self.instances[index].log
    }

    /// Stops every instance (SIGTERM, then SIGKILL after 15 s), the fake endpoints, and removes
    /// the database, the exchange and the queues.
    pub async fn tear_down(mut self) {
        for instance in &mut self.instances {
            if let Some(mut child) = instance.child.take() {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(child.id().to_string())
                    .status();
                let deadline = Instant::now() + Duration::from_secs(15);
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.fake.stop().await;
        self.pool.close().await;
        if let Ok(channel) = self.channel().await {
            let _ = self.topology().delete(&channel).await;
            if let Some(queue) = &self.observer {
                let _ = channel
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
        }
        if let Ok(admin) = PgPoolOptions::new()
            .max_connections(1)
            .connect(&format!("{}/postgres", self.run.pg_server))
            .await
        {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.db
            ))
            .execute(&admin)
            .await;
            admin.close().await;
        }
    }
}

/// The service's configuration for a scenario: its own database and exchange, fast retries, a
/// short call timeout, a sweeper 20 s behind the feed, pushes and callbacks to the fake endpoints, step callbacks on (so each
/// request has several callbacks whose order can be checked).
fn config_text(run: &Run, db: &str, fake: &str) -> String {
    format!(
        r#"# Written by the fault suite.
[app]
environment = "faults"

[database]
url = "{pg}/{db}"

[broker]
url = "{amqp}"
exchange = "faults.{db}"
reconnect_max_ms = 1000
publish_timeout_ms = 5000
sweep_after_ms = 20000

[delivery]
max_attempts = 200
base_delay_ms = 200
max_delay_ms = 2000
timeout_ms = 1000

[auth]
jwt_secret = "faults-jwt-secret-{db}"

[push]
provider = "fcm"
fcm_endpoint = "{fake}"
fcm_project = "faults"
fcm_bearer = "faults-bearer"

[systems.erp]
name = "ERP (fault suite)"
secret = "erp-faults-secret-{db}"
callback_url = "{fake}/callbacks/erp"
progress_callbacks = true

[sla]
# The timers' scenario submits steps due in seconds: reminders two seconds ahead.
remind_before = ["PT2S"]

[log]
level = "info"
"#,
        pg = run.pg_server,
        amqp = run.amqp,
    )
}
