//! Reconciliation with a provincial platform (issue 17) through gRPC: totals per cell, the
//! detail of a cell with differences injected on the province's side (a claim missing, an
//! extra claim, an amount off by 0.01 in one fund, a reversal on one side only) each found
//! exactly, the discrepancies tracked until resolved (the province corrects its books) or
//! accepted (by the national platform), a period that cannot be confirmed while they are
//! open, and the period's clearing detail page by page. The services' clock stands just
//! before midnight China time, so every claim belongs to that China day.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::time::Duration;

use clearinghouse_domain::dates::Clock;
use clearinghouse_proto::{
    filing::v1::FilingCategory,
    ledger::v1::*,
    settlement::v1::{SettlementResult, VisitType},
};
use clearinghouse_testkit::fixtures;
use clearinghouse_tests::*;
use rust_decimal::Decimal;
use time::Time;
use tonic::Code;

fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

/// The province's own record of a settled claim (or reversal), as it would send it.
fn claim_of(result: &SettlementResult, kind: DetailKind) -> DetailClaim {
    let s = result.split.clone().unwrap();
    let c = result.claim.clone().unwrap();
    DetailClaim {
        treatment_region: c.treatment_region,
        claim_id: c.claim_id,
        kind: kind as i32,
        total: s.total,
        fund: s.fund,
        serious_illness: s.serious_illness,
        assistance: s.assistance,
        personal_account: s.personal_account,
        cash: s.cash,
    }
}

fn totals_of(claims: &[&DetailClaim]) -> Totals {
    let sum = |f: fn(&DetailClaim) -> &String| {
        format!("{:.2}", claims.iter().map(|c| dec(f(c))).sum::<Decimal>())
    };
    Totals {
        count: claims.len() as i64,
        total: sum(|c| &c.total),
        fund: sum(|c| &c.fund),
        serious_illness: sum(|c| &c.serious_illness),
        assistance: sum(|c| &c.assistance),
        personal_account: sum(|c| &c.personal_account),
        cash: sum(|c| &c.cash),
    }
}

