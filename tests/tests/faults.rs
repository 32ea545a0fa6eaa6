//! Faults under traffic (issue 14): PostgreSQL cut away from the settlement service, a
//! consumer whose stored position lies beyond its partition, and the durable broker killed
//! with SIGKILL and started again. After each: every acknowledged claim stored once and
//! posted once, the ledger balanced.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::time::{Duration, Instant};

use clearinghouse_proto::{
    filing::v1::FilingCategory,
    ledger::v1::GetBalancesRequest,
    settlement::v1::{GetClaimRequest, SettleRequest},
};
use clearinghouse_testkit::fixtures;
use clearinghouse_tests::{
    faults::{Broker, TcpProxy, nisshi_binary, via},
    *,
};
use tokio_util::sync::CancellationToken;
use tonic::Code;

fn claim(i: usize) -> clearinghouse_proto::settlement::v1::Claim {
    fixtures::small_claim(&format!("F-{i:05}"), "P-FAULT")
}

/// Settles with a deadline, as a platform would; returns the code and how long it took.
async fn settle_within(
    client: &mut clearinghouse_proto::settlement::v1::settlement_service_client::SettlementServiceClient<tonic::transport::Channel>,
    c: clearinghouse_proto::settlement::v1::Claim,
    deadline: Duration,
) -> (Code, Duration) {
    let started = Instant::now();
    let mut request = tonic::Request::new(SettleRequest { claim: Some(c) });
    request.set_timeout(deadline);
    let code = match client.settle(request).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    };
    (code, started.elapsed())
}

/// Reference data and the person P-FAULT filed for Beijing; a client as the treatment place.
async fn seeded(
    filing: &clearinghouse_platform::host::Host,
    settlement: &clearinghouse_platform::host::Host,
) -> clearinghouse_proto::settlement::v1::settlement_service_client::SettlementServiceClient<
    tonic::transport::Channel,
