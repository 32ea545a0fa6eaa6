//! The demo: a provincial platform's day in miniature.

use std::time::Duration;

use clearinghouse_all_in_one::{Config, Stack};
use std::path::Path;

use clearinghouse_platform::access::{self, TlsConfig};
use clearinghouse_platform::host::Host;
use clearinghouse_proto::{
    audit::v1::{ListAuditRecordsRequest, audit_service_client::AuditServiceClient},
    filing::v1::{
        CheckEligibilityRequest, FilingCategory, RegisterFilingRequest, RegisterPersonRequest,
        Scheme, filing_service_client::FilingServiceClient,
    },
    ledger::v1::{
        CloseClearingPeriodRequest, GetBalancesRequest, GetStatementRequest,
        ledger_service_client::LedgerServiceClient,
    },
    referral::v1::{
        IssueReferralRequest, Referral, referral_service_client::ReferralServiceClient,
    },
    settlement::v1::{
        Claim, CreditPersonalAccountRequest, FamilyLink, FamilyRelation, GetClaimRequest,
        LinkFamilyAccountRequest, PutCatalogueRequest, PutPolicyRequest, SettleRequest,
        SettlementResult, reference_data_service_client::ReferenceDataServiceClient,
        settlement_service_client::SettlementServiceClient,
    },
};
use clearinghouse_testkit::{fixtures, unique_suffix};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

fn print_split(title: &str, r: &SettlementResult) {
    let s = r.split.clone().unwrap_or_default();
    println!(
        "\n{title}  (policy v{}, catalogue v{}, service date {})",
        r.policy_version, r.catalogue_version, r.service_date
    );
    for l in &r.lines {
        println!(
            "  {:<6} amount {:>10}  full self-pay {:>9}  prior self-pay {:>8}  in scope {:>10}",
            l.item_code, l.amount, l.full_self_pay, l.prior_self_pay, l.in_scope
        );
    }
    for (name, value) in [
        ("total", &s.total),
        ("full self-pay", &s.full_self_pay),
        ("prior self-pay", &s.prior_self_pay),
        ("in scope", &s.in_scope),
        ("deductible", &s.deductible),
        ("ratio", &s.ratio),
        ("fund", &s.fund),
        ("serious illness", &s.serious_illness),
        ("assistance", &s.assistance),
        ("personal account", &s.personal_account),
        ("cash", &s.cash),
    ] {
        println!("  {name:<17}{value:>12}");
    }
}

pub async fn run(mut config: Config, pki: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        pki.join("ca.pem").exists(),
        "no development certificates in {} (run `clearinghouse dev-certs {}` first)",
        pki.display(),
        pki.display()
    );
    // Every run starts from nothing: its own database and its own topics.
    let url = clearinghouse_testkit::recreate_database("clearinghouse_demo").await?;
    let mut kafka = config.kafka.clone().unwrap_or_default();
    kafka.name_suffix = format!(".demo-{}", unique_suffix());
    let defaults = config.clone();
    config = Config::ephemeral(&url, kafka, TlsConfig::in_dir(pki, "service"));
    config.telemetry = defaults.telemetry;

    let shutdown = CancellationToken::new();
    let stack = Stack::start(config, shutdown.clone()).await?;
    let result = walk_through(&stack, pki).await;
    shutdown.cancel();
    stack.wait().await?;
    result
}

/// The callers of the demo, each over mutual TLS with its own certificate.
struct Callers {
    filing: FilingServiceClient<Channel>,
    /// Shandong puts its policies.
    policies: ReferenceDataServiceClient<Channel>,
    /// Beijing puts its catalogue.
    catalogues: ReferenceDataServiceClient<Channel>,
    /// Beijing settles.
    settlement: SettlementServiceClient<Channel>,
    /// Shandong credits and links personal accounts.
    insured: SettlementServiceClient<Channel>,
    referrals: ReferralServiceClient<Channel>,
    /// The national platform.
    ledger: LedgerServiceClient<Channel>,
}

async fn as_caller(host: &Host, pki: &Path, file: &str) -> anyhow::Result<Channel> {
    let tls = TlsConfig::in_dir(pki, file);
    access::channel(host.grpc_addr, &tls).await
}

