//! Measures a detail reconciliation (issue 17): a day of a large province, `N` claims
//! (default 1,000,000), streamed over mutual TLS into a running ledger that holds them (bulk
//! loaded), with 100 differences injected. Prints the time and this process's peak resident
//! memory (the ledger runs in it). `cargo run --release -p clearinghouse-tests --bin
//! clearinghouse-reconcile-bench -- 1000000`; needs `scripts/setup.sh` first.

use std::time::Instant;

use clearinghouse_proto::{
    ledger::v1::{DetailClaim, DetailKind, ReconcileDetailRequest, ReconcileRole},
    settlement::v1::VisitType,
};
use clearinghouse_tests::*;
use tokio_util::sync::CancellationToken;

/// The process's peak resident memory, in MiB (Linux `VmHWM`).
fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn main() -> anyhow::Result<()> {
    let n: i64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    tokio::runtime::Runtime::new()?.block_on(async move {
        let env = TestEnv::new().await?;
        let shutdown = CancellationToken::new();
        let ledger = env.start_ledger(shutdown.clone()).await?;
        let day = clearinghouse_testkit::fixtures::days_ago(1);
        let db = env.schema_pool("ledger").await?;
        let loading = Instant::now();
        let period: String =
            sqlx::query_scalar("SELECT period FROM clearing_periods WHERE state = 'OPEN'")
                .fetch_one(&db)
                .await?;
        sqlx::query(
            "INSERT INTO journal_entries (event_id, kind, insured_province, treatment_province,
                                          treatment_region, claim_id, fund, serious_illness, assistance,
                                          personal_account, period, visit_type, day, total, cash)
             SELECT gen_random_uuid(), 'CLAIM_SETTLED', '370000', '110000', '110105', 'B' || g,
                    100.00, 0, 0, 0, $2, 'VISIT_TYPE_GENERAL_OUTPATIENT', $3::date, 150.00, 50.00
             FROM generate_series(1, $1) AS g",
        )
        .bind(n)
        .bind(&period)
        .bind(&day)
        .execute(&db)
        .await?;
        sqlx::query("ANALYZE journal_entries").execute(&db).await?;
        println!(
            "{n} claims of the day loaded in {:.1} s",
            loading.elapsed().as_secs_f64()
        );
        let before = peak_mib();
        let province = channel_as(&ledger, "province:110000").await?;
        let mut client =
            clearinghouse_proto::ledger::v1::ledger_service_client::LedgerServiceClient::new(
                province,
            )
            .max_decoding_message_size(64 * 1024 * 1024);
        let day_for_stream = day.clone();
        // The province's list, generated as it is sent (never all in memory): 100 claims
        // with a cash figure off by 0.01.
        let messages = futures::stream::iter((0..n).step_by(10_000).map(move |start| {
            let claims = (start..(start + 10_000).min(n))
                .map(|i| DetailClaim {
                    treatment_region: "110105".into(),
                    claim_id: format!("B{}", i + 1),
                    kind: DetailKind::Claim as i32,
                    total: "150.00".into(),
                    fund: "100.00".into(),
                    serious_illness: "0.00".into(),
                    assistance: "0.00".into(),
                    personal_account: "0.00".into(),
                    cash: if i % (n / 100).max(1) == 0 {
                        "50.01".into()
                    } else {
                        "50.00".into()
                    },
                })
                .collect();
            ReconcileDetailRequest {
                province: if start == 0 { "110000".into() } else { String::new() },
                role: ReconcileRole::Treatment as i32,
                counterparty_province: "370000".into(),
                visit_type: VisitType::GeneralOutpatient as i32,
                day: if start == 0 {
                    day_for_stream.clone()
                } else {
                    String::new()
                },
                period: String::new(),
                claims,
            }
        }));
        let started = Instant::now();
        let mut answers = client.reconcile_detail(messages).await?.into_inner();
        let mut differences = 0;
        let mut last = None;
        while let Some(answer) = answers.message().await? {
            differences += answer.differences.len();
            last = Some(answer);
        }
        let last = last.ok_or_else(|| anyhow::anyhow!("no answer"))?;
        println!(
            "detail reconciliation of {} claims: {:.1} s, {} differences found ({} reported), peak resident memory {:.0} MiB (before: {:.0} MiB)",
            last.compared,
            started.elapsed().as_secs_f64(),
            last.differing,
            differences,
            peak_mib(),
            before
        );
        shutdown.cancel();
        ledger.wait().await?;
        anyhow::Ok(())
    })
}
