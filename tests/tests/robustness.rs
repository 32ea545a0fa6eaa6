//! Malformed input never crashes a service nor gets `INTERNAL` (DESIGN.md section 7): for
//! every request type of every service, valid messages are mutated byte by byte (flipped,
//! inserted, deleted, truncated) and pure random bytes are sent, over mutual TLS as the
//! caller entitled to the call. Whatever decodes is a well-typed message with odd values
//! and goes through validation; whatever does not decode must be `INVALID_ARGUMENT`.
//! `FUZZ_CASES` sets the cases per request type (default 120), `FUZZ_SEED` the seed.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed call should fail the test at once"
)]

use bytes::{Buf, BufMut};
use clearinghouse_proto::{
    audit::v1::ListAuditRecordsRequest,
    filing::v1::{
        ChangeFilingRequest, CheckEligibilityRequest, FilingCategory, GetFilingRequest,
        GetPersonRequest, ListFilingsRequest, RegisterFilingRequest, RegisterPersonRequest,
        RevokeFilingRequest, Scheme, UpdatePersonRequest,
    },
    ledger::v1::{
        CloseClearingPeriodRequest, ConfirmStatementRequest, DisputeStatementRequest,
        GetBalancesRequest, GetReservesRequest, GetStatementRequest, ListEntriesRequest,
        ReconcileRequest, SettleClearingPeriodRequest, SizeReserveRequest, TopUpReserveRequest,
    },
    referral::v1::{
        CancelReferralRequest, GetReferralRequest, IssueReferralRequest, ListReferralsRequest,
    },
    settlement::v1::{
        CreditPersonalAccountRequest, GetAccumulatorsRequest, GetCatalogueItemRequest,
        GetClaimRequest, GetPolicyRequest, ListCatalogueVersionsRequest, ListClaimsRequest,
        ListPolicyVersionsRequest, PreSettleRequest, PutCatalogueRequest, PutPolicyRequest,
        ReverseRequest, SettleRequest, VisitType,
    },
};
use clearinghouse_testkit::fixtures;
use clearinghouse_tests::*;
use prost::Message;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio_util::sync::CancellationToken;
use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::Channel,
};

/// Sends and receives raw message bytes, so that any bytes reach the server's decoder.
#[derive(Clone, Copy, Default)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut bytes = vec![0; src.remaining()];
        src.copy_to_slice(&mut bytes);
        Ok(Some(bytes))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

#[derive(Clone, Copy)]
enum Svc {
    Filing,
    Referral,
    Settlement,
    Ledger,
}

/// A request type: where it goes, who may send it, a valid example, and whether bytes
/// decode as it.
struct Target {
    svc: Svc,
    path: String,
    caller: &'static str,
    seed: Vec<u8>,
    streaming: bool,
    decodes: fn(&[u8]) -> bool,
}

fn target<M: Message + Default>(
    svc: Svc,
    service: &str,
    method: &str,
    caller: &'static str,
    seed: M,
) -> Target {
    Target {
        svc,
        path: format!("/clearinghouse.{service}/{method}"),
        caller,
        seed: seed.encode_to_vec(),
        streaming: method == "PutCatalogue",
        decodes: |bytes| M::decode(bytes).is_ok(),
    }
}

