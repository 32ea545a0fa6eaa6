//! Every SQL statement of the fund ledger, by what it keeps: the journal and its
//! accounts, the reserves, the clearing periods and their statements, reconciliation.
//! Each function takes the connection or transaction it runs on.

pub(crate) mod journal;
pub(crate) mod periods;
pub(crate) mod reconcile;
pub(crate) mod reserves;

/// Ledger entries by China month of posting.
pub const MONTHLY: &[clearinghouse_platform::partitions::Monthly] = &[
    clearinghouse_platform::partitions::Monthly {
        table: "journal_entries",
        per_partition: &[
            "CREATE UNIQUE INDEX {p}_event_once ON {p} (event_id)",
            "CREATE UNIQUE INDEX {p}_one_reversal ON {p} (original_event_id) WHERE kind = 'CLAIM_REVERSED'",
        ],
    },
];