> {
    seed_reference(settlement, false).await.unwrap();
    let mut filings = filing_client(filing).await.unwrap();
    register(
        &mut filings,
        "P-FAULT",
        false,
        FilingCategory::LongTermResident,
    )
    .await
    .unwrap();
    settlement_client(settlement).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_outage_is_unavailable_and_a_retry_settles_once() {
    let mut env = TestEnv::new().await.unwrap();
    let shutdown = CancellationToken::new();
    let _stop_on_drop = shutdown.clone().drop_guard();
    let filing = env.start_filing(shutdown.clone()).await.unwrap();
    let proxy = TcpProxy::start("127.0.0.1:5432".parse().unwrap())
        .await
        .unwrap();
    let direct = env.database_url.clone();
    env.database_url = via(&direct, proxy.addr);
    let settlement = env
        .start_settlement(Some(&filing), true, shutdown.clone())
        .await
        .unwrap();
    let mut client = seeded(&filing, &settlement).await;
    assert_eq!(
        settle_within(&mut client, claim(0), Duration::from_secs(10))
            .await
            .0,
        Code::Ok
    );

    // The database is gone: UNAVAILABLE (a retry may fix it), within the caller's deadline.
    proxy.cut();
    for i in 1..=3 {
        let (code, took) = settle_within(&mut client, claim(i), Duration::from_secs(8)).await;
        assert_eq!(code, Code::Unavailable, "claim {i} after {took:?}");
        assert!(took < Duration::from_secs(8), "{took:?}");
    }
    let read = client
        .get_claim(GetClaimRequest {
            treatment_region: fixtures::TREATMENT_REGION.into(),
            claim_id: "F-00000".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(read.code(), Code::Unavailable, "{read:?}");

    // It comes back: the same claims retried settle, each once.
    proxy.restore();
    for i in 1..=3 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, _) = settle_within(&mut client, claim(i), Duration::from_secs(8)).await;
            if code == Code::Ok {
                break;
            }
            assert_eq!(code, Code::Unavailable);
            assert!(Instant::now() < deadline, "claim {i} never settled");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert_eq!(
            settle_within(&mut client, claim(i), Duration::from_secs(8))
                .await
                .0,
            Code::Ok,
            "a repeat answers the stored result"
        );
    }
    env.database_url = direct;
    let db = env.schema_pool("settlement").await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM claims")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(stored, 4, "every claim stored once");
    shutdown.cancel();
    filing.wait().await.unwrap();
    settlement.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_position_beyond_the_partition_is_read_again_from_the_start() {
    let env = TestEnv::new().await.unwrap();
    let shutdown = CancellationToken::new();
    let _stop_on_drop = shutdown.clone().drop_guard();
    let filing = env.start_filing(shutdown.clone()).await.unwrap();
    let settlement = env
        .start_settlement(Some(&filing), true, shutdown.clone())
        .await
        .unwrap();
    let mut client = seeded(&filing, &settlement).await;
    let first_stop = CancellationToken::new();
    let first = env.start_ledger(first_stop.clone()).await.unwrap();
    let mut ledger = ledger_client(&first).await.unwrap();
    for i in 0..20 {
        let (code, _) = settle_within(&mut client, claim(i), Duration::from_secs(10)).await;
        assert_eq!(code, Code::Ok);
    }
    wait_for_entries(&mut ledger, 20, Duration::from_secs(60))
        .await
        .unwrap();
    first_stop.cancel();
    first.wait().await.unwrap();

    // The topic was recreated or truncated under the ledger: its stored positions now lie
    // far beyond what the partitions hold. New claims land at offsets below them.
    let ledger_db = env.schema_pool("ledger").await.unwrap();
    sqlx::query("UPDATE consumer_offsets SET next_offset = next_offset + 1000000")
        .execute(&ledger_db)
        .await
        .unwrap();
    for i in 20..30 {
        let (code, _) = settle_within(&mut client, claim(i), Duration::from_secs(10)).await;
        assert_eq!(code, Code::Ok);
    }
    let second = env.start_ledger(shutdown.clone()).await.unwrap();
    let mut ledger = ledger_client(&second).await.unwrap();
    // They are posted all the same, and what was posted before is not posted again.
    wait_for_entries(&mut ledger, 30, Duration::from_secs(90))
        .await
        .expect("claims below the stored position were skipped");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let balances = ledger
        .get_balances(GetBalancesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(balances.entry_count, 30, "nothing posted twice");
    assert_eq!(balances.total, "0.00");
    let metrics = http_get(second.metrics_addr, "/metrics").await.unwrap();
    let resets: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("clearinghouse_consumer_position_resets_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(resets >= 1.0, "the reset is counted");
    shutdown.cancel();
    for host in [filing, settlement, second] {
        host.wait().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_killed_and_restarted_loses_and_doubles_nothing() {
    let binary = nisshi_binary().expect(
        "the durable broker nisshi 0.8.1 is built by scripts/setup.sh into ~/.cache/clearinghouse",
    );
    let mut broker = Broker::start(binary).await.unwrap();
    let mut env = TestEnv::new().await.unwrap();
    env.kafka.bootstrap_servers = broker.bootstrap.clone();
    // Sends give up after 2 s, so that the broker's longer absence below fails the
    // relay's producer, which must then be built anew.
    env.kafka.properties.insert(
        "message.timeout.ms".into(),
        clearinghouse_platform::config::Secret::new("2000"),
    );
    let shutdown = CancellationToken::new();
    let _stop_on_drop = shutdown.clone().drop_guard();
    let filing = env.start_filing(shutdown.clone()).await.unwrap();
    let settlement = env
        .start_settlement(Some(&filing), true, shutdown.clone())
        .await
        .unwrap();
    let ledger_host = env.start_ledger(shutdown.clone()).await.unwrap();
    let mut client = seeded(&filing, &settlement).await;
    let mut ledger = ledger_client(&ledger_host).await.unwrap();

    // Claims keep coming while the broker is killed twice and started again.
    let mut settled = 0usize;
    for round in 0..3 {
        for _ in 0..40 {
            let (code, _) =
                settle_within(&mut client, claim(settled), Duration::from_secs(10)).await;
            assert_eq!(code, Code::Ok, "Settle never waits on the broker");
            settled += 1;
        }
        if round < 2 {
            broker.kill();
            for _ in 0..20 {
                let (code, _) =
                    settle_within(&mut client, claim(settled), Duration::from_secs(10)).await;
                assert_eq!(code, Code::Ok, "Settle never waits on the broker");
                settled += 1;
            }
            // The first absence is short, the second outlasts the producer's timeout.
            tokio::time::sleep(Duration::from_secs(if round == 0 { 1 } else { 5 })).await;
            broker.restart().await.unwrap();
        }
    }
    let balances = wait_for_entries(&mut ledger, settled as i64, Duration::from_secs(180))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = ledger
        .get_balances(GetBalancesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.entry_count, settled as i64, "each claim posted once");
    assert_eq!(balances.total, "0.00");
    let metrics = http_get(settlement.metrics_addr, "/metrics").await.unwrap();
    let rebuilds: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("clearinghouse_outbox_producer_rebuilds_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    println!("{settled} claims, producer rebuilt {rebuilds} times");
    assert!(rebuilds >= 1.0, "the failed producer was built anew");
    shutdown.cancel();
    for host in [filing, settlement, ledger_host] {
        host.wait().await.unwrap();
    }
}
