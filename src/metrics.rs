//! The service's Prometheus metrics: one registry, handles cloned into whoever records.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of an HTTP answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The method.
    pub method: String,
    /// The route's pattern, such as `/v1/requests/{id}/approve`.
    pub route: String,
    /// The status code.
    pub status: u16,
}

/// Labels of an HTTP route.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The method.
    pub method: String,
    /// The route's pattern.
    pub route: String,
}

/// Labels of a command's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    /// `submit`, `approve`, ...
    pub command: String,
    /// `ok`, `noop`, an error code.
    pub outcome: String,
}

/// Labels of a delivery attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// `callback` or `push`.
    pub channel: String,
    /// `delivered`, `retry`, `dead`, `dropped`.
    pub outcome: String,
}

/// Labels naming a delivery channel.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabels {
    /// `callback` or `push`.
    pub channel: String,
}

/// Labels of a look-up in the command path's cache.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `hit`, `new`, `miss` or `stale`.
    pub result: &'static str,
}

/// Labels of jobs the scheduler took.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TakenLabels {
    /// `handed` (made leased by a consumer of this process), `claimed` (from the table) or
    /// `stale` (handed, but left to its lease for having too little of it left).
    pub how: &'static str,
}

/// Labels of a timer's firing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TimerLabels {
    /// `reminder`, `overdue`, `escalation` or `expiry`.
    pub kind: &'static str,
    /// `fired` (its event was appended) or `stale` (the request refused it: it no longer
    /// applied, or another instance fired it first).
    pub outcome: &'static str,
}

/// Labels naming a feed reader.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReaderLabels {
    /// The reader's checkpoint name.
    pub reader: String,
}

/// Labels of a step of the command path.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    /// `load` or `append`.
    pub step: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms .. about 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Every metric.