fn targets() -> Vec<Target> {
    use Svc::*;
    let (f, r, s, d, l) = (
        "filing.v1.FilingService",
        "referral.v1.ReferralService",
        "settlement.v1.SettlementService",
        "settlement.v1.ReferenceDataService",
        "ledger.v1.LedgerService",
    );
    let person = fixtures::person(
        "P-FUZZ",
        &fixtures::id_number("37010219800101123"),
        false,
        "LOW_INCOME",
    );
    let filing = fixtures::filing("P-FUZZ", FilingCategory::Referral);
    let referral = clearinghouse_proto::referral::v1::Referral {
        person_id: "P-FUZZ".into(),
        insured_region: fixtures::INSURED_REGION.into(),
        referring_hospital: "H370102".into(),
        target_region: fixtures::TREATMENT_REGION.into(),
        diagnosis: "C34.9".into(),
        issue_date: fixtures::days_ago(1),
        ..Default::default()
    };
    let uuid = "0190f5a0-0000-7000-8000-000000000000".to_string();
    let (sd, bj) = (SHANDONG, BEIJING);
    let audit = |svc, service: &str| {
        target(
            svc,
            &format!("audit.v1.AuditService{}", service),
            "ListAuditRecords",
            NATIONAL,
            ListAuditRecordsRequest {
                caller: GUANGDONG.into(),
                page_size: 10,
                ..Default::default()
            },
        )
    };
    vec![
        target(
            Filing,
            f,
            "RegisterPerson",
            sd,
            RegisterPersonRequest {
                request_id: "fz".into(),
                person: Some(person.clone()),
            },
        ),
        target(
            Filing,
            f,
            "UpdatePerson",
            sd,
            UpdatePersonRequest {
                request_id: "fz".into(),
                person: Some(person),
            },
        ),
        target(
            Filing,
            f,
            "GetPerson",
            sd,
            GetPersonRequest {
                insured_region: "370100".into(),
                person_id: "P-FUZZ".into(),
            },
        ),
        target(
            Filing,
            f,
            "RegisterFiling",
            sd,
            RegisterFilingRequest {
                request_id: "fz".into(),
                filing: Some(filing.clone()),
            },
        ),
        target(
            Filing,
            f,
            "ChangeFiling",
            sd,
            ChangeFilingRequest {
                request_id: "fz".into(),
                filing: Some(filing),
                override_lock: true,
                override_reason: "moved by the insured place".into(),
            },
        ),
        target(
            Filing,
            f,
            "RevokeFiling",
            sd,
            RevokeFilingRequest {
                request_id: "fz".into(),
                filing_id: uuid.clone(),
                effective_date: fixtures::days_ago(0),
                override_lock: false,
                override_reason: "moved by the insured place".into(),
            },
        ),
        target(
            Filing,
            f,
            "GetFiling",
            sd,
            GetFilingRequest {
                filing_id: uuid.clone(),
            },
        ),
        target(
            Filing,
            f,
            "ListFilings",
            sd,
            ListFilingsRequest {
                insured_region: "370100".into(),
                person_id: "P-FUZZ".into(),
                page_size: 5,
                page_token: uuid.clone(),
            },
        ),
        target(
            Filing,
            f,
            "CheckEligibility",
            bj,
            CheckEligibilityRequest {
                insured_region: "370100".into(),
                person_id: "P-FUZZ".into(),
                treatment_region: "110000".into(),
                date: fixtures::days_ago(1),
            },
        ),
        target(
            Referral,
            r,
            "IssueReferral",
            sd,
            IssueReferralRequest {
                request_id: "fz".into(),
                referral: Some(referral),
            },
        ),
        target(
            Referral,
            r,
            "CancelReferral",
            sd,
            CancelReferralRequest {
                request_id: "fz".into(),
                referral_id: uuid.clone(),
            },
        ),
        target(
            Referral,
            r,
            "GetReferral",
            sd,
            GetReferralRequest {
                referral_id: uuid.clone(),
            },
        ),
        target(
            Referral,
            r,
            "ListReferrals",
            sd,
            ListReferralsRequest {
                insured_region: "370100".into(),
                person_id: "P-FUZZ".into(),
                page_size: 5,
                page_token: String::new(),
            },
        ),
        target(
            Settlement,
            d,
            "PutPolicy",
            sd,
            PutPolicyRequest {
                request_id: "fz".into(),
                policy: Some(fixtures::inpatient_policy("370100", true)),
            },
        ),
        target(
            Settlement,
            d,
            "GetPolicy",
            sd,
            GetPolicyRequest {
                insured_region: "370100".into(),
                scheme: Scheme::Employee as i32,
                visit_type: VisitType::Inpatient as i32,
                date: fixtures::days_ago(0),
            },
        ),
        target(
            Settlement,
            d,
            "ListPolicyVersions",
            sd,
            ListPolicyVersionsRequest {
                page_size: 0,
                page_token: String::new(),
                insured_region: "370100".into(),
                scheme: Scheme::Employee as i32,
                visit_type: VisitType::ChronicOutpatient as i32,
            },
        ),
        target(
            Settlement,
            d,
            "PutCatalogue",
            bj,
            PutCatalogueRequest {
                request_id: String::new(),
                treatment_region: "110000".into(),
                effective_from: fixtures::catalogue_effective_from(),
                items: fixtures::catalogue_items(),
            },
        ),
        target(
            Settlement,
            d,
            "GetCatalogueItem",
            bj,
            GetCatalogueItemRequest {
                treatment_region: "110000".into(),
                item_code: "D001".into(),
                date: fixtures::days_ago(0),
            },
        ),
        target(
            Settlement,
            d,
            "ListCatalogueVersions",
            bj,
            ListCatalogueVersionsRequest {
                page_size: 0,
                page_token: String::new(),
                treatment_region: "110000".into(),
            },
        ),
        target(
            Settlement,
            s,
            "PreSettle",
            bj,
            PreSettleRequest {
                claim: Some(fixtures::example3("C-FZ-PRE", "P-FUZZ")),
            },
        ),
        target(
            Settlement,
            s,
            "Settle",
            bj,
            SettleRequest {
                claim: Some(fixtures::example1("C-FZ-1", "P-FUZZ")),
            },
        ),
        target(
            Settlement,
            s,
            "Reverse",
            bj,
            ReverseRequest {
                treatment_region: "110000".into(),
                claim_id: "C-FZ-1".into(),
                reason: "refund".into(),
            },
        ),
        target(
            Settlement,
            s,
            "GetClaim",
            bj,
            GetClaimRequest {
                treatment_region: "110000".into(),
                claim_id: "C-FZ-1".into(),
            },
        ),
        target(
            Settlement,
            s,
            "ListClaims",
            sd,
            ListClaimsRequest {
                insured_region: "370100".into(),
                person_id: "P-FUZZ".into(),
                year: 2026,
                page_size: 5,
                page_token: "5".into(),
            },
        ),
        target(
            Settlement,
            s,
            "CreditPersonalAccount",
            sd,
            CreditPersonalAccountRequest {
                request_id: "fz".into(),
                insured_region: "370100".into(),
                person_id: "P-FUZZ".into(),
                amount: "100.00".into(),
            },
        ),
        target(
            Settlement,
            s,
            "LinkFamilyAccount",
            sd,
            clearinghouse_proto::settlement::v1::LinkFamilyAccountRequest {
                request_id: "fz".into(),
                link: Some(clearinghouse_proto::settlement::v1::FamilyLink {
                    insured_region: "370100".into(),
                    holder_person_id: "P-FUZZ".into(),
                    member_person_id: "P-FUZZ2".into(),
                    relation: 3,
                    linked_from: fixtures::days_ago(1),
                    unlinked_from: String::new(),
                }),
            },
        ),
        target(
            Settlement,
            s,
            "UnlinkFamilyAccount",
            sd,
            clearinghouse_proto::settlement::v1::UnlinkFamilyAccountRequest {
                request_id: "fz".into(),
                insured_region: "370100".into(),
                holder_person_id: "P-FUZZ".into(),
                member_person_id: "P-FUZZ2".into(),
                effective_date: String::new(),
            },
        ),
        target(
            Settlement,
            s,
            "GetAccumulators",
            sd,
            GetAccumulatorsRequest {
                insured_region: "370100".into(),
                person_id: "P-FUZZ".into(),
                year: 2026,
            },
        ),
        target(
            Ledger,
            l,
            "GetBalances",
            sd,
            GetBalancesRequest {
                province: "370000".into(),
            },
        ),
        target(
            Ledger,
            l,
            "ListEntries",
            sd,
            ListEntriesRequest {
                province: "370000".into(),
                page_size: 5,
                page_token: "1".into(),
            },
        ),
        target(
            Ledger,
            l,
            "SizeReserve",
            NATIONAL,
            SizeReserveRequest {
                request_id: "fz".into(),
                insured_province: "370000".into(),
                treatment_province: "110000".into(),
                amount: "1000.00".into(),
            },
        ),
        target(
            Ledger,
            l,
            "TopUpReserve",
            sd,
            TopUpReserveRequest {
                request_id: "fz".into(),
                insured_province: "370000".into(),
                treatment_province: "110000".into(),
                amount: "10.00".into(),
            },
        ),
        target(
            Ledger,
            l,
            "GetReserves",
            sd,
            GetReservesRequest {
                province: "370000".into(),
            },
        ),
        target(
            Ledger,
            l,
            "CloseClearingPeriod",
            NATIONAL,
            CloseClearingPeriodRequest {
                request_id: "fz".into(),
                period: "2020-01".into(),
            },
        ),
        target(
            Ledger,
            l,
            "GetStatement",
            sd,
            GetStatementRequest {
                period: "2020-01".into(),
                province: "370000".into(),
            },
        ),
        target(
            Ledger,
            l,
            "ConfirmStatement",
            sd,
            ConfirmStatementRequest {
                request_id: "fz".into(),
                period: "2020-01".into(),
                province: "370000".into(),
            },
        ),
        target(
            Ledger,
            l,
            "DisputeStatement",
            sd,
            DisputeStatementRequest {
                request_id: "fz".into(),
                period: "2020-01".into(),
                province: "370000".into(),
                reason: "why".into(),
            },
        ),
        target(
            Ledger,
            l,
            "SettleClearingPeriod",
            NATIONAL,
            SettleClearingPeriodRequest {
                request_id: "fz".into(),
                period: "2020-01".into(),
            },
        ),
        target(
            Ledger,
            l,
            "ReconcileTotals",
            sd,
            clearinghouse_proto::ledger::v1::ReconcileTotalsRequest {
                province: "370000".into(),
                role: 2,
                day: fixtures::days_ago(1),
                period: String::new(),
                cells: vec![clearinghouse_proto::ledger::v1::ReconcileCell {
                    counterparty_province: "110000".into(),
                    visit_type: 1,
                    claims: Some(clearinghouse_proto::ledger::v1::Totals {
                        count: 2,
                        total: "10.00".into(),
                        ..Default::default()
                    }),
                    reversals: None,
                }],
            },
        ),
        target(
            Ledger,
            l,
            "ListDiscrepancies",
            NATIONAL,
            clearinghouse_proto::ledger::v1::ListDiscrepanciesRequest {
                province: "370000".into(),
                status: 1,
                page_size: 10,
                page_token: String::new(),
            },
        ),
        target(
            Ledger,
            l,
            "ResolveDiscrepancy",
            NATIONAL,
            clearinghouse_proto::ledger::v1::ResolveDiscrepancyRequest {
                request_id: "fz".into(),
                id: 1,
                reason: "accepted".into(),
            },
        ),
        target(
            Ledger,
            l,
            "ListClearingDetail",
            sd,
            clearinghouse_proto::ledger::v1::ListClearingDetailRequest {
                period: "2020-01".into(),
                insured_province: "370000".into(),
                treatment_province: "110000".into(),
                page_size: 10,
                page_token: String::new(),
            },
        ),
        target(
            Ledger,
            l,
            "Reconcile",
            NATIONAL,
            ReconcileRequest {
                period: "2020-01".into(),
            },
        ),
        audit(Filing, ""),
        audit(Referral, ""),
        audit(Settlement, ""),
        audit(Ledger, ""),
    ]
}

