//! Latency recording (HdrHistogram, microseconds), the results file of a run, and the final
//! table and `bench:` line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A latency histogram that many tasks record into, with a count of failures beside it.
pub struct Recorder {
    histogram: Mutex<Histogram<u64>>,
    failures: AtomicU64,
    statuses: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            // 1 µs to 10 minutes, 3 significant digits.
            histogram: Mutex::new(
                Histogram::new_with_bounds(1, 600_000_000, 3)
                    .unwrap_or_else(|_| unreachable!("the bounds are valid constants")),
            ),
            failures: AtomicU64::new(0),
            statuses: Mutex::new(Default::default()),
        }
    }
}

impl Recorder {
    /// A success that took `latency`.
    pub fn ok(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        if let Ok(mut h) = self.histogram.lock() {
            h.saturating_record(us);
        }
    }

    /// A failure, by what it was (`status 503`, `timeout`, ...).
    pub fn failed(&self, what: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut s) = self.statuses.lock() {
            *s.entry(what).or_default() += 1;
        }
    }

    /// Its summary.
    pub fn summary(&self) -> Summary {
        let failures = self.failures.load(Ordering::Relaxed);
        let errors = self.statuses.lock().map(|s| s.clone()).unwrap_or_default();
        match self.histogram.lock() {
            Ok(h) => Summary::of(&h, failures, errors),
            Err(_) => Summary::default(),
        }
    }
}

/// Percentiles in milliseconds, counts of successes and failures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Successes.
    pub count: u64,
    /// Failures.
    pub failures: u64,
    /// Failures by kind.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// Median.
    pub p50_ms: Option<f64>,
    /// 95th percentile.
    pub p95_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// Slowest.
    pub max_ms: Option<f64>,
}

impl Summary {
    /// The summary of `h` (microseconds).
    pub fn of(
        h: &Histogram<u64>,
        failures: u64,
        errors: std::collections::BTreeMap<String, u64>,
    ) -> Self {
        let ms = |us: u64| Some(us as f64 / 1000.0);
        let empty = h.is_empty();
        Self {
            count: h.len(),
            failures,
            errors,
            p50_ms: if empty {
                None
            } else {
                ms(h.value_at_quantile(0.50))
            },
            p95_ms: if empty {
                None
            } else {
                ms(h.value_at_quantile(0.95))
            },
            p99_ms: if empty {
                None
            } else {
                ms(h.value_at_quantile(0.99))
            },
            max_ms: if empty { None } else { ms(h.max()) },
        }
    }
}

/// CPU milliseconds per command, by process: what a command costs whatever else the machine
/// runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CpuCost {
    /// The service process.
    pub service_ms: Option<f64>,
    /// The PostgreSQL backends serving the benchmark's database.
    pub postgres_ms: Option<f64>,
    /// The load generator itself.
    pub loadgen_ms: Option<f64>,
    /// PostgreSQL's other processes: WAL writer, checkpointer, autovacuum, other databases.
    #[serde(default)]
    pub postgres_other_ms: Option<f64>,
    /// RabbitMQ.
    #[serde(default)]
    pub rabbitmq_ms: Option<f64>,
    /// The fake legacy and FCM endpoints.
    #[serde(default)]
    pub fakes_ms: Option<f64>,
    /// Everything else that ran: the kernel's own work, other processes, and processes that
    /// ended during the phase.
    #[serde(default)]
    pub rest_ms: Option<f64>,
    /// The machine's busy time over every core: the sum of all the above.
    #[serde(default)]
    pub machine_ms: Option<f64>,
    /// Idle time over every core, per command.
    #[serde(default)]
    pub idle_ms: Option<f64>,
    /// Database transactions per command (each statement outside a transaction is one).
    #[serde(default)]
    pub transactions: Option<f64>,
    /// Table rows inserted, updated or deleted per command, in the benchmark's database.
    #[serde(default)]
    pub rows_written: Option<f64>,
    /// The same by table (inserted, updated, deleted), most written first.
    #[serde(default)]
    pub rows_by_table: Vec<(String, [f64; 3])>,
}