pub struct Metrics {
    registry: Registry,
    /// The `commands` family alone: prometheus-client reads a family's values only by encoding
    /// it, and this one encodes in microseconds ([`Metrics::commands_appended`]).
    commands_only: Registry,
    /// HTTP answers by route and status.
    pub http_requests: Family<HttpLabels, Counter>,
    /// HTTP latency by route.
    pub http_duration: HistogramFamily<RouteLabels>,
    /// Commands by outcome.
    pub commands: Family<CommandLabels, Counter>,
    /// Optimistic-lock conflicts retried on the server.
    pub command_retries: Counter,
    /// Commands answered before the read models showed them.
    pub read_your_writes_timeouts: Counter,
    /// How long a command waited, after its commit, for the read models to show it.
    pub read_your_writes_wait: Histogram,
    /// How long a command's load of its request and its append took, by step.
    pub command_store_duration: HistogramFamily<StepLabels>,
    /// How commands found their request: in the command path's cache (`hit`), not there
    /// (`miss`), a submission presumed new (`new`), or older than the store, or not new after
    /// all (`stale`: loaded again).
    pub command_cache: Family<CacheLabels, Counter>,
    /// How long a projection batch took, from its feed read to its commit.
    pub reader_batch_duration: HistogramFamily<ReaderLabels>,
    /// Feed reads that found committed events held back behind a running transaction.
    pub reader_held_back: Family<ReaderLabels, Counter>,
    /// Batches a feed reader applied in one statement, its checkpoints' move included.
    pub reader_one_statement: Family<ReaderLabels, Counter>,
    /// Events a feed reader has yet to read.
    pub reader_lag_events: Family<ReaderLabels, Gauge>,
    /// Age of the oldest event a feed reader has yet to read.
    pub reader_lag_seconds: Family<ReaderLabels, Gauge<f64, AtomicU64>>,
    /// Batches a feed reader failed to apply (and retried).
    pub reader_errors: Family<ReaderLabels, Counter>,
    /// From an event's commit to RabbitMQ's confirm of its message.
    pub commit_to_publish: Histogram,
    /// From an event's commit to the legacy system's 2xx.
    pub commit_to_callback: Histogram,
    /// From an event's commit to the push provider's 2xx.
    pub commit_to_push: Histogram,
    /// Delivery attempts by outcome.
    pub delivery_attempts: Family<DeliveryLabels, Counter>,
    /// Jobs the scheduler took, by how.
    pub deliveries_taken: Family<TakenLabels, Counter>,
    /// Dead letters now, by channel.
    pub dead_letters: Family<ChannelLabels, Gauge>,
    /// Timers fired, by kind and outcome.
    pub timers_fired: Family<TimerLabels, Counter>,
    /// From a timer's moment to its event's append.
    pub timer_lag: Histogram,
    /// Current steps of pending requests whose deadline passed, as of the last look.
    pub overdue_steps: Gauge,
    /// The last hour per minute, for the operators' console (not exported).
    pub series: crate::series::Series,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("approval_ledger");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            http_requests.clone(),
        );
        let http_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency, by route",
            http_duration.clone(),
        );
        let commands = Family::<CommandLabels, Counter>::default();
        registry.register("commands", "Commands, by outcome", commands.clone());
        let mut commands_only = Registry::default();
        commands_only.register("commands", "Commands, by outcome", commands.clone());
        let command_retries = Counter::default();
        registry.register(
            "command_conflict_retries",
            "Optimistic-lock conflicts retried on the server",
            command_retries.clone(),
        );
        let read_your_writes_timeouts = Counter::default();
        registry.register(
            "read_your_writes_timeouts",
            "Commands answered before every read model showed them",
            read_your_writes_timeouts.clone(),
        );
        let read_your_writes_wait = latency_histogram();
        registry.register(
            "read_your_writes_wait_seconds",
            "How long a command waited, after its commit, for every read model to show it",
            read_your_writes_wait.clone(),
        );
        let command_store_duration: HistogramFamily<StepLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "command_store_seconds",
            "How long a command's load of its request (step=load) and its append, commit included \
             (step=append), took",
            command_store_duration.clone(),
        );
        let command_cache = Family::<CacheLabels, Counter>::default();
        registry.register(
            "command_cache",
            "How commands found their request: in the command path's cache (hit), not there \
             (miss), a submission presumed new (new), or older than the store, or not new after \
             all (stale, loaded again)",
            command_cache.clone(),
        );
        let reader_batch_duration: HistogramFamily<ReaderLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "feed_reader_batch_seconds",
            "How long a batch of a feed reader took, from its feed read to its effect",
            reader_batch_duration.clone(),
        );
        let reader_one_statement = Family::<ReaderLabels, Counter>::default();
        registry.register(
            "feed_reader_one_statement_batches",
            "Projection batches applied in one statement that also moved the checkpoints (the \
             others took a transaction: the first after a start, or after another instance or a \
             rebuild wrote the checkpoints)",
            reader_one_statement.clone(),
        );
        let reader_held_back = Family::<ReaderLabels, Counter>::default();
        registry.register(
            "feed_reader_held_back",
            "Feed reads that found committed events waiting: behind a transaction still running, \
             or, after an empty read, committed just after it",
            reader_held_back.clone(),
        );
        let reader_lag_events = Family::<ReaderLabels, Gauge>::default();
        registry.register(
            "feed_reader_lag_events",
            "Events a feed reader with a checkpoint has yet to read, counted up to 100000",
            reader_lag_events.clone(),
        );
        let reader_lag_seconds = Family::<ReaderLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "feed_reader_lag_seconds",
            "Age of the oldest event a feed reader has yet to read",
            reader_lag_seconds.clone(),
        );
        let reader_errors = Family::<ReaderLabels, Counter>::default();
        registry.register(
            "feed_reader_errors",
            "Batches a feed reader failed to apply and retried",
            reader_errors.clone(),
        );
        let commit_to_publish = latency_histogram();
        registry.register(
            "commit_to_publish_seconds",
            "From an event's commit to RabbitMQ's confirm of its message",
            commit_to_publish.clone(),
        );
        let commit_to_callback = latency_histogram();
        registry.register(
            "commit_to_callback_seconds",
            "From an event's commit to the legacy system's 2xx answer",
            commit_to_callback.clone(),
        );
        let commit_to_push = latency_histogram();
        registry.register(
            "commit_to_push_seconds",
            "From an event's commit to the push provider's 2xx answer",
            commit_to_push.clone(),
        );
        let delivery_attempts = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "delivery_attempts",
            "Callback and push attempts, by outcome",
            delivery_attempts.clone(),
        );
        let deliveries_taken = Family::<TakenLabels, Counter>::default();
        registry.register(
            "deliveries_taken",
            "Jobs the scheduler took: handed over already leased, claimed from the table, or left to their lease",
            deliveries_taken.clone(),
        );
        let dead_letters = Family::<ChannelLabels, Gauge>::default();
        registry.register(
            "dead_letters",
            "Deliveries in dead letters, by channel",
            dead_letters.clone(),
        );
        let timers_fired = Family::<TimerLabels, Counter>::default();
        registry.register(
            "timers_fired",
            "Timers fired (reminders, overdue notices, escalations, expiries), by kind and outcome",
            timers_fired.clone(),
        );
        // 1 ms .. about 2 min: a timer fires within a tick of its moment, or late after an outage.
        let timer_lag = Histogram::new(exponential_buckets(0.001, 2.0, 18));
        registry.register(
            "timer_lag_seconds",
            "From a timer's moment to the append of the event that records it fired",
            timer_lag.clone(),
        );
        let overdue_steps = Gauge::default();
        registry.register(
            "overdue_steps",
            "Current steps of pending requests whose deadline has passed",
            overdue_steps.clone(),
        );
        Self {
            registry,
            commands_only,
            commit_to_publish,
            commit_to_callback,
            commit_to_push,
            delivery_attempts,
            deliveries_taken,
            dead_letters,
            http_requests,
            http_duration,
            commands,
            command_retries,
            read_your_writes_timeouts,
            read_your_writes_wait,
            command_store_duration,
            command_cache,
            reader_batch_duration,
            reader_held_back,
            reader_one_statement,
            reader_lag_events,
            reader_lag_seconds,
            reader_errors,
            timers_fired,
            timer_lag,
            overdue_steps,
            series: crate::series::Series::default(),
        }
    }
}

