//! The clearing period's lifecycle (DESIGN.md §6): `OPEN → CLOSED → CONFIRMED → SETTLED`.
//!
//! The national platform closes an open period (later postings fall into the next one);
//! each province of the period then confirms or disputes its statement; once every one has
//! confirmed the period is `CONFIRMED`; the national platform then settles it by the
//! multilateral nets.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeriodState {
    Open,
    Closed,
    Confirmed,
    Settled,
}

/// Why a transition cannot be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The period is already at or past the transition's target: a repeat, answered
    /// with the state the period is in.
    #[error("the period is already {0}")]
    Already(PeriodState),
    /// The period has not reached the state the transition starts from.
    #[error("the period is {0}, not {1}")]
    NotYet(PeriodState, PeriodState),
}

impl PeriodState {
    pub const ALL: [PeriodState; 4] = [Self::Open, Self::Closed, Self::Confirmed, Self::Settled];

    pub fn name(self) -> &'static str {
        match self {
            Self::Open => "OPEN",
            Self::Closed => "CLOSED",
            Self::Confirmed => "CONFIRMED",
            Self::Settled => "SETTLED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == text)
    }

    fn step(self, from: Self, to: Self) -> Result<Self, TransitionError> {
        if self == from {
            Ok(to)
        } else if self > from {
            Err(TransitionError::Already(self))
        } else {
            Err(TransitionError::NotYet(self, from))
        }
    }

    /// The national platform closes the open period.
    pub fn close(self) -> Result<Self, TransitionError> {
        self.step(Self::Open, Self::Closed)
    }

    /// A province confirms or disputes its statement of a closed period; the period is
    /// confirmed once every province of it has confirmed (a dispute keeps it closed until
    /// the province confirms).
    pub fn respond(self, every_province_confirmed: bool) -> Result<Self, TransitionError> {
        let to = if every_province_confirmed {
            Self::Confirmed
        } else {
            Self::Closed
        };
        self.step(Self::Closed, to)
    }

    /// The national platform settles a confirmed period by the multilateral nets.
    pub fn settle(self) -> Result<Self, TransitionError> {
        self.step(Self::Confirmed, Self::Settled)
    }
}

impl fmt::Display for PeriodState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::{PeriodState::*, TransitionError::*, *};

    #[test]
    fn transitions_follow_the_design() {
        // (from, close, respond(some confirmed), respond(all confirmed), settle)
        let table = [
            (
                Open,
                Ok(Closed),
                Err(NotYet(Open, Closed)),
                Err(NotYet(Open, Closed)),
                Err(NotYet(Open, Confirmed)),
            ),
            (
                Closed,
                Err(Already(Closed)),
                Ok(Closed),
                Ok(Confirmed),
                Err(NotYet(Closed, Confirmed)),
            ),
            (
                Confirmed,
                Err(Already(Confirmed)),
                Err(Already(Confirmed)),
                Err(Already(Confirmed)),
                Ok(Settled),
            ),
            (
                Settled,
                Err(Already(Settled)),
                Err(Already(Settled)),
                Err(Already(Settled)),
                Err(Already(Settled)),
            ),
        ];
        for (from, close, some, all, settle) in table {
            assert_eq!(from.close(), close, "close from {from}");
            assert_eq!(from.respond(false), some, "respond from {from}");
            assert_eq!(
                from.respond(true),
                all,
                "respond (all confirmed) from {from}"
            );
            assert_eq!(from.settle(), settle, "settle from {from}");
        }
    }

    #[test]
    fn names_round_trip() {
        for s in PeriodState::ALL {
            assert_eq!(PeriodState::parse(s.name()), Some(s));
        }
        assert_eq!(PeriodState::parse("DISPUTED"), None);
    }
}
