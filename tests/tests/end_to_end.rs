//! End to end through real Postgres and the real Kafka broker: a person and a filing, the
//! worked examples settled through the gRPC clients, and the ledger's postings.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::time::Duration;

use clearinghouse_platform::error::violated_fields;
use clearinghouse_proto::{
    filing::v1::FilingCategory,
    settlement::v1::{ClaimStatus, GetClaimRequest, SettleRequest, SettlementResult, Split},
};
use clearinghouse_testkit::fixtures;
use clearinghouse_tests::*;
use tonic::Code;

fn split(result: &SettlementResult) -> Split {
    result.split.clone().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worked_examples_are_settled_and_posted_to_the_ledger() {
    let world = World::start(
        false,
        &[
            ("P-EX1", false, "", FilingCategory::Referral),
            ("P-EX2", true, "", FilingCategory::LongTermResident),
        ],
    )
    .await;
    let settle = |claim| world.settle(claim);

    // Example 1.
    let one = settle(fixtures::example1("EX1", "P-EX1")).await.unwrap();
    let s = split(&one);
    assert_eq!(
        (
            s.total.as_str(),
            s.full_self_pay.as_str(),
            s.prior_self_pay.as_str(),
            s.in_scope.as_str()
        ),
        ("35665.00", "340.00", "20.00", "35305.00")
    );
    assert_eq!(
        (
            s.deductible.as_str(),
            s.ratio.as_str(),
            s.fund.as_str(),
            s.cash.as_str()
        ),
        ("1000.00", "0.75", "25728.75", "9936.25")
    );
    assert_eq!(one.category, FilingCategory::Referral as i32);
    assert_eq!(one.status, ClaimStatus::Settled as i32);
    assert!(one.policy_version > 0 && one.catalogue_version > 0);

    // Example 2a then 2b: the second admission takes the lower deductible.
    let two_a = split(&settle(fixtures::example2a("EX2A", "P-EX2")).await.unwrap());
    assert_eq!(
        (
            two_a.deductible.as_str(),
            two_a.ratio.as_str(),
            two_a.fund.as_str(),
            two_a.cash.as_str()
        ),
        ("300.00", "0.95", "222300.00", "12000.00")
    );
    let two_b = split(&settle(fixtures::example2b("EX2B", "P-EX2")).await.unwrap());
    assert_eq!(
        (
            two_b.total.as_str(),
            two_b.full_self_pay.as_str(),
            two_b.prior_self_pay.as_str(),
            two_b.in_scope.as_str()
        ),
        ("47463.99", "2999.99", "532.80", "43931.20")
    );
    assert_eq!(
        (
            two_b.deductible.as_str(),
            two_b.ratio.as_str(),
            two_b.fund.as_str(),
            two_b.cash.as_str()
        ),
        ("300.00", "0.90", "39268.08", "8195.91")
    );

    // The same request again returns the stored result; another payload under the id is refused.
    let again = settle(fixtures::example1("EX1", "P-EX1")).await.unwrap();
    assert_eq!(again, one);
    let mut changed = fixtures::example1("EX1", "P-EX1");
    changed.lines[0].quantity = "11".into();
    let refused = settle(changed).await.unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists);
    assert!(refused.message().contains("EX1"), "{}", refused.message());
    let stored = world
        .settlement
        .clone()
        .get_claim(GetClaimRequest {
            treatment_region: fixtures::TREATMENT_REGION.into(),
            claim_id: "EX2B".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(split(&stored), two_b);

    // The ledger posts the insured-place share of each claim; cash never enters clearing.
    let balances = wait_for_entries(&mut world.ledger.clone(), 3, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(balances.entry_count, 3);
    assert_eq!(balances.total, "0.00");
    let account = |name: &str| {
        balances
            .balances
            .iter()
            .find(|b| b.account == name)
            .map(|b| b.balance.clone())
    };
    assert_eq!(
        account("receivable:110000:370000").as_deref(),
        Some("287296.83")
    );
    assert_eq!(
        account("payable:370000:110000:fund").as_deref(),
        Some("-287296.83")
    );

    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_and_unfiled_claims_are_refused_and_leave_nothing_behind() {
    let world = World::start(
        false,
        &[("P-FILED", false, "", FilingCategory::PostedWorker)],
    )
    .await;
    let mut client = world.settlement.clone();
    let mut filings = world.filing.clone();

    // Every bad field is named.
    let mut bad = fixtures::example1("BAD-1", "P-FILED");
    bad.insured_region = "37010".into();
    bad.lines[1].unit_price = "-1".into();
    bad.lines[2].quantity = "1.23456".into();
    let status = client
        .settle(SettleRequest { claim: Some(bad) })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&status),
        vec![
            "claim.insured_region",
            "claim.lines[1].unit_price",
            "claim.lines[2].quantity"
        ]
    );

    // Unknown person, and a registered person with no filing: refused unless emergency.
    let unknown = client
        .settle(SettleRequest {
            claim: Some(fixtures::example1("NOBODY-1", "P-NOBODY")),
        })
        .await
        .unwrap_err();
    assert_eq!(
        unknown.code(),
        Code::FailedPrecondition,
        "{}",
        unknown.message()
    );
    let mut person = fixtures::person(
        "P-UNFILED",
        &fixtures::id_number("37010219800101123"),
        false,
        "",
    );
    person.insured_region = fixtures::INSURED_REGION.into();
    filings
        .register_person(clearinghouse_proto::filing::v1::RegisterPersonRequest {
            request_id: String::new(),
            person: Some(person),
        })
        .await
        .unwrap();
    let unfiled = client
        .settle(SettleRequest {
            claim: Some(fixtures::example1("UNFILED-1", "P-UNFILED")),
        })
        .await
        .unwrap_err();
    assert_eq!(
        unfiled.code(),
        Code::FailedPrecondition,
        "{}",
        unfiled.message()
    );
    let mut emergency = fixtures::example1("UNFILED-2", "P-UNFILED");
    emergency.emergency = true;
    let deemed = client
        .settle(SettleRequest {
            claim: Some(emergency),
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(deemed.category, FilingCategory::Emergency as i32);
    assert_eq!(split(&deemed).ratio, "0.75");

    // Nothing was stored for the refused claims.
    for claim_id in ["BAD-1", "NOBODY-1", "UNFILED-1"] {
        let missing = client
            .get_claim(GetClaimRequest {
                treatment_region: fixtures::TREATMENT_REGION.into(),
                claim_id: claim_id.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound, "{claim_id}");
    }
    world.stop().await;
}
