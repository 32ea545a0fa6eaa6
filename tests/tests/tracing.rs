//! One trace per claim: the `Settle` call, the outbox relay's hop and the ledger posting
//! carry the same trace id, across gRPC and Kafka, seen by an in-memory span exporter.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::time::Duration;

use clearinghouse_proto::filing::v1::FilingCategory;
use clearinghouse_testkit::fixtures;
use clearinghouse_tests::*;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_is_one_trace_from_settle_to_the_ledger() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    tracing_subscriber::registry()
        .with(EnvFilter::new("info"))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("clearinghouse-test")))
        .init();

    let world = World::start(false, &[("P-TRACE", false, "", FilingCategory::Referral)]).await;
    world
        .settle(fixtures::example1("TRACE-1", "P-TRACE"))
        .await
        .unwrap();
    wait_for_entries(&mut world.ledger.clone(), 1, Duration::from_secs(60))
        .await
        .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        provider.force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        let settle = spans
            .iter()
            .find(|s| s.name.ends_with("SettlementService/Settle"));
        if let Some(settle) = settle {
            let trace = settle.span_context.trace_id();
            let in_trace = |name: &str| {
                spans
                    .iter()
                    .any(|s| s.name == name && s.span_context.trace_id() == trace)
            };
            if in_trace("outbox.relay") && in_trace("ledger.post") {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no single trace through Settle, the relay and the ledger: {:#?}",
            spans
                .iter()
                .map(|s| (s.name.to_string(), s.span_context.trace_id()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    world.stop().await;
}
