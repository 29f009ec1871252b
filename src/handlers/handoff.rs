//! How the consumers tell this process's scheduler of new jobs: a wake-up for jobs it must claim
//! from the table, and a hand-off of push jobs that were made already leased to it.
//!
//! A claimed job costs an `UPDATE` of its row (the lease) before it is sent and another after
//! (the outcome). A push job made in the same process as a running scheduler does not need the
//! first: the push handler inserts it with its lease taken (`attempts = 1`, due again when the
//! lease ends) and hands the new rows straight to the scheduler. Nothing durable changes: the job
//! is in the table before its message is acknowledged, and if this process dies, or the
//! scheduler cannot send it while enough of its lease is left, the lease runs out and any
//! scheduler claims it as it would any other. Callbacks are never handed over: their order per
//! request is decided by the claim.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::store::deliveries::Job;

/// The consumers' way to the scheduler of their process.
#[derive(Clone, Default)]
pub struct JobSignal(Arc<Inner>);

#[derive(Default)]
struct Inner {
    /// Jobs are due in the table.
    due: Notify,
    /// Jobs were handed over.
    handed: Notify,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    /// Set while a scheduler takes hand-offs.
    open: Option<Opening>,
    jobs: VecDeque<Handed>,
}

#[derive(Clone, Copy)]
struct Opening {
    capacity: usize,
    lease: Duration,
}

struct Handed {
    job: Job,
    /// When the job's lease in the table ends (measured from before its insert, so early).
    until: Instant,
}

/// Room for jobs made leased, as [`JobSignal::room`] gives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Room {
    /// How many jobs the scheduler takes now.
    pub jobs: usize,
    /// The lease to insert them with.
    pub lease: Duration,
}

/// Closes the hand-off when the scheduler stops; jobs still queued then run out their lease.
pub struct Opened(JobSignal);

impl Drop for Opened {
    fn drop(&mut self) {
        let mut queue = self.0.queue();
        queue.open = None;
        queue.jobs.clear();
    }
}

impl JobSignal {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // The lock guards plain data and no code under it panics; a poisoned one is still sound.
        self.0.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Jobs are due in the table: the scheduler should claim.
    pub fn notify(&self) {
        self.0.due.notify_one();
    }

    /// Waits until jobs are due in the table.
    pub async fn notified(&self) {
        self.0.due.notified().await;
    }

    /// Waits until jobs are handed over.
    pub async fn handed(&self) {
        self.0.handed.notified().await;
    }

    /// The scheduler takes up to `capacity` queued jobs made with `lease`, until the returned
    /// guard is dropped.
    pub fn open(&self, capacity: usize, lease: Duration) -> Opened {
        self.queue().open = Some(Opening { capacity, lease });
        Opened(self.clone())
    }

    /// How many jobs made leased the scheduler would take now, and their lease; `None` when no
    /// scheduler runs in this process (make the jobs to be claimed instead).
    pub fn room(&self) -> Option<Room> {
        let queue = self.queue();
        let opening = queue.open?;
        Some(Room {
            jobs: opening.capacity.saturating_sub(queue.jobs.len()),
            lease: opening.lease,
        })
    }

    /// Hands over `jobs`, inserted leased for `room.lease` starting no earlier than `since`.
    /// Without a scheduler (it stopped meanwhile) they are left to run out their lease.
    pub fn hand(&self, jobs: Vec<Job>, lease: Duration, since: Instant) {
        if jobs.is_empty() {
            return;
        }
        let until = since + lease;
        let mut queue = self.queue();
        if queue.open.is_none() {
            return;
        }
        queue
            .jobs
            .extend(jobs.into_iter().map(|job| Handed { job, until }));
        drop(queue);
        self.0.handed.notify_one();
    }

    /// Up to `limit` handed jobs with at least `left` of their lease to go, oldest first, and how
    /// many were passed over for having less (a claim gets those once their lease ends).
    pub fn take(&self, limit: usize, left: Duration) -> (Vec<Job>, usize) {
        let now = Instant::now();
        let mut queue = self.queue();
        let mut taken = Vec::with_capacity(limit.min(queue.jobs.len()));
        let mut stale = 0;
        while taken.len() < limit {
            let Some(handed) = queue.jobs.pop_front() else {
                break;
            };
            if handed.until.saturating_duration_since(now) >= left {
                taken.push(handed.job);
            } else {
                stale += 1;
            }
        }
        (taken, stale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: i64) -> Job {
        Job::for_test(id)
    }

    #[test]
    fn no_room_without_a_scheduler() {
        let signal = JobSignal::default();
        assert_eq!(signal.room(), None);
        signal.hand(vec![job(1)], Duration::from_secs(10), Instant::now());
        assert!(signal.take(10, Duration::ZERO).0.is_empty());
    }

    #[test]
    fn handed_jobs_are_taken_in_order_within_the_room() {
        let signal = JobSignal::default();
        let _open = signal.open(2, Duration::from_secs(10));
        signal.hand(vec![job(1)], Duration::from_secs(10), Instant::now());
        assert_eq!(signal.room().map(|r| r.jobs), Some(1));
        signal.hand(
            vec![job(2), job(3)],
            Duration::from_secs(10),
            Instant::now(),
        );
        let (taken, stale) = signal.take(2, Duration::from_secs(1));
        assert_eq!(taken.iter().map(|j| j.id).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(stale, 0);
        assert_eq!(signal.take(5, Duration::from_secs(1)).0.len(), 1);
    }

    #[test]
    fn a_job_without_enough_lease_left_is_left_to_the_claim() {
        let signal = JobSignal::default();
        let _open = signal.open(8, Duration::from_secs(10));
        signal.hand(vec![job(1)], Duration::from_millis(10), Instant::now());
        signal.hand(vec![job(2)], Duration::from_secs(10), Instant::now());
        let (taken, stale) = signal.take(8, Duration::from_secs(5));
        assert_eq!(taken.iter().map(|j| j.id).collect::<Vec<_>>(), vec![2]);
        assert_eq!(stale, 1);
    }

    #[test]
    fn a_stopped_scheduler_takes_nothing_more() {
        let signal = JobSignal::default();
        let open = signal.open(8, Duration::from_secs(10));
        signal.hand(vec![job(1)], Duration::from_secs(10), Instant::now());
        drop(open);
        assert_eq!(signal.room(), None);
        assert!(signal.take(8, Duration::ZERO).0.is_empty());
    }
}
