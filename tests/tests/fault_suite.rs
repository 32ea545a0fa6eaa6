//! The fault-injection suite's short form (issue 14): the real service binaries as
//! separate processes (two settlement and two fund-ledger instances), a load retried by
//! claim id, and every fault kind applied at least once: kill -9 of each service process,
//! kill -9 of the broker and its restart, PostgreSQL stopped with `-m immediate` and
//! started. Every check must hold: nothing lost, nothing doubled, no crash, balances sum to
//! zero, no cap passed, no `INTERNAL`. The long run is `clearinghouse-faultrun` (README).

use std::time::Duration;

use clearinghouse_tests::faultrun::{Options, fault_run};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_fault_kind_under_load_loses_and_doubles_nothing() {
    let options = Options {
        claims: 1500,
        fault_every: Duration::from_secs(3),
        ..Options::default()
    };
    let report = fault_run(options).await.expect("the fault run completes");
    println!("{report}");
    assert_eq!(
        report.faults.len(),
        7,
        "every fault kind applied: {:?}",
        report.faults
    );
    assert_eq!(report.acknowledged, 1500);
    assert!(report.holds(), "{report}");
}
