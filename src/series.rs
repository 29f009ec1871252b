//! The last hour, minute by minute, as this process saw it: commands per second and the
//! commit-to-push latency (its median and 99th percentile), for the operators' console's
//! charts.
//!
//! Kept in memory, not read from the store: the events table has no index on commit time and
//! the deliveries table none on delivery time, so an hour of either would be a scan that grows
//! with the load; and an index added for a page would cost every command. Nothing here touches
//! the command path: commands are counted by sampling, once a second, the count of commands
//! that appended events, which the command path already keeps
//! ([`Metrics::commands_appended`]); push latencies are
//! recorded by the scheduler beside its `commit_to_push` histogram. So each process shows its
//! own view: the commands its API took, the pushes its scheduler sent.
//!
//! Must not hold: anything a reader of the feed or a command waits for.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Minutes kept, the current one included.
pub const MINUTES: i64 = 60;

/// Latency buckets per doubling: each bucket is about 9 % wide, which bounds a percentile's error.
const PER_DOUBLING: f64 = 8.0;
/// The lowest bucket's lower bound, in milliseconds.
const FLOOR_MS: f64 = 0.1;
/// Buckets: from 0.1 ms up past 50 minutes; anything longer counts in the last.
const BUCKETS: usize = 200;

/// How often the sampler reads the count of appends.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// The window of the last hour.
#[derive(Debug)]
pub struct Series {
    started: DateTime<Utc>,
    minutes: Mutex<BTreeMap<i64, Minute>>,
}

impl Default for Series {
    fn default() -> Self {
        Self {
            started: Utc::now(),
            minutes: Mutex::new(BTreeMap::new()),
        }
    }
}

#[derive(Debug, Default)]
struct Minute {
    commands: u64,
    /// Counts per latency bucket, made at the minute's first push.
    pushes: Option<Box<[u32; BUCKETS]>>,
}

/// One minute of the window, as the console shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct MinuteView {
    /// The minute's start.
    pub at: DateTime<Utc>,
    /// Commands per second over the part of the minute this process was up for; `None` before
    /// it started.
    pub commands_per_second: Option<f64>,
    /// Pushes delivered in the minute.
    pub pushes: u64,
    /// Their median commit-to-push latency, in milliseconds.
    pub push_p50_ms: Option<f64>,
    /// Their 99th percentile.
    pub push_p99_ms: Option<f64>,
}

fn minute_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(60)
}

fn bucket_of(ms: f64) -> usize {
    if ms.is_nan() || ms <= FLOOR_MS {
        return 0;
    }
    let index = ((ms / FLOOR_MS).log2() * PER_DOUBLING).floor();
    (index as usize).min(BUCKETS - 1)
}

/// The middle of bucket `index` (geometrically), in milliseconds.
fn bucket_value(index: usize) -> f64 {
    FLOOR_MS * ((index as f64 + 0.5) / PER_DOUBLING).exp2()
}

/// The `q` quantile of the counts, as the middle of the bucket it falls in.
fn quantile(counts: &[u32; BUCKETS], total: u64, q: f64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0u64;
    for (index, n) in counts.iter().enumerate() {
        seen += u64::from(*n);
        if seen >= rank {
            return Some(bucket_value(index));
        }
    }
    Some(bucket_value(BUCKETS - 1))
}