impl Callers {
    async fn connect(stack: &Stack, pki: &Path) -> anyhow::Result<Self> {
        let (shandong, beijing) = ("province-370000", "province-110000");
        Ok(Self {
            filing: FilingServiceClient::new(as_caller(&stack.filing, pki, shandong).await?),
            policies: ReferenceDataServiceClient::new(
                as_caller(&stack.settlement, pki, shandong).await?,
            ),
            catalogues: ReferenceDataServiceClient::new(
                as_caller(&stack.settlement, pki, beijing).await?,
            ),
            settlement: SettlementServiceClient::new(
                as_caller(&stack.settlement, pki, beijing).await?,
            ),
            insured: SettlementServiceClient::new(
                as_caller(&stack.settlement, pki, shandong).await?,
            ),
            referrals: ReferralServiceClient::new(as_caller(&stack.referral, pki, shandong).await?),
            ledger: LedgerServiceClient::new(as_caller(&stack.fund_ledger, pki, "national").await?),
        })
    }

    async fn settle(&self, claim: Claim) -> anyhow::Result<SettlementResult> {
        Ok(self
            .settlement
            .clone()
            .settle(SettleRequest { claim: Some(claim) })
            .await?
            .into_inner()
            .result
            .unwrap_or_default())
    }
}

async fn walk_through(stack: &Stack, pki: &Path) -> anyhow::Result<()> {
    let mut c = Callers::connect(stack, pki).await?;
    println!(
        "Shandong (370100) insures; Beijing (110000) treats; each calls with its own certificate."
    );
    reference_data(&mut c).await?;
    worked_examples(&mut c).await?;
    referral(&mut c).await?;
    general_outpatient(&mut c).await?;
    family(&mut c).await?;
    ledger(&mut c).await?;
    refusal(stack, pki).await
}

/// Shandong's inpatient policy and Beijing's catalogue.
async fn reference_data(c: &mut Callers) -> anyhow::Result<()> {
    c.policies
        .put_policy(PutPolicyRequest {
            request_id: "demo-policy".into(),
            policy: Some(fixtures::inpatient_policy(fixtures::INSURED_REGION, false)),
        })
        .await?;
    let header = PutCatalogueRequest {
        request_id: String::new(),
        treatment_region: fixtures::TREATMENT_REGION.into(),
        effective_from: fixtures::catalogue_effective_from(),
        items: fixtures::catalogue_items(),
    };
    c.catalogues
        .put_catalogue(tokio_stream::iter(vec![header]))
        .await?;

    Ok(())
}

/// Worked examples 1 and 2 of DESIGN.md §5, for two filed patients.
async fn worked_examples(c: &mut Callers) -> anyhow::Result<()> {
    let patients = [
        ("P-DEMO-1", false, FilingCategory::Referral),
        ("P-DEMO-2", true, FilingCategory::ResettledRetiree),
    ];
    for (i, (person_id, retired, category)) in patients.into_iter().enumerate() {
        let id_number = fixtures::id_number(&format!("3701021960010{i}123"));
        c.filing
            .register_person(RegisterPersonRequest {
                request_id: String::new(),
                person: Some(fixtures::person(person_id, &id_number, retired, "")),
            })
            .await?;
        c.filing
            .register_filing(RegisterFilingRequest {
                request_id: format!("demo-filing-{i}"),
                filing: Some(fixtures::filing(person_id, category)),
            })
            .await?;
    }

    let one = c.settle(fixtures::example1("DEMO-EX1", "P-DEMO-1")).await?;
    print_split(
        "Worked example 1 — REFERRAL filing, level-3 hospital, first admission",
        &one,
    );
    let two_a = c
        .settle(fixtures::example2a("DEMO-EX2A", "P-DEMO-2"))
        .await?;
    print_split(
        "Worked example 2a — retired, long-term filing, level 1",
        &two_a,
    );
    let two_b = c
        .settle(fixtures::example2b("DEMO-EX2B", "P-DEMO-2"))
        .await?;
    print_split(
        "Worked example 2b — second admission of the year, level 2",
        &two_b,
    );

    Ok(())
}