impl CpuCost {
    /// The processes sorted into buckets, together.
    pub fn known_ms(&self) -> f64 {
        [
            self.service_ms,
            self.postgres_ms,
            self.loadgen_ms,
            self.postgres_other_ms,
            self.rabbitmq_ms,
            self.fakes_ms,
        ]
        .iter()
        .map(|v| v.unwrap_or(0.0))
        .sum()
    }

    /// The processes of the system under test: the service, this database's backends,
    /// RabbitMQ, the load generator and the fake endpoints. On a machine that runs other work
    /// too, this is what a command costs; `machine_ms` counts the other work as well.
    pub fn system_ms(&self) -> Option<f64> {
        Some(
            self.service_ms?
                + self.postgres_ms?
                + self.rabbitmq_ms?
                + self.loadgen_ms?
                + self.fakes_ms?,
        )
    }

    fn cells(&self) -> String {
        let v = |x: Option<f64>| x.map_or_else(|| "n/a".to_owned(), |x| format!("{x:.2}"));
        format!(
            "{:>7} | {:>8} | {:>7}",
            v(self.service_ms),
            v(self.postgres_ms),
            v(self.loadgen_ms)
        )
    }

    /// The row of the table of every process.
    fn split(&self, name: &str) -> String {
        let v = |x: Option<f64>| x.map_or_else(|| "n/a".to_owned(), |x| format!("{x:.3}"));
        format!(
            "| {name:<14} | {:>7} | {:>6} | {:>8} | {:>8} | {:>8} | {:>7} | {:>5} | {:>5} | {:>7} | {:>5} | {:>5} | {:>5} |",
            v(self.machine_ms),
            v(self.system_ms()),
            v(self.service_ms),
            v(self.postgres_ms),
            v(self.postgres_other_ms),
            v(self.rabbitmq_ms),
            v(self.loadgen_ms),
            v(self.fakes_ms),
            v(self.rest_ms),
            v(self.idle_ms),
            self.transactions
                .map_or_else(|| "n/a".to_owned(), |t| format!("{t:.1}")),
            self.rows_written
                .map_or_else(|| "n/a".to_owned(), |t| format!("{t:.1}")),
        )
    }
}

/// The fixed-rate phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FixedRate {
    /// Commands per second asked for.
    pub rate: f64,
    /// Seconds measured.
    pub seconds: f64,
    /// Decisions, from their intended send time.
    pub decide: Summary,
    /// Submissions, from their intended send time.
    pub submit: Summary,
    /// Inbox reads while the writes ran, from their intended send time.
    pub inbox: Summary,
    /// Commit (`events.recorded_at`) to arrival at the fake FCM endpoint.
    pub push: Summary,
    /// Commit (`events.recorded_at`) to arrival at the fake legacy endpoint.
    pub callback: Summary,
    /// Devices registered before the phase (0 when the service has no `POST /v1/devices`).
    pub devices: usize,
    /// CPU per command during the phase.
    #[serde(default)]
    pub cpu: CpuCost,
}

/// One level of the saturation phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Level {
    /// Requests in flight.
    pub concurrency: usize,
    /// Seconds measured.
    pub seconds: f64,
    /// Successful commands per second.
    pub throughput: f64,
    /// Failed commands over all commands.
    pub error_rate: f64,
    /// Every command's latency.
    pub commands: Summary,
    /// CPU per command at this level.
    #[serde(default)]
    pub cpu: CpuCost,
}

/// Everything `loadgen run` measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    /// Requests and events in the store before the run.
    pub seeded_requests: i64,
    /// Events in the store before the run.
    pub seeded_events: i64,
    /// Phase 1.
    pub fixed: FixedRate,
    /// Phase 2, each level tried.
    pub saturation: Vec<Level>,
    /// The best level with under 1% errors, if any.
    pub best: Option<Level>,
    /// The service's timers (the run's deadlines), over the whole run.
    #[serde(default)]
    pub timers: TimerLag,
}

