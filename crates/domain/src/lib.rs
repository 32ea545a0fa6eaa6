//! The clearinghouse's rules, with no I/O: DESIGN.md section 5 (settlement) and section 6
//! (ledger postings), plus the value types that parse at the edge.
//!
//! Everything here is deterministic and synchronous so it can be tested by the thousand.

pub mod access;
pub mod clearing;
pub mod dates;
pub mod filing;
pub mod identity;
pub mod ledger;
pub mod money;
pub mod reference;
pub mod region;
pub mod settlement;

pub use money::round2;
pub use region::Region;
