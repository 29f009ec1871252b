//! Progress of long commands, on stderr so that stdout carries only data: at most one line a
//! second while the work runs.

use std::time::{Duration, Instant};

/// Counts work done and reports it now and then.
#[derive(Debug)]
pub struct Meter {
    what: String,
    started: Instant,
    last: Instant,
}

impl Meter {
    /// A meter of `what` ("verified", "exported"...), started now.
    pub fn new(what: impl Into<String>) -> Self {
        let now = Instant::now();
        Self {
            what: what.into(),
            started: now,
            last: now,
        }
    }

    /// Notes that `done` events are done; prints a line when the last one is a second old.
    pub fn tick(&mut self, done: u64) {
        if self.last.elapsed() >= Duration::from_secs(1) {
            self.last = Instant::now();
            eprintln!(
                "{}: {done} events ({:.0} events/s)",
                self.what,
                self.rate(done)
            );
        }
    }

    /// Events per second since the start.
    pub fn rate(&self, done: u64) -> f64 {
        done as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}
