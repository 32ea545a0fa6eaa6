//! Every SQL statement of the fund ledger, by what it keeps: the journal and its
//! accounts, the reserves, the clearing periods and their statements, reconciliation.
//! Each function takes the connection or transaction it runs on.

pub(crate) mod journal;
pub(crate) mod periods;
pub(crate) mod reconcile;
pub(crate) mod reserves;
