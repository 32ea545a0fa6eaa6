//! A reused request id never hides a change (issue 13, point 9): for every idempotent write
//! the same request again returns the original, another payload under the same id is
//! `ALREADY_EXISTS` naming the id, and a policy or catalogue version just put is used by the
//! very next settlement. Version lists are paged like every other list.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

use clearinghouse_proto::filing::v1::{FilingCategory, Scheme};
use clearinghouse_proto::{
    ledger::v1::TopUpReserveRequest,
    referral::v1::{
        IssueReferralRequest, Referral, referral_service_client::ReferralServiceClient,
    },
    settlement::v1::{
        CreditPersonalAccountRequest, ListCatalogueVersionsRequest, ListPolicyVersionsRequest,
        PreSettleRequest, PutCatalogueRequest, PutPolicyRequest, VisitType,
    },
};
use clearinghouse_testkit::fixtures;
use clearinghouse_tests::*;
use tonic::{Code, Status};

fn refused_naming<T: std::fmt::Debug>(result: Result<T, Status>, id: &str) {
    let status = result.expect_err("another payload under a used request id");
    assert_eq!(status.code(), Code::AlreadyExists, "{}", status.message());
    assert!(status.message().contains(id), "{}", status.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reused_request_id_never_hides_a_change() {
    let world = World::start(
        false,
        &[("P-IDEM", false, "", FilingCategory::LongTermResident)],
    )
    .await;
    let mut policies = world.policies.clone();

    // A policy: the same again is the same version; another body is refused and nothing
    // else is stored.
    let put = |request_id: &str, policy| PutPolicyRequest {
        request_id: request_id.into(),
        policy: Some(policy),
    };
    let original = fixtures::inpatient_policy(fixtures::INSURED_REGION, false);
    let first = policies
        .put_policy(put("pol-x", original.clone()))
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    let again = policies
        .put_policy(put("pol-x", original.clone()))
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    assert_eq!(again.version, first.version);
    let mut other = original.clone();
    other.ratio_by_level = Some(clearinghouse_proto::settlement::v1::LevelAmounts {
        level1: "0.50".into(),
        level2: "0.50".into(),
        level3: "0.50".into(),
    });
    other.annual_cap = "1000".into();
    refused_naming(
        policies.put_policy(put("pol-x", other.clone())).await,
        "pol-x",
    );
    let list = |page_size, page_token: &str| ListPolicyVersionsRequest {
        insured_region: fixtures::INSURED_REGION.into(),
        scheme: Scheme::Employee as i32,
        visit_type: VisitType::Inpatient as i32,
        page_size,
        page_token: page_token.into(),
    };
    let versions = policies
        .list_policy_versions(list(0, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(versions.policies.len(), 2, "the seed's and pol-x's");
    assert!(versions.next_page_token.is_empty());

    // A version put is used by the next claim, with no delay.
    let mut claim = fixtures::example1("IDEM-1", "P-IDEM");
    let before = world
        .settlement
        .clone()
        .pre_settle(PreSettleRequest {
            claim: Some(claim.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(before.policy_version, first.version);
    let newer = policies
        .put_policy(put("pol-y", other))
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    claim.claim_id = "IDEM-2".into();
    let after = world
        .settlement
        .clone()
        .pre_settle(PreSettleRequest { claim: Some(claim) })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(
        after.policy_version, newer.version,
        "the new version at once"
    );

    // Version lists page.
    let page = policies
        .list_policy_versions(list(2, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.policies.len(), 2);
    assert!(!page.next_page_token.is_empty());
    let rest = policies
        .list_policy_versions(list(2, &page.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.policies.len(), 1);
    assert!(rest.next_page_token.is_empty());
    assert_eq!(rest.policies[0].version, newer.version);
    let bad = policies
        .list_policy_versions(list(2, "not-a-token"))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    // A catalogue: the same items however chunked are the same version; other items are
    // refused; a new version is used at once.
    let mut reference = world.reference.clone();
    let items = fixtures::catalogue_items();
    let header = |request_id: &str, items| PutCatalogueRequest {
        treatment_region: fixtures::TREATMENT_REGION.into(),
        effective_from: fixtures::catalogue_effective_from(),
        items,
        request_id: request_id.into(),
    };
    let one = reference
        .put_catalogue(tokio_stream::iter(vec![header("cat-x", items.clone())]))
        .await
        .unwrap()
        .into_inner();
    let (head, tail) = items.split_at(2);
    let chunked = reference
        .put_catalogue(tokio_stream::iter(vec![
            header("cat-x", head.to_vec()),
            PutCatalogueRequest {
                items: tail.to_vec(),
                ..Default::default()
            },
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(chunked, one);
    let mut fewer = items.clone();
    fewer.pop();
    refused_naming(
        reference
            .put_catalogue(tokio_stream::iter(vec![header("cat-x", fewer)]))
            .await,
        "cat-x",
    );
    let catalogues = reference
        .list_catalogue_versions(ListCatalogueVersionsRequest {
            treatment_region: fixtures::TREATMENT_REGION.into(),
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(catalogues.versions.len(), 1);
    let second = reference
        .list_catalogue_versions(ListCatalogueVersionsRequest {
            treatment_region: fixtures::TREATMENT_REGION.into(),
            page_size: 1,
            page_token: catalogues.next_page_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.versions.len(), 1);
    assert_eq!(second.versions[0].version, one.version);
    let last = reference
        .list_catalogue_versions(ListCatalogueVersionsRequest {
            treatment_region: fixtures::TREATMENT_REGION.into(),
            page_size: 1,
            page_token: second.next_page_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        last.versions.is_empty() && last.next_page_token.is_empty(),
        "two versions in all"
    );
    let mut claim = fixtures::example1("IDEM-3", "P-IDEM");
    claim.claim_id = "IDEM-3".into();
    let result = world
        .settlement
        .clone()
        .pre_settle(PreSettleRequest { claim: Some(claim) })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(
        result.catalogue_version, one.version,
        "the new catalogue at once"
    );

    // A personal-account credit and a reserve top-up.
    let credit = |amount: &str| CreditPersonalAccountRequest {
        request_id: "cr-x".into(),
        insured_region: fixtures::INSURED_REGION.into(),
        person_id: "P-IDEM".into(),
        amount: amount.into(),
    };
    let mut insured = world.insured_settlement.clone();
    insured
        .credit_personal_account(credit("10.00"))
        .await
        .unwrap();
    insured
        .credit_personal_account(credit("10.00"))
        .await
        .unwrap();
    refused_naming(
        insured.credit_personal_account(credit("11.00")).await,
        "cr-x",
    );
    let top_up = |amount: &str| TopUpReserveRequest {
        request_id: "top-x".into(),
        insured_province: "370000".into(),
        treatment_province: "110000".into(),
        amount: amount.into(),
    };
    let mut shandong = world.ledger_as("370000").await;
    let topped = shandong
        .top_up_reserve(top_up("100.00"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        shandong
            .top_up_reserve(top_up("100.00"))
            .await
            .unwrap()
            .into_inner(),
        topped
    );
    refused_naming(shandong.top_up_reserve(top_up("200.00")).await, "top-x");
    // Another province's "top-x" is its own request.
    let beijing_top_up = TopUpReserveRequest {
        insured_province: "110000".into(),
        treatment_province: "370000".into(),
        ..top_up("200.00")
    };
    let beijing = world
        .ledger_as("110000")
        .await
        .top_up_reserve(beijing_top_up)
        .await
        .unwrap()
        .into_inner()
        .reserve
        .unwrap();
    assert_eq!(
        (
            beijing.insured_province.as_str(),
            beijing.treatment_province.as_str()
        ),
        ("110000", "370000")
    );

    // A referral.
    let stop_referral = tokio_util::sync::CancellationToken::new();
    let _stop_referral_on_drop = stop_referral.clone().drop_guard();
    let referral_host = world
        .env
        .start_referral(stop_referral.clone())
        .await
        .unwrap();
    let mut referrals =
        ReferralServiceClient::new(channel_as(&referral_host, SHANDONG).await.unwrap());
    let issue = |target: &str| IssueReferralRequest {
        request_id: "ref-x".into(),
        referral: Some(Referral {
            person_id: "P-IDEM".into(),
            insured_region: fixtures::INSURED_REGION.into(),
            referring_hospital: "H370102".into(),
            target_region: target.into(),
            diagnosis: "C34.9".into(),
            issue_date: fixtures::days_ago(1),
            ..Referral::default()
        }),
    };
    let issued = referrals
        .issue_referral(issue("310000"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        referrals
            .issue_referral(issue("310000"))
            .await
            .unwrap()
            .into_inner(),
        issued
    );
    refused_naming(referrals.issue_referral(issue("440000")).await, "ref-x");
    stop_referral.cancel();
    referral_host.wait().await.unwrap();
    world.stop().await;
}
