//! A stream of 200 settlements while the outbox relay is killed and replaced and the
//! ledger's partitions move from one consumer instance to another: the ledger must end
//! with exactly 200 postings, none lost and none doubled.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::time::Duration;

use clearinghouse_events::{kafka, relay};
use clearinghouse_proto::{filing::v1::FilingCategory, settlement::v1::SettleRequest};
use clearinghouse_testkit::fixtures;
use clearinghouse_tests::*;
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;

const PERSONS: usize = 10;
const CLAIMS: usize = 200;

/// Settles claims `range` spread over the persons, concurrently; returns the fund total.
async fn settle_range(
    settlement: &clearinghouse_platform::host::Host,
    range: std::ops::Range<usize>,
) -> Decimal {
    let client = settlement_client(settlement).await.unwrap();
    let tasks = (0..PERSONS).map(|p| {
        let mut client = client.clone();
        let range = range.clone();
        tokio::spawn(async move {
            let mut fund = Decimal::ZERO;
            for i in range.filter(|i| i % PERSONS == p) {
                let claim = fixtures::small_claim(&format!("H-{i:04}"), &format!("P-H{p:02}"));
                let result = client
                    .settle(SettleRequest { claim: Some(claim) })
                    .await
                    .unwrap()
                    .into_inner()
                    .result
                    .unwrap();
                let split = result.split.unwrap();
                fund += split.fund.parse::<Decimal>().unwrap();
            }
            fund
        })
    });
    futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .sum()
}

fn start_relay(pool: &sqlx::PgPool, env: &TestEnv) -> tokio::task::JoinHandle<()> {
    let topics = vec![env.kafka.topic(clearinghouse_events::topics::SETTLEMENT)];
    relay::Relay::new(
        pool.clone(),
        env.kafka.clone(),
        topics,
        relay::RelayMetrics::default(),
    )
    .spawn(CancellationToken::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_restart_and_partition_handoff_lose_and_double_nothing() {
    let env = TestEnv::new().await.unwrap();
    let services = CancellationToken::new();
    // Stops the services even when an assertion fails, so a failing test ends.
    let _stop_on_drop = services.clone().drop_guard();
    let filing = env.start_filing(services.clone()).await.unwrap();
    // The settlement service's relay is driven by the test.
    let settlement = env
        .start_settlement(Some(&filing), false, services.clone())
        .await
        .unwrap();
    let first_ledger_stop = CancellationToken::new();
    let _stop_first_on_drop = first_ledger_stop.clone().drop_guard();
    let first_ledger = env.start_ledger(first_ledger_stop.clone()).await.unwrap();
    seed_reference(&settlement, false).await.unwrap();
    let mut filings = filing_client(&filing).await.unwrap();
    for p in 0..PERSONS {
        register(
            &mut filings,
            &format!("P-H{p:02}"),
            false,
            FilingCategory::PostedWorker,
        )
        .await
        .unwrap();
    }
    let pool = env.schema_pool("settlement").await.unwrap();
    kafka::ensure_topics(
        &env.kafka,
        &[env.kafka.topic(clearinghouse_events::topics::SETTLEMENT)],
    )
    .await
    .unwrap();

    // Phase 1 with relay A, killed while it may hold a batch in flight.
    let relay_a = start_relay(&pool, &env);
    let mut fund = settle_range(&settlement, 0..70).await;
    relay_a.abort();
    let _ = relay_a.await;
    let relay_b = start_relay(&pool, &env);

    // Phase 2: a second ledger instance joins the group and takes partitions.
    let second_ledger_stop = CancellationToken::new();
    let _stop_second_on_drop = second_ledger_stop.clone().drop_guard();
    let second_ledger = env.start_ledger(second_ledger_stop.clone()).await.unwrap();
    fund += settle_range(&settlement, 70..140).await;
    let mut ledger = ledger_client(&second_ledger).await.unwrap();
    wait_for_entries(&mut ledger, 1, Duration::from_secs(60))
        .await
        .unwrap();

    // Phase 3: the first instance leaves mid-stream; the second takes all partitions.
    first_ledger_stop.cancel();
    first_ledger.wait().await.unwrap();
    fund += settle_range(&settlement, 140..CLAIMS).await;

    let balances = wait_for_entries(&mut ledger, CLAIMS as i64, Duration::from_secs(120))
        .await
        .unwrap();
    // Give any late duplicate time to arrive, then check that none was posted.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let balances_after = ledger
        .get_balances(clearinghouse_proto::ledger::v1::GetBalancesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        balances_after.entry_count, CLAIMS as i64,
        "exactly one posting per settlement"
    );
    assert_eq!(balances_after, balances);
    assert_eq!(balances.total, "0.00");
    let receivable = balances
        .balances
        .iter()
        .find(|b| b.account == "receivable:110000:370000")
        .unwrap();
    assert_eq!(receivable.balance.parse::<Decimal>().unwrap(), fund);

    // Every claim posted once, by claim id.
    let ledger_pool = { env.schema_pool("ledger").await.unwrap() };
    let (distinct, total): (i64, i64) =
        sqlx::query_as("SELECT count(DISTINCT claim_id), count(*) FROM journal_entries")
            .fetch_one(&ledger_pool)
            .await
            .unwrap();
    assert_eq!((distinct, total), (CLAIMS as i64, CLAIMS as i64));

    relay_b.abort();
    second_ledger_stop.cancel();
    second_ledger.wait().await.unwrap();
    services.cancel();
    filing.wait().await.unwrap();
    settlement.wait().await.unwrap();
}
