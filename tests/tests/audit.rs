//! The audit record of a write is committed in the write's own transaction (issue 14):
//! the moment a write answers OK its record is in the trail, with the caller, the method
//! and what it touched; a repeat of an idempotent write is recorded by the access layer.
//! A settled claim's row is the record of its settlement (issue 18: nothing stored twice),
//! read through the same trail, in the order written, and as append-only as the rest.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

use clearinghouse_proto::{
    audit::v1::ListAuditRecordsRequest,
    filing::v1::FilingCategory,
    ledger::v1::TopUpReserveRequest,
    settlement::v1::{CreditPersonalAccountRequest, ReverseRequest},
};
use clearinghouse_testkit::fixtures;
use clearinghouse_tests::*;

/// The trail's rows for `subject`, read at once (no waiting for a batch).
async fn records(env: &TestEnv, schema: &str, subject: &str) -> Vec<(String, String, String)> {
    let pool = env.schema_pool(schema).await.unwrap();
    sqlx::query_as("SELECT caller, method, outcome FROM audit_trail WHERE subject = $1 ORDER BY id")
        .bind(subject)
        .fetch_all(&pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_and_its_audit_record_commit_together() {
    let world = World::start(
        false,
        &[("P-AUD", false, "", FilingCategory::LongTermResident)],
    )
    .await;
    // The filing written by the set-up (registered through `register`) is in the trail.
    let filing_rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE method LIKE '%/RegisterFiling' AND outcome = 'OK'",
    )
    .fetch_one(&world.env.schema_pool("filing").await.unwrap())
    .await
    .unwrap();
    assert_eq!(filing_rows, 1);

    let result = world
        .settle(fixtures::small_claim("AUD-1", "P-AUD"))
        .await
        .unwrap();
    assert_eq!(result.claim.unwrap().claim_id, "AUD-1");
    assert_eq!(
        records(&world.env, "settlement", "claim 110000/AUD-1").await,
        [(
            BEIJING.to_string(),
            "/clearinghouse.settlement.v1.SettlementService/Settle".to_string(),
            "OK".to_string()
        )]
    );
    let settlement_db = world.env.schema_pool("settlement").await.unwrap();
    let in_audit_log: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE subject = 'claim 110000/AUD-1'")
            .fetch_one(&settlement_db)
            .await
            .unwrap();
    assert_eq!(
        in_audit_log, 0,
        "the claim's row is the record, stored once"
    );
    for tampering in [
        "UPDATE claims SET settled_at = settled_at - interval '1 second' WHERE claim_id = 'AUD-1'",
        "UPDATE claims SET audit_id = NULL WHERE claim_id = 'AUD-1'",
        "DELETE FROM claims WHERE claim_id = 'AUD-1'",
    ] {
        let refused = sqlx::query(tampering).execute(&settlement_db).await;
        assert!(
            refused.is_err_and(|e| e.to_string().contains("append-only")),
            "{tampering}"
        );
    }
    world
        .settlement
        .clone()
        .reverse(ReverseRequest {
            treatment_region: fixtures::TREATMENT_REGION.into(),
            claim_id: "AUD-1".into(),
            reason: "refund".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        records(&world.env, "settlement", "claim 110000/AUD-1")
            .await
            .len(),
        2
    );
    // The national platform reads both, newest first, the settlement by its claim row.
    let trail = world
        .audit(1)
        .await
        .list_audit_records(ListAuditRecordsRequest {
            caller: BEIJING.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    let methods: Vec<(&str, &str)> = trail
        .iter()
        .filter(|r| r.subject == "claim 110000/AUD-1")
        .map(|r| (r.method.rsplit('/').next().unwrap(), r.outcome.as_str()))
        .collect();
    assert_eq!(methods, [("Reverse", "OK"), ("Settle", "OK")]);
    assert!(
        trail.windows(2).all(|w| w[0].id > w[1].id),
        "one sequence orders the trail: {trail:?}"
    );
    // A page is read along the indexes, newest first, never by sorting the trail whole
    // (told not to sort, the planner would still sort if no index gave the order).
    let mut conn = settlement_db.acquire().await.unwrap();
    for setting in ["SET enable_sort = off", "SET enable_seqscan = off"] {
        sqlx::query(setting).execute(&mut *conn).await.unwrap();
    }
    let plan = page_plan(&mut conn, clearinghouse_platform::audit::TRAIL_PAGE, "").await;
    assert!(plan.lines().all(|line| !line.contains("Sort  ")), "{plan}");
    // A caller's settlements are found by region (not by reading every claim newest
    // first and skipping other provinces': a province that settles nothing meant all).
    sqlx::query("RESET enable_sort")
        .execute(&mut *conn)
        .await
        .unwrap();
    let plan = page_plan(
        &mut conn,
        clearinghouse_platform::audit::CALLER_TRAIL_PAGE,
        "province:650000",
    )
    .await;
    assert!(
        plan.contains("claim_once") && !plan.contains("audit_id_idx"),
        "{plan}"
    );
    drop(conn);
    let nobody = world
        .audit(1)
        .await
        .list_audit_records(ListAuditRecordsRequest {
            caller: "province:650000".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    assert!(nobody.is_empty(), "{nobody:?}");
    world
        .insured_settlement
        .clone()
        .credit_personal_account(CreditPersonalAccountRequest {
            request_id: "aud-credit".into(),
            insured_region: fixtures::INSURED_REGION.into(),
            person_id: "P-AUD".into(),
            amount: "5.00".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        records(&world.env, "settlement", "personal account 370100/P-AUD")
            .await
            .len(),
        1
    );
    world
        .ledger_as("370000")
        .await
        .top_up_reserve(TopUpReserveRequest {
            request_id: "aud-top".into(),
            insured_province: "370000".into(),
            treatment_province: "110000".into(),
            amount: "10.00".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        records(&world.env, "ledger", "reserve 370000 at 110000").await,
        [(
            SHANDONG.to_string(),
            "/clearinghouse.ledger.v1.LedgerService/TopUpReserve".to_string(),
            "OK".to_string()
        )]
    );
    world.stop().await;
}

/// The plan of a first page of the trail of `caller` (empty: everyone's) by `statement`,
/// planned for these values.
async fn page_plan(conn: &mut sqlx::PgConnection, statement: &str, caller: &str) -> String {
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {statement}")))
        .persistent(false)
        .bind(i64::MAX)
        .bind(caller)
        .bind("")
        .bind(100_i64)
        .fetch_all(conn)
        .await
        .unwrap();
    plan.join("\n")
}