/// The lag of the service's timers (fire time minus due time), as its own histogram
/// `approval_ledger_timer_lag_seconds` has it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TimerLag {
    /// Timers fired.
    pub count: u64,
    /// The 99th percentile, as the upper bound of its histogram bucket.
    pub p99_ms: Option<f64>,
}

/// The timers' lag from the service's metrics text.
pub fn timer_lag(metrics: &str) -> TimerLag {
    let mut buckets: Vec<(f64, u64)> = vec![];
    let mut count = 0;
    for line in metrics.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        if name == "approval_ledger_timer_lag_seconds_count" {
            count = value;
        } else if let Some(le) = name
            .strip_prefix("approval_ledger_timer_lag_seconds_bucket{le=\"")
            .and_then(|rest| rest.strip_suffix("\"}"))
        {
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            buckets.push((bound, value));
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let wanted = (count as f64 * 0.99).ceil() as u64;
    let p99_ms = (count > 0)
        .then(|| buckets.iter().find(|(_, n)| *n >= wanted))
        .flatten()
        .filter(|(bound, _)| bound.is_finite())
        .map(|(bound, _)| bound * 1000.0);
    TimerLag { count, p99_ms }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1}"))
}

fn row(name: &str, s: &Summary) -> String {
    format!(
        "| {name:<34} | {:>8} | {:>6} | {:>8} | {:>8} | {:>8} | {:>8} |",
        s.count,
        s.failures,
        ms(s.p50_ms),
        ms(s.p95_ms),
        ms(s.p99_ms),
        ms(s.max_ms)
    )
}