/// A hospital in Shandong refers a third patient to Beijing.
async fn referral(c: &mut Callers) -> anyhow::Result<()> {
    // A hospital in Shandong refers a third patient to Beijing: no insurer approval, and the
    // referral files itself (ReferralIssued → the filing service → a REFERRAL filing).
    c.filing
        .register_person(RegisterPersonRequest {
            request_id: String::new(),
            person: Some(fixtures::person(
                "P-DEMO-3",
                &fixtures::id_number("37010219750505123"),
                false,
                "",
            )),
        })
        .await?;
    let referral = c
        .referrals
        .issue_referral(IssueReferralRequest {
            request_id: "demo-referral".into(),
            referral: Some(Referral {
                person_id: "P-DEMO-3".into(),
                insured_region: fixtures::INSURED_REGION.into(),
                referring_hospital: "H370102001".into(),
                target_region: fixtures::TREATMENT_REGION.into(),
                diagnosis: "I21.9 acute myocardial infarction".into(),
                issue_date: fixtures::days_ago(30),
                ..Referral::default()
            }),
        })
        .await?
        .into_inner()
        .referral
        .unwrap_or_default();
    println!(
        "
Referral {} issued for P-DEMO-3, valid until {}",
        referral.referral_id, referral.valid_until
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = c
            .filing
            .check_eligibility(CheckEligibilityRequest {
                insured_region: fixtures::INSURED_REGION.into(),
                person_id: "P-DEMO-3".into(),
                treatment_region: fixtures::TREATMENT_REGION.into(),
                date: fixtures::days_ago(10),
            })
            .await?
            .into_inner();
        if let Some(f) = answer.covering.first() {
            println!(
                "  → filing {} ({:?}) from {} to {}",
                f.filing_id,
                FilingCategory::try_from(f.category).unwrap_or_default(),
                f.start_date,
                f.end_date
            );
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the referral did not file itself within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let three = c.settle(fixtures::example1("DEMO-REF", "P-DEMO-3")).await?;
    print_split(
        "The referred patient settled under the REFERRAL filing (example 1's bill)",
        &three,
    );

    Ok(())
}

/// General outpatient (the Qiannan plan): example 4.
async fn general_outpatient(c: &mut Callers) -> anyhow::Result<()> {
    for scheme in [Scheme::Employee, Scheme::Resident] {
        c.policies
            .put_policy(PutPolicyRequest {
                request_id: format!("demo-go-{scheme:?}"),
                policy: Some(fixtures::general_outpatient_policy(
                    fixtures::INSURED_REGION,
                    scheme,
                )),
            })
            .await?;
    }
    c.settle(fixtures::example4_earlier("DEMO-EX4A", "P-DEMO-2"))
        .await?;
    let four = c.settle(fixtures::example4("DEMO-EX4", "P-DEMO-2")).await?;
    print_split(
        "Worked example 4 — general outpatient, retired, 100.00 of the annual deductible met",
        &four,
    );
    Ok(())
}

/// Family mutual aid: Shandong links a parent's personal account to a child, whose visit
/// it then pays for in part (example 5).
async fn family(c: &mut Callers) -> anyhow::Result<()> {
    for (person_id, scheme, body, category) in [
        (
            "P-DEMO-4",
            Scheme::Employee,
            "37010219780808123",
            FilingCategory::LongTermResident,
        ),
        (
            "P-DEMO-5",
            Scheme::Resident,
            "37010220150606123",
            FilingCategory::OtherTemporary,
        ),
    ] {
        let mut person = fixtures::person(person_id, &fixtures::id_number(body), false, "");
        person.scheme = scheme as i32;
        c.filing
            .register_person(RegisterPersonRequest {
                request_id: String::new(),
                person: Some(person),
            })
            .await?;
        c.filing
            .register_filing(RegisterFilingRequest {
                request_id: format!("demo-filing-{person_id}"),
                filing: Some(fixtures::filing(person_id, category)),
            })
            .await?;
    }
    c.insured
        .credit_personal_account(CreditPersonalAccountRequest {
            request_id: "demo-credit-4".into(),
            insured_region: fixtures::INSURED_REGION.into(),
            person_id: "P-DEMO-4".into(),
            amount: "80.00".into(),
        })
        .await?;
    let link = LinkFamilyAccountRequest {
        request_id: "demo-link".into(),
        link: Some(FamilyLink {
            insured_region: fixtures::INSURED_REGION.into(),
            holder_person_id: "P-DEMO-4".into(),
            member_person_id: "P-DEMO-5".into(),
            relation: FamilyRelation::Child as i32,
            linked_from: fixtures::days_ago(30),
            unlinked_from: String::new(),
        }),
    };
    // The settlement service learns of new persons from the filing service's events.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Err(e) = c.insured.link_family_account(link.clone()).await {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the family link was refused: {e}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "
Shandong links P-DEMO-4's personal account to P-DEMO-5 (a child)"
    );
    let five = c
        .settle(fixtures::example5("DEMO-EX5", "P-DEMO-5", "P-DEMO-4"))
        .await?;
    print_split(
        "Worked example 5 — a child's general-outpatient visit, paid in part from the parent's account",
        &five,
    );
    println!(
        "  personal account of {} after it: {}",
        five.personal_account_holder, five.personal_account_balance
    );

    Ok(())
}

/// The ledger's balances; the national platform closes the month; the statements.
async fn ledger(c: &mut Callers) -> anyhow::Result<()> {
    // The ledger posts from the settlement topic; wait until all four are in.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let balances = loop {
        let b = c
            .ledger
            .get_balances(GetBalancesRequest::default())
            .await?
            .into_inner();
        if b.entry_count >= 4 || tokio::time::Instant::now() > deadline {
            break b;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "\nLedger balances ({} journal entries):",
        balances.entry_count
    );
    for b in &balances.balances {
        println!("  {:<40}{:>14}", b.account, b.balance);
    }
    println!("  {:<40}{:>14}", "sum of all accounts", balances.total);
    anyhow::ensure!(
        balances.entry_count >= 4,
        "the ledger did not receive all four settlements within 60 s"
    );

    // The national platform closes the month; each province reads its statement.
    let now = time::OffsetDateTime::now_utc() + time::Duration::hours(8);
    let period = format!("{:04}-{:02}", now.year(), u8::from(now.month()));
    c.ledger
        .close_clearing_period(CloseClearingPeriodRequest {
            request_id: "demo-close".into(),
            period: period.clone(),
        })
        .await?;
    for province in ["370000", "110000"] {
        let s = c
            .ledger
            .get_statement(GetStatementRequest {
                period: period.clone(),
                province: province.into(),
            })
            .await?
            .into_inner();
        println!(
            "\nStatement of {province} for {} ({}), net {}:",
            s.period, s.state, s.net
        );
        for p in &s.pairs {
            println!(
                "  {} owes {}: {} claims, {} reversals; fund {}, serious illness {}, assistance {}, personal account {}; total {}",
                p.insured_province,
                p.treatment_province,
                p.claim_count,
                p.reversal_count,
                p.fund,
                p.serious_illness,
                p.assistance,
                p.personal_account,
                p.total
            );
        }
    }

    Ok(())
}

/// Another province may not read a claim, and the refusal is in the audit trail.
async fn refusal(stack: &Stack, pki: &Path) -> anyhow::Result<()> {
    // Guangdong is neither place of example 1's claim: it may not read it, and the
    // refusal lands in the settlement service's audit trail.
    let mut guangdong =
        SettlementServiceClient::new(as_caller(&stack.settlement, pki, "province-440000").await?);
    let refused = guangdong
        .get_claim(GetClaimRequest {
            treatment_region: fixtures::TREATMENT_REGION.into(),
            claim_id: "DEMO-EX1".into(),
        })
        .await;
    let Err(refused) = refused else {
        anyhow::bail!("another province read the claim");
    };
    println!(
        "\nGuangdong asks for example 1's claim: {:?} ({})",
        refused.code(),
        refused.message()
    );
    let mut audit = AuditServiceClient::new(as_caller(&stack.settlement, pki, "national").await?);
    // The trail is written in batches off the request path: give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let trail = audit
        .list_audit_records(ListAuditRecordsRequest {
            page_size: 8,
            ..Default::default()
        })
        .await?
        .into_inner();
    println!("Settlement's audit trail, newest first, as the national platform reads it:");
    for r in &trail.records {
        println!(
            "  {}  {:<18} {:<60} {:<18} {}",
            r.at, r.caller, r.method, r.outcome, r.subject
        );
    }
    Ok(())
}
