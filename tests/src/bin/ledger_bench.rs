//! The ledger's posting rate: puts N `ClaimSettled` events on a fresh settlement topic,
//! starts the fund-ledger service on a fresh database and measures how fast it posts them
//! (batched: one transaction per batch, balances grouped by account).
//!
//! ```sh
//! cargo run --release -p clearinghouse-tests --bin clearinghouse-ledger-bench -- 50000
//! ```

#![allow(
    clippy::unwrap_used,
    reason = "a benchmark stops at the first broken assumption"
)]

use std::time::{Duration, Instant};

use clearinghouse_events::{Body, Event};
use clearinghouse_proto::{events::v1 as ev, ledger::v1::GetBalancesRequest};
use clearinghouse_tests::{TestEnv, ledger_client, synthetic_result};
use prost::Message;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;

const PROVINCES: [&str; 6] = ["110000", "310000", "370000", "440000", "510000", "650000"];

#[tokio::main]
async fn main() {
    let events: i64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(50_000);
    let env = TestEnv::new().await.unwrap();
    let topic = env.kafka.topic(clearinghouse_events::topics::SETTLEMENT);
    clearinghouse_events::kafka::ensure_topics(&env.kafka, std::slice::from_ref(&topic))
        .await
        .unwrap();
    let producer = clearinghouse_events::kafka::producer(&env.kafka).unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let started = Instant::now();
    let mut sends = Vec::with_capacity(events as usize);
    for n in 0..events {
        let i = rng.random_range(0..PROVINCES.len());
        let t = (i + rng.random_range(1..PROVINCES.len())) % PROVINCES.len();
        let parts = [
            Decimal::new(rng.random_range(0..5_000_000), 2),
            Decimal::new(rng.random_range(0..100_000), 2),
            Decimal::ZERO,
            Decimal::ZERO,
        ];
        let body = Body::ClaimSettled(ev::ClaimSettled {
            insured_province: PROVINCES[i].into(),
            treatment_province: PROVINCES[t].into(),
            result: Some(synthetic_result(&parts, PROVINCES[t], &format!("B{n}"))),
        });
        let payload = Event {
            event_id: uuid::Uuid::now_v7().to_string(),
            occurred_at: String::new(),
            body: Some(body),
        }
        .encode_to_vec();
        let producer = producer.clone();
        let topic = topic.clone();
        sends.push(tokio::spawn(async move {
            let record = rdkafka::producer::FutureRecord::to(&topic)
                .key(PROVINCES[i])
                .payload(&payload);
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map(|_| ())
                .map_err(|(e, _)| e)
        }));
    }
    for send in sends {
        send.await.unwrap().unwrap();
    }
    println!(
        "produced {events} ClaimSettled events in {:.1?}",
        started.elapsed()
    );

    let shutdown = CancellationToken::new();
    let host = env.start_ledger(shutdown.clone()).await.unwrap();
    let mut ledger = ledger_client(&host).await.unwrap();
    let started = Instant::now();
    // The rate is measured from the first posting, after the consumer joined its group.
    let mut first: Option<(Instant, i64)> = None;
    let balances = loop {
        let b = ledger
            .get_balances(GetBalancesRequest::default())
            .await
            .unwrap()
            .into_inner();
        if first.is_none() && b.entry_count > 0 {
            first = Some((Instant::now(), b.entry_count));
        }
        if b.entry_count >= events || started.elapsed() > Duration::from_secs(600) {
            break b;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (first_at, first_count) = first.unwrap_or((started, 0));
    println!(
        "posted {} entries in {:.1?} ({:.1?} of it joining the group): {:.0} events/s while posting; balances sum to {}",
        balances.entry_count,
        started.elapsed(),
        first_at - started,
        (balances.entry_count - first_count) as f64 / first_at.elapsed().as_secs_f64(),
        balances.total
    );
    shutdown.cancel();
    host.wait().await.unwrap();
}