/// The table and the closing `bench:` line, given the PostgreSQL ceiling and the service's RSS.
pub fn report(results: &Results, pg_tps: Option<f64>, rss_mb: Option<f64>) -> String {
    let f = &results.fixed;
    let mut out = vec![
        format!(
            "data set: {} requests, {} events before the run",
            results.seeded_requests, results.seeded_events
        ),
        String::new(),
        format!(
            "phase 1: open loop at {:.0} commands/s for {:.0} s (1/3 submissions, 2/3 decisions), inbox reads alongside; {} devices",
            f.rate, f.seconds, f.devices
        ),
        "| measure                            |       ok | failed |  p50 ms  |  p95 ms  |  p99 ms  |  max ms  |".to_owned(),
        "|------------------------------------|---------:|-------:|---------:|---------:|---------:|---------:|".to_owned(),
        row("decision (HTTP, from intended)", &f.decide),
        row("submission (HTTP, from intended)", &f.submit),
        row("inbox read GET /v1/inbox", &f.inbox),
        row("commit to push (fake FCM)", &f.push),
        row("commit to callback (fake legacy)", &f.callback),
        format!(
            "CPU ms per command in phase 1: service | PostgreSQL backends | loadgen = {}",
            f.cpu.cells()
        ),
        format!(
            "timers (one submission in five has a step due in 5 to 20 s): {} fired over the run, lag p99 {} ms (bucket bound, from the service's metrics)",
            results.timers.count,
            ms(results.timers.p99_ms)
        ),
        String::new(),
        "phase 2: closed loop, as fast as answers come (1/3 submissions, 2/3 decisions)".to_owned(),
        "| in flight | commands/s | errors  |  p50 ms  |  p99 ms  | CPU ms/command: service | postgres | loadgen |".to_owned(),
        "|----------:|-----------:|--------:|---------:|---------:|------------------------:|---------:|--------:|".to_owned(),
    ];
    for level in &results.saturation {
        out.push(format!(
            "| {:>9} | {:>10.0} | {:>6.2}% | {:>8} | {:>8} | {:>23} |",
            level.concurrency,
            level.throughput,
            level.error_rate * 100.0,
            ms(level.commands.p50_ms),
            ms(level.commands.p99_ms),
            level.cpu.cells()
        ));
    }
    out.push(String::new());
    out.push(
        "CPU ms per command, every process (machine = all of them: the busy time of every core; \
         system = the service, pg: this, rabbitmq, loadgen and fakes; tx = database transactions, rows = table rows written)"
            .to_owned(),
    );
    out.push("| phase          | machine | system | service  | pg: this | pg: rest | rabbitmq | loadgen | fakes | rest    | idle  | tx    | rows  |".to_owned());
    out.push("|----------------|--------:|-------:|---------:|---------:|---------:|--------:|------:|------:|--------:|------:|------:|------:|".to_owned());
    out.push(f.cpu.split(&format!("{:.0}/s", f.rate)));
    for level in &results.saturation {
        out.push(level.cpu.split(&format!("{} in flight", level.concurrency)));
    }
    if let Some(best) = results.best.as_ref() {
        let tables: Vec<String> = best
            .cpu
            .rows_by_table
            .iter()
            .map(|(table, [i, u, d])| format!("{table} {i:.2}/{u:.2}/{d:.2}"))
            .collect();
        out.push(format!(
            "rows written per command at {} in flight, by table (inserted/updated/deleted): {}",
            best.concurrency,
            if tables.is_empty() {
                "n/a".to_owned()
            } else {
                tables.join(", ")
            }
        ));
    }
    let throughput = results.best.as_ref().map(|b| b.throughput);
    let ratio = match (throughput, pg_tps) {
        (Some(t), Some(pg)) if pg > 0.0 => Some(t / pg),
        _ => None,
    };
    out.push(String::new());
    out.push(format!(
        "PostgreSQL ceiling (pgbench, bench/ceiling.sql, {} clients): {} tx/s",
        results
            .best
            .as_ref()
            .map_or_else(|| "n/a".to_owned(), |b| b.concurrency.to_string()),
        pg_tps.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.0}"))
    ));
    let num = |v: Option<f64>, digits: usize| {
        v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}"))
    };
    out.push(format!(
        "bench: throughput={} pg_ceiling={} ratio={} p99_ms={} push_p99_ms={} callback_p99_ms={} inbox_p99_ms={} rss_mb={} machine_ms_per_cmd={} service_ms_per_cmd={} system_ms_per_cmd={} tx_per_cmd={} timer_lag_p99_ms={} rows_per_cmd={}",
        num(throughput, 0),
        num(pg_tps, 0),
        num(ratio, 2),
        num(f.decide.p99_ms, 1),
        num(f.push.p99_ms, 1),
        num(f.callback.p99_ms, 1),
        num(f.inbox.p99_ms, 1),
        num(rss_mb, 0),
        num(results.best.as_ref().and_then(|b| b.cpu.machine_ms), 2),
        num(results.best.as_ref().and_then(|b| b.cpu.service_ms), 2),
        num(results.best.as_ref().and_then(|b| b.cpu.system_ms()), 2),
        num(results.best.as_ref().and_then(|b| b.cpu.transactions), 1),
        num(results.timers.p99_ms, 1),
        num(results.best.as_ref().and_then(|b| b.cpu.rows_written), 1),
    ));
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timer_lag_p99_is_read_from_the_services_histogram() {
        let text = "# TYPE approval_ledger_timer_lag_seconds histogram\n\
            approval_ledger_timer_lag_seconds_sum 12.5\n\
            approval_ledger_timer_lag_seconds_count 100\n\
            approval_ledger_timer_lag_seconds_bucket{le=\"0.001\"} 0\n\
            approval_ledger_timer_lag_seconds_bucket{le=\"0.512\"} 90\n\
            approval_ledger_timer_lag_seconds_bucket{le=\"1.024\"} 99\n\
            approval_ledger_timer_lag_seconds_bucket{le=\"+Inf\"} 100\n";
        let lag = timer_lag(text);
        assert_eq!(lag.count, 100);
        assert_eq!(lag.p99_ms, Some(1024.0));
        assert_eq!(timer_lag("").p99_ms, None);
    }
}
