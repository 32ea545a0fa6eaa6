//! Authorization follows the data (DESIGN.md section 7): every RPC of every service, called
//! over mutual TLS as the province that owns the data, the other place of it, an unrelated
//! province, the national platform, an operator and a caller without a certificate; each
//! answer is checked, and refusals are found in the services' audit trails.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed call should fail the test at once"
)]

use std::{collections::BTreeMap, future::Future, pin::Pin, sync::Arc};

use clearinghouse_proto::{
    audit::v1::{ListAuditRecordsRequest, audit_service_client::AuditServiceClient},
    filing::v1::{
        ChangeFilingRequest, CheckEligibilityRequest, FilingCategory, GetFilingRequest,
        GetPersonRequest, ListFilingsRequest, RegisterFilingRequest, RegisterPersonRequest,
        RevokeFilingRequest, Scheme, UpdatePersonRequest,
        filing_service_client::FilingServiceClient,
    },
    ledger::v1::{
        CloseClearingPeriodRequest, ConfirmStatementRequest, DisputeStatementRequest,
        GetBalancesRequest, GetReservesRequest, GetStatementRequest, ListClearingDetailRequest,
        ListDiscrepanciesRequest, ListEntriesRequest, ReconcileRequest, ReconcileRole,
        ReconcileTotalsRequest, ResolveDiscrepancyRequest, SettleClearingPeriodRequest,
        SizeReserveRequest, TopUpReserveRequest, ledger_service_client::LedgerServiceClient,
    },
    referral::v1::{
        CancelReferralRequest, GetReferralRequest, IssueReferralRequest, ListReferralsRequest,
        Referral, referral_service_client::ReferralServiceClient,
    },
    settlement::v1::{
        CreditPersonalAccountRequest, FamilyLink, FamilyRelation, GetAccumulatorsRequest,
        GetCatalogueItemRequest, GetClaimRequest, GetPolicyRequest, LinkFamilyAccountRequest,
        ListCatalogueVersionsRequest, ListClaimsRequest, ListPolicyVersionsRequest,
        PreSettleRequest, PutCatalogueRequest, PutPolicyRequest, ReverseRequest, SettleRequest,
        UnlinkFamilyAccountRequest, VisitType,
        reference_data_service_client::ReferenceDataServiceClient,
        settlement_service_client::SettlementServiceClient,
    },
};
use clearinghouse_testkit::fixtures;
use clearinghouse_tests::*;
use tokio_util::sync::CancellationToken;
use tonic::{
    Code, Status,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

const GUANGDONG: &str = "province:440000";
const ANONYMOUS: &str = "anonymous";

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Svc {
    Filing,
    Referral,
    Settlement,
    Ledger,
}

type Outcome = Pin<Box<dyn Future<Output = Code> + Send>>;
/// One call of an RPC over a channel; the tag makes fresh ids for writes.
type Call = Box<dyn Fn(Channel, String) -> Outcome + Send + Sync>;

fn code<T>(result: Result<tonic::Response<T>, Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// An RPC, the province owning the data it touches, the other place of that data, and the
/// expected answers for: owner, other place, an unrelated province, national, operator.
struct Case {
    svc: Svc,
    rpc: &'static str,
    owner: &'static str,
    other_place: &'static str,
    expected: [Code; 5],
    call: Call,
}

const OK: Code = Code::Ok;
const PD: Code = Code::PermissionDenied;

macro_rules! case {
    ($svc:expr, $rpc:literal, $owner:expr, $other:expr, $expected:expr,
     |$client:ident: $client_ty:ident, $tag:ident, $ctx:ident| $body:expr) => {
        Case {
            svc: $svc,
            rpc: $rpc,
            owner: $owner,
            other_place: $other,
            expected: $expected,
            call: Box::new(move |channel: Channel, $tag: String| {
                let $ctx = CTX.get().unwrap().clone();
                Box::pin(async move {
                    let _ = &$ctx;
                    #[allow(unused_mut)]
                    let mut $client = $client_ty::new(channel);
                    code($body.await)
                })
            }),
        }
    };
}

/// What the set-up created, for the calls to name.
#[derive(Clone, Default)]
struct Ctx {
    filing_id: String,
    revocable_filing_id: String,
    referral_id: String,
    cancellable_referral_id: String,
    year: i32,
    period: String,
}

static CTX: std::sync::OnceLock<Arc<Ctx>> = std::sync::OnceLock::new();

const PERSON: &str = "P-ACC";

fn new_person(tag: &str) -> clearinghouse_proto::filing::v1::Person {
    let digits: String = tag.bytes().map(|b| char::from(b'0' + b % 10)).collect();
    let body = format!("{:0<17}", format!("370102{digits}"));
    fixtures::person(
        &format!("P-NEW-{}", tag.len() * 7 + digits.len()),
        &fixtures::id_number(&body[..17]),
        false,
        "",
    )
}

fn referral(person_id: &str) -> Referral {
    Referral {
        person_id: person_id.into(),
        insured_region: fixtures::INSURED_REGION.into(),
        referring_hospital: "H370102".into(),
        target_region: fixtures::TREATMENT_REGION.into(),
        diagnosis: "C34.9".into(),
        issue_date: fixtures::days_ago(1),
        ..Referral::default()
    }
}

fn cases() -> Vec<Case> {
    use Svc::*;
    let sd = SHANDONG;
    let bj = BEIJING;
    vec![
        // filing: the insured place's; a filing is also the treatment place's to read.
        case!(
            Filing,
            "RegisterPerson",
            sd,
            bj,
            [OK, PD, PD, PD, PD],
            |c: FilingServiceClient, tag, ctx| {
                let mut person = new_person(&tag);
                person.person_id = format!("P-N-{}", tag.replace([':', '-'], ""));
                c.register_person(RegisterPersonRequest {
                    request_id: String::new(),
                    person: Some(person),
                })
            }
        ),
        case!(
            Filing,
            "UpdatePerson",
            sd,
            bj,
            [OK, PD, PD, PD, PD],
            |c: FilingServiceClient, _tag, ctx| {
                c.update_person(UpdatePersonRequest {
                    request_id: String::new(),
                    person: Some(fixtures::person(PERSON, &person_id_number(), false, "")),
                })
            }
        ),
        case!(
            Filing,
            "GetPerson",
            sd,
            bj,
            [OK, PD, PD, OK, PD],
            |c: FilingServiceClient, _tag, ctx| {
                c.get_person(GetPersonRequest {
                    insured_region: fixtures::INSURED_REGION.into(),
                    person_id: PERSON.into(),
                })
            }
        ),
        case!(
            Filing,
            "RegisterFiling",
            sd,
            bj,
            [OK, PD, PD, PD, PD],
            |c: FilingServiceClient, tag, ctx| {
                c.register_filing(RegisterFilingRequest {
                    request_id: format!("acc-{tag}"),
                    filing: Some(fixtures::filing(PERSON, FilingCategory::OtherTemporary)),
                })
            }
        ),
        case!(
            Filing,
            "ChangeFiling",
            sd,
            bj,
            [OK, PD, PD, PD, PD],
            |c: FilingServiceClient, _tag, ctx| {
                let mut filing = fixtures::filing(PERSON, FilingCategory::Referral);
                filing.filing_id = ctx.filing_id.clone();
                c.change_filing(ChangeFilingRequest {
                    request_id: String::new(),
                    filing: Some(filing),
                    override_lock: false,
                    override_reason: "moved by the insured place".into(),
                })
            }
        ),
        case!(
            Filing,
            "RevokeFiling",
            sd,
            bj,
            [OK, PD, PD, PD, PD],
            |c: FilingServiceClient, _tag, ctx| {
                c.revoke_filing(RevokeFilingRequest {
                    request_id: String::new(),
                    filing_id: ctx.revocable_filing_id.clone(),
                    effective_date: fixtures::days_ago(0),
                    override_lock: false,
                    override_reason: "moved by the insured place".into(),
                })
            }
        ),
        case!(
            Filing,
            "GetFiling",
            sd,
            bj,
            [OK, OK, PD, OK, PD],
            |c: FilingServiceClient, _tag, ctx| {
                c.get_filing(GetFilingRequest {
                    filing_id: ctx.filing_id.clone(),
                })
            }
        ),
        case!(
            Filing,
            "ListFilings",
            sd,
            bj,
            [OK, PD, PD, OK, PD],
            |c: FilingServiceClient, _tag, ctx| {
                c.list_filings(ListFilingsRequest {
                    insured_region: fixtures::INSURED_REGION.into(),
                    person_id: PERSON.into(),
                    ..Default::default()
                })
            }
        ),
        case!(
            Filing,
            "CheckEligibility",
            sd,
            bj,
            [OK, OK, PD, OK, PD],
            |c: FilingServiceClient, _tag, ctx| {
                c.check_eligibility(CheckEligibilityRequest {
                    insured_region: fixtures::INSURED_REGION.into(),
                    person_id: PERSON.into(),
                    treatment_region: fixtures::TREATMENT_REGION.into(),
                    date: fixtures::days_ago(1),
                })
            }
        ),
        // referral: issued by the insured place; the target place may read one.
        case!(
            Referral,
            "IssueReferral",
            sd,
            bj,
            [OK, PD, PD, PD, PD],
            |c: ReferralServiceClient, tag, ctx| {
                c.issue_referral(IssueReferralRequest {
                    request_id: format!("acc-{tag}"),
                    referral: Some(referral(PERSON)),
                })
            }
        ),
        case!(
            Referral,
            "CancelReferral",
            sd,
            bj,
            [OK, PD, PD, PD, PD],
            |c: ReferralServiceClient, _tag, ctx| {
                c.cancel_referral(CancelReferralRequest {
                    request_id: String::new(),
                    referral_id: ctx.cancellable_referral_id.clone(),
                })
            }
        ),
        case!(
            Referral,
            "GetReferral",
            sd,
            bj,
            [OK, OK, PD, OK, PD],
            |c: ReferralServiceClient, _tag, ctx| {
                c.get_referral(GetReferralRequest {
                    referral_id: ctx.referral_id.clone(),
                })
            }
        ),
        case!(
            Referral,
            "ListReferrals",
            sd,
            bj,
            [OK, PD, PD, OK, PD],
            |c: ReferralServiceClient, _tag, ctx| {
                c.list_referrals(ListReferralsRequest {
                    insured_region: fixtures::INSURED_REGION.into(),
                    person_id: PERSON.into(),
                    ..Default::default()
                })
            }
        ),
        // reference data: policies are the insured place's, catalogues the treatment
        // place's; reading either is open to every authenticated caller.
        case!(
            Settlement,
            "PutPolicy",
            sd,
            bj,
            [OK, PD, PD, PD, PD],
            |c: ReferenceDataServiceClient, tag, ctx| {
                c.put_policy(PutPolicyRequest {
                    request_id: format!("acc-{tag}"),
                    policy: Some(fixtures::inpatient_policy(fixtures::INSURED_REGION, false)),
                })
            }
        ),
        case!(
            Settlement,
            "GetPolicy",
            sd,
            bj,
            [OK, OK, OK, OK, OK],
            |c: ReferenceDataServiceClient, _tag, ctx| {
                c.get_policy(GetPolicyRequest {
                    insured_region: fixtures::INSURED_REGION.into(),
                    scheme: Scheme::Employee as i32,
                    visit_type: VisitType::Inpatient as i32,
                    date: fixtures::days_ago(0),
                })
            }
        ),
        case!(
            Settlement,
            "ListPolicyVersions",
            sd,
            bj,
            [OK, OK, OK, OK, OK],
            |c: ReferenceDataServiceClient, _tag, ctx| {
                c.list_policy_versions(ListPolicyVersionsRequest {
                    page_size: 0,
                    page_token: String::new(),
                    insured_region: fixtures::INSURED_REGION.into(),
                    scheme: Scheme::Employee as i32,
                    visit_type: VisitType::Inpatient as i32,
                })
            }
        ),
        case!(
            Settlement,
            "PutCatalogue",
            bj,
            sd,
            [OK, PD, PD, PD, PD],
            |c: ReferenceDataServiceClient, _tag, ctx| {
                c.put_catalogue(tokio_stream::iter(vec![PutCatalogueRequest {
                    request_id: String::new(),
                    treatment_region: fixtures::TREATMENT_REGION.into(),
                    effective_from: fixtures::catalogue_effective_from(),
                    items: fixtures::catalogue_items(),
                }]))
            }
        ),
        case!(
            Settlement,
            "GetCatalogueItem",
            bj,
            sd,
            [OK, OK, OK, OK, OK],
            |c: ReferenceDataServiceClient, _tag, ctx| {
                c.get_catalogue_item(GetCatalogueItemRequest {
                    treatment_region: fixtures::TREATMENT_REGION.into(),
                    item_code: fixtures::catalogue_items()[0].item_code.clone(),
                    date: fixtures::days_ago(0),
                })
            }
        ),
        case!(
            Settlement,
            "ListCatalogueVersions",
            bj,
            sd,
            [OK, OK, OK, OK, OK],
            |c: ReferenceDataServiceClient, _tag, ctx| {
                c.list_catalogue_versions(ListCatalogueVersionsRequest {
                    page_size: 0,
                    page_token: String::new(),
                    treatment_region: fixtures::TREATMENT_REGION.into(),
                })
            }
        ),
        // settlement: the treatment place settles; either place reads a claim; the person's
        // own records and account are the insured place's.
        case!(
            Settlement,
            "PreSettle",
            bj,
            sd,
            [OK, PD, PD, PD, PD],
            |c: SettlementServiceClient, _tag, ctx| {
                c.pre_settle(PreSettleRequest {
                    claim: Some(fixtures::small_claim("C-ACC-PRE", PERSON)),
                })
            }
        ),
        case!(
            Settlement,
            "Settle",
            bj,
            sd,
            [OK, PD, PD, PD, PD],
            |c: SettlementServiceClient, tag, ctx| {
                c.settle(SettleRequest {
                    claim: Some(fixtures::small_claim(
                        &format!("C-ACC-{}", tag.replace(':', "")),
                        PERSON,
                    )),
                })
            }
        ),
        case!(
            Settlement,
            "Reverse",
            bj,
            sd,
            [OK, PD, PD, PD, PD],
            |c: SettlementServiceClient, _tag, ctx| {
                c.reverse(ReverseRequest {
                    treatment_region: fixtures::TREATMENT_REGION.into(),
                    claim_id: "C-ACC-REV".into(),
                    reason: "refund".into(),
                })
            }
        ),
        case!(
            Settlement,
            "GetClaim",
            bj,
            sd,
            [OK, OK, PD, OK, PD],
            |c: SettlementServiceClient, _tag, ctx| {
                c.get_claim(GetClaimRequest {
                    treatment_region: fixtures::TREATMENT_REGION.into(),
                    claim_id: "C-ACC-1".into(),
                })
            }
        ),
        case!(
            Settlement,
            "ListClaims",
            sd,
            bj,
            [OK, PD, PD, OK, PD],
            |c: SettlementServiceClient, _tag, ctx| {
                c.list_claims(ListClaimsRequest {
                    insured_region: fixtures::INSURED_REGION.into(),
                    person_id: PERSON.into(),
                    year: ctx.year,
                    ..Default::default()
                })
            }
        ),
        case!(
            Settlement,
            "CreditPersonalAccount",
            sd,
            bj,
            [OK, PD, PD, PD, PD],
            |c: SettlementServiceClient, tag, ctx| {
                c.credit_personal_account(CreditPersonalAccountRequest {
                    request_id: format!("acc-{tag}"),
                    insured_region: fixtures::INSURED_REGION.into(),
                    person_id: PERSON.into(),
                    amount: "10.00".into(),
                })
            }
        ),
        case!(
            Settlement,
            "LinkFamilyAccount",
            sd,
            bj,
            // The insured place passes authorization and meets the rules: the member is not
            // registered.
            [Code::FailedPrecondition, PD, PD, PD, PD],
            |c: SettlementServiceClient, tag, ctx| {
                c.link_family_account(LinkFamilyAccountRequest {
                    request_id: format!("link-{tag}"),
                    link: Some(FamilyLink {
                        insured_region: fixtures::INSURED_REGION.into(),
                        holder_person_id: PERSON.into(),
                        member_person_id: "P-NOBODY".into(),
                        relation: FamilyRelation::Child as i32,
                        ..Default::default()
                    }),
                })
            }
        ),
        case!(
            Settlement,
            "UnlinkFamilyAccount",
            sd,
            bj,
            [Code::NotFound, PD, PD, PD, PD],
            |c: SettlementServiceClient, _tag, ctx| {
                c.unlink_family_account(UnlinkFamilyAccountRequest {
                    request_id: String::new(),
                    insured_region: fixtures::INSURED_REGION.into(),
                    holder_person_id: PERSON.into(),
                    member_person_id: "P-NOBODY".into(),
                    effective_date: String::new(),
                })
            }
        ),
        case!(
            Settlement,
            "GetAccumulators",
            sd,
            bj,
            [OK, PD, PD, OK, PD],
            |c: SettlementServiceClient, _tag, ctx| {
                c.get_accumulators(GetAccumulatorsRequest {
                    insured_region: fixtures::INSURED_REGION.into(),
                    person_id: PERSON.into(),
                    year: ctx.year,
                })
            }
        ),
        // ledger: a province reads and acts on its own accounts; clearing is national;
        // operators read.
        case!(
            Ledger,
            "GetBalances",
            sd,
            bj,
            [OK, PD, PD, OK, OK],
            |c: LedgerServiceClient, _tag, ctx| {
                c.get_balances(GetBalancesRequest {
                    province: "370000".into(),
                })
            }
        ),
        case!(
            Ledger,
            "ListEntries",
            sd,
            bj,
            [OK, PD, PD, OK, OK],
            |c: LedgerServiceClient, _tag, ctx| {
                c.list_entries(ListEntriesRequest {
                    province: "370000".into(),
                    ..Default::default()
                })
            }
        ),
        case!(
            Ledger,
            "SizeReserve",
            sd,
            bj,
            [PD, PD, PD, OK, PD],
            |c: LedgerServiceClient, tag, ctx| {
                c.size_reserve(SizeReserveRequest {
                    request_id: format!("acc-size-{tag}"),
                    insured_province: "370000".into(),
                    treatment_province: "110000".into(),
                    amount: "100000.00".into(),
                })
            }
        ),
        case!(
            Ledger,
            "TopUpReserve",
            sd,
            bj,
            [OK, PD, PD, PD, PD],
            |c: LedgerServiceClient, tag, ctx| {
                c.top_up_reserve(TopUpReserveRequest {
                    request_id: format!("acc-top-{tag}"),
                    insured_province: "370000".into(),
                    treatment_province: "110000".into(),
                    amount: "1.00".into(),
                })
            }
        ),
        case!(
            Ledger,
            "GetReserves",
            sd,
            bj,
            [OK, PD, PD, OK, OK],
            |c: LedgerServiceClient, _tag, ctx| {
                c.get_reserves(GetReservesRequest {
                    province: "370000".into(),
                })
            }
        ),
        case!(
            Ledger,
            "CloseClearingPeriod",
            sd,
            bj,
            [PD, PD, PD, OK, PD],
            |c: LedgerServiceClient, _tag, ctx| {
                c.close_clearing_period(CloseClearingPeriodRequest {
                    request_id: String::new(),
                    period: ctx.period.clone(),
                })
            }
        ),
        case!(
            Ledger,
            "GetStatement",
            sd,
            bj,
            [OK, PD, PD, OK, OK],
            |c: LedgerServiceClient, _tag, ctx| {
                c.get_statement(GetStatementRequest {
                    period: ctx.period.clone(),
                    province: "370000".into(),
                })
            }
        ),
        case!(
            Ledger,
            "ConfirmStatement",
            sd,
            bj,
            [OK, PD, PD, PD, PD],
            |c: LedgerServiceClient, _tag, ctx| {
                c.confirm_statement(ConfirmStatementRequest {
                    request_id: String::new(),
                    period: ctx.period.clone(),
                    province: "370000".into(),
                })
            }
        ),
        case!(
            Ledger,
            "DisputeStatement",
            bj,
            sd,
            [OK, PD, PD, PD, PD],
            |c: LedgerServiceClient, _tag, ctx| {
                c.dispute_statement(DisputeStatementRequest {
                    request_id: String::new(),
                    period: ctx.period.clone(),
                    province: "110000".into(),
                    reason: "claim C-ACC-1 is not ours".into(),
                })
            }
        ),
        case!(
            Ledger,
            "SettleClearingPeriod",
            sd,
            bj,
            // The national platform passes authorization and meets the state machine: the
            // period is not confirmed by every province here.
            [PD, PD, PD, Code::FailedPrecondition, PD],
            |c: LedgerServiceClient, _tag, ctx| {
                c.settle_clearing_period(SettleClearingPeriodRequest {
                    request_id: String::new(),
                    period: ctx.period.clone(),
                })
            }
        ),
        case!(
            Ledger,
            "ReconcileTotals",
            sd,
            bj,
            [OK, PD, PD, PD, PD],
            |c: LedgerServiceClient, _tag, ctx| {
                c.reconcile_totals(ReconcileTotalsRequest {
                    province: "370000".into(),
                    role: ReconcileRole::Insured as i32,
                    period: ctx.period.clone(),
                    ..Default::default()
                })
            }
        ),
        case!(
            Ledger,
            "ListDiscrepancies",
            sd,
            bj,
            [OK, PD, PD, OK, OK],
            |c: LedgerServiceClient, _tag, ctx| {
                c.list_discrepancies(ListDiscrepanciesRequest {
                    province: "370000".into(),
                    ..Default::default()
                })
            }
        ),
        case!(
            Ledger,
            "ResolveDiscrepancy",
            sd,
            bj,
            [PD, PD, PD, Code::NotFound, PD],
            |c: LedgerServiceClient, _tag, ctx| {
                c.resolve_discrepancy(ResolveDiscrepancyRequest {
                    request_id: String::new(),
                    id: 999_999,
                    reason: "accepted".into(),
                })
            }
        ),
        case!(
            Ledger,
            "ListClearingDetail",
            sd,
            bj,
            [OK, OK, PD, OK, PD],
            |c: LedgerServiceClient, _tag, ctx| {
                c.list_clearing_detail(ListClearingDetailRequest {
                    period: ctx.period.clone(),
                    insured_province: "370000".into(),
                    treatment_province: "110000".into(),
                    ..Default::default()
                })
            }
        ),
        case!(
            Ledger,
            "Reconcile",
            sd,
            bj,
            [PD, PD, PD, OK, OK],
            |c: LedgerServiceClient, _tag, ctx| {
                c.reconcile(ReconcileRequest {
                    period: ctx.period.clone(),
                })
            }
        ),
        // every service's audit trail: the national platform's and operators' to read.
        case!(
            Filing,
            "ListAuditRecords",
            sd,
            bj,
            [PD, PD, PD, OK, OK],
            |c: AuditServiceClient, _tag, ctx| {
                c.list_audit_records(ListAuditRecordsRequest::default())
            }
        ),
        case!(
            Referral,
            "ListAuditRecords",
            sd,
            bj,
            [PD, PD, PD, OK, OK],
            |c: AuditServiceClient, _tag, ctx| {
                c.list_audit_records(ListAuditRecordsRequest::default())
            }
        ),
        case!(
            Settlement,
            "ListAuditRecords",
            bj,
            sd,
            [PD, PD, PD, OK, OK],
            |c: AuditServiceClient, _tag, ctx| {
                c.list_audit_records(ListAuditRecordsRequest::default())
            }
        ),
        case!(
            Ledger,
            "ListAuditRecords",
            sd,
            bj,
            [PD, PD, PD, OK, OK],
            |c: AuditServiceClient, _tag, ctx| {
                c.list_audit_records(ListAuditRecordsRequest::default())
            }
        ),
    ]
}

fn person_id_number() -> String {
    fixtures::id_number("37010219800101123")
}

/// A TLS connection that trusts our CA but presents no certificate of its own.
async fn anonymous(host: &clearinghouse_platform::host::Host) -> Channel {
    let ca = std::fs::read(pki_dir().join("ca.pem")).unwrap();
    Endpoint::from_shared(format!("https://{}", host.grpc_addr))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_each_caller_as_section_7_says() {
    let env = TestEnv::new().await.unwrap();
    let shutdown = CancellationToken::new();
    let _stop_on_drop = shutdown.clone().drop_guard();
    let filing = env.start_filing(shutdown.clone()).await.unwrap();
    let referral_host = env.start_referral(shutdown.clone()).await.unwrap();
    let settlement = env
        .start_settlement(Some(&filing), true, shutdown.clone())
        .await
        .unwrap();
    let ledger = env.start_ledger(shutdown.clone()).await.unwrap();
    let hosts = BTreeMap::from([
        (Svc::Filing, &filing),
        (Svc::Referral, &referral_host),
        (Svc::Settlement, &settlement),
        (Svc::Ledger, &ledger),
    ]);

    // The owners create what the calls touch.
    seed_reference(&settlement, true).await.unwrap();
    let mut filings = FilingServiceClient::new(channel_as(&filing, SHANDONG).await.unwrap());
    filings
        .register_person(RegisterPersonRequest {
            request_id: String::new(),
            person: Some(fixtures::person(PERSON, &person_id_number(), false, "")),
        })
        .await
        .unwrap();
    let file = |request_id: &str, category| RegisterFilingRequest {
        request_id: request_id.into(),
        filing: Some(fixtures::filing(PERSON, category)),
    };
    let register = |request| {
        let mut filings = filings.clone();
        async move {
            filings
                .register_filing(request)
                .await
                .unwrap()
                .into_inner()
                .filing
                .unwrap()
                .filing_id
        }
    };
    let filing_id = register(file("acc-main", FilingCategory::Referral)).await;
    let revocable_filing_id = register(file("acc-revocable", FilingCategory::OtherTemporary)).await;
    let mut referrals =
        ReferralServiceClient::new(channel_as(&referral_host, SHANDONG).await.unwrap());
    let issue = |request_id: &str| {
        let request = IssueReferralRequest {
            request_id: request_id.into(),
            referral: Some(referral(PERSON)),
        };
        let mut referrals = referrals.clone();
        async move {
            referrals
                .issue_referral(request)
                .await
                .unwrap()
                .into_inner()
                .referral
                .unwrap()
                .referral_id
        }
    };
    let referral_id = issue("acc-main").await;
    let cancellable_referral_id = issue("acc-cancel").await;
    referrals = ReferralServiceClient::new(channel_as(&referral_host, SHANDONG).await.unwrap());
    drop(referrals);
    let mut beijing = settlement_client(&settlement).await.unwrap();
    let mut year = 0;
    for claim_id in ["C-ACC-1", "C-ACC-REV"] {
        let result = beijing
            .settle(SettleRequest {
                claim: Some(fixtures::small_claim(claim_id, PERSON)),
            })
            .await
            .unwrap()
            .into_inner()
            .result
            .unwrap();
        year = result.service_date[..4].parse().unwrap();
    }
    let mut national = ledger_client(&ledger).await.unwrap();
    national
        .size_reserve(SizeReserveRequest {
            request_id: "acc-size".into(),
            insured_province: "370000".into(),
            treatment_province: "110000".into(),
            amount: "100000.00".into(),
        })
        .await
        .unwrap();
    // The period the claims were posted to (the ledger's own clock, UTC+8).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while national
        .get_balances(GetBalancesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entry_count
        < 2
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "claims never posted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let now = time::OffsetDateTime::now_utc() + time::Duration::hours(8);
    let period = format!("{:04}-{:02}", now.year(), u8::from(now.month()));
    CTX.set(Arc::new(Ctx {
        filing_id,
        revocable_filing_id,
        referral_id,
        cancellable_referral_id,
        year,
        period,
    }))
    .ok()
    .unwrap();

    // Channels for every caller to every service.
    let mut channels: BTreeMap<(Svc, String), Channel> = BTreeMap::new();
    for (svc, host) in &hosts {
        for identity in [SHANDONG, BEIJING, GUANGDONG, NATIONAL, OPERATOR] {
            channels.insert(
                (*svc, identity.into()),
                channel_as(host, identity).await.unwrap(),
            );
        }
        channels.insert((*svc, ANONYMOUS.into()), anonymous(host).await);
    }

    let mut failures = Vec::new();
    let mut calls = 0;
    for case in cases() {
        let unrelated = GUANGDONG;
        // The owner goes last, so that denied writes are tried on untouched data.
        let callers = [
            (ANONYMOUS, Code::Unauthenticated),
            (case.other_place, case.expected[1]),
            (unrelated, case.expected[2]),
            (NATIONAL, case.expected[3]),
            (OPERATOR, case.expected[4]),
            (case.owner, case.expected[0]),
        ];
        for (caller, want) in callers {
            let channel = channels[&(case.svc, caller.to_string())].clone();
            let got = (case.call)(channel, caller.to_string()).await;
            calls += 1;
            if got != want {
                failures.push(format!(
                    "{:?}/{} as {caller}: {got:?}, expected {want:?}",
                    case.svc, case.rpc
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {calls} calls answered wrongly:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(calls >= 40 * 6, "{calls}");

    // Nothing was stored from refused writes: Guangdong's and the national platform's
    // attempted registrations do not exist.
    let national_filing = FilingServiceClient::new(channel_as(&filing, NATIONAL).await.unwrap());
    for tag in [GUANGDONG, NATIONAL, OPERATOR, BEIJING] {
        let id = format!("P-N-{}", tag.replace([':', '-'], ""));
        let answer = national_filing
            .clone()
            .get_person(GetPersonRequest {
                insured_region: fixtures::INSURED_REGION.into(),
                person_id: id.clone(),
            })
            .await;
        assert_eq!(answer.unwrap_err().code(), Code::NotFound, "{id}");
    }
    let owner_id = format!("P-N-{}", SHANDONG.replace([':', '-'], ""));
    national_filing
        .clone()
        .get_person(GetPersonRequest {
            insured_region: fixtures::INSURED_REGION.into(),
            person_id: owner_id,
        })
        .await
        .unwrap();

    // Every refusal and every write is in the service's audit trail, with its caller.
    let mut audit = AuditServiceClient::new(channel_as(&settlement, OPERATOR).await.unwrap());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let records = audit
            .list_audit_records(ListAuditRecordsRequest {
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .records;
        let has = |caller: &str, method: &str, outcome: &str| {
            records
                .iter()
                .any(|r| r.caller == caller && r.method.ends_with(method) && r.outcome == outcome)
        };
        let complete = has(GUANGDONG, "SettlementService/Settle", "PERMISSION_DENIED")
            && has(SHANDONG, "SettlementService/Reverse", "PERMISSION_DENIED")
            && has("anonymous", "SettlementService/GetClaim", "UNAUTHENTICATED")
            && has(BEIJING, "SettlementService/Settle", "OK")
            && has(SHANDONG, "ReferenceDataService/PutPolicy", "OK")
            && has(
                NATIONAL,
                "ReferenceDataService/PutCatalogue",
                "PERMISSION_DENIED",
            )
            && records.iter().any(|r| {
                r.subject == "claim 110000/C-ACC-1" || r.subject.starts_with("claim 110000/")
            });
        if complete {
            // Reads that were allowed are not audited.
            assert!(!has(NATIONAL, "SettlementService/GetClaim", "OK"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "audit trail incomplete: {records:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    for host in [filing, referral_host, settlement, ledger] {
        host.wait().await.unwrap();
    }
}

/// A certificate from another CA is not accepted, whatever it claims to be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_of_another_ca_is_refused() {
    let env = TestEnv::new().await.unwrap();
    let shutdown = CancellationToken::new();
    let _stop_on_drop = shutdown.clone().drop_guard();
    let ledger = env.start_ledger(shutdown.clone()).await.unwrap();
    let rogue = clearinghouse_testkit::pki::DevPki::generate().unwrap();
    let dir = std::env::temp_dir().join(format!(
        "clearinghouse-rogue-{}",
        clearinghouse_testkit::unique_suffix()
    ));
    rogue.write(&dir, &[("national", "national")]).unwrap();
    // Trust our CA for the server, but present the rogue "national" certificate.
    let ours = std::fs::read(pki_dir().join("ca.pem")).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ours))
        .identity(tonic::transport::Identity::from_pem(
            std::fs::read(dir.join("national.pem")).unwrap(),
            std::fs::read(dir.join("national.key")).unwrap(),
        ));
    let endpoint = Endpoint::from_shared(format!("https://{}", ledger.grpc_addr))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    let answer = match endpoint.connect().await {
        Err(_) => None,
        Ok(channel) => Some(
            LedgerServiceClient::new(channel)
                .close_clearing_period(CloseClearingPeriodRequest {
                    request_id: String::new(),
                    period: "2026-01".into(),
                })
                .await,
        ),
    };
    if let Some(answer) = answer {
        let status = answer.expect_err("a rogue certificate must not be served");
        assert_ne!(status.code(), Code::Ok);
        assert_ne!(
            status.code(),
            Code::NotFound,
            "the call reached the handler"
        );
    }
    // Health checks need no certificate (load balancers, Kubernetes probes).
    let mut health = tonic_health::pb::health_client::HealthClient::new(anonymous(&ledger).await);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        serving,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // So does the metrics port's /healthz, for probes that cannot present a certificate.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut http = tokio::net::TcpStream::connect(ledger.metrics_addr)
        .await
        .unwrap();
    http.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    http.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    shutdown.cancel();
    ledger.wait().await.unwrap();
}

/// The insecure plaintext mode, for local experiments only, believes the caller header
/// and still refuses a call without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_plaintext_mode_trusts_only_the_caller_header() {
    let env = TestEnv::new().await.unwrap();
    let shutdown = CancellationToken::new();
    let _stop_on_drop = shutdown.clone().drop_guard();
    let mut config = clearinghouse_fund_ledger::Config {
        server: clearinghouse_platform::config::ServerConfig {
            tls: clearinghouse_platform::access::TlsConfig {
                insecure_plaintext: true,
                ..Default::default()
            },
            ..clearinghouse_platform::config::ServerConfig::ephemeral()
        },
        kafka: env.kafka.clone(),
        ..Default::default()
    };
    config.database.url = clearinghouse_platform::config::Secret::new(&env.database_url);
    let ledger = clearinghouse_fund_ledger::start(config, shutdown.clone())
        .await
        .unwrap();
    let channel = Endpoint::from_shared(format!("http://{}", ledger.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = LedgerServiceClient::new(channel);
    let ask = |caller: Option<&str>| {
        let mut request = tonic::Request::new(GetBalancesRequest {
            province: "370000".into(),
        });
        if let Some(caller) = caller {
            request.metadata_mut().insert(
                clearinghouse_platform::access::CALLER_HEADER,
                caller.parse().unwrap(),
            );
        }
        request
    };
    assert_eq!(
        code(client.get_balances(ask(None)).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(client.get_balances(ask(Some("province:440000"))).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(client.get_balances(ask(Some("national"))).await),
        Code::Ok
    );
    assert_eq!(
        code(client.get_balances(ask(Some("root"))).await),
        Code::Unauthenticated
    );
    shutdown.cancel();
    ledger.wait().await.unwrap();
}