const GUANGDONG: &str = "province:440000";

/// One mutation of `seed`: a few bytes flipped, inserted or deleted, a truncation, or
/// random bytes of the same order of size.
fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    match rng.random_range(0..10) {
        0 => {
            let len = rng.random_range(0..=seed.len().clamp(1, 512));
            (0..len).map(|_| rng.random()).collect()
        }
        1 => {
            bytes.truncate(rng.random_range(0..=bytes.len()));
            bytes
        }
        _ => {
            for _ in 0..rng.random_range(1..=4) {
                let at = rng.random_range(0..=bytes.len());
                match rng.random_range(0..3) {
                    0 if at < bytes.len() => bytes[at] = rng.random(),
                    1 => bytes.insert(at, rng.random()),
                    _ if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => bytes.push(rng.random()),
                }
            }
            bytes
        }
    }
}

/// Sends `messages` as the request stream of the target's method, whatever its kind.
async fn send_messages(
    channel: Channel,
    target: &Target,
    messages: Vec<Vec<u8>>,
) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path: http::uri::PathAndQuery = target.path.parse().unwrap();
    grpc.client_streaming(
        tonic::Request::new(tokio_stream::iter(messages)),
        path,
        RawCodec,
    )
    .await
    .map(|_| ())
}

async fn send(channel: Channel, target: &Target, bytes: Vec<u8>) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path: http::uri::PathAndQuery = target.path.parse().unwrap();
    if target.streaming {
        grpc.client_streaming(
            tonic::Request::new(tokio_stream::iter(vec![bytes])),
            path,
            RawCodec,
        )
        .await
        .map(|_| ())
    } else {
        grpc.unary(tonic::Request::new(bytes), path, RawCodec)
            .await
            .map(|_| ())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_never_crash_nor_answer_internal() {
    let cases: usize = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    println!("FUZZ_SEED={seed} FUZZ_CASES={cases}");
    let env = TestEnv::new().await.unwrap();
    let shutdown = CancellationToken::new();
    let _stop_on_drop = shutdown.clone().drop_guard();
    let filing = env.start_filing(shutdown.clone()).await.unwrap();
    let referral = env.start_referral(shutdown.clone()).await.unwrap();
    let settlement = env
        .start_settlement(Some(&filing), true, shutdown.clone())
        .await
        .unwrap();
    let ledger = env.start_ledger(shutdown.clone()).await.unwrap();
    seed_reference(&settlement, true).await.unwrap();
    let host = |svc: Svc| match svc {
        Svc::Filing => &filing,
        Svc::Referral => &referral,
        Svc::Settlement => &settlement,
        Svc::Ledger => &ledger,
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut failures = Vec::new();
    let mut tally = std::collections::BTreeMap::<String, usize>::new();
    for target in targets() {
        let channel = channel_as(host(target.svc), target.caller).await.unwrap();
        // The valid example itself must be understood (not refused as malformed).
        let valid = send(channel.clone(), &target, target.seed.clone()).await;
        if let Err(status) = &valid {
            assert_ne!(
                status.code(),
                Code::Internal,
                "{}: the valid example failed: {status:?}",
                target.path
            );
        }
        for _ in 0..cases {
            let bytes = mutate(&mut rng, &target.seed);
            let well_typed = (target.decodes)(&bytes);
            let answer = send(channel.clone(), &target, bytes.clone()).await;
            let code = answer.as_ref().map_or_else(|s| s.code(), |_| Code::Ok);
            *tally.entry(format!("{code:?}")).or_default() += 1;
            let bad = match code {
                Code::Internal | Code::Unknown | Code::Unavailable | Code::Cancelled => true,
                // What does not decode is the caller's fault, and says so.
                _ if !well_typed => code != Code::InvalidArgument,
                _ => false,
            };
            if bad {
                failures.push(format!(
                    "{} ({}): {answer:?} for {bytes:02x?}",
                    target.path,
                    if well_typed {
                        "decodes"
                    } else {
                        "does not decode"
                    }
                ));
            }
        }
    }
    println!("answers: {tally:?}");
    assert!(
        failures.is_empty(),
        "{} bad answers (FUZZ_SEED={seed}):\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Every service still answers.
    for h in [&filing, &referral, &settlement, &ledger] {
        let mut health = tonic_health::pb::health_client::HealthClient::new(
            channel_as(h, NATIONAL).await.unwrap(),
        );
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap();
    }
    shutdown.cancel();
    for h in [filing, referral, settlement, ledger] {
        h.wait().await.unwrap();
    }
}

/// The shapes an independent fuzzer found mishandled (issue 13, point 10): a unary call with
/// no request message or with several, dates outside the product's one range, and the
/// refusal of a huge claim, which must fit what a default client reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_request_shapes_are_refused_as_the_callers_mistakes() {
    let env = TestEnv::new().await.unwrap();
    let shutdown = CancellationToken::new();
    let _stop_on_drop = shutdown.clone().drop_guard();
    let filing = env.start_filing(shutdown.clone()).await.unwrap();
    let referral = env.start_referral(shutdown.clone()).await.unwrap();
    let settlement = env
        .start_settlement(Some(&filing), true, shutdown.clone())
        .await
        .unwrap();
    let ledger = env.start_ledger(shutdown.clone()).await.unwrap();
    seed_reference(&settlement, true).await.unwrap();
    let host = |svc: Svc| match svc {
        Svc::Filing => &filing,
        Svc::Referral => &referral,
        Svc::Settlement => &settlement,
        Svc::Ledger => &ledger,
    };
    let mut wrong = Vec::new();
    let mut unary = 0;
    for target in targets() {
        let channel = channel_as(host(target.svc), target.caller).await.unwrap();
        if target.streaming {
            continue;
        }
        unary += 1;
        for copies in [0, 2, 3] {
            let messages = vec![target.seed.clone(); copies];
            let answer = send_messages(channel.clone(), &target, messages).await;
            match answer {
                Err(status) if status.code() == Code::InvalidArgument => {}
                other => wrong.push(format!("{} with {copies} messages: {other:?}", target.path)),
            }
        }
    }
    assert!(unary >= 40, "{unary} unary RPCs covered");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // A refused write left nothing behind: the two-message RegisterPerson stored no one.
    let filing_db = env.schema_pool("filing").await.unwrap();
    let persons: i64 = sqlx::query_scalar("SELECT count(*) FROM persons")
        .fetch_one(&filing_db)
        .await
        .unwrap();
    assert_eq!(persons, 0);

    // One date range for the whole product: a claim of 1999 is refused like a year 1999.
    let mut settlements = settlement_client(&settlement).await.unwrap();
    let mut old = fixtures::small_claim("OLD-1", "P-OLD");
    if let Some(clearinghouse_proto::settlement::v1::claim::Visit::Inpatient(stay)) =
        old.visit.as_mut()
    {
        stay.admission_date = "1999-12-01".into();
        stay.discharge_date = "1999-12-03".into();
    }
    let refused = settlements
        .settle(SettleRequest { claim: Some(old) })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let fields = clearinghouse_platform::error::violated_fields(&refused);
    assert!(fields.iter().any(|f| f.contains("date")), "{fields:?}");
    let mut insured =
        clearinghouse_proto::settlement::v1::settlement_service_client::SettlementServiceClient::new(
            channel_as(&settlement, SHANDONG).await.unwrap(),
        );
    for (year, ok) in [(1999, false), (2000, true), (2100, true), (2101, false)] {
        let answer = insured
            .list_claims(ListClaimsRequest {
                insured_region: fixtures::INSURED_REGION.into(),
                person_id: "P-OLD".into(),
                year,
                ..Default::default()
            })
            .await;
        assert_eq!(answer.is_ok(), ok, "{year}: {answer:?}");
    }

    // The refusal of a 1,000-line claim with every line bad stays small and counts them.
    let mut huge = fixtures::small_claim("HUGE-1", "P-OLD");
    huge.lines = (0..1000)
        .map(|_| fixtures::claim_line("D001", "-1", "abc"))
        .collect();
    let refused = settlements
        .settle(SettleRequest { claim: Some(huge) })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("in all"),
        "{}",
        refused.message()
    );
    assert!(
        refused.message().len() < 1024,
        "{}",
        refused.message().len()
    );
    assert!(
        refused.details().len() < 8 * 1024,
        "{}",
        refused.details().len()
    );

    shutdown.cancel();
    for h in [filing, referral, settlement, ledger] {
        h.wait().await.unwrap();
    }
}