impl Series {
    fn with_minutes<T>(&self, f: impl FnOnce(&mut BTreeMap<i64, Minute>) -> T) -> T {
        let mut minutes = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut minutes)
    }

    /// When this process started keeping the window.
    pub fn started(&self) -> DateTime<Utc> {
        self.started
    }

    /// Counts `n` commands at `at`.
    pub fn commands(&self, at: DateTime<Utc>, n: u64) {
        if n == 0 {
            return;
        }
        let minute = minute_of(at);
        self.with_minutes(|minutes| {
            minutes.entry(minute).or_default().commands += n;
            forget_before(minutes, minute);
        });
    }

    /// Records a push delivered at `at`, `seconds` after its event's commit.
    pub fn push_delivered(&self, at: DateTime<Utc>, seconds: f64) {
        let minute = minute_of(at);
        let bucket = bucket_of(seconds * 1000.0);
        self.with_minutes(|minutes| {
            let counts = minutes
                .entry(minute)
                .or_default()
                .pushes
                .get_or_insert_with(|| Box::new([0; BUCKETS]));
            counts[bucket] = counts[bucket].saturating_add(1);
            forget_before(minutes, minute);
        });
    }

    /// The last [`MINUTES`] minutes up to `now`, oldest first.
    pub fn view(&self, now: DateTime<Utc>) -> Vec<MinuteView> {
        let current = minute_of(now);
        let started = self.started.timestamp();
        let now_secs = now.timestamp();
        self.with_minutes(|minutes| {
            (current - MINUTES + 1..=current)
                .map(|minute| {
                    let start = minute * 60;
                    let covered = (start + 60).min(now_secs + 1) - start.max(started);
                    let held = minutes.get(&minute);
                    let commands = held.map_or(0, |m| m.commands);
                    let (pushes, p50, p99) = match held.and_then(|m| m.pushes.as_deref()) {
                        Some(counts) => {
                            let total: u64 = counts.iter().map(|n| u64::from(*n)).sum();
                            (
                                total,
                                quantile(counts, total, 0.5),
                                quantile(counts, total, 0.99),
                            )
                        }
                        None => (0, None, None),
                    };
                    MinuteView {
                        at: DateTime::from_timestamp(start, 0).unwrap_or(now),
                        commands_per_second: (covered > 0)
                            .then(|| commands as f64 / covered as f64),
                        pushes,
                        push_p50_ms: p50,
                        push_p99_ms: p99,
                    }
                })
                .collect()
        })
    }

    /// Samples the count of commands that appended events every second until `stop`,
    /// counting what it grew by as commands of that second.
    pub async fn sample(metrics: Arc<Metrics>, stop: CancellationToken) {
        let appends = || metrics.commands_appended();
        let mut last = appends();
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = appends();
            metrics
                .series
                .commands(Utc::now(), now.saturating_sub(last));
            last = now;
        }
    }
}

/// Drops the minutes that left the window ending at `minute`.
fn forget_before(minutes: &mut BTreeMap<i64, Minute>, minute: i64) {
    while let Some((&first, _)) = minutes.first_key_value() {
        if first > minute - MINUTES {
            break;
        }
        minutes.remove(&first);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn a_percentile_is_within_a_bucket_of_the_truth() {
        let series = Series {
            started: at(0),
            minutes: Mutex::new(BTreeMap::new()),
        };
        for ms in 1..=100 {
            series.push_delivered(at(600), f64::from(ms) / 1000.0);
        }
        let view = series.view(at(659));
        let last = view.last().unwrap();
        assert_eq!(last.pushes, 100);
        let p50 = last.push_p50_ms.unwrap();
        let p99 = last.push_p99_ms.unwrap();
        assert!((46.0..=55.0).contains(&p50), "{p50}");
        assert!((94.0..=104.0).contains(&p99), "{p99}");
    }

    #[test]
    fn commands_per_second_count_only_the_time_the_process_was_up() {
        let series = Series {
            started: at(630),
            minutes: Mutex::new(BTreeMap::new()),
        };
        series.commands(at(640), 30);
        series.commands(at(662), 12);
        let view = series.view(at(665));
        assert_eq!(view.len(), MINUTES as usize);
        // Up from 630 to the minute's end: 30 s.
        assert_eq!(view[MINUTES as usize - 2].commands_per_second, Some(1.0));
        // The current minute so far: 660..=665, 6 s.
        assert_eq!(view[MINUTES as usize - 1].commands_per_second, Some(2.0));
        // Before the start: nothing to say.
        assert_eq!(view[0].commands_per_second, None);
    }

    #[test]
    fn minutes_older_than_the_window_are_forgotten() {
        let series = Series::default();
        series.commands(at(0), 5);
        series.commands(at(MINUTES * 60 + 1), 1);
        assert_eq!(series.with_minutes(|m| m.len()), 1);
    }
}
