//! DESIGN.md §3's filing rules and §1's China dates, through the public API, with the
//! services' clock at 01:30 China time: still the day before in UTC, so every "today" the
//! services take from the UTC date is caught.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::time::Duration;

use clearinghouse_domain::dates::Clock;
use clearinghouse_events::{Body, Event};
use clearinghouse_proto::{
    audit::v1::{ListAuditRecordsRequest, audit_service_client::AuditServiceClient},
    filing::v1::{
        ChangeFilingRequest, CheckEligibilityRequest, Filing, FilingCategory, GetFilingRequest,
        ListFilingsRequest, RegisterFilingRequest, RegisterPersonRequest, RevokeFilingRequest,
        UpdatePersonRequest, filing_service_client::FilingServiceClient,
    },
    referral::v1::{
        CancelReferralRequest, IssueReferralRequest, Referral,
        referral_service_client::ReferralServiceClient,
    },
    settlement::v1::{PreSettleRequest, PutCatalogueRequest},
};
use clearinghouse_testkit::fixtures;
use clearinghouse_tests::*;
use prost::Message;
use time::{Date, Duration as Days, OffsetDateTime, Time};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status, transport::Channel};

/// The China date the services believe it is.
fn today() -> Date {
    fixtures::today()
}

fn day(offset: i64) -> String {
    fixtures::date(today() + Days::days(offset))
}

/// 01:30 China time on `today()`: 17:30 UTC of the day before.
fn china_small_hours() -> Clock {
    let utc = (today() - Days::days(1)).with_time(Time::from_hms(17, 30, 0).unwrap());
    Clock::starting_at(utc.assume_utc())
}

type Filings = FilingServiceClient<Channel>;

async fn add_person(filings: &mut Filings, person_id: &str, retired: bool) {
    let id_number = fixtures::id_number("37010219700101001");
    filings
        .register_person(RegisterPersonRequest {
            request_id: String::new(),
            person: Some(fixtures::person(person_id, &id_number, retired, "")),
        })
        .await
        .unwrap();
}

fn filing(person_id: &str, category: FilingCategory, region: &str, start: i64) -> Filing {
    Filing {
        treatment_region: region.into(),
        start_date: day(start),
        ..fixtures::filing(person_id, category)
    }
}

async fn register(filings: &mut Filings, f: Filing, request_id: &str) -> Result<Filing, Status> {
    filings
        .register_filing(RegisterFilingRequest {
            request_id: request_id.into(),
            filing: Some(f),
        })
        .await
        .map(|r| r.into_inner().filing.unwrap())
}

async fn revoke(
    filings: &mut Filings,
    filing_id: &str,
    effective: i64,
    reason: &str,
) -> Result<Filing, Status> {
    filings
        .revoke_filing(RevokeFilingRequest {
            request_id: String::new(),
            filing_id: filing_id.into(),
            effective_date: day(effective),
            override_lock: true,
            override_reason: reason.into(),
        })
        .await
        .map(|r| r.into_inner().filing.unwrap())
}

async fn covering(filings: &mut Filings, person_id: &str, region: &str, offset: i64) -> Vec<i32> {
    filings
        .check_eligibility(CheckEligibilityRequest {
            insured_region: fixtures::INSURED_REGION.into(),
            person_id: person_id.into(),
            treatment_region: region.into(),
            date: day(offset),
        })
        .await
        .unwrap()
        .into_inner()
        .covering
        .iter()
        .map(|f| f.category)
        .collect()
}