impl Metrics {
    /// The registry, for extensions to register their own metrics at start.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Everything in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Counts a command's outcome.
    pub fn command(&self, command: &str, outcome: &str) {
        self.commands
            .get_or_create(&CommandLabels {
                command: command.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Commands of every name that appended events (`outcome="ok"`) since the start: read off
    /// the counters the command path keeps anyway, so reading it costs the command path nothing.
    pub fn commands_appended(&self) -> u64 {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.commands_only).is_err() {
            return 0;
        }
        out.lines()
            .filter(|line| line.starts_with("commands_total{") && line.contains("outcome=\"ok\""))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Counts a look-up in the command path's cache.
    pub fn cache(&self, result: &'static str) {
        self.command_cache
            .get_or_create(&CacheLabels { result })
            .inc();
    }

    /// Records how long step `step` of the command path took since `started`.
    pub fn command_step(&self, step: &'static str, started: std::time::Instant) {
        self.command_store_duration
            .get_or_create(&StepLabels { step })
            .observe(started.elapsed().as_secs_f64());
    }

    /// Counts jobs the scheduler took (`handed`, `claimed`, `stale`).
    pub fn taken(&self, how: &'static str, jobs: usize) {
        if jobs > 0 {
            self.deliveries_taken
                .get_or_create(&TakenLabels { how })
                .inc_by(jobs as u64);
        }
    }

    /// Counts a delivery attempt's outcome.
    pub fn delivery(&self, channel: &str, outcome: &str) {
        self.delivery_attempts
            .get_or_create(&DeliveryLabels {
                channel: channel.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts a timer's firing; a fired one's lag since its moment, in seconds.
    pub fn timer(&self, kind: &'static str, lag: Option<f64>) {
        let outcome = if lag.is_some() { "fired" } else { "stale" };
        self.timers_fired
            .get_or_create(&TimerLabels { kind, outcome })
            .inc();
        if let Some(lag) = lag {
            self.timer_lag.observe(lag.max(0.0));
        }
    }

    /// The labels of reader `name`.
    pub fn reader(name: &str) -> ReaderLabels {
        ReaderLabels {
            reader: name.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_appended_sums_the_ok_outcomes_of_every_command() {
        let metrics = Metrics::default();
        assert_eq!(metrics.commands_appended(), 0);
        metrics.command("approve", "ok");
        metrics.command("approve", "ok");
        metrics.command("submit", "ok");
        metrics.command("approve", "refused");
        metrics.command("set_absence", "noop");
        assert_eq!(metrics.commands_appended(), 3);
    }
}