async fn detail(
    world: &World,
    day: &str,
    claims: Vec<DetailClaim>,
) -> (Vec<Difference>, ReconcileDetailResponse) {
    let mut ledger = world.ledger_as("110000").await;
    // Two messages: the cell with half the claims, then the rest.
    let half = claims.len() / 2;
    let first = ReconcileDetailRequest {
        province: "110000".into(),
        role: ReconcileRole::Treatment as i32,
        counterparty_province: "370000".into(),
        visit_type: VisitType::Inpatient as i32,
        day: day.into(),
        period: String::new(),
        claims: claims[..half].to_vec(),
    };
    let rest = ReconcileDetailRequest {
        claims: claims[half..].to_vec(),
        ..Default::default()
    };
    let mut answers = ledger
        .reconcile_detail(tokio_stream::iter(vec![first, rest]))
        .await
        .unwrap()
        .into_inner();
    let mut differences = Vec::new();
    let mut last = ReconcileDetailResponse::default();
    while let Some(answer) = answers.message().await.unwrap() {
        differences.extend(answer.differences.clone());
        last = answer;
    }
    assert!(last.done);
    (differences, last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_provinces_books_are_reconciled_claim_by_claim_and_discrepancies_tracked() {
    // 23:59:00 China time today: every claim of the test settles on this China day.
    let today = fixtures::today();
    let clock = Clock::starting_at(
        today
            .with_time(Time::from_hms(15, 59, 0).unwrap())
            .assume_utc(),
    );
    let day = fixtures::date(today);
    let world = World::start_at(
        clock,
        false,
        &[("P-REC", false, "", FilingCategory::LongTermResident)],
    )
    .await;
    let mut results = Vec::new();
    for i in 0..6 {
        results.push(
            world
                .settle(fixtures::small_claim(&format!("REC-{i}"), "P-REC"))
                .await
                .unwrap(),
        );
    }
    let reversed = world.reverse("REC-3").await;
    assert_eq!(reversed.claim.unwrap().claim_id, "REC-3");
    let mut ledger = world.ledger.clone();
    wait_for_entries(&mut ledger, 7, Duration::from_secs(60))
        .await
        .unwrap();

    // The province's books, with four differences injected.
    let mut theirs: Vec<DetailClaim> = results
        .iter()
        .map(|r| claim_of(r, DetailKind::Claim))
        .filter(|c| c.claim_id != "REC-1") // a claim missing
        .collect();
    let mut extra = claim_of(&results[0], DetailKind::Claim);
    extra.claim_id = "REC-X".into(); // an extra claim
    theirs.push(extra);
    let off = theirs.iter_mut().find(|c| c.claim_id == "REC-2").unwrap();
    off.fund = format!("{:.2}", dec(&off.fund) + dec("0.01")); // 0.01 off in one fund
    // and the reversal of REC-3 not counted on their side.

    // Totals: the cell does not match, and both sides' figures are there.
    let claims: Vec<&DetailClaim> = theirs.iter().collect();
    let cells = world
        .ledger_as("110000")
        .await
        .reconcile_totals(ReconcileTotalsRequest {
            province: "110000".into(),
            role: ReconcileRole::Treatment as i32,
            day: day.clone(),
            period: String::new(),
            cells: vec![ReconcileCell {
                counterparty_province: "370000".into(),
                visit_type: VisitType::Inpatient as i32,
                claims: Some(totals_of(&claims)),
                reversals: Some(Totals::default()),
            }],
        })
        .await
        .unwrap()
        .into_inner()
        .cells;
    assert_eq!(cells.len(), 1);
    assert!(!cells[0].matches);
    assert_eq!(cells[0].ours_claims.as_ref().unwrap().count, 6);
    assert_eq!(cells[0].ours_reversals.as_ref().unwrap().count, 1);
    // Only a party may reconcile a cell.
    let other = world
        .ledger_as("440000")
        .await
        .reconcile_totals(ReconcileTotalsRequest {
            province: "110000".into(),
            role: ReconcileRole::Treatment as i32,
            day: day.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied);

    // Detail: exactly the four differences.
    let (differences, last) = detail(&world, &day, theirs.clone()).await;
    let mut found: Vec<(String, i32, i32, Vec<String>)> = differences
        .iter()
        .map(|d| {
            (
                d.claim_id.clone(),
                d.kind,
                d.side,
                d.fields.iter().map(|f| f.field.clone()).collect(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            (
                "REC-1".into(),
                DetailKind::Claim as i32,
                DifferenceSide::OnlyOurs as i32,
                vec![]
            ),
            (
                "REC-2".into(),
                DetailKind::Claim as i32,
                DifferenceSide::AmountsDiffer as i32,
                vec!["fund".to_string()]
            ),
            (
                "REC-3".into(),
                DetailKind::Reversal as i32,
                DifferenceSide::OnlyOurs as i32,
                vec![]
            ),
            (
                "REC-X".into(),
                DetailKind::Claim as i32,
                DifferenceSide::OnlyTheirs as i32,
                vec![]
            ),
        ]
    );
    assert_eq!((last.compared, last.differing, last.resolved), (6, 4, 0));
    let fund = &differences
        .iter()
        .find(|d| d.claim_id == "REC-2")
        .unwrap()
        .fields[0];
    assert_eq!(dec(&fund.theirs) - dec(&fund.ours), dec("0.01"));
    let open = world
        .ledger
        .clone()
        .list_discrepancies(ListDiscrepanciesRequest {
            province: "110000".into(),
            status: DiscrepancyStatus::Open as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .discrepancies;
    assert_eq!(open.len(), 4);
    // The open discrepancies are a metric, by the province that found them and the other.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = http_get(world.metrics_targets()[2].1, "/metrics")
            .await
            .unwrap();
        if metrics.contains(
            "clearinghouse_discrepancies_open{province=\"110000\",counterparty=\"370000\"} 4",
        ) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no discrepancy metric"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // A province with open discrepancies in the period cannot confirm it (it may dispute).
    let period = format!("{:04}-{:02}", today.year(), u8::from(today.month()));
    world
        .ledger
        .clone()
        .close_clearing_period(CloseClearingPeriodRequest {
            request_id: String::new(),
            period: period.clone(),
        })
        .await
        .unwrap();
    let blocked = world
        .ledger_as("110000")
        .await
        .confirm_statement(ConfirmStatementRequest {
            request_id: String::new(),
            period: period.clone(),
            province: "110000".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(blocked.code(), Code::FailedPrecondition, "{blocked:?}");

    // The province corrects its books: the next reconciliation finds nothing and resolves
    // every discrepancy.
    let mut corrected: Vec<DetailClaim> = results
        .iter()
        .map(|r| claim_of(r, DetailKind::Claim))
        .collect();
    corrected.push(claim_of(&results[3], DetailKind::Reversal));
    let (differences, last) = detail(&world, &day, corrected.clone()).await;
    assert!(differences.is_empty(), "{differences:?}");
    assert_eq!((last.compared, last.differing, last.resolved), (7, 0, 4));
    let resolved = world
        .ledger
        .clone()
        .list_discrepancies(ListDiscrepanciesRequest {
            province: "110000".into(),
            status: DiscrepancyStatus::Resolved as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .discrepancies;
    assert_eq!(resolved.len(), 4);
    world
        .ledger_as("110000")
        .await
        .confirm_statement(ConfirmStatementRequest {
            request_id: String::new(),
            period: period.clone(),
            province: "110000".into(),
        })
        .await
        .expect("nothing open any more");

    // A difference the national platform accepts.
    let mut with_extra = corrected.clone();
    let mut extra = claim_of(&results[0], DetailKind::Claim);
    extra.claim_id = "REC-Y".into();
    with_extra.push(extra);
    let (differences, _) = detail(&world, &day, with_extra).await;
    assert_eq!(differences.len(), 1);
    let id = differences[0].discrepancy_id;
    let refused = world
        .ledger_as("110000")
        .await
        .resolve_discrepancy(ResolveDiscrepancyRequest {
            request_id: String::new(),
            id,
            reason: "ours".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let accepted = world
        .ledger
        .clone()
        .resolve_discrepancy(ResolveDiscrepancyRequest {
            request_id: String::new(),
            id,
            reason: "the hospital's test record, never paid".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .discrepancy
        .unwrap();
    assert_eq!(accepted.status, DiscrepancyStatus::Accepted as i32);

    // The period's clearing detail, page by page, sums to the statement.
    let mut rows = Vec::new();
    let mut token = String::new();
    loop {
        let page = world
            .ledger_as("370000")
            .await
            .list_clearing_detail(ListClearingDetailRequest {
                period: period.clone(),
                insured_province: "370000".into(),
                treatment_province: "110000".into(),
                page_size: 3,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        rows.extend(page.rows);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(rows.len(), 7);
    assert!(rows.iter().all(|r| r.day == day));
    let statement = world
        .ledger
        .clone()
        .get_statement(GetStatementRequest {
            period: period.clone(),
            province: "370000".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let pair = &statement.pairs[0];
    let signed = |r: &ClearingDetailRow, f: &str| {
        let sign = if r.kind == DetailKind::Reversal as i32 {
            -1
        } else {
            1
        };
        dec(f) * Decimal::from(sign)
    };
    let fund: Decimal = rows.iter().map(|r| signed(r, &r.fund)).sum();
    assert_eq!(fund, dec(&pair.fund));
    assert_eq!(pair.claim_count, 6);
    assert_eq!(pair.reversal_count, 1);
    // The CSV export (`clearinghouse export clearing-detail`) sums to the statement too.
    let pool = world.env.schema_pool("ledger").await.unwrap();
    let mut csv = Vec::new();
    let written = clearinghouse_fund_ledger::export_clearing_detail(
        &pool,
        &period,
        clearinghouse_domain::Region::parse("370000").unwrap(),
        clearinghouse_domain::Region::parse("110000").unwrap(),
        &mut csv,
    )
    .await
    .unwrap();
    assert_eq!(written, 7);
    let csv = String::from_utf8(csv).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (fund_at, total_at) = (column("fund"), column("total"));
    let mut csv_fund = Decimal::ZERO;
    let mut csv_total = Decimal::ZERO;
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        csv_fund += dec(fields[fund_at]);
        csv_total += dec(fields[total_at]);
    }
    assert_eq!(csv_fund, dec(&pair.fund));
    assert_eq!(
        csv_total,
        rows.iter().map(|r| signed(r, &r.total)).sum::<Decimal>()
    );
    world.stop().await;
}
