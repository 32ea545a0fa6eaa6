//! The settlement engine end to end through gRPC against real Postgres and the real
//! broker: worked examples 2 and 3 with every fund, reversal, concurrency on one person,
//! and a catalogue of 100,000 items.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::time::{Duration, Instant};

use clearinghouse_proto::{
    filing::v1::FilingCategory,
    settlement::v1::{
        CatalogueClass, CatalogueItem, ClaimStatus, GetCatalogueItemRequest, ListClaimsRequest,
        PutCatalogueRequest, SettlementResult, Split, claim::Visit,
    },
};
use clearinghouse_testkit::fixtures;
use clearinghouse_tests::*;
use rust_decimal::Decimal;

fn split(result: &SettlementResult) -> Split {
    result.split.clone().unwrap()
}

fn year_of(result: &SettlementResult) -> i32 {
    result.service_date[..4].parse().unwrap()
}

fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worked_examples_2_and_3_with_every_fund() {
    let world = World::start(
        true,
        &[
            ("P-EX2", true, "", FilingCategory::ResettledRetiree),
            ("P-EX3", false, "LOW_INCOME", FilingCategory::OtherTemporary),
        ],
    )
    .await;

    let a = world
        .settle(fixtures::example2a("EX2A", "P-EX2"))
        .await
        .unwrap();
    assert_eq!(
        (
            split(&a).fund.as_str(),
            split(&a).serious_illness.as_str(),
            split(&a).cash.as_str()
        ),
        ("222300.00", "0.00", "12000.00")
    );
    let b = split(
        &world
            .settle(fixtures::example2b("EX2B", "P-EX2"))
            .await
            .unwrap(),
    );
    assert_eq!(
        (b.fund.as_str(), b.serious_illness.as_str(), b.cash.as_str()),
        ("39268.08", "997.87", "7198.04")
    );
    let acc = world.accumulators("P-EX2", year_of(&a)).await;
    assert_eq!(acc.inpatient_admissions, 2);
    assert_eq!(acc.serious_illness_base, "16663.12");
    assert_eq!(acc.serious_illness_paid, "997.87");

    // Example 3: the insured place credits the personal account (idempotent by request id).
    assert_eq!(world.credit("P-EX3", "credit-1", "100.00").await, "100.00");
    assert_eq!(world.credit("P-EX3", "credit-1", "100.00").await, "100.00");
    let earlier = split(
        &world
            .settle(fixtures::example3_earlier("EX3-0", "P-EX3"))
            .await
            .unwrap(),
    );
    assert_eq!(
        (earlier.deductible.as_str(), earlier.fund.as_str()),
        ("120.00", "0.00")
    );
    let three = world
        .settle(fixtures::example3("EX3", "P-EX3"))
        .await
        .unwrap();
    let s = split(&three);
    assert_eq!(
        [
            &s.total,
            &s.full_self_pay,
            &s.prior_self_pay,
            &s.in_scope,
            &s.deductible,
            &s.ratio,
            &s.fund,
            &s.serious_illness,
            &s.assistance,
            &s.personal_account,
            &s.cash
        ],
        [
            "239.83", "20.00", "30.32", "189.51", "80.00", "0.65", "71.18", "0.00", "82.83",
            "65.82", "20.00"
        ]
    );
    assert_eq!(three.personal_account_balance, "34.18");
    let acc = world.accumulators("P-EX3", year_of(&three)).await;
    assert_eq!(acc.personal_account_balance, "34.18");
    assert_eq!(acc.diseases.len(), 1);
    assert_eq!(
        (
            acc.diseases[0].deductible_met.as_str(),
            acc.diseases[0].fund_paid.as_str()
        ),
        ("200.00", "71.18")
    );
    // The earlier visit's burden of 120.00 drew assistance of 84.00 too.
    assert_eq!(acc.assistance_paid, "166.83");

    // The ledger owes the treatment province every insured-place part, per fund.
    let balances = wait_for_entries(&mut world.ledger.clone(), 4, Duration::from_secs(60))
        .await
        .unwrap();
    let account = |name: &str| {
        balances
            .balances
            .iter()
            .find(|x| x.account == name)
            .map(|x| x.balance.clone())
            .unwrap_or_default()
    };
    assert_eq!(account("payable:370000:110000:serious_illness"), "-997.87");
    assert_eq!(account("payable:370000:110000:assistance"), "-166.83");
    assert_eq!(account("payable:370000:110000:personal_account"), "-65.82");
    assert_eq!(account("payable:370000:110000:fund"), "-261639.26");
    assert_eq!(balances.total, "0.00");

    // Every claim went through the batch writer's shared transaction (the personal
    // account debit included): no batch failed and fell back to one claim at a time.
    let (_, settlement_metrics) = world.metrics_targets()[1];
    let metrics = scrape_metrics(settlement_metrics).await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "clearinghouse_settlement_batch_fallbacks_total 0"),
        "a settlement batch fell back to claim-by-claim writes:\n{metrics}"
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reversal_gives_back_everything_once() {
    let world = World::start(
        true,
        &[(
            "P-REV",
            true,
            "LOW_INCOME",
            FilingCategory::LongTermResident,
        )],
    )
    .await;
    world.credit("P-REV", "c-1", "500.00").await;
    let a = world
        .settle(fixtures::example2a("REV-A", "P-REV"))
        .await
        .unwrap();
    let year = year_of(&a);
    let after_a = world.accumulators("P-REV", year).await;
    let mut b_claim = fixtures::example2b("REV-B", "P-REV");
    b_claim.use_personal_account = true;
    let b = world.settle(b_claim.clone()).await.unwrap();
    assert_ne!(world.accumulators("P-REV", year).await, after_a);
    assert_ne!(split(&b).personal_account, "0.00");

    let reversed = world.reverse("REV-B").await;
    assert_eq!(reversed.status, ClaimStatus::Reversed as i32);
    assert_eq!(
        world.accumulators("P-REV", year).await,
        after_a,
        "a reversal gives back exactly what its claim took"
    );
    // Idempotent: reversing again changes nothing and answers the same.
    assert_eq!(world.reverse("REV-B").await, reversed);
    assert_eq!(world.accumulators("P-REV", year).await, after_a);

    // A partial refund is a reversal followed by a new settlement: the same bill again under
    // a new id takes again exactly what the reversed claim took.
    let mut again = b_claim;
    again.claim_id = "REV-B2".into();
    let b2 = world.settle(again).await.unwrap();
    assert_eq!(split(&b2), split(&b));

    // The ledger saw three settlements and one reversal; the reversal cancels its claim.
    let balances = wait_for_entries(&mut world.ledger.clone(), 4, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(balances.entry_count, 4);
    let owed: Decimal = [&a, &b2]
        .iter()
        .map(|r| {
            let s = split(r);
            dec(&s.fund) + dec(&s.serious_illness) + dec(&s.assistance) + dec(&s.personal_account)
        })
        .sum();
    let receivable = balances
        .balances
        .iter()
        .find(|x| x.account == "receivable:110000:370000")
        .unwrap();
    assert_eq!(dec(&receivable.balance), owed);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_of_one_person_never_exceed_a_cap() {
    let world = World::start(
        true,
        &[("P-HOT", false, "LOW_INCOME", FilingCategory::PostedWorker)],
    )
    .await;
    world.credit("P-HOT", "c-1", "1000.00").await;
    // 25 inpatient stays of 30,000 (the fund and assistance caps bind)
    // and 25 hypertension visits of 300 (the disease cap of 3,000 binds), all at once.
    let claims = (0..50).map(|i| {
        if i % 2 == 0 {
            let mut claim = fixtures::small_claim(&format!("HOT-{i:02}"), "P-HOT");
            claim.lines = vec![fixtures::claim_line("S003", "1", "30000.00")];
            claim.use_personal_account = true;
            claim
        } else {
            fixtures::chronic_claim(
                &format!("HOT-{i:02}"),
                "P-HOT",
                "HYPERTENSION",
                true,
                vec![fixtures::claim_line("D001", "1", "300.00")],
            )
        }
    });
    let results = futures::future::join_all(claims.map(|c| world.settle(c))).await;
    let results: Vec<SettlementResult> = results.into_iter().map(|r| r.unwrap()).collect();
    let year = year_of(&results[0]);

    // Every stored claim, through the paginated query.
    let mut stored = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = world
            .insured_settlement
            .clone()
            .list_claims(ListClaimsRequest {
                insured_region: fixtures::INSURED_REGION.into(),
                person_id: "P-HOT".into(),
                year,
                page_size: 7,
                page_token: page_token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        stored.extend(page.results);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(stored.len(), 50);

    let sum = |pick: &dyn Fn(&SettlementResult) -> bool, field: fn(&Split) -> &String| -> Decimal {
        stored
            .iter()
            .filter(|r| pick(r))
            .map(|r| dec(field(&split(r))))
            .sum()
    };
    let inpatient =
        |r: &SettlementResult| matches!(r.claim.as_ref().unwrap().visit, Some(Visit::Inpatient(_)));
    let chronic = |r: &SettlementResult| !inpatient(r);
    let any = |_: &SettlementResult| true;
    let inpatient_fund = sum(&inpatient, |s| &s.fund);
    let disease_fund = sum(&chronic, |s| &s.fund);
    let disease_deductible = sum(&chronic, |s| &s.deductible);
    let serious = sum(&any, |s| &s.serious_illness);
    let assistance = sum(&any, |s| &s.assistance);
    let account = sum(&any, |s| &s.personal_account);
    let base: Decimal = stored
        .iter()
        .map(|r| dec(&split(r).in_scope) - dec(&split(r).fund))
        .sum();

    // No cap exceeded, and each was reached.
    assert_eq!(inpatient_fund, dec("450000"));
    assert_eq!(disease_fund, dec("3000"));
    assert!(serious <= dec("400000"));
    assert_eq!(assistance, dec("50000"));
    assert_eq!(account, dec("1000"));

    // The accumulators are the sums of the stored claims.
    let acc = world.accumulators("P-HOT", year).await;
    assert_eq!(acc.inpatient_admissions, 25);
    assert_eq!(dec(&acc.inpatient_fund_paid), inpatient_fund);
    assert_eq!(dec(&acc.diseases[0].fund_paid), disease_fund);
    assert_eq!(dec(&acc.diseases[0].deductible_met), disease_deductible);
    assert_eq!(dec(&acc.serious_illness_paid), serious);
    assert_eq!(dec(&acc.serious_illness_base), base);
    assert_eq!(dec(&acc.assistance_paid), assistance);
    assert_eq!(dec(&acc.personal_account_balance), dec("0"));
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_catalogue_of_100000_items_loads_in_seconds() {
    let world = World::start(true, &[]).await;
    const ITEMS: usize = 100_000;
    const PER_MESSAGE: usize = 2_000;
    let messages: Vec<PutCatalogueRequest> = (0..ITEMS / PER_MESSAGE)
        .map(|m| PutCatalogueRequest {
            request_id: String::new(),
            treatment_region: if m == 0 {
                "310000".into()
            } else {
                String::new()
            },
            effective_from: if m == 0 {
                fixtures::catalogue_effective_from()
            } else {
                String::new()
            },
            items: (m * PER_MESSAGE..(m + 1) * PER_MESSAGE)
                .map(|i| CatalogueItem {
                    item_code: format!("X{i:06}"),
                    name: format!("item {i}"),
                    class: [CatalogueClass::A, CatalogueClass::B, CatalogueClass::C][i % 3] as i32,
                    self_pay_ratio: if i % 3 == 1 {
                        "0.10".into()
                    } else {
                        String::new()
                    },
                    price_ceiling: if i % 5 == 0 {
                        "99.50".into()
                    } else {
                        String::new()
                    },
                })
                .collect(),
        })
        .collect();
    let started = Instant::now();
    let loaded = world
        .reference_as("310000")
        .await
        .put_catalogue(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    let elapsed = started.elapsed();
    println!(
        "loaded a catalogue of {} items in {elapsed:.2?}",
        loaded.item_count
    );
    assert_eq!(loaded.item_count, ITEMS as i64);
    let item = world
        .reference
        .clone()
        .get_catalogue_item(GetCatalogueItemRequest {
            treatment_region: "310000".into(),
            item_code: "X099995".into(),
            date: fixtures::days_ago(0),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(item.version, loaded.version);
    assert_eq!(item.item.unwrap().price_ceiling, "99.5");
    world.stop().await;
}

/// The hot path's statements keep one generic plan per connection for as long as it
/// lives, made from whatever statistics the tables had then. Each must look rows up by
/// key whatever those were: planned on new, empty tables (the state a deployment starts
/// in), on analysed empty ones and on filled ones, no plan scans a table.
#[tokio::test]
async fn hot_statements_keep_key_lookups_in_their_generic_plans() {
    use clearinghouse_platform::{config::DatabaseConfig, config::Secret, db};

    let env = TestEnv::new().await.unwrap();
    let config = DatabaseConfig {
        url: Secret::new(&env.database_url),
        schema: "plans_test".into(),
        max_connections: 2,
    };
    let pool = db::connect_and_migrate(
        &config,
        &[
            &clearinghouse_events::migrator(),
            &clearinghouse_platform::audit::migrator(),
            &clearinghouse_settlement::migrator(),
        ],
    )
    .await
    .unwrap();
    let plans = |state: &'static str| {
        let config = config.clone();
        async move {
            // A new connection plans afresh.
            let hot = db::connect_with_generic_plans(&config, 1).await.unwrap();
            let mut conn = hot.acquire().await.unwrap();
            let mut found = Vec::new();
            for (i, (name, sql)) in clearinghouse_settlement::GENERIC_PLAN_STATEMENTS
                .iter()
                .enumerate()
            {
                let parameters = (1..=60)
                    .take_while(|n| sql.contains(&format!("${n}:")))
                    .count();
                assert!(parameters > 0, "{name}: no parameters found");
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("PREPARE hot_{i} AS {sql}")))
                    .execute(&mut *conn)
                    .await
                    .unwrap();
                let nulls = vec!["NULL"; parameters].join(", ");
                let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "EXPLAIN (COSTS OFF) EXECUTE hot_{i}({nulls})"
                )))
                .fetch_all(&mut *conn)
                .await
                .unwrap();
                let plan: Vec<String> = rows
                    .iter()
                    .map(|r| sqlx::Row::get::<String, _>(r, 0))
                    .collect();
                let plan = plan.join("\n");
                assert!(
                    plan.contains("Index") || plan.contains("Conflict Arbiter"),
                    "{name} ({state}): the plan uses no index:\n{plan}"
                );
                found.push((name, plan));
            }
            for (name, plan) in found {
                assert!(
                    !plan.contains("Seq Scan"),
                    "{name} ({state}): the generic plan scans a table:\n{plan}"
                );
            }
            drop(conn);
            hot.close().await;
        }
    };
    plans("new, empty tables").await;
    sqlx::raw_sql("ANALYZE").execute(&pool).await.unwrap();
    plans("analysed, empty tables").await;
    // A few thousand persons, years and claims, as after the first minutes of traffic.
    sqlx::raw_sql(
        "INSERT INTO personal_accounts (insured_region, person_id)
             SELECT '440000', 'P' || n FROM generate_series(1, 3000) AS n;
         INSERT INTO accumulators (insured_region, person_id, year)
             SELECT '440000', 'P' || n, 2026 FROM generate_series(1, 3000) AS n;
         INSERT INTO person_projection (insured_region, person_id, scheme, retired, assistance_category)
             SELECT '440000', 'P' || n, 'EMPLOYEE', false, '' FROM generate_series(1, 3000) AS n;
         ANALYZE",
    )
    .execute(&pool)
    .await
    .unwrap();
    plans("analysed, filled tables").await;
}

/// A batch that fails as a whole is retried claim by claim through the same write path:
/// here another writer takes a claim id after the batch looked for it, so the batch's
/// insert fails on the key; alone, the claim finds the id taken and is answered as a
/// repeat would be (another payload: `ALREADY_EXISTS`), while nothing of the failed batch
/// stays behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_batch_is_retried_claim_by_claim_through_the_same_path() {
    let world = World::start(true, &[("P-FB", false, "", FilingCategory::OtherTemporary)]).await;
    let db = world.env.schema_pool("settlement").await.unwrap();
    let first = world
        .settle(fixtures::example1("FB-0", "P-FB"))
        .await
        .unwrap();
    let year = year_of(&first);
    let before = world.accumulators("P-FB", year).await;

    let mut other = db.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO claims (treatment_region, claim_id, insured_region, person_id, year, request, result,
                             settled_event_id, inpatient_admissions, inpatient_fund_paid,
                             disease_deductible_met, disease_fund_paid, serious_illness_base,
                             serious_illness_paid, assistance_paid, personal_account_debit, settled_at)
         SELECT treatment_region, 'FB-1', insured_region, person_id, year, request, result,
                gen_random_uuid(), 0, 0, 0, 0, 0, 0, 0, 0, settled_at
         FROM claims WHERE claim_id = 'FB-0'",
    )
    .execute(&mut *other)
    .await
    .unwrap();
    let settling = {
        let world_settlement = world.settlement.clone();
        tokio::spawn(async move {
            world_settlement
                .clone()
                .settle(clearinghouse_proto::settlement::v1::SettleRequest {
                    claim: Some(fixtures::example1("FB-1", "P-FB")),
                })
                .await
        })
    };
    // The batch's insert waits on the other writer's key.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the batch never reached the insert"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    other.commit().await.unwrap();
    let refused = settling.await.unwrap().unwrap_err();
    assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused:?}");
    assert!(
        refused.message().contains("different payload"),
        "answered by the batch's failure, not by the claim retried alone: {refused:?}"
    );
    // Nothing of the failed batch stayed: the accumulators are as before, and the next
    // claim settles.
    let after = world.accumulators("P-FB", year).await;
    assert_eq!(after.inpatient_fund_paid, before.inpatient_fund_paid);
    assert_eq!(after.inpatient_admissions, before.inpatient_admissions);
    world
        .settle(fixtures::example1("FB-2", "P-FB"))
        .await
        .unwrap();
    let (_, settlement_metrics) = world.metrics_targets()[1];
    let metrics = scrape_metrics(settlement_metrics).await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "clearinghouse_settlement_batch_fallbacks_total 1"),
        "the batch did not fall back exactly once:\n{metrics}"
    );
    world.stop().await;
}
