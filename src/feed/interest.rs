//! Which event types a reader wants, declared once by the reader itself: the broker's bindings
//! of its queue, its in-process filter and the sweeper's check are all derived from that one
//! declaration, so they cannot disagree.

use approval_aggregates::TYPES;

/// The event types a reader wants.
#[derive(Clone, Copy)]
pub struct Interest {
    wants: fn(&str) -> bool,
}

impl std::fmt::Debug for Interest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Interest").field(&self.types()).finish()
    }
}

impl Interest {
    /// Every event.
    pub const ALL: Self = Self { wants: |_| true };

    /// The types `wants` accepts. It is asked of the stored type names ([`TYPES`]) to derive
    /// bindings, and of each event's type to filter.
    pub const fn only(wants: fn(&str) -> bool) -> Self {
        Self { wants }
    }

    /// Whether an event of `event_type` is wanted.
    pub fn wants(&self, event_type: &str) -> bool {
        (self.wants)(event_type)
    }

    /// The wanted types among every stored type, in the aggregate's order.
    pub fn types(&self) -> Vec<&'static str> {
        TYPES.into_iter().filter(|t| self.wants(t)).collect()
    }

    /// Whether every stored type is wanted.
    pub fn is_all(&self) -> bool {
        TYPES.iter().all(|t| self.wants(t))
    }

    /// The types none of `interests` wants.
    pub fn unclaimed(interests: &[Interest]) -> Vec<&'static str> {
        TYPES
            .into_iter()
            .filter(|t| !interests.iter().any(|i| i.wants(t)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_types_of_an_interest_and_the_rest_split_every_type_between_them() {
        let finals = Interest::only(approval_aggregates::is_final_type);
        let submitted = Interest::only(|t| t == "RequestSubmitted");
        assert_eq!(finals.types(), approval_aggregates::FINAL_TYPES);
        assert!(!finals.is_all() && Interest::ALL.is_all());
        let rest = Interest::unclaimed(&[finals, submitted]);
        assert_eq!(rest.len() + finals.types().len() + 1, TYPES.len());
        assert!(!rest.contains(&"RequestSubmitted") && rest.contains(&"ApprovalRecorded"));
        assert!(Interest::unclaimed(&[Interest::ALL]).is_empty());
    }
}
