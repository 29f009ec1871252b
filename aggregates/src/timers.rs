//! The timers a request's state sets: a reminder at each `remind_before` moment of its current
//! step's deadline, the overdue notice and the escalation when that deadline passes, and the
//! request's expiry at its `due_at`. Each one, when due, sends a command; the aggregate decides
//! whether it still applies, so a timer fired late or twice changes nothing.
//!
//! The read side keeps these in a table (one row per timer, recomputed whenever a request
//! changes) that the service's timer loop polls; the list is derived here, from the same state
//! the aggregate judges by, so the table never sets a timer the aggregate does not know.

use crate::aggregate::Request;
use crate::commands::ApprovalCommand;
use crate::types::{Reminder, Timestamp};

/// What a timer does when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerKind {
    /// Reminds the current step's undecided approvers (or tells them it is overdue).
    Reminder(Reminder),
    /// Makes the step's `escalate_to` people approvers.
    Escalation,
    /// Expires the request.
    Expiry,
}

/// One timer of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timer {
    /// What it does.
    pub kind: TimerKind,
    /// The step it was set for (`None` for the request's expiry).
    pub step: Option<usize>,
    /// When it falls due.
    pub fire_at: Timestamp,
}

impl TimerKind {
    /// Its name in metrics and logs: `reminder`, `overdue`, `escalation`, `expiry`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Reminder(Reminder::Before(_)) => "reminder",
            Self::Reminder(Reminder::Overdue) => "overdue",
            Self::Escalation => "escalation",
            Self::Expiry => "expiry",
        }
    }

    /// Among timers due at the same moment, the order they fire in: the overdue notice before
    /// the escalation (so it reaches the approvers who were late, not the new ones), and the
    /// expiry last.
    pub fn rank(self) -> i16 {
        match self {
            Self::Reminder(Reminder::Before(_)) => 0,
            Self::Reminder(Reminder::Overdue) => 1,
            Self::Escalation => 2,
            Self::Expiry => 3,
        }
    }
}

impl Timer {
    /// Its key among the request's timers: stable for as long as the timer is set, so the
    /// table's row for it is upserted, not duplicated, when the request changes.
    pub fn key(&self) -> String {
        let step = self.step.unwrap_or_default();
        match self.kind {
            TimerKind::Reminder(Reminder::Before(before)) => {
                format!("s{step}:before:{}", before.as_secs())
            }
            TimerKind::Reminder(Reminder::Overdue) => format!("s{step}:overdue"),
            TimerKind::Escalation => format!("s{step}:escalation"),
            TimerKind::Expiry => "expiry".to_owned(),
        }
    }

    /// Reads a key back; `None` for one that is not a timer's.
    pub fn from_key(key: &str, fire_at: Timestamp) -> Option<Self> {
        if key == "expiry" {
            return Some(Self {
                kind: TimerKind::Expiry,
                step: None,
                fire_at,
            });
        }
        let (step, what) = key.strip_prefix('s')?.split_once(':')?;
        let step: usize = step.parse().ok()?;
        let kind = match what {
            "overdue" => TimerKind::Reminder(Reminder::Overdue),
            "escalation" => TimerKind::Escalation,
            before => {
                let seconds = before.strip_prefix("before:")?.parse().ok()?;
                TimerKind::Reminder(Reminder::Before(crate::Period::from_secs(seconds)))
            }
        };
        Some(Self {
            kind,
            step: Some(step),
            fire_at,
        })
    }

    /// The command it sends when it fires at `at`.
    pub fn command(&self, at: Timestamp) -> ApprovalCommand {
        let step = self.step.unwrap_or_default();
        match self.kind {
            TimerKind::Reminder(reminder) => ApprovalCommand::Remind { step, reminder, at },
            TimerKind::Escalation => ApprovalCommand::Escalate { step, at },
            TimerKind::Expiry => ApprovalCommand::Expire { at },
        }
    }
}

impl Request {
    /// Whether the request has any deadline at all: only then can it set timers. Fixed at
    /// submission, so a reader can skip every request without one.
    pub fn has_deadlines(&self) -> bool {
        self.due_at.is_some() || self.steps.iter().any(|s| s.due_in.is_some())
    }

    /// The timers it sets now: none once final; otherwise its expiry and those of its current
    /// step's deadline that have not fired.
    pub fn timers(&self) -> Vec<Timer> {
        let mut timers = vec![];
        if self.status.is_final() {
            return timers;
        }
        if let Some(due_at) = self.due_at {
            timers.push(Timer {
                kind: TimerKind::Expiry,
                step: None,
                fire_at: due_at,
            });
        }
        let Some((step, due_at)) = self.open_step().and_then(|s| s.due_at.map(|due| (s, due)))
        else {
            return timers;
        };
        let index = Some(self.current_step);
        for reminder in step.reminders() {
            if step.reminded.contains(&reminder) {
                continue;
            }
            let fire_at = match reminder {
                Reminder::Before(before) => due_at - before.to_chrono(),
                Reminder::Overdue => due_at,
            };
            timers.push(Timer {
                kind: TimerKind::Reminder(reminder),
                step: index,
                fire_at,
            });
        }
        if step.escalated_at.is_none() && !step.escalation().is_empty() {
            timers.push(Timer {
                kind: TimerKind::Escalation,
                step: index,
                fire_at: due_at,
            });
        }
        timers
    }
}
