//! The worked examples of the foundation and settlement issues, as contract messages.

use clearinghouse_proto::{
    filing::v1::{Filing, FilingCategory, Person, Scheme},
    settlement::v1::{
        AssistanceRule, CatalogueClass, CatalogueItem, CategoryDeltas, ChronicOutpatient, Claim,
        ClaimLine, DiseaseRule, Hospital, Inpatient, LevelAmounts, Policy, SeriousIllness,
        SeriousIllnessBand, VisitType, claim,
    },
};
use time::{Date, Duration};

/// Shandong (insured place) and Beijing (treatment place) in every example.
pub const INSURED_REGION: &str = "370100";
pub const TREATMENT_REGION: &str = "110000";

fn levels(a: &str, b: &str, c: &str) -> Option<LevelAmounts> {
    Some(LevelAmounts {
        level1: a.into(),
        level2: b.into(),
        level3: c.into(),
    })
}

fn deltas() -> Option<CategoryDeltas> {
    Some(CategoryDeltas {
        referral: "0.05".into(),
        emergency: "0.05".into(),
        other_temporary: "0.15".into(),
    })
}

pub fn date(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// Today in China, the date every service reasons in.
pub fn today() -> Date {
    clearinghouse_domain::dates::Clock::system().today()
}

/// Days before today (China), so every example lies inside this year's back-dating windows.
pub fn days_ago(days: i64) -> String {
    date(today() - Duration::days(days))
}

/// The service date of the examples: ten days ago.
fn anchor() -> Date {
    today() - Duration::days(10)
}

/// `days` before the anchor, but never in the year before it: admissions of one example
/// must fall in one calendar year whatever day the tests run.
fn before_anchor_same_year(days: i64) -> Date {
    let a = anchor();
    let first = Date::from_ordinal_date(a.year(), 1).unwrap_or(a);
    (a - Duration::days(days)).max(first)
}

/// The `EMPLOYEE` inpatient policy of the foundation issue, in force since 1 January of
/// last year. `full` adds the settlement issue's serious illness and assistance.
pub fn inpatient_policy(insured_region: &str, full: bool) -> Policy {
    let year = today().year() - 1;
    Policy {
        insured_region: insured_region.into(),
        scheme: Scheme::Employee as i32,
        visit_type: VisitType::Inpatient as i32,
        effective_from: format!("{year}-01-01"),
        version: 0,
        deductible_by_level: levels("300", "600", "1000"),
        later_admission_deductible_by_level: levels("150", "300", "500"),
        ratio_by_level: levels("0.90", "0.85", "0.80"),
        retiree_bonus: "0.05".into(),
        category_deltas: deltas(),
        unfiled_allowed: false,
        unfiled_delta: String::new(),
        annual_cap: "450000".into(),
        annual_deductible: String::new(),
        diseases: vec![],
        serious_illness: full.then(serious_illness),
        assistance: if full { assistance() } else { vec![] },
    }
}

fn serious_illness() -> SeriousIllness {
    let band = |lo: &str, hi: &str, r: &str| SeriousIllnessBand {
        lower: lo.into(),
        upper: hi.into(),
        ratio: r.into(),
    };
    SeriousIllness {
        bands: vec![
            band("15000", "50000", "0.60"),
            band("50000", "100000", "0.70"),
            band("100000", "", "0.80"),
        ],
        annual_cap: "400000".into(),
    }
}

fn assistance() -> Vec<AssistanceRule> {
    vec![AssistanceRule {
        category: "LOW_INCOME".into(),
        ratio: "0.70".into(),
        annual_cap: "50000".into(),
    }]
}

/// The general-outpatient policy of the general-outpatient issue (the Qiannan plan), for
/// `scheme`: annual deductible 150, ratios 70/60/50 %, retirees +5 points, Δ as inpatient,
/// annual cap 2,000, assistance `LOW_INCOME` 0.70 up to 50,000; no serious illness.
pub fn general_outpatient_policy(insured_region: &str, scheme: Scheme) -> Policy {
    Policy {
        scheme: scheme as i32,
        visit_type: VisitType::GeneralOutpatient as i32,
        deductible_by_level: None,
        later_admission_deductible_by_level: None,
        ratio_by_level: levels("0.70", "0.60", "0.50"),
        annual_cap: "2000".into(),
        annual_deductible: "150".into(),
        serious_illness: None,
        assistance: assistance(),
        ..inpatient_policy(insured_region, false)
    }
}

/// A general-outpatient visit at a hospital of `level`, ten days ago.
pub fn general_claim(claim_id: &str, person_id: &str, level: i32, lines: Vec<ClaimLine>) -> Claim {
    let visit = clearinghouse_proto::settlement::v1::GeneralOutpatient {
        service_date: date(anchor()),
    };
    claim(
        claim_id,
        person_id,
        level,
        claim::Visit::GeneralOutpatient(visit),
        lines,
    )
}

/// Example 4's earlier visit: 100.00 in scope at a level-2 hospital, all of it deductible.
pub fn example4_earlier(claim_id: &str, person_id: &str) -> Claim {
    general_claim(claim_id, person_id, 2, vec![line("D001", "8", "12.50")])
}

/// Example 4: a retired employee at a level-2 hospital, 100.00 of the deductible met.
pub fn example4(claim_id: &str, person_id: &str) -> Claim {
    general_claim(
        claim_id,
        person_id,
        2,
        vec![
            line("D001", "6", "12.50"),
            line("D002", "2", "55.00"),
            line("C001", "1", "30.00"),
        ],
    )
}

/// Example 5: a child at a level-1 hospital, paid from `holder`'s linked account.
pub fn example5(claim_id: &str, child: &str, holder: &str) -> Claim {
    Claim {
        use_personal_account: true,
        personal_account_holder: holder.into(),
        ..general_claim(
            claim_id,
            child,
            1,
            vec![
                line("D001", "20", "12.50"),
                line("D003", "3", "41.6667"),
                line("S002", "1", "900.00"),
            ],
        )
    }
}

/// The chronic-outpatient policy of the settlement issue (hypertension).
pub fn chronic_policy(insured_region: &str) -> Policy {
    Policy {
        visit_type: VisitType::ChronicOutpatient as i32,
        deductible_by_level: None,
        later_admission_deductible_by_level: None,
        ratio_by_level: levels("0.80", "0.75", "0.70"),
        annual_cap: String::new(),
        diseases: chronic_diseases(),
        ..inpatient_policy(insured_region, true)
    }
}

/// The five nationally settled chronic diseases (门诊慢特病) as sample data; hypertension
/// carries the settlement issue's figures.
pub fn chronic_diseases() -> Vec<DiseaseRule> {
    let rule = |code: &str, deductible: &str, cap: &str| DiseaseRule {
        disease_code: code.into(),
        annual_deductible: deductible.into(),
        annual_cap: cap.into(),
    };
    vec![
        rule("HYPERTENSION", "200", "3000"),
        rule("DIABETES", "200", "4000"),
        rule("MALIGNANT_TUMOUR_RADIO_CHEMOTHERAPY", "0", "100000"),
        rule("UREMIA_DIALYSIS", "0", "80000"),
        rule("ORGAN_TRANSPLANT_ANTI_REJECTION", "0", "60000"),
    ]
}

/// The treatment place's catalogue of the worked examples.
pub fn catalogue_items() -> Vec<CatalogueItem> {
    let item = |code: &str, class: CatalogueClass, ratio: &str, ceiling: &str| CatalogueItem {
        item_code: code.into(),
        name: format!("item {code}"),
        class: class as i32,
        self_pay_ratio: ratio.into(),
        price_ceiling: ceiling.into(),
    };
    vec![
        item("D001", CatalogueClass::A, "", ""),
        item("D002", CatalogueClass::B, "0.10", "50.00"),
        item("S001", CatalogueClass::A, "", "40000.00"),
        item("S002", CatalogueClass::A, "", "800.00"),
        item("S003", CatalogueClass::A, "", ""),
        item("C001", CatalogueClass::C, "", ""),
        item("D003", CatalogueClass::B, "0.20", ""),
    ]
}

/// The catalogue's effective date: 1 January of last year.
pub fn catalogue_effective_from() -> String {
    format!("{}-01-01", today().year() - 1)
}

pub fn person(person_id: &str, id_number: &str, retired: bool, assistance: &str) -> Person {
    Person {
        person_id: person_id.into(),
        id_number: id_number.into(),
        name: "张三".into(),
        insured_region: INSURED_REGION.into(),
        scheme: Scheme::Employee as i32,
        retired,
        assistance_category: assistance.into(),
    }
}

/// Builds a valid 18-character id number from a 17-digit body.
pub fn id_number(body17: &str) -> String {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = body17
        .bytes()
        .zip(WEIGHTS)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    let check = b"10X98765432"[(sum % 11) as usize] as char;
    format!("{body17}{check}")
}

/// A filing to Beijing starting 60 days ago: long-term (open-ended) or temporary.
pub fn filing(person_id: &str, category: FilingCategory) -> Filing {
    let long_term = matches!(
        category,
        FilingCategory::ResettledRetiree
            | FilingCategory::LongTermResident
            | FilingCategory::PostedWorker
    );
    Filing {
        person_id: person_id.into(),
        insured_region: INSURED_REGION.into(),
        treatment_region: TREATMENT_REGION.into(),
        category: category as i32,
        start_date: days_ago(60),
        residence_proof: long_term,
        proof_reference: if long_term {
            "pledge-2026-001".into()
        } else {
            String::new()
        },
        ..Filing::default()
    }
}

fn line(code: &str, quantity: &str, price: &str) -> ClaimLine {
    ClaimLine {
        item_code: code.into(),
        quantity: quantity.into(),
        unit_price: price.into(),
    }
}

/// A claim to Beijing by the insured place's person, at a hospital of `level`.
fn claim(
    claim_id: &str,
    person_id: &str,
    level: i32,
    visit: claim::Visit,
    lines: Vec<ClaimLine>,
) -> Claim {
    Claim {
        claim_id: claim_id.into(),
        person_id: person_id.into(),
        insured_region: INSURED_REGION.into(),
        treatment_region: TREATMENT_REGION.into(),
        hospital: Some(Hospital {
            code: format!("H11000{level}"),
            level,
        }),
        visit: Some(visit),
        emergency: false,
        use_personal_account: false,
        lines,
        personal_account_holder: String::new(),
    }
}

fn inpatient_claim(
    claim_id: &str,
    person_id: &str,
    level: i32,
    discharged_before_anchor: i64,
    lines: Vec<ClaimLine>,
) -> Claim {
    let discharge = before_anchor_same_year(discharged_before_anchor);
    let stay = Inpatient {
        admission_date: date(discharge - Duration::days(3)),
        discharge_date: date(discharge),
    };
    claim(
        claim_id,
        person_id,
        level,
        claim::Visit::Inpatient(stay),
        lines,
    )
}

/// Example 1: level-3 hospital, first admission, `REFERRAL` filing.
pub fn example1(claim_id: &str, person_id: &str) -> Claim {
    inpatient_claim(
        claim_id,
        person_id,
        3,
        0,
        vec![
            line("D001", "10", "12.50"),
            line("D002", "4", "60.00"),
            line("S001", "1", "35000.00"),
            line("C001", "2", "150.00"),
        ],
    )
}

/// Example 2a: a retired person's first admission, level 1.
pub fn example2a(claim_id: &str, person_id: &str) -> Claim {
    inpatient_claim(
        claim_id,
        person_id,
        1,
        5,
        vec![line("S003", "1", "234300.00")],
    )
}

/// Example 2b: the same person's second admission, level 2.
pub fn example2b(claim_id: &str, person_id: &str) -> Claim {
    inpatient_claim(
        claim_id,
        person_id,
        2,
        0,
        vec![
            line("S001", "1", "42000.00"),
            line("D003", "30", "88.80"),
            line("D001", "120", "15.00"),
            line("C001", "1", "999.99"),
        ],
    )
}

/// A chronic-outpatient visit for `disease` at a level-1 hospital, ten days ago.
pub fn chronic_claim(
    claim_id: &str,
    person_id: &str,
    disease: &str,
    use_personal_account: bool,
    lines: Vec<ClaimLine>,
) -> Claim {
    let visit = ChronicOutpatient {
        disease_code: disease.into(),
        service_date: date(anchor()),
    };
    Claim {
        use_personal_account,
        ..claim(
            claim_id,
            person_id,
            1,
            claim::Visit::ChronicOutpatient(visit),
            lines,
        )
    }
}

/// Example 3's earlier hypertension visit: 120.00 in scope, all of it deductible.
pub fn example3_earlier(claim_id: &str, person_id: &str) -> Claim {
    chronic_claim(
        claim_id,
        person_id,
        "HYPERTENSION",
        false,
        vec![line("D001", "1", "120.00")],
    )
}

/// Example 3: hypertension, personal account used.
pub fn example3(claim_id: &str, person_id: &str) -> Claim {
    chronic_claim(
        claim_id,
        person_id,
        "HYPERTENSION",
        true,
        vec![
            line("D002", "3", "45.5000"),
            line("D003", "2.5", "33.3333"),
            line("C001", "1", "20.00"),
        ],
    )
}

/// A claim line.
pub fn claim_line(code: &str, quantity: &str, price: &str) -> ClaimLine {
    line(code, quantity, price)
}

/// A small inpatient claim for streams of settlements.
pub fn small_claim(claim_id: &str, person_id: &str) -> Claim {
    inpatient_claim(
        claim_id,
        person_id,
        3,
        0,
        vec![line("D001", "10", "12.50"), line("S003", "1", "2000.00")],
    )
}
