//! General outpatient visits and family mutual aid (issue 16) through gRPC: worked examples
//! 4 and 5 to the fen, the accumulators, links refused and required, a reversal giving a
//! holder's money back, and 50 concurrent claims of a household on one holder's account.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::time::Duration;

use clearinghouse_proto::{
    filing::v1::{FilingCategory, RegisterFilingRequest, RegisterPersonRequest, Scheme},
    settlement::v1::{
        CreditPersonalAccountRequest, FamilyLink, FamilyRelation, GetAccumulatorsResponse,
        GetClaimRequest, LinkFamilyAccountRequest, PutPolicyRequest, ReverseRequest, SettleRequest,
        UnlinkFamilyAccountRequest,
    },
};
use clearinghouse_testkit::fixtures;
use clearinghouse_tests::*;
use rust_decimal::Decimal;
use tonic::Code;

/// Registers a person with `scheme` and files them for Beijing under `category`.
async fn add(
    world: &World,
    person_id: &str,
    scheme: Scheme,
    retired: bool,
    category: FilingCategory,
) {
    let digits: String = person_id
        .bytes()
        .map(|b| char::from(b'0' + b % 10))
        .collect();
    let body = format!("{:0<17}", format!("370102{digits}"));
    let mut person = fixtures::person(person_id, &fixtures::id_number(&body[..17]), retired, "");
    person.scheme = scheme as i32;
    let mut filings = world.filing.clone();
    filings
        .register_person(RegisterPersonRequest {
            request_id: String::new(),
            person: Some(person),
        })
        .await
        .unwrap();
    filings
        .register_filing(RegisterFilingRequest {
            request_id: format!("filing-{person_id}"),
            filing: Some(fixtures::filing(person_id, category)),
        })
        .await
        .unwrap();
}

/// Links `holder`'s account to `member` (just registered: the settlement service asks the
/// filing service about persons its projection has not heard of yet).
async fn link(world: &World, holder: &str, member: &str, relation: FamilyRelation) -> FamilyLink {
    let request = LinkFamilyAccountRequest {
        request_id: format!("link-{holder}-{member}"),
        link: Some(FamilyLink {
            insured_region: fixtures::INSURED_REGION.into(),
            holder_person_id: holder.into(),
            member_person_id: member.into(),
            relation: relation as i32,
            linked_from: fixtures::days_ago(30),
            unlinked_from: String::new(),
        }),
    };
    world
        .insured_settlement
        .clone()
        .link_family_account(request)
        .await
        .unwrap()
        .into_inner()
        .link
        .unwrap()
}

/// Settles `claim` on a task of its own: many at once.
fn settle_at_once(
    world: &World,
    claim: clearinghouse_proto::settlement::v1::Claim,
) -> tokio::task::JoinHandle<
    Result<clearinghouse_proto::settlement::v1::SettlementResult, tonic::Status>,
> {
    let mut client = world.settlement.clone();
    tokio::spawn(async move {
        client
            .settle(SettleRequest { claim: Some(claim) })
            .await
            .map(|r| r.into_inner().result.unwrap())
    })
}

/// A world with the employee general-outpatient policy and `persons` registered as
/// employees with long-term filings.
async fn employees_under_general_outpatient(persons: &[&str]) -> World {
    let world = World::start(false, &[]).await;
    world
        .policies
        .clone()
        .put_policy(PutPolicyRequest {
            request_id: "go".into(),
            policy: Some(fixtures::general_outpatient_policy(
                fixtures::INSURED_REGION,
                Scheme::Employee,
            )),
        })
        .await
        .unwrap();
    for person in persons {
        add(
            &world,
            person,
            Scheme::Employee,
            false,
            FilingCategory::LongTermResident,
        )
        .await;
    }
    world
}

fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

