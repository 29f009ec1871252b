//! People beyond their names: whom an approver may act for and how much they may approve
//! ([`Authority`], resolved by the service and handed to the request with each decision), and
//! each person's absences with their deputies ([`Absences`], an aggregate of its own, one per
//! person, whose events share the request's event table and feed).
//!
//! Every rule of an absence lives in [`Absences`]'s `handle`; what it cannot see itself (whom the
//! deputy's own absences lead to) the service resolves and passes in the command.

use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::DomainError;
use crate::events::ApprovalEvent;
use crate::types::{Timestamp, UserId};
use crate::validation;

/// The namespace of the ids of people's absence aggregates (UUID version 5 of the user id).
const ABSENCES_NAMESPACE: Uuid = Uuid::from_u128(0x3b9e_51a7_0c2d_4f68_8e14_92d7_6a0f_c5b3);

/// The most absences one person keeps at once (recorded and not yet over): a bound on the
/// state every command on them loads.
pub const MAX_OPEN_ABSENCES: usize = 500;

/// What a decision may do beyond the approver's own place, as the service resolved it for the
/// command's moment: the absent people the approver deputises for, their authority limits, and
/// the policy in force. The default is a plain approver under no policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authority {
    /// The people whose place the approver may take, nearest first (their deputies' chains
    /// resolved, no one twice). `None`: not resolved, which reads as nobody: the service
    /// resolves it only when the approver has no place of their own.
    pub principals: Option<Vec<UserId>>,
    /// The most the approver may approve, per currency code: the highest of their own and
    /// their groups' limits. A currency without an entry is not limited.
    pub limits: BTreeMap<String, Decimal>,
    /// Whether a person approves at most one step of a request.
    pub separation_of_duties: bool,
    /// Above this amount (any currency), a decision must send `expected_version`.
    pub require_version_above: Option<Decimal>,
}

impl Authority {
    /// The people the approver may act for.
    pub fn principals(&self) -> &[UserId] {
        self.principals.as_deref().unwrap_or_default()
    }
}

/// The id of `person`'s absences aggregate.
pub fn absences_id(person: &UserId) -> Uuid {
    Uuid::new_v5(&ABSENCES_NAMESPACE, person.as_str().as_bytes())
}

/// One absence as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Absence {
    /// Its id.
    pub id: Uuid,
    /// Who decides in the person's place.
    pub deputy: UserId,
    /// When it starts.
    pub from: Timestamp,
    /// When it ends (exclusive); an early end moves it.
    pub until: Timestamp,
    /// What the person wrote.
    pub comment: Option<String>,
    /// When it was ended early, if it was.
    pub ended_at: Option<Timestamp>,
}

/// A person's absences: `None` until their first one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Absences {
    /// Whose they are.
    pub person: Option<UserId>,
    /// Every absence recorded, in order.
    pub absences: Vec<Absence>,
}

/// An absence to record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recording {
    /// Who will be away: the caller.
    pub person: UserId,
    /// The new absence's id, drawn by the service.
    pub absence_id: Uuid,
    /// Who decides in their place.
    pub deputy: UserId,
    /// When it starts.
    pub from: Timestamp,
    /// When it ends (exclusive).
    pub until: Timestamp,
    /// Why, optionally.
    pub comment: Option<String>,
    /// Everyone the deputy's own absences (and theirs, on and on) lead to at some moment of
    /// `[from, until)`, as the service resolved them: if the person is among them, the new
    /// absence would close a circle.
    pub deputy_reach: Vec<UserId>,
    /// When.
    pub at: Timestamp,
}

/// A command to a person's absences.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AbsenceCommand {
    /// Records an absence.
    Record(Recording),
    /// Ends an absence now (or withdraws one yet to start).
    End {
        /// Whose absence: the caller.
        person: UserId,
        /// Which one.
        absence_id: Uuid,
        /// When.
        at: Timestamp,
    },
}

impl AbsenceCommand {
    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Record(_) => "record_absence",
            Self::End { .. } => "end_absence",
        }
    }
}

fn invalid(message: impl Into<String>) -> DomainError {
    DomainError::InvalidAbsence(message.into())
}

impl Absences {
    /// The absence `id`, if recorded.
    pub fn get(&self, id: Uuid) -> Option<&Absence> {
        self.absences.iter().find(|a| a.id == id)
    }

    fn record(&self, r: Recording) -> Result<Vec<ApprovalEvent>, DomainError> {
        validation::user("deputy", &r.deputy)?;
        if r.deputy == r.person {
            return Err(invalid("you cannot be your own deputy"));
        }
        if r.until <= r.from {
            return Err(invalid("until must be after from"));
        }
        if r.until <= r.at {
            return Err(invalid("until must be in the future"));
        }
        let comment = r.comment.filter(|c| !c.trim().is_empty());
        validation::comment("comment", comment.as_deref())?;
        if self.get(r.absence_id).is_some() {
            // The same id again (a retry): nothing more to write.
            return Ok(vec![]);
        }
        // Absences may overlap: while both are in force, both deputies stand in.
        let open = self.absences.iter().filter(|a| a.until > r.at).count();
        if open >= MAX_OPEN_ABSENCES {
            return Err(invalid(format!(
                "at most {MAX_OPEN_ABSENCES} absences that are not over yet"
            )));
        }
        if r.deputy_reach.contains(&r.person) {
            return Err(invalid(format!(
                "{} (or whoever deputises for them then) names you as deputy: that would \
                 close a circle",
                r.deputy
            )));
        }
        Ok(vec![ApprovalEvent::AbsenceRecorded {
            person: r.person,
            absence_id: r.absence_id,
            deputy: r.deputy,
            from: r.from,
            until: r.until,
            comment,
            at: r.at,
        }])
    }

    fn end(
        &self,
        person: UserId,
        absence_id: Uuid,
        at: Timestamp,
    ) -> Result<Vec<ApprovalEvent>, DomainError> {
        let absence = self.get(absence_id).ok_or(DomainError::AbsenceNotFound)?;
        if absence.until <= at {
            // Over already, by its end or an earlier one: nothing changes.
            return Ok(vec![]);
        }
        Ok(vec![ApprovalEvent::AbsenceEnded {
            person,
            absence_id,
            at,
        }])
    }

    /// Decides what a command does: the events it produces, or why it is refused.
    pub fn decide_command(
        &self,
        command: AbsenceCommand,
    ) -> Result<Vec<ApprovalEvent>, DomainError> {
        match command {
            AbsenceCommand::Record(r) => self.record(r),
            AbsenceCommand::End {
                person,
                absence_id,
                at,
            } => self.end(person, absence_id, at),
        }
    }

    /// Folds one event into the state: assignment only.
    pub fn fold(&mut self, event: ApprovalEvent) {
        match event {
            ApprovalEvent::AbsenceRecorded {
                person,
                absence_id,
                deputy,
                from,
                until,
                comment,
                ..
            } => {
                self.person = Some(person);
                self.absences.push(Absence {
                    id: absence_id,
                    deputy,
                    from,
                    until,
                    comment,
                    ended_at: None,
                });
            }
            ApprovalEvent::AbsenceEnded { absence_id, at, .. } => {
                if let Some(a) = self.absences.iter_mut().find(|a| a.id == absence_id) {
                    a.ended_at = Some(at);
                    // An absence withdrawn before it started ends where it starts.
                    a.until = at.max(a.from);
                }
            }
            _ => {}
        }
    }
}

impl Aggregate for Absences {
    const TYPE: &'static str = "Absences";
    type Command = AbsenceCommand;
    type Event = ApprovalEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide_command(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.fold(event);
    }
}
