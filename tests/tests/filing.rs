//! Filings and referrals end to end: every category's lifecycle, eligibility on its
//! boundaries, referrals that file themselves exactly once through the real broker, and
//! settlement's projection agreeing with `CheckEligibility`.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::time::Duration;

use clearinghouse_platform::error::violated_fields;
use clearinghouse_proto::{
    filing::v1::{
        ChangeFilingRequest, CheckEligibilityRequest, CheckEligibilityResponse, Filing,
        FilingCategory, FilingStatus, RegisterFilingRequest, RegisterPersonRequest,
        RevokeFilingRequest, filing_service_client::FilingServiceClient,
    },
    referral::v1::{
        CancelReferralRequest, IssueReferralRequest, Referral,
        referral_service_client::ReferralServiceClient,
    },
    settlement::v1::PreSettleRequest,
};
use clearinghouse_testkit::fixtures;
use clearinghouse_tests::*;
use rand::{Rng, SeedableRng, rngs::StdRng};
use time::{Date, Duration as Days};
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};

fn today() -> Date {
    fixtures::today()
}

fn day(offset: i64) -> String {
    fixtures::date(today() + Days::days(offset))
}

async fn eligibility(
    filing: &mut FilingServiceClient<Channel>,
    person_id: &str,
    region: &str,
    date: &str,
) -> CheckEligibilityResponse {
    filing
        .check_eligibility(CheckEligibilityRequest {
            insured_region: fixtures::INSURED_REGION.into(),
            person_id: person_id.into(),
            treatment_region: region.into(),
            date: date.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn add_person(filing: &mut FilingServiceClient<Channel>, person_id: &str) {
    register_person(filing, person_id, false).await;
}

async fn register_person(
    filing: &mut FilingServiceClient<Channel>,
    person_id: &str,
    retired: bool,
) {
    let id_number = fixtures::id_number("37010219700101001");
    filing
        .register_person(RegisterPersonRequest {
            request_id: String::new(),
            person: Some(fixtures::person(person_id, &id_number, retired, "")),
        })
        .await
        .unwrap();
}

fn filing(
    person_id: &str,
    category: FilingCategory,
    region: &str,
    start: i64,
    end: Option<i64>,
) -> Filing {
    Filing {
        treatment_region: region.into(),
        start_date: day(start),
        end_date: end.map(day).unwrap_or_default(),
        ..fixtures::filing(person_id, category)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_category_has_its_lifecycle_and_eligibility_its_boundaries() {
    let env = TestEnv::new().await.unwrap();
    let shutdown = CancellationToken::new();
    let _stop_on_drop = shutdown.clone().drop_guard();
    let host = env.start_filing(shutdown.clone()).await.unwrap();
    let mut client = filing_client(&host).await.unwrap();
    let registrar = client.clone();
    let register = |f: Filing, request_id: &str| {
        let mut client = registrar.clone();
        let request_id = request_id.to_string();
        async move {
            client
                .register_filing(RegisterFilingRequest {
                    request_id,
                    filing: Some(f),
                })
                .await
                .map(|r| r.into_inner().filing.unwrap())
        }
    };

    // Unknown person.
    let unknown = register(
        filing("P-NONE", FilingCategory::Referral, "110000", -1, None),
        "",
    )
    .await
    .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    for (i, category) in [
        FilingCategory::ResettledRetiree,
        FilingCategory::LongTermResident,
        FilingCategory::PostedWorker,
        FilingCategory::Referral,
        FilingCategory::Emergency,
        FilingCategory::OtherTemporary,
    ]
    .into_iter()
    .enumerate()
    {
        let person = format!("P-CAT{i}");
        // A resettled retiree must be retired.
        register_person(
            &mut client,
            &person,
            category == FilingCategory::ResettledRetiree,
        )
        .await;
        let long_term = i < 3;
        let f = register(
            filing(&person, category, "110000", -10, None),
            &format!("r-{i}"),
        )
        .await
        .unwrap();
        assert_eq!(f.status, FilingStatus::Active as i32);
        if long_term {
            assert_eq!(f.end_date, "", "long-term filings are open-ended");
        } else {
            // Default validity: 183 days, first and last day inclusive.
            assert_eq!(f.end_date, day(-10 + 182));
            assert_eq!(
                eligibility(&mut client, &person, "110105", &day(-10 + 182))
                    .await
                    .category,
                category as i32
            );
            assert!(
                eligibility(&mut client, &person, "110105", &day(-10 + 183))
                    .await
                    .covering
                    .is_empty()
            );
        }
        // First day inclusive, the day before not covered, another province not covered.
        assert_eq!(
            eligibility(&mut client, &person, "110105", &day(-10))
                .await
                .category,
            category as i32
        );
        assert!(
            eligibility(&mut client, &person, "110000", &day(-11))
                .await
                .covering
                .is_empty()
        );
        assert!(
            eligibility(&mut client, &person, "120000", &day(-5))
                .await
                .covering
                .is_empty()
        );
        // The same request again returns the original filing.
        assert_eq!(
            register(
                filing(&person, category, "110000", -10, None),
                &format!("r-{i}")
            )
            .await
            .unwrap(),
            f
        );

        // Revocation: covered before its effective date, not from it. A long-term filing is
        // locked for six months unless the insured place overrides.
        let revoke = |override_lock| RevokeFilingRequest {
            request_id: String::new(),
            filing_id: f.filing_id.clone(),
            effective_date: day(0),
            override_lock,
            override_reason: "moved by the insured place".into(),
        };
        if long_term {
            let locked = client.revoke_filing(revoke(false)).await.unwrap_err();
            assert_eq!(
                locked.code(),
                Code::FailedPrecondition,
                "{}",
                locked.message()
            );
        }
        let revoked = client
            .revoke_filing(revoke(true))
            .await
            .unwrap()
            .into_inner()
            .filing
            .unwrap();
        assert_eq!(revoked.status, FilingStatus::Revoked as i32);
        assert_eq!(
            eligibility(&mut client, &person, "110000", &day(-1))
                .await
                .covering
                .len(),
            1
        );
        assert!(
            eligibility(&mut client, &person, "110000", &day(0))
                .await
                .covering
                .is_empty()
        );
    }

    // At most one active long-term filing; temporary filings may overlap.
    add_person(&mut client, "P-OVERLAP").await;
    register(
        filing(
            "P-OVERLAP",
            FilingCategory::LongTermResident,
            "110000",
            -5,
            None,
        ),
        "",
    )
    .await
    .unwrap();
    let second = register(
        filing(
            "P-OVERLAP",
            FilingCategory::PostedWorker,
            "310000",
            -5,
            None,
        ),
        "",
    )
    .await
    .unwrap_err();
    assert_eq!(second.code(), Code::FailedPrecondition);
    register(
        filing(
            "P-OVERLAP",
            FilingCategory::OtherTemporary,
            "110000",
            -5,
            None,
        ),
        "",
    )
    .await
    .unwrap();
    let referral = register(
        filing(
            "P-OVERLAP",
            FilingCategory::Referral,
            "110000",
            -3,
            Some(200),
        ),
        "",
    )
    .await
    .unwrap();
    let both = eligibility(&mut client, "P-OVERLAP", "110000", &day(-1)).await;
    assert_eq!(both.covering.len(), 3);
    assert_eq!(
        both.category,
        FilingCategory::LongTermResident as i32,
        "a long-term category comes first"
    );

    // Changing a temporary filing announces the new state.
    let mut changed = referral.clone();
    changed.end_date = day(250);
    let after = client
        .change_filing(ChangeFilingRequest {
            request_id: String::new(),
            filing: Some(changed),
            override_lock: false,
            override_reason: "moved by the insured place".into(),
        })
        .await
        .unwrap();
    assert_eq!(after.into_inner().filing.unwrap().end_date, day(250));

    // Bad dates, a too short validity and a back-date beyond the window.
    let backwards = register(
        filing(
            "P-OVERLAP",
            FilingCategory::Emergency,
            "110000",
            10,
            Some(5),
        ),
        "",
    )
    .await
    .unwrap_err();
    assert_eq!(violated_fields(&backwards), vec!["filing.end_date"]);
    let short = register(
        filing(
            "P-OVERLAP",
            FilingCategory::Emergency,
            "110000",
            0,
            Some(30),
        ),
        "",
    )
    .await
    .unwrap_err();
    assert_eq!(short.code(), Code::InvalidArgument);
    let too_old = register(
        filing("P-OVERLAP", FilingCategory::Emergency, "110000", -91, None),
        "",
    )
    .await
    .unwrap_err();
    assert_eq!(
        too_old.code(),
        Code::FailedPrecondition,
        "{}",
        too_old.message()
    );
    register(
        filing("P-OVERLAP", FilingCategory::Emergency, "110000", -90, None),
        "",
    )
    .await
    .unwrap();
    let inside = register(
        filing("P-OVERLAP", FilingCategory::Emergency, "370200", 0, None),
        "",
    )
    .await
    .unwrap_err();
    assert_eq!(violated_fields(&inside), vec!["filing.treatment_region"]);

    shutdown.cancel();
    host.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_referral_files_itself_once_even_when_delivered_twice() {
    let env = TestEnv::new().await.unwrap();
    let shutdown = CancellationToken::new();
    let _stop_on_drop = shutdown.clone().drop_guard();
    let filing_host = env.start_filing(shutdown.clone()).await.unwrap();
    let referral_host = env.start_referral(shutdown.clone()).await.unwrap();
    let mut filings = filing_client(&filing_host).await.unwrap();
    let mut referrals =
        ReferralServiceClient::new(channel_as(&referral_host, SHANDONG).await.unwrap());
    add_person(&mut filings, "P-REF").await;

    // Hold the referral relay back (its advisory lock) to read the event before it is sent
    // and deleted from the outbox.
    let referral_db = env.schema_pool("referral").await.unwrap();
    let mut relay_lock = referral_db.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(hashtext(current_schema() || '.outbox_relay'))")
        .execute(&mut *relay_lock)
        .await
        .unwrap();

    let issued = referrals
        .issue_referral(IssueReferralRequest {
            request_id: "ref-1".into(),
            referral: Some(Referral {
                person_id: "P-REF".into(),
                insured_region: fixtures::INSURED_REGION.into(),
                referring_hospital: "H370102".into(),
                target_region: "310000".into(),
                diagnosis: "C34.9".into(),
                issue_date: day(-1),
                ..Referral::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(
        issued.valid_until,
        day(-1 + 365),
        "valid one year by default"
    );

    // Deliver the same ReferralIssued event a second time, as a relay retry would: once by
    // the relay, once more by hand.
    let (payload, key): (Vec<u8>, String) =
        sqlx::query_as("SELECT payload, key FROM outbox WHERE event_type = 'ReferralIssued'")
            .fetch_one(&referral_db)
            .await
            .unwrap();
    sqlx::query("SELECT pg_advisory_unlock(hashtext(current_schema() || '.outbox_relay'))")
        .execute(&mut *relay_lock)
        .await
        .unwrap();
    drop(relay_lock);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&referral_db)
            .await
            .unwrap();
        if unsent == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the referral event was never relayed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let producer = clearinghouse_events::kafka::producer(&env.kafka).unwrap();
    let topic = env.kafka.topic(clearinghouse_events::topics::REFERRAL);
    producer
        .send(
            rdkafka::producer::FutureRecord::to(&topic)
                .key(&key)
                .payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    // Exactly one REFERRAL filing for the target province, covering from the issue date.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let covered = loop {
        let answer = eligibility(&mut filings, "P-REF", "310104", &day(0)).await;
        if !answer.covering.is_empty() || tokio::time::Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(covered.category, FilingCategory::Referral as i32);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let filing_db = env.schema_pool("filing").await.unwrap();
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM filings WHERE referral_id IS NOT NULL")
            .fetch_one(&filing_db)
            .await
            .unwrap();
    assert_eq!(
        count, 1,
        "one filing however often the referral is delivered"
    );

    // Cancelling the referral revokes its filing.
    referrals
        .cancel_referral(CancelReferralRequest {
            request_id: String::new(),
            referral_id: issued.referral_id.clone(),
        })
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if eligibility(&mut filings, "P-REF", "310104", &day(0))
            .await
            .covering
            .is_empty()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cancellation never revoked the filing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        eligibility(&mut filings, "P-REF", "310104", &day(-1))
            .await
            .covering
            .len(),
        1,
        "covered before the cancellation"
    );

    shutdown.cancel();
    filing_host.wait().await.unwrap();
    referral_host.wait().await.unwrap();
}

/// Registers the filing and, with probability `p`, revokes it from today or one of the
/// next `within - 1` days (a revocation is never retroactive; overriding any lock, as the
/// insured place may).
async fn file_and_maybe_revoke(
    filings: &mut FilingServiceClient<Channel>,
    rng: &mut StdRng,
    f: Filing,
    p: f64,
    within: i64,
) {
    let request = RegisterFilingRequest {
        request_id: String::new(),
        filing: Some(f),
    };
    let f = filings
        .register_filing(request)
        .await
        .unwrap()
        .into_inner()
        .filing
        .unwrap();
    if rng.random_bool(p) {
        let effective_date = day(rng.random_range(0..within));
        let request = RevokeFilingRequest {
            request_id: String::new(),
            filing_id: f.filing_id,
            effective_date,
            override_lock: true,
            override_reason: "moved by the insured place".into(),
        };
        filings.revoke_filing(request).await.unwrap();
    }
}

/// Δ of a category under the worked examples' policy.
fn delta(category: i32) -> u32 {
    match FilingCategory::try_from(category).unwrap() {
        FilingCategory::Referral | FilingCategory::Emergency => 5,
        FilingCategory::OtherTemporary => 15,
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_settlement_projection_agrees_with_check_eligibility() {
    let env = TestEnv::new().await.unwrap();
    let shutdown = CancellationToken::new();
    let _stop_on_drop = shutdown.clone().drop_guard();
    let filing_host = env.start_filing(shutdown.clone()).await.unwrap();
    // No fallback: every answer comes from the projection.
    let settlement_host = env
        .start_settlement(None, true, shutdown.clone())
        .await
        .unwrap();
    seed_reference(&settlement_host, false).await.unwrap();
    for province in ["310000", "320000"] {
        // Each treatment province puts its own catalogue.
        let mut reference = clearinghouse_proto::settlement::v1::reference_data_service_client::ReferenceDataServiceClient::new(
            channel_as(&settlement_host, &format!("province:{province}")).await.unwrap(),
        );
        let catalogue = clearinghouse_proto::settlement::v1::PutCatalogueRequest {
            request_id: String::new(),
            treatment_region: province.into(),
            effective_from: fixtures::catalogue_effective_from(),
            items: fixtures::catalogue_items(),
        };
        reference
            .put_catalogue(tokio_stream::iter(vec![catalogue]))
            .await
            .unwrap();
    }
    let mut filings = filing_client(&filing_host).await.unwrap();
    // Each claim is pre-settled by its treatment province.
    let mut settlements = std::collections::HashMap::new();
    for province in ["110000", "310000", "320000"] {
        let channel = channel_as(&settlement_host, &format!("province:{province}"))
            .await
            .unwrap();
        settlements.insert(
            province.to_string(),
            clearinghouse_proto::settlement::v1::settlement_service_client::SettlementServiceClient::new(channel),
        );
    }

    let mut rng = StdRng::seed_from_u64(7);
    let regions = ["110000", "110105", "310000", "320500"];
    let temporary = [
        FilingCategory::Referral,
        FilingCategory::Emergency,
        FilingCategory::OtherTemporary,
    ];
    const PERSONS: usize = 40;
    for p in 0..PERSONS {
        let person = format!("P-PRJ{p:02}");
        add_person(&mut filings, &person).await;
        if rng.random_bool(0.4) {
            let region = regions[rng.random_range(0..regions.len())];
            let f = filing(
                &person,
                FilingCategory::LongTermResident,
                region,
                -rng.random_range(0..90),
                None,
            );
            file_and_maybe_revoke(&mut filings, &mut rng, f, 0.3, 3).await;
        }
        for _ in 0..rng.random_range(0..3) {
            let region = regions[rng.random_range(0..regions.len())];
            let start = -rng.random_range(0..90);
            let end = start + 183 + rng.random_range(0..30);
            let f = filing(
                &person,
                temporary[rng.random_range(0..3)],
                region,
                start,
                Some(end),
            );
            file_and_maybe_revoke(&mut filings, &mut rng, f, 0.2, 3).await;
        }
    }

    // Wait until the projection holds every filing in its latest state.
    let filing_db = env.schema_pool("filing").await.unwrap();
    let settlement_db = env.schema_pool("settlement").await.unwrap();
    let state = "SELECT filing_id::text || coalesce(revoked_from::text, '') FROM {} ORDER BY 1";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let source: Vec<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(state.replace("{}", "filings")))
                .fetch_all(&filing_db)
                .await
                .unwrap();
        let projected: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(
            state.replace("{}", "filing_projection"),
        ))
        .fetch_all(&settlement_db)
        .await
        .unwrap();
        if source == projected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the projection never caught up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut checked = 0;
    for _ in 0..300 {
        let person = format!("P-PRJ{:02}", rng.random_range(0..PERSONS));
        let region = regions[rng.random_range(0..regions.len())];
        // From 99 days back to tomorrow (the latest service date a claim may carry), so
        // the revocations of today and tomorrow fall inside.
        let offset = -rng.random_range(-1..100);
        let answer = eligibility(&mut filings, &person, region, &day(offset)).await;
        let mut claim = fixtures::example1(&format!("PRJ-{checked}"), &person);
        claim.treatment_region = region.into();
        if let Some(clearinghouse_proto::settlement::v1::claim::Visit::Inpatient(stay)) =
            claim.visit.as_mut()
        {
            stay.admission_date = day(offset - 2);
            stay.discharge_date = day(offset);
        }
        let settlement = settlements
            .get_mut(&format!("{}0000", &region[..2]))
            .unwrap();
        let pre = settlement
            .pre_settle(PreSettleRequest { claim: Some(claim) })
            .await;
        match (answer.covering.is_empty(), pre) {
            (true, Err(status)) => assert_eq!(
                status.code(),
                Code::FailedPrecondition,
                "{person} {region} {offset}"
            ),
            (false, Ok(result)) => {
                let used = result.into_inner().result.unwrap().category;
                let best = answer
                    .covering
                    .iter()
                    .map(|f| delta(f.category))
                    .min()
                    .unwrap();
                assert_eq!(delta(used), best, "{person} {region} {offset}");
            }
            (covered, other) => panic!(
                "{person} {region} {offset}: eligibility covered={} but pre-settle {other:?}",
                !covered
            ),
        }
        checked += 1;
    }
    assert_eq!(checked, 300);
    shutdown.cancel();
    filing_host.wait().await.unwrap();
    settlement_host.wait().await.unwrap();
}