async fn accumulators(world: &World, person_id: &str) -> GetAccumulatorsResponse {
    world
        .accumulators(person_id, fixtures::today().year())
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worked_examples_4_and_5_and_family_accounts_end_to_end() {
    let world = World::start(false, &[]).await;
    for scheme in [Scheme::Employee, Scheme::Resident] {
        world
            .policies
            .clone()
            .put_policy(PutPolicyRequest {
                request_id: format!("go-{scheme:?}"),
                policy: Some(fixtures::general_outpatient_policy(
                    fixtures::INSURED_REGION,
                    scheme,
                )),
            })
            .await
            .unwrap();
    }
    add(
        &world,
        "P-RET4",
        Scheme::Employee,
        true,
        FilingCategory::LongTermResident,
    )
    .await;
    add(
        &world,
        "P-PARENT",
        Scheme::Employee,
        false,
        FilingCategory::LongTermResident,
    )
    .await;
    add(
        &world,
        "P-CHILD",
        Scheme::Resident,
        false,
        FilingCategory::OtherTemporary,
    )
    .await;
    add(
        &world,
        "P-STRANGER",
        Scheme::Resident,
        false,
        FilingCategory::OtherTemporary,
    )
    .await;

    // Example 4: 100.00 of the annual deductible met by an earlier visit.
    let earlier = world
        .settle(fixtures::example4_earlier("GO-4A", "P-RET4"))
        .await
        .unwrap();
    let split = earlier.split.unwrap();
    assert_eq!(
        (split.deductible.as_str(), split.fund.as_str()),
        ("100.00", "0.00")
    );
    let result = world
        .settle(fixtures::example4("GO-4B", "P-RET4"))
        .await
        .unwrap();
    let s = result.split.unwrap();
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
            &s.cash
        ]
        .map(String::as_str),
        [
            "215.00", "40.00", "10.00", "165.00", "50.00", "0.65", "74.75", "0.00", "140.25"
        ]
    );
    let acc = accumulators(&world, "P-RET4").await;
    assert_eq!(
        (
            acc.general_deductible_met.as_str(),
            acc.general_fund_paid.as_str()
        ),
        ("150.00", "74.75")
    );
    assert_eq!(
        acc.inpatient_fund_paid, "0.00",
        "general outpatient has its own cap"
    );
    assert_eq!(
        acc.serious_illness_base, "0.00",
        "nor adds to the serious-illness base"
    );
    assert!(acc.diseases.is_empty());

    // Example 5: the child's bill paid in part from the parent's account.
    world.credit("P-PARENT", "credit-parent", "80.00").await;
    let unlinked = world
        .settle(fixtures::example5("GO-5X", "P-CHILD", "P-PARENT"))
        .await
        .unwrap_err();
    assert_eq!(unlinked.code(), Code::FailedPrecondition, "{unlinked:?}");
    let linked = link(&world, "P-PARENT", "P-CHILD", FamilyRelation::Child).await;
    assert_eq!(linked.linked_from, fixtures::days_ago(30));
    // Only an employee's account can be shared.
    let refused = world
        .insured_settlement
        .clone()
        .link_family_account(LinkFamilyAccountRequest {
            request_id: String::new(),
            link: Some(FamilyLink {
                holder_person_id: "P-CHILD".into(),
                member_person_id: "P-STRANGER".into(),
                ..linked.clone()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    // A link is the insured place's: the treatment place may not make one.
    let foreign = world
        .settlement
        .clone()
        .link_family_account(LinkFamilyAccountRequest {
            request_id: String::new(),
            link: Some(linked.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::PermissionDenied);

    let result = world
        .settle(fixtures::example5("GO-5", "P-CHILD", "P-PARENT"))
        .await
        .unwrap();
    let s = result.split.clone().unwrap();
    assert_eq!(
        [
            &s.total,
            &s.full_self_pay,
            &s.prior_self_pay,
            &s.in_scope,
            &s.deductible,
            &s.ratio,
            &s.fund,
            &s.personal_account,
            &s.cash
        ]
        .map(String::as_str),
        [
            "1275.00", "100.00", "25.00", "1150.00", "150.00", "0.55", "550.00", "80.00", "645.00"
        ]
    );
    assert_eq!(result.personal_account_holder, "P-PARENT");
    assert_eq!(result.personal_account_balance, "0.00");
    assert_eq!(
        accumulators(&world, "P-PARENT")
            .await
            .personal_account_balance,
        "0.00"
    );
    let stored = world
        .settlement
        .clone()
        .get_claim(GetClaimRequest {
            treatment_region: fixtures::TREATMENT_REGION.into(),
            claim_id: "GO-5".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(stored.personal_account_holder, "P-PARENT");
    // Another stranger not linked to the parent cannot draw on the account.
    let stranger = world
        .settle(fixtures::example5("GO-5S", "P-STRANGER", "P-PARENT"))
        .await
        .unwrap_err();
    assert_eq!(stranger.code(), Code::FailedPrecondition);

    // The reversal gives the 80.00 back to the parent.
    world
        .settlement
        .clone()
        .reverse(ReverseRequest {
            treatment_region: fixtures::TREATMENT_REGION.into(),
            claim_id: "GO-5".into(),
            reason: "refund".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        accumulators(&world, "P-PARENT")
            .await
            .personal_account_balance,
        "80.00"
    );
    let child = accumulators(&world, "P-CHILD").await;
    assert_eq!(
        (
            child.general_deductible_met.as_str(),
            child.general_fund_paid.as_str()
        ),
        ("0.00", "0.00")
    );

    // Unlinked from today on: a claim of a day before is still covered by the link.
    let unlinked = world
        .insured_settlement
        .clone()
        .unlink_family_account(UnlinkFamilyAccountRequest {
            request_id: String::new(),
            insured_region: fixtures::INSURED_REGION.into(),
            holder_person_id: "P-PARENT".into(),
            member_person_id: "P-CHILD".into(),
            effective_date: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .link
        .unwrap();
    assert_eq!(unlinked.unlinked_from, fixtures::days_ago(0));
    world
        .settle(fixtures::example5("GO-5B", "P-CHILD", "P-PARENT"))
        .await
        .unwrap();

    // The ledger's statement shows general outpatient as a visit type of its own.
    let mut ledger = world.ledger.clone();
    wait_for_entries(&mut ledger, 5, Duration::from_secs(60))
        .await
        .unwrap();
    let today = fixtures::today();
    let statement = ledger
        .get_statement(clearinghouse_proto::ledger::v1::GetStatementRequest {
            period: format!("{:04}-{:02}", today.year(), u8::from(today.month())),
            province: "370000".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let visit_types = &statement.pairs[0].visit_types;
    assert_eq!(visit_types.len(), 1, "{visit_types:?}");
    let general = &visit_types[0];
    assert_eq!(
        general.visit_type,
        clearinghouse_proto::settlement::v1::VisitType::GeneralOutpatient as i32
    );
    assert_eq!((general.claim_count, general.reversal_count), (4, 1));
    assert_eq!(
        general.fund, "624.75",
        "74.75 + 550.00 (the reversed 550.00 given back)"
    );
    assert_eq!(general.personal_account, "80.00");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_claims_of_a_household_on_one_account_never_overdraw_it() {
    let household = ["P-HOLD", "P-SPOUSE", "P-MOTHER", "P-SON"];
    let world = employees_under_general_outpatient(&household).await;
    for (member, relation) in [
        ("P-SPOUSE", FamilyRelation::Spouse),
        ("P-MOTHER", FamilyRelation::Parent),
        ("P-SON", FamilyRelation::Child),
    ] {
        link(&world, "P-HOLD", member, relation).await;
    }
    world.credit("P-HOLD", "c1", "300.00").await;
    world.credit("P-HOLD", "c2", "200.00").await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let member = household[i % 4];
            let mut claim = fixtures::general_claim(
                &format!("HH-{i:02}"),
                member,
                1,
                vec![fixtures::claim_line("D001", "1", &format!("{}.00", 40 + i))],
            );
            claim.use_personal_account = true;
            if member != "P-HOLD" {
                claim.personal_account_holder = "P-HOLD".into();
            }
            settle_at_once(&world, claim)
        })
        .collect();
    let mut debits = Decimal::ZERO;
    for task in tasks {
        let result = task.await.unwrap().expect("every claim settles");
        let split = result.split.unwrap();
        assert!(dec(&result.personal_account_balance) >= Decimal::ZERO);
        debits += dec(&split.personal_account);
    }
    let balance = dec(&accumulators(&world, "P-HOLD")
        .await
        .personal_account_balance);
    assert!(balance >= Decimal::ZERO);
    assert_eq!(
        balance,
        dec("500.00") - debits,
        "credits minus the stored debits"
    );
    assert!(debits > Decimal::ZERO);
    world.stop().await;
}

/// A settlement sets the balance it computed from what it read under the person's lock; a
/// credit arriving meanwhile takes the same lock, so it lands before the read or after the
/// write, never between them: with claims and credits on one account at once, the balance
/// is every credit less every debit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credits_made_while_claims_draw_on_the_account_are_never_lost() {
    let world = employees_under_general_outpatient(&["P-CREDITED"]).await;
    world.credit("P-CREDITED", "first", "100.00").await;
    let claims: Vec<_> = (0..40)
        .map(|i| {
            let mut claim = fixtures::general_claim(
                &format!("CR-{i:02}"),
                "P-CREDITED",
                1,
                vec![fixtures::claim_line("D001", "1", "30.00")],
            );
            claim.use_personal_account = true;
            settle_at_once(&world, claim)
        })
        .collect();
    let credits: Vec<_> = (0..40)
        .map(|i| {
            let mut client = world.insured_settlement.clone();
            tokio::spawn(async move {
                client
                    .credit_personal_account(CreditPersonalAccountRequest {
                        request_id: format!("credit-{i:02}"),
                        insured_region: fixtures::INSURED_REGION.into(),
                        person_id: "P-CREDITED".into(),
                        amount: "5.00".into(),
                    })
                    .await
            })
        })
        .collect();
    let mut debits = Decimal::ZERO;
    for task in claims {
        let result = task.await.unwrap().expect("every claim settles");
        debits += dec(&result.split.unwrap().personal_account);
    }
    for task in credits {
        task.await.unwrap().expect("every credit is made");
    }
    assert!(debits > Decimal::ZERO, "the claims drew on the account");
    let balance = dec(&accumulators(&world, "P-CREDITED")
        .await
        .personal_account_balance);
    assert_eq!(
        balance,
        dec("100.00") + dec("200.00") - debits,
        "the first credit and forty of 5.00, less the stored debits"
    );
    world.stop().await;
}

/// `PreSettle` reads without locking: a settlement holding the person's rows does not make
/// it wait (issue 15, point 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pre_settle_never_waits_for_a_settlements_locks() {
    let world = World::start(
        false,
        &[("P-PRE", false, "", FilingCategory::LongTermResident)],
    )
    .await;
    world
        .settle(fixtures::small_claim("PRE-1", "P-PRE"))
        .await
        .unwrap();
    let db = world.env.schema_pool("settlement").await.unwrap();
    let mut holder = db.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM personal_accounts WHERE person_id = 'P-PRE' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    sqlx::query("SELECT 1 FROM accumulators WHERE person_id = 'P-PRE' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let mut request = tonic::Request::new(clearinghouse_proto::settlement::v1::PreSettleRequest {
        claim: Some(fixtures::small_claim("PRE-2", "P-PRE")),
    });
    request.set_timeout(Duration::from_secs(5));
    let answer = world
        .settlement
        .clone()
        .pre_settle(request)
        .await
        .expect("answered while the rows are locked")
        .into_inner()
        .result
        .unwrap();
    assert_eq!(answer.claim.unwrap().claim_id, "PRE-2");
    holder.rollback().await.unwrap();
    world.stop().await;
}

/// A platform links a family account right after registering the persons: the
/// settlement service's projection has not heard of them yet (held still here), so it asks
/// the filing service, and the link is made at once — or refused for what the filing
/// service says (a resident cannot share an account; an unknown person is not registered).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_link_right_after_registering_asks_the_filing_service() {
    let world = World::start(false, &[]).await;
    let settlement_db = world.env.schema_pool("settlement").await.unwrap();
    // The projection's consumer cannot record anything while this lock is held.
    let mut held = settlement_db.begin().await.unwrap();
    sqlx::query("LOCK TABLE consumer_offsets IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *held)
        .await
        .unwrap();
    add(
        &world,
        "P-NEW-H",
        Scheme::Employee,
        false,
        FilingCategory::LongTermResident,
    )
    .await;
    add(
        &world,
        "P-NEW-M",
        Scheme::Resident,
        false,
        FilingCategory::LongTermResident,
    )
    .await;
    let known: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM person_projection WHERE person_id IN ('P-NEW-H', 'P-NEW-M')",
    )
    .fetch_one(&settlement_db)
    .await
    .unwrap();
    assert_eq!(known, 0, "the projection has not heard of them");

    let request = |holder: &str, member: &str| LinkFamilyAccountRequest {
        request_id: format!("fresh-{holder}-{member}"),
        link: Some(FamilyLink {
            insured_region: fixtures::INSURED_REGION.into(),
            holder_person_id: holder.into(),
            member_person_id: member.into(),
            relation: FamilyRelation::Spouse as i32,
            linked_from: String::new(),
            unlinked_from: String::new(),
        }),
    };
    let mut insured = world.insured_settlement.clone();
    let linked = insured
        .link_family_account(request("P-NEW-H", "P-NEW-M"))
        .await
        .unwrap()
        .into_inner()
        .link
        .unwrap();
    assert_eq!(linked.member_person_id, "P-NEW-M");
    let resident_holder = insured
        .link_family_account(request("P-NEW-M", "P-NEW-H"))
        .await
        .unwrap_err();
    assert_eq!(resident_holder.code(), Code::FailedPrecondition);
    assert!(resident_holder.message().contains("not an employee"));
    let unknown = insured
        .link_family_account(request("P-NEW-H", "P-NEVER"))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::FailedPrecondition);
    assert!(unknown.message().contains("not registered"), "{unknown:?}");
    held.rollback().await.unwrap();
    world.stop().await;
}