fn refused(result: Result<Filing, Status>, code: Code, what: &str) -> Status {
    let status = result.expect_err(what);
    assert_eq!(status.code(), code, "{what}: {}", status.message());
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dates_are_china_dates_and_revocation_is_never_retroactive() {
    let mut env = TestEnv::new().await.unwrap();
    env.clock = china_small_hours();
    assert_eq!(env.clock.today(), today());
    assert_eq!(
        env.clock.now().date(),
        today() - Days::days(1),
        "UTC is a day behind"
    );
    let shutdown = CancellationToken::new();
    let _stop_on_drop = shutdown.clone().drop_guard();
    let host = env.start_filing(shutdown.clone()).await.unwrap();
    let mut filings = filing_client(&host).await.unwrap();
    add_person(&mut filings, "P-CN", false).await;

    // The back-dating window is 90 China days: 91 days back is refused, 90 accepted.
    let too_old = register(
        &mut filings,
        filing("P-CN", FilingCategory::OtherTemporary, "110000", -91),
        "",
    )
    .await;
    refused(
        too_old,
        Code::FailedPrecondition,
        "a start 91 China days back",
    );
    let f = register(
        &mut filings,
        filing("P-CN", FilingCategory::OtherTemporary, "110000", -90),
        "",
    )
    .await
    .unwrap();

    // A revocation from yesterday (China; today in UTC) would remove cover retroactively.
    let yesterday = revoke(&mut filings, &f.filing_id, -1, "").await;
    let status = refused(
        yesterday,
        Code::InvalidArgument,
        "a revocation from yesterday",
    );
    assert_eq!(
        clearinghouse_platform::error::violated_fields(&status),
        ["effective_date"]
    );
    let revoked = revoke(&mut filings, &f.filing_id, 0, "").await.unwrap();
    assert_eq!(revoked.revoked_from, day(0));
    assert_eq!(covering(&mut filings, "P-CN", "110000", -1).await.len(), 1);
    assert!(covering(&mut filings, "P-CN", "110000", 0).await.is_empty());

    shutdown.cancel();
    host.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_referral_covers_its_province_until_the_china_date_it_is_cancelled() {
    let mut env = TestEnv::new().await.unwrap();
    env.clock = china_small_hours();
    let shutdown = CancellationToken::new();
    let _stop_on_drop = shutdown.clone().drop_guard();
    let filing_host = env.start_filing(shutdown.clone()).await.unwrap();
    let referral_host = env.start_referral(shutdown.clone()).await.unwrap();
    let settlement_host = env
        .start_settlement(Some(&filing_host), false, shutdown.clone())
        .await
        .unwrap();
    seed_reference(&settlement_host, false).await.unwrap();
    let guangdong = "province:440000";
    let mut catalogues = clearinghouse_proto::settlement::v1::reference_data_service_client::ReferenceDataServiceClient::new(
        channel_as(&settlement_host, guangdong).await.unwrap(),
    );
    catalogues
        .put_catalogue(tokio_stream::iter(vec![PutCatalogueRequest {
            request_id: String::new(),
            treatment_region: "440000".into(),
            effective_from: fixtures::catalogue_effective_from(),
            items: fixtures::catalogue_items(),
        }]))
        .await
        .unwrap();
    let mut filings = filing_client(&filing_host).await.unwrap();
    add_person(&mut filings, "P-GD", false).await;
    let mut referrals =
        ReferralServiceClient::new(channel_as(&referral_host, SHANDONG).await.unwrap());
    let referral = referrals
        .issue_referral(IssueReferralRequest {
            request_id: "ref-gd".into(),
            referral: Some(Referral {
                person_id: "P-GD".into(),
                insured_region: fixtures::INSURED_REGION.into(),
                referring_hospital: "H370102".into(),
                target_region: "440100".into(),
                diagnosis: "C34.9".into(),
                issue_date: day(-20),
                ..Referral::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();

    // Guangzhou named; Shenzhen and Foshan covered as well, not Guangxi.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while covering(&mut filings, "P-GD", "440100", -1)
        .await
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the referral never filed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for region in ["440300", "440600", "440000"] {
        assert_eq!(
            covering(&mut filings, "P-GD", region, -1).await,
            [FilingCategory::Referral as i32],
            "{region}"
        );
    }
    assert!(
        covering(&mut filings, "P-GD", "450100", -1)
            .await
            .is_empty()
    );
    let mut shenzhen = clearinghouse_proto::settlement::v1::settlement_service_client::SettlementServiceClient::new(
        channel_as(&settlement_host, guangdong).await.unwrap(),
    );
    let mut claim = fixtures::example1("SZ-1", "P-GD");
    claim.treatment_region = "440300".into();
    let pre = shenzhen
        .pre_settle(PreSettleRequest { claim: Some(claim) })
        .await
        .expect("a Shenzhen hospital settles under a referral naming Guangzhou")
        .into_inner()
        .result
        .unwrap();
    assert_eq!(pre.category, FilingCategory::Referral as i32);

    // Cancelled at 01:30 China time: cover ends from today's China date, not the UTC date.
    let cancelled = referrals
        .cancel_referral(CancelReferralRequest {
            request_id: String::new(),
            referral_id: referral.referral_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(cancelled.cancelled_on, day(0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !covering(&mut filings, "P-GD", "440300", 0).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cancellation never revoked"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        covering(&mut filings, "P-GD", "440300", -1).await.len(),
        1,
        "yesterday (China) stays covered"
    );
    let listed = filings
        .list_filings(ListFilingsRequest {
            insured_region: fixtures::INSURED_REGION.into(),
            person_id: "P-GD".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .filings;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].revoked_from, day(0));

    shutdown.cancel();
    for host in [filing_host, referral_host, settlement_host] {
        host.wait().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_long_term_filing_at_a_time_a_retired_resettled_retiree_and_visible_overrides() {
    let mut env = TestEnv::new().await.unwrap();
    env.clock = china_small_hours();
    let shutdown = CancellationToken::new();
    let _stop_on_drop = shutdown.clone().drop_guard();
    let host = env.start_filing(shutdown.clone()).await.unwrap();
    let mut filings = filing_client(&host).await.unwrap();
    add_person(&mut filings, "P-LT", false).await;

    // A long-term filing, revoked (with the override) from 20 days ahead.
    let first = register(
        &mut filings,
        filing("P-LT", FilingCategory::LongTermResident, "110000", -10),
        "",
    )
    .await
    .unwrap();
    let no_reason = revoke(&mut filings, &first.filing_id, 20, "").await;
    let status = refused(
        no_reason,
        Code::InvalidArgument,
        "an override without a reason",
    );
    assert_eq!(
        clearinghouse_platform::error::violated_fields(&status),
        ["override_reason"]
    );
    // Hold the relay back to read the event the revocation writes.
    let filing_db = env.schema_pool("filing").await.unwrap();
    let mut relay_held = filing_db.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(hashtext(current_schema() || '.outbox_relay'))")
        .execute(&mut *relay_held)
        .await
        .unwrap();
    let reason = "moved to Beijing with the family, proof 2026-77";
    let revoked = revoke(&mut filings, &first.filing_id, 20, reason)
        .await
        .unwrap();
    let seen = revoked
        .lock_override
        .clone()
        .expect("the override is on the filing");
    assert_eq!(seen.by, SHANDONG);
    assert_eq!(seen.reason, reason);
    let at =
        OffsetDateTime::parse(&seen.at, &time::format_description::well_known::Rfc3339).unwrap();
    assert!((at - env.clock.now()).abs() < Days::minutes(1), "{at}");
    let stored = filings
        .get_filing(GetFilingRequest {
            filing_id: first.filing_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .filing
        .unwrap();
    assert_eq!(stored.lock_override, revoked.lock_override);
    let payload: Vec<u8> =
        sqlx::query_scalar("SELECT payload FROM outbox WHERE event_type = 'FilingRevoked'")
            .fetch_one(&filing_db)
            .await
            .unwrap();
    let Some(Body::FilingRevoked(event)) = Event::decode(payload.as_slice()).unwrap().body else {
        panic!("not a FilingRevoked event");
    };
    assert_eq!(event.filing.unwrap().lock_override, revoked.lock_override);
    sqlx::query("SELECT pg_advisory_unlock(hashtext(current_schema() || '.outbox_relay'))")
        .execute(&mut *relay_held)
        .await
        .unwrap();
    drop(relay_held);
    let mut audit = AuditServiceClient::new(channel_as(&host, NATIONAL).await.unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let records = audit
            .list_audit_records(ListAuditRecordsRequest {
                caller: SHANDONG.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .records;
        if records
            .iter()
            .any(|r| r.method.ends_with("/RevokeFiling") && r.subject.contains(reason))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no audit record names the override"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Another long-term filing may start only from the first one's (scheduled) end.
    for start in [0, 19] {
        let early = register(
            &mut filings,
            filing("P-LT", FilingCategory::PostedWorker, "310000", start),
            "",
        )
        .await;
        refused(
            early,
            Code::FailedPrecondition,
            "a long-term filing before the end",
        );
    }
    let second = register(
        &mut filings,
        filing("P-LT", FilingCategory::PostedWorker, "310000", 20),
        "",
    )
    .await
    .unwrap();
    for offset in [0, 19, 20, 40] {
        let beijing = covering(&mut filings, "P-LT", "110000", offset).await.len();
        let shanghai = covering(&mut filings, "P-LT", "310000", offset).await.len();
        assert_eq!(
            beijing + shanghai,
            1,
            "exactly one long-term filing on day {offset}"
        );
    }
    // Moving the second one's start before the first one's end is refused as well.
    let mut moved = second.clone();
    moved.start_date = day(10);
    let change = filings
        .change_filing(ChangeFilingRequest {
            request_id: String::new(),
            filing: Some(moved),
            override_lock: true,
            override_reason: "earlier move".into(),
        })
        .await
        .map(|r| r.into_inner().filing.unwrap());
    refused(
        change,
        Code::FailedPrecondition,
        "a change into the first one's cover",
    );
    // A temporary filing still overlaps freely.
    register(
        &mut filings,
        filing("P-LT", FilingCategory::OtherTemporary, "310000", 0),
        "",
    )
    .await
    .unwrap();

    // RESETTLED_RETIREE needs a retired person; a person holding one stays retired.
    let not_retired = register(
        &mut filings,
        filing("P-LT2", FilingCategory::ResettledRetiree, "110000", 0),
        "",
    )
    .await;
    assert_eq!(not_retired.unwrap_err().code(), Code::NotFound);
    add_person(&mut filings, "P-LT2", false).await;
    let not_retired = register(
        &mut filings,
        filing("P-LT2", FilingCategory::ResettledRetiree, "110000", 0),
        "",
    )
    .await;
    let status = refused(
        not_retired,
        Code::FailedPrecondition,
        "a retiree filing for a worker",
    );
    assert!(
        status.message().contains("not retired"),
        "{}",
        status.message()
    );
    add_person(&mut filings, "P-RET", true).await;
    register(
        &mut filings,
        filing("P-RET", FilingCategory::ResettledRetiree, "110000", 0),
        "",
    )
    .await
    .unwrap();
    let id_number = fixtures::id_number("37010219700101001");
    let unretire = filings
        .update_person(UpdatePersonRequest {
            request_id: String::new(),
            person: Some(fixtures::person("P-RET", &id_number, false, "")),
        })
        .await
        .unwrap_err();
    assert_eq!(
        unretire.code(),
        Code::FailedPrecondition,
        "{}",
        unretire.message()
    );

    // A request id used again with another payload is refused, naming the id.
    let original = register(
        &mut filings,
        filing("P-LT2", FilingCategory::OtherTemporary, "110000", 0),
        "req-77",
    )
    .await
    .unwrap();
    assert_eq!(
        register(
            &mut filings,
            filing("P-LT2", FilingCategory::OtherTemporary, "110000", 0),
            "req-77",
        )
        .await
        .unwrap(),
        original
    );
    let other = register(
        &mut filings,
        filing("P-LT2", FilingCategory::OtherTemporary, "120000", 0),
        "req-77",
    )
    .await;
    let status = refused(
        other,
        Code::AlreadyExists,
        "another payload under a used request id",
    );
    assert!(status.message().contains("req-77"), "{}", status.message());

    shutdown.cancel();
    host.wait().await.unwrap();
}
