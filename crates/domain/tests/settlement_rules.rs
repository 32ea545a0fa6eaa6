//! DESIGN.md section 5, rule by rule: the worked examples of the issues, a table of every
//! branch, and property tests of the invariants.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::collections::{BTreeMap, HashMap};

use clearinghouse_domain::settlement::*;
use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use time::macros::date;

fn item(class: CatalogueClass, self_pay: Decimal, ceiling: Option<Decimal>) -> CatalogueItem {
    CatalogueItem {
        class,
        self_pay_ratio: self_pay,
        price_ceiling: ceiling,
    }
}

/// The treatment place's catalogue of the worked examples.
fn catalogue() -> HashMap<String, CatalogueItem> {
    use CatalogueClass::*;
    [
        ("D001", item(A, dec!(0), None)),
        ("D002", item(B, dec!(0.10), Some(dec!(50.00)))),
        ("S001", item(A, dec!(0), Some(dec!(40000.00)))),
        ("S002", item(A, dec!(0), Some(dec!(800.00)))),
        ("S003", item(A, dec!(0), None)),
        ("C001", item(C, dec!(0), None)),
        ("D003", item(B, dec!(0.20), None)),
    ]
    .into_iter()
    .map(|(code, item)| (code.to_string(), item))
    .collect()
}

fn deltas() -> CategoryDeltas {
    CategoryDeltas {
        referral: dec!(0.05),
        emergency: dec!(0.05),
        other_temporary: dec!(0.15),
    }
}

fn serious_illness() -> SeriousIllness {
    SeriousIllness {
        bands: vec![
            Band {
                lower: dec!(15000),
                upper: Some(dec!(50000)),
                ratio: dec!(0.60),
            },
            Band {
                lower: dec!(50000),
                upper: Some(dec!(100000)),
                ratio: dec!(0.70),
            },
            Band {
                lower: dec!(100000),
                upper: None,
                ratio: dec!(0.80),
            },
        ],
        annual_cap: dec!(400000),
    }
}

fn assistance() -> BTreeMap<String, AssistanceRule> {
    BTreeMap::from([(
        "LOW_INCOME".to_string(),
        AssistanceRule {
            ratio: dec!(0.70),
            annual_cap: dec!(50000),
        },
    )])
}

/// The `EMPLOYEE` inpatient policy of the foundation issue (no serious illness).
fn inpatient_policy() -> Policy {
    Policy {
        deductible_by_level: ByLevel([dec!(300), dec!(600), dec!(1000)]),
        later_admission_deductible_by_level: Some(ByLevel([dec!(150), dec!(300), dec!(500)])),
        ratio_by_level: ByLevel([dec!(0.90), dec!(0.85), dec!(0.80)]),
        retiree_bonus: dec!(0.05),
        deltas: deltas(),
        unfiled_delta: None,
        annual_cap: dec!(450000),
        annual_deductible: dec!(0),
        diseases: BTreeMap::new(),
        serious_illness: None,
        assistance: BTreeMap::new(),
    }
}

/// The same policy with the settlement issue's serious illness and assistance.
fn full_inpatient_policy() -> Policy {
    Policy {
        serious_illness: Some(serious_illness()),
        assistance: assistance(),
        ..inpatient_policy()
    }
}

fn chronic_policy() -> Policy {
    Policy {
        deductible_by_level: ByLevel([dec!(0); 3]),
        later_admission_deductible_by_level: None,
        ratio_by_level: ByLevel([dec!(0.80), dec!(0.75), dec!(0.70)]),
        retiree_bonus: dec!(0.05),
        deltas: deltas(),
        unfiled_delta: None,
        annual_cap: dec!(0),
        annual_deductible: dec!(0),
        diseases: BTreeMap::from([(
            "HYPERTENSION".to_string(),
            DiseaseRule {
                annual_deductible: dec!(200),
                annual_cap: dec!(3000),
            },
        )]),
        serious_illness: Some(serious_illness()),
        assistance: assistance(),
    }
}

fn person(retired: bool, assistance: Option<&str>) -> Person {
    Person {
        scheme: Scheme::Employee,
        retired,
        assistance_category: assistance.map(String::from),
    }
}

fn line(code: &str, quantity: Decimal, price: Decimal) -> Line {
    Line {
        item_code: code.into(),
        quantity,
        unit_price: price,
    }
}

fn inpatient(level: i64, lines: Vec<Line>) -> Claim {
    Claim {
        visit: Visit::Inpatient {
            admission: date!(2026 - 03 - 01),
            discharge: date!(2026 - 03 - 10),
        },
        level: HospitalLevel::new(level).unwrap(),
        emergency: false,
        use_personal_account: false,
        lines,
    }
}

fn run(
    claim: &Claim,
    policy: &Policy,
    person: &Person,
    category: Category,
    ytd: &YearToDate,
) -> Outcome {
    let ctx = Context {
        policy,
        person,
        coverage: Coverage::Filed(category),
        year_to_date: ytd,
        personal_account_balance: dec!(0),
    };
    compute(claim, &catalogue(), &ctx).unwrap()
}

/// Adds a claim's delta to the year so far, as the settlement store does.
fn accumulate(ytd: &mut YearToDate, d: &AccumulatorDelta) {
    ytd.add_year(d);
    ytd.disease_deductible_met += d.disease_deductible_met;
    ytd.disease_fund_paid += d.disease_fund_paid;
}

fn example1() -> Claim {
    inpatient(
        3,
        vec![
            line("D001", dec!(10), dec!(12.50)),
            line("D002", dec!(4), dec!(60.00)),
            line("S001", dec!(1), dec!(35000.00)),
            line("C001", dec!(2), dec!(150.00)),
        ],
    )
}

#[test]
fn worked_example_1() {
    let out = run(
        &example1(),
        &inpatient_policy(),
        &person(false, None),
        Category::Referral,
        &YearToDate::default(),
    );
    let s = &out.split;
    assert_eq!(s.total, dec!(35665.00));
    assert_eq!(s.full_self_pay, dec!(340.00));
    assert_eq!(s.prior_self_pay, dec!(20.00));
    assert_eq!(s.in_scope, dec!(35305.00));
    assert_eq!(s.deductible, dec!(1000.00));
    assert_eq!(s.ratio, dec!(0.75));
    assert_eq!(s.fund, dec!(25728.75));
    assert_eq!(s.cash, dec!(9936.25));
    // With the full policy, the burden stays below the serious-illness threshold.
    let full = run(
        &example1(),
        &full_inpatient_policy(),
        &person(false, None),
        Category::Referral,
        &YearToDate::default(),
    );
    assert_eq!(full.split.serious_illness, dec!(0));
    assert_eq!(full.split.cash, dec!(9936.25));
}

fn example2b() -> Claim {
    inpatient(
        2,
        vec![
            line("S001", dec!(1), dec!(42000.00)),
            line("D003", dec!(30), dec!(88.80)),
            line("D001", dec!(120), dec!(15.00)),
            line("C001", dec!(1), dec!(999.99)),
        ],
    )
}

#[test]
fn worked_example_2_without_serious_illness() {
    let retired = person(true, None);
    let mut ytd = YearToDate::default();
    let a = run(
        &inpatient(1, vec![line("S003", dec!(1), dec!(234300.00))]),
        &inpatient_policy(),
        &retired,
        Category::ResettledRetiree,
        &ytd,
    );
    assert_eq!(
        (
            a.split.deductible,
            a.split.ratio,
            a.split.fund,
            a.split.cash
        ),
        (dec!(300.00), dec!(0.95), dec!(222300.00), dec!(12000.00))
    );
    accumulate(&mut ytd, &a.delta);
    let b = run(
        &example2b(),
        &inpatient_policy(),
        &retired,
        Category::ResettledRetiree,
        &ytd,
    );
    let s = &b.split;
    assert_eq!(s.total, dec!(47463.99));
    assert_eq!(s.full_self_pay, dec!(2999.99));
    assert_eq!(s.prior_self_pay, dec!(532.80));
    assert_eq!(s.in_scope, dec!(43931.20));
    assert_eq!(s.deductible, dec!(300.00));
    assert_eq!(s.ratio, dec!(0.90));
    assert_eq!(s.fund, dec!(39268.08));
    assert_eq!(s.cash, dec!(8195.91));
}

#[test]
fn worked_example_2_with_serious_illness() {
    let retired = person(true, None);
    let mut ytd = YearToDate::default();
    let a = run(
        &inpatient(1, vec![line("S003", dec!(1), dec!(234300.00))]),
        &full_inpatient_policy(),
        &retired,
        Category::LongTermResident,
        &ytd,
    );
    assert_eq!(a.delta.serious_illness_base, dec!(12000.00));
    assert_eq!(a.split.serious_illness, dec!(0));
    accumulate(&mut ytd, &a.delta);
    let b = run(
        &example2b(),
        &full_inpatient_policy(),
        &retired,
        Category::LongTermResident,
        &ytd,
    );
    assert_eq!(b.delta.serious_illness_base, dec!(4663.12));
    assert_eq!(b.split.serious_illness, dec!(997.87));
    assert_eq!(b.split.cash, dec!(7198.04));
}

#[test]
fn worked_example_3_chronic_outpatient() {
    let policy = chronic_policy();
    let someone = person(false, Some("LOW_INCOME"));
    let visit = |lines| Claim {
        visit: Visit::ChronicOutpatient {
            disease: "HYPERTENSION".into(),
            service_date: date!(2026 - 05 - 02),
        },
        level: HospitalLevel::new(1).unwrap(),
        emergency: false,
        use_personal_account: true,
        lines,
    };
    // An earlier visit whose in-scope amount (120.00) all goes to the deductible.
    let mut ytd = YearToDate::default();
    fn ctx<'a>(
        policy: &'a Policy,
        person: &'a Person,
        ytd: &'a YearToDate,
        balance: Decimal,
    ) -> Context<'a> {
        Context {
            policy,
            person,
            coverage: Coverage::Filed(Category::OtherTemporary),
            year_to_date: ytd,
            personal_account_balance: balance,
        }
    }
    let earlier = compute(
        &visit(vec![line("D001", dec!(1), dec!(120.00))]),
        &catalogue(),
        &ctx(&policy, &someone, &ytd, dec!(0)),
    )
    .unwrap();
    assert_eq!(earlier.split.deductible, dec!(120.00));
    assert_eq!(earlier.split.fund, dec!(0));
    accumulate(&mut ytd, &earlier.delta);
    assert_eq!(ytd.disease_deductible_met, dec!(120.00));

    let out = compute(
        &visit(vec![
            line("D002", dec!(3), dec!(45.5000)),
            line("D003", dec!(2.5), dec!(33.3333)),
            line("C001", dec!(1), dec!(20.00)),
        ]),
        &catalogue(),
        &ctx(&policy, &someone, &ytd, dec!(100.00)),
    )
    .unwrap();
    let s = &out.split;
    assert_eq!(s.total, dec!(239.83));
    assert_eq!(s.full_self_pay, dec!(20.00));
    assert_eq!(s.prior_self_pay, dec!(30.32));
    assert_eq!(s.in_scope, dec!(189.51));
    assert_eq!(s.deductible, dec!(80.00));
    assert_eq!(s.ratio, dec!(0.65));
    assert_eq!(s.fund, dec!(71.18));
    assert_eq!(s.serious_illness, dec!(0.00));
    assert_eq!(s.assistance, dec!(82.83));
    assert_eq!(s.personal_account, dec!(65.82));
    assert_eq!(s.cash, dec!(20.00));
    assert_eq!(dec!(100.00) - out.delta.personal_account_debit, dec!(34.18));
}

/// (name, catalogue item, quantity, unit price, [amount, full self-pay, prior self-pay, in scope], reason)
type LineCase = (
    &'static str,
    Option<CatalogueItem>,
    Decimal,
    Decimal,
    [Decimal; 4],
    LineReason,
);

#[test]
fn step1_each_line_branch() {
    use CatalogueClass::*;
    use LineReason::*;
    let cases: Vec<LineCase> = vec![
        (
            "absent",
            None,
            dec!(2),
            dec!(10.005),
            [dec!(20.01), dec!(20.01), dec!(0), dec!(0)],
            NotInCatalogue,
        ),
        (
            "class C",
            Some(item(C, dec!(0), None)),
            dec!(1),
            dec!(99.99),
            [dec!(99.99), dec!(99.99), dec!(0), dec!(0)],
            ClassC,
        ),
        (
            "class A",
            Some(item(A, dec!(0), None)),
            dec!(3),
            dec!(1.1111),
            [dec!(3.33), dec!(0), dec!(0), dec!(3.33)],
            InScope,
        ),
        (
            "class A at ceiling",
            Some(item(A, dec!(0), Some(dec!(5)))),
            dec!(2),
            dec!(5),
            [dec!(10), dec!(0), dec!(0), dec!(10)],
            InScope,
        ),
        (
            "class A over ceiling",
            Some(item(A, dec!(0), Some(dec!(5)))),
            dec!(3),
            dec!(5.5555),
            [dec!(16.67), dec!(1.67), dec!(0), dec!(15.00)],
            OverCeiling,
        ),
        (
            "class B",
            Some(item(B, dec!(0.15), None)),
            dec!(1),
            dec!(33.33),
            [dec!(33.33), dec!(0), dec!(5.00), dec!(28.33)],
            ClassBShare,
        ),
        (
            "class B over ceiling",
            Some(item(B, dec!(0.10), Some(dec!(50)))),
            dec!(4),
            dec!(60),
            [dec!(240), dec!(40), dec!(20), dec!(180)],
            OverCeilingAndClassBShare,
        ),
        (
            "class B zero share",
            Some(item(B, dec!(0), None)),
            dec!(1),
            dec!(7),
            [dec!(7), dec!(0), dec!(0), dec!(7)],
            InScope,
        ),
        (
            // The proto's rule: a class B share that rounds to 0.00 is labelled in scope.
            "class B share rounding to 0.00",
            Some(item(B, dec!(0.10), None)),
            dec!(1),
            dec!(0.04),
            [dec!(0.04), dec!(0), dec!(0), dec!(0.04)],
            InScope,
        ),
    ];
    for (name, it, qty, price, [amount, fsp, prior, in_scope], reason) in cases {
        let r = price_line(&line("X", qty, price), it.as_ref());
        assert_eq!(
            (
                r.amount,
                r.full_self_pay,
                r.prior_self_pay,
                r.in_scope,
                r.reason
            ),
            (amount, fsp, prior, in_scope, reason),
            "{name}"
        );
        assert_eq!(
            r.amount,
            r.full_self_pay + r.prior_self_pay + r.in_scope,
            "{name}"
        );
    }
}

#[test]
fn step2_category_resolution() {
    let mut policy = inpatient_policy();
    use Category::*;
    assert_eq!(
        resolve_coverage(&[OtherTemporary, Referral], false, &policy),
        Ok(Coverage::Filed(Referral))
    );
    assert_eq!(
        resolve_coverage(&[OtherTemporary, LongTermResident], false, &policy),
        Ok(Coverage::Filed(LongTermResident))
    );
    assert_eq!(
        resolve_coverage(&[OtherTemporary], true, &policy),
        Ok(Coverage::Filed(OtherTemporary))
    );
    assert_eq!(
        resolve_coverage(&[], true, &policy),
        Ok(Coverage::Filed(Emergency))
    );
    assert_eq!(
        resolve_coverage(&[], false, &policy),
        Err(RuleError::NotFiled)
    );
    policy.unfiled_delta = Some(dec!(0.20));
    assert_eq!(resolve_coverage(&[], false, &policy), Ok(Coverage::Unfiled));
    // Unfiled settlement takes its own reduction.
    let ytd = YearToDate::default();
    let someone = person(false, None);
    let ctx = Context {
        policy: &policy,
        person: &someone,
        coverage: Coverage::Unfiled,
        year_to_date: &ytd,
        personal_account_balance: dec!(0),
    };
    let out = compute(
        &inpatient(1, vec![line("S003", dec!(1), dec!(1300))]),
        &catalogue(),
        &ctx,
    )
    .unwrap();
    assert_eq!(out.split.ratio, dec!(0.70));
    assert_eq!(out.split.fund, dec!(700.00));
}

#[test]
fn step3_ratio_by_level_bonus_delta_and_clamp() {
    let claim = |level| inpatient(level, vec![line("S003", dec!(1), dec!(10300))]);
    let ytd = YearToDate::default();
    let cases = [
        (1, false, Category::ResettledRetiree, dec!(0.90)),
        (2, false, Category::PostedWorker, dec!(0.85)),
        (3, false, Category::LongTermResident, dec!(0.80)),
        (3, true, Category::LongTermResident, dec!(0.85)),
        (3, false, Category::Referral, dec!(0.75)),
        (3, false, Category::Emergency, dec!(0.75)),
        (3, false, Category::OtherTemporary, dec!(0.65)),
        (1, true, Category::OtherTemporary, dec!(0.80)),
    ];
    for (level, retired, category, ratio) in cases {
        let out = run(
            &claim(level),
            &inpatient_policy(),
            &person(retired, None),
            category,
            &ytd,
        );
        assert_eq!(
            out.split.ratio, ratio,
            "level {level} retired {retired} {category:?}"
        );
    }
    let mut high = inpatient_policy();
    high.ratio_by_level = ByLevel([dec!(1), dec!(1), dec!(1)]);
    assert_eq!(
        run(
            &claim(1),
            &high,
            &person(true, None),
            Category::PostedWorker,
            &ytd
        )
        .split
        .ratio,
        dec!(1)
    );
    let mut low = inpatient_policy();
    low.ratio_by_level = ByLevel([dec!(0.10), dec!(0.10), dec!(0.10)]);
    low.deltas.other_temporary = dec!(0.20);
    let out = run(
        &claim(1),
        &low,
        &person(false, None),
        Category::OtherTemporary,
        &ytd,
    );
    assert_eq!((out.split.ratio, out.split.fund), (dec!(0), dec!(0)));
}

#[test]
fn step3_deductibles_first_and_later_admissions() {
    let claim = |level| inpatient(level, vec![line("S003", dec!(1), dec!(5000))]);
    let first = YearToDate::default();
    let later = YearToDate {
        inpatient_admissions: 2,
        ..YearToDate::default()
    };
    for (level, ytd, deductible) in [
        (1, &first, dec!(300)),
        (2, &first, dec!(600)),
        (3, &first, dec!(1000)),
        (1, &later, dec!(150)),
        (2, &later, dec!(300)),
        (3, &later, dec!(500)),
    ] {
        let out = run(
            &claim(level),
            &inpatient_policy(),
            &person(false, None),
            Category::PostedWorker,
            ytd,
        );
        assert_eq!(out.split.deductible, deductible, "level {level}");
        assert_eq!(out.delta.inpatient_admissions, 1);
    }
    // Without a later-admission schedule the first-admission deductible applies again.
    let mut policy = inpatient_policy();
    policy.later_admission_deductible_by_level = None;
    assert_eq!(
        run(
            &claim(3),
            &policy,
            &person(false, None),
            Category::PostedWorker,
            &later
        )
        .split
        .deductible,
        dec!(1000)
    );
    // The deductible never exceeds the in-scope amount.
    let small = inpatient(
        3,
        vec![
            line("S003", dec!(1), dec!(400)),
            line("C001", dec!(1), dec!(50)),
        ],
    );
    let out = run(
        &small,
        &inpatient_policy(),
        &person(false, None),
        Category::PostedWorker,
        &first,
    );
    assert_eq!(
        (out.split.deductible, out.split.fund, out.split.cash),
        (dec!(400), dec!(0), dec!(450))
    );
}

#[test]
fn step3_annual_cap_reached_mid_claim() {
    let ytd = YearToDate {
        inpatient_fund_paid: dec!(449000),
        inpatient_admissions: 1,
        ..YearToDate::default()
    };
    let out = run(
        &inpatient(1, vec![line("S003", dec!(1), dec!(10150))]),
        &inpatient_policy(),
        &person(false, None),
        Category::PostedWorker,
        &ytd,
    );
    assert_eq!(out.split.fund, dec!(1000));
    let spent = YearToDate {
        inpatient_fund_paid: dec!(460000),
        ..ytd
    };
    assert_eq!(
        run(
            &inpatient(1, vec![line("S003", dec!(1), dec!(10150))]),
            &inpatient_policy(),
            &person(false, None),
            Category::PostedWorker,
            &spent
        )
        .split
        .fund,
        dec!(0)
    );
}

fn chronic(lines: Vec<Line>, disease: &str) -> Claim {
    Claim {
        visit: Visit::ChronicOutpatient {
            disease: disease.into(),
            service_date: date!(2026 - 05 - 02),
        },
        level: HospitalLevel::new(1).unwrap(),
        emergency: false,
        use_personal_account: false,
        lines,
    }
}

#[test]
fn step3_chronic_deductible_and_disease_cap() {
    let policy = chronic_policy();
    let someone = person(false, None);
    let claim = chronic(vec![line("S003", dec!(1), dec!(500))], "HYPERTENSION");
    for (met, paid, deductible, fund) in [
        (dec!(0), dec!(0), dec!(200), dec!(240.00)),
        (dec!(150), dec!(0), dec!(50), dec!(360.00)),
        (dec!(200), dec!(0), dec!(0), dec!(400.00)),
        (dec!(200), dec!(2900), dec!(0), dec!(100)),
        (dec!(200), dec!(3000), dec!(0), dec!(0)),
    ] {
        let ytd = YearToDate {
            disease_deductible_met: met,
            disease_fund_paid: paid,
            ..YearToDate::default()
        };
        let out = run(&claim, &policy, &someone, Category::PostedWorker, &ytd);
        assert_eq!(
            (out.split.deductible, out.split.fund),
            (deductible, fund),
            "met {met} paid {paid}"
        );
        assert_eq!(out.delta.disease.as_deref(), Some("HYPERTENSION"));
        assert_eq!(out.delta.inpatient_admissions, 0);
    }
    let ctx = Context {
        policy: &policy,
        person: &someone,
        coverage: Coverage::Filed(Category::PostedWorker),
        year_to_date: &YearToDate::default(),
        personal_account_balance: dec!(0),
    };
    assert_eq!(
        compute(
            &chronic(vec![line("S003", dec!(1), dec!(5))], "DIABETES"),
            &catalogue(),
            &ctx
        ),
        Err(RuleError::DiseaseNotCovered("DIABETES".into()))
    );
}

#[test]
fn step4_serious_illness_bands() {
    // Ratio 0 so that the whole in-scope amount is the patient's burden.
    let mut policy = full_inpatient_policy();
    policy.ratio_by_level = ByLevel([dec!(0), dec!(0), dec!(0)]);
    policy.assistance.clear();
    let someone = person(false, None);
    let cases = [
        // (base before, burden, expected payment)
        (dec!(0), dec!(14999.99), dec!(0)),
        (dec!(0), dec!(15000.01), dec!(0.01)),
        (dec!(10000), dec!(10000), dec!(3000)),
        (dec!(20000), dec!(10000), dec!(6000)),
        (dec!(45000), dec!(10000), dec!(3000) + dec!(3500)),
        (
            dec!(10000),
            dec!(100000),
            dec!(21000) + dec!(35000) + dec!(8000),
        ),
        (dec!(200000), dec!(1000), dec!(800)),
    ];
    for (before, burden, expected) in cases {
        let ytd = YearToDate {
            serious_illness_base: before,
            inpatient_admissions: 1,
            ..YearToDate::default()
        };
        // Later-admission deductible 150 at level 1; the line's in-scope amount is burden + 150.
        let claim = inpatient(1, vec![line("S003", dec!(1), burden + dec!(150))]);
        let mut p = policy.clone();
        p.later_admission_deductible_by_level = Some(ByLevel([dec!(0); 3]));
        let claim = Claim {
            lines: vec![line("S003", dec!(1), burden)],
            ..claim
        };
        let out = run(&claim, &p, &someone, Category::PostedWorker, &ytd);
        assert_eq!(
            out.split.serious_illness, expected,
            "before {before} burden {burden}"
        );
        assert_eq!(out.delta.serious_illness_base, burden);
    }
    // The cap binds mid-claim.
    let ytd = YearToDate {
        serious_illness_paid: dec!(399000),
        serious_illness_base: dec!(500000),
        inpatient_admissions: 1,
        ..YearToDate::default()
    };
    let mut p = policy.clone();
    p.later_admission_deductible_by_level = Some(ByLevel([dec!(0); 3]));
    let out = run(
        &inpatient(1, vec![line("S003", dec!(1), dec!(10000))]),
        &p,
        &someone,
        Category::PostedWorker,
        &ytd,
    );
    assert_eq!(out.split.serious_illness, dec!(1000));
}

#[test]
fn step5_assistance_ratio_and_cap() {
    let policy = full_inpatient_policy();
    let poor = person(false, Some("LOW_INCOME"));
    let claim = inpatient(1, vec![line("S003", dec!(1), dec!(1300))]);
    // fund = 1000 × 0.9 = 900; burden 400; assistance 280.
    let out = run(
        &claim,
        &policy,
        &poor,
        Category::PostedWorker,
        &YearToDate::default(),
    );
    assert_eq!(
        (out.split.fund, out.split.assistance, out.split.cash),
        (dec!(900), dec!(280.00), dec!(120.00))
    );
    let near_cap = YearToDate {
        assistance_paid: dec!(49900),
        ..YearToDate::default()
    };
    assert_eq!(
        run(&claim, &policy, &poor, Category::PostedWorker, &near_cap)
            .split
            .assistance,
        dec!(100)
    );
    // A category without a rule gets nothing.
    assert_eq!(
        run(
            &claim,
            &policy,
            &person(false, Some("ORPHAN")),
            Category::PostedWorker,
            &YearToDate::default()
        )
        .split
        .assistance,
        dec!(0)
    );
}

#[test]
fn step6_personal_account_shorter_or_longer_than_the_bill() {
    let policy = inpatient_policy();
    let someone = person(false, None);
    let mut claim = inpatient(
        1,
        vec![
            line("S003", dec!(1), dec!(1300)),
            line("C001", dec!(1), dec!(50)),
        ],
    );
    claim.use_personal_account = true;
    // Payable from the account: 1350 − 900 − 50 (full self-pay) = 400.
    for (balance, expected) in [
        (dec!(0), dec!(0)),
        (dec!(100), dec!(100)),
        (dec!(400), dec!(400)),
        (dec!(5000), dec!(400)),
    ] {
        let ytd = YearToDate::default();
        let ctx = Context {
            policy: &policy,
            person: &someone,
            coverage: Coverage::Filed(Category::PostedWorker),
            year_to_date: &ytd,
            personal_account_balance: balance,
        };
        let out = compute(&claim, &catalogue(), &ctx).unwrap();
        assert_eq!(out.split.personal_account, expected, "balance {balance}");
        assert_eq!(out.split.cash, dec!(1350) - dec!(900) - expected);
        assert_eq!(out.delta.personal_account_debit, expected);
    }
    claim.use_personal_account = false;
    let ytd = YearToDate::default();
    let ctx = Context {
        policy: &policy,
        person: &someone,
        coverage: Coverage::Filed(Category::PostedWorker),
        year_to_date: &ytd,
        personal_account_balance: dec!(5000),
    };
    assert_eq!(
        compute(&claim, &catalogue(), &ctx)
            .unwrap()
            .split
            .personal_account,
        dec!(0)
    );
}

#[test]
fn policy_validation() {
    assert_eq!(full_inpatient_policy().validate(), Ok(()));
    let mut bad = full_inpatient_policy();
    bad.ratio_by_level.0[1] = dec!(1.2);
    assert!(bad.validate().is_err());
    let mut bands = full_inpatient_policy();
    bands.serious_illness.as_mut().unwrap().bands.swap(0, 1);
    assert_eq!(bands.validate(), Err(PolicyError::BandsOutOfOrder));
}

fn arb_line() -> impl Strategy<Value = Line> {
    (
        prop::sample::select(vec!["D001", "D002", "S001", "S003", "C001", "D003", "ZZZ"]),
        1i64..100_000,
        0i64..100_000_000,
    )
        .prop_map(|(code, q, p)| line(code, Decimal::new(q, 4), Decimal::new(p, 4)))
}

fn money(max_fen: i64) -> impl Strategy<Value = Decimal> {
    (0..max_fen).prop_map(|f| Decimal::new(f, 2))
}

fn unit() -> impl Strategy<Value = Decimal> {
    (0i64..=10_000).prop_map(|r| Decimal::new(r, 4))
}

/// Random but valid inpatient policies: any deductibles, ratios, Δ, caps and bands.
fn arb_policy() -> impl Strategy<Value = Policy> {
    (
        prop::array::uniform3(money(300_000)),
        prop::option::of(prop::array::uniform3(money(300_000))),
        prop::array::uniform3(unit()),
        (unit(), unit(), unit(), unit()),
        money(100_000_000),
        prop::option::of((
            prop::collection::vec((money(5_000_000), unit()), 1..5),
            money(50_000_000),
        )),
        prop::option::of((unit(), money(10_000_000))),
    )
        .prop_map(
            |(
                deductible,
                later,
                ratios,
                (bonus, referral, emergency, other),
                cap,
                bands,
                assistance,
            )| Policy {
                deductible_by_level: ByLevel(deductible),
                later_admission_deductible_by_level: later.map(ByLevel),
                ratio_by_level: ByLevel(ratios),
                retiree_bonus: bonus,
                deltas: CategoryDeltas {
                    referral,
                    emergency,
                    other_temporary: other,
                },
                unfiled_delta: None,
                annual_cap: cap,
                annual_deductible: Decimal::ZERO,
                diseases: BTreeMap::new(),
                serious_illness: bands.map(|(widths, cap)| {
                    // Consecutive bands from a threshold, the last one open.
                    let mut lower = dec!(1000);
                    let n = widths.len();
                    let bands = widths
                        .into_iter()
                        .enumerate()
                        .map(|(i, (width, ratio))| {
                            let upper = (i + 1 < n).then_some(lower + width + dec!(0.01));
                            let band = Band {
                                lower,
                                upper,
                                ratio,
                            };
                            lower = upper.unwrap_or(lower);
                            band
                        })
                        .collect();
                    SeriousIllness {
                        bands,
                        annual_cap: cap,
                    }
                }),
                assistance: assistance
                    .map(|(ratio, cap)| {
                        BTreeMap::from([(
                            "LOW_INCOME".to_string(),
                            AssistanceRule {
                                ratio,
                                annual_cap: cap,
                            },
                        )])
                    })
                    .unwrap_or_default(),
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Every result satisfies the invariants, and nothing exceeds what remains of a cap.
    #[test]
    fn invariants_hold_for_any_claim_and_policy(
        policy in arb_policy(),
        lines in prop::collection::vec(arb_line(), 0..12),
        level in 1i64..=3,
        retired: bool,
        poor: bool,
        use_account: bool,
        balance in 0i64..10_000_000,
        category in prop::sample::select(Category::ALL.to_vec()),
        admissions in 0i32..3,
        fund_paid in 0i64..50_000_000,
        si_base in 0i64..20_000_000,
        si_paid in 0i64..40_000_000,
        assistance_paid in 0i64..5_000_000,
    ) {
        prop_assert!(policy.validate().is_ok());
        let someone = person(retired, poor.then_some("LOW_INCOME"));
        let ytd = YearToDate {
            inpatient_admissions: admissions,
            inpatient_fund_paid: Decimal::new(fund_paid, 2),
            serious_illness_base: Decimal::new(si_base, 2),
            serious_illness_paid: Decimal::new(si_paid, 2),
            assistance_paid: Decimal::new(assistance_paid, 2),
            ..YearToDate::default()
        };
        let mut claim = inpatient(level, lines);
        claim.use_personal_account = use_account;
        let balance = Decimal::new(balance, 2);
        let ctx = Context { policy: &policy, person: &someone, coverage: Coverage::Filed(category), year_to_date: &ytd, personal_account_balance: balance };
        let out = compute(&claim, &catalogue(), &ctx).unwrap();
        let s = &out.split;
        prop_assert!(s.check_invariants().is_ok());
        prop_assert!(ytd.inpatient_fund_paid + s.fund <= policy.annual_cap.max(ytd.inpatient_fund_paid));
        prop_assert!(s.fund == Decimal::ZERO || ytd.inpatient_fund_paid + s.fund <= policy.annual_cap);
        if let Some(si) = &policy.serious_illness {
            prop_assert!(s.serious_illness == Decimal::ZERO || ytd.serious_illness_paid + s.serious_illness <= si.annual_cap);
        }
        if let Some(rule) = policy.assistance.get("LOW_INCOME") {
            prop_assert!(s.assistance == Decimal::ZERO || ytd.assistance_paid + s.assistance <= rule.annual_cap);
        }
        prop_assert!(s.ratio >= Decimal::ZERO && s.ratio <= Decimal::ONE);
        prop_assert!(s.personal_account <= balance);
        prop_assert_eq!(s.total, out.lines.iter().map(|l| l.amount).sum::<Decimal>());
        prop_assert_eq!(s.in_scope, out.lines.iter().map(|l| l.in_scope).sum::<Decimal>());
        prop_assert_eq!(s.fund.scale().max(2), 2);
    }
}

/// Subtracts a claim's delta, as a reversal does.
fn give_back(ytd: &mut YearToDate, d: &AccumulatorDelta) {
    ytd.inpatient_admissions -= d.inpatient_admissions;
    ytd.inpatient_fund_paid -= d.inpatient_fund_paid;
    ytd.general_deductible_met -= d.general_deductible_met;
    ytd.general_fund_paid -= d.general_fund_paid;
    ytd.disease_deductible_met -= d.disease_deductible_met;
    ytd.disease_fund_paid -= d.disease_fund_paid;
    ytd.serious_illness_base -= d.serious_illness_base;
    ytd.serious_illness_paid -= d.serious_illness_paid;
    ytd.assistance_paid -= d.assistance_paid;
}

/// Settles `claims` in order against one person's year, as the store does.
fn settle_all(
    claims: &[Claim],
    policy: &Policy,
    someone: &Person,
    balance: Decimal,
) -> (YearToDate, Decimal, Vec<Outcome>) {
    let mut ytd = YearToDate::default();
    let mut balance = balance;
    let mut outcomes = Vec::new();
    for claim in claims {
        let ctx = Context {
            policy,
            person: someone,
            coverage: Coverage::Filed(Category::Referral),
            year_to_date: &ytd,
            personal_account_balance: balance,
        };
        let out = compute(claim, &catalogue(), &ctx).unwrap();
        accumulate(&mut ytd, &out.delta);
        balance -= out.delta.personal_account_debit;
        outcomes.push(out);
    }
    (ytd, balance, outcomes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Settling N claims and reversing a subset leaves exactly what the rest took; when the
    /// reversed claims are the last ones, the state is that of settling only the others.
    #[test]
    fn reversal_gives_back_exactly_what_was_taken(
        claims in prop::collection::vec((prop::collection::vec(arb_line(), 1..6), 1i64..=3, any::<bool>()), 1..12),
        reversed in prop::collection::vec(any::<bool>(), 12),
        keep in 0usize..12,
        retired: bool,
    ) {
        let policy = full_inpatient_policy();
        let someone = person(retired, Some("LOW_INCOME"));
        let claims: Vec<Claim> = claims
            .into_iter()
            .map(|(lines, level, account)| Claim { use_personal_account: account, ..inpatient(level, lines) })
            .collect();
        let opening = dec!(5000);
        let (mut ytd, mut balance, outcomes) = settle_all(&claims, &policy, &someone, opening);
        for (out, reverse) in outcomes.iter().zip(&reversed) {
            if *reverse {
                give_back(&mut ytd, &out.delta);
                balance += out.delta.personal_account_debit;
            }
        }
        let mut expected = YearToDate::default();
        let mut debits = Decimal::ZERO;
        for (out, reverse) in outcomes.iter().zip(&reversed) {
            if !*reverse {
                accumulate(&mut expected, &out.delta);
                debits += out.delta.personal_account_debit;
            }
        }
        prop_assert_eq!(&ytd, &expected);
        prop_assert_eq!(balance, opening - debits);

        // Reversing a suffix is the same as never having settled it.
        let keep = keep.min(claims.len());
        let (mut suffix_ytd, mut suffix_balance, full) = settle_all(&claims, &policy, &someone, opening);
        for out in &full[keep..] {
            give_back(&mut suffix_ytd, &out.delta);
            suffix_balance += out.delta.personal_account_debit;
        }
        let (prefix_ytd, prefix_balance, _) = settle_all(&claims[..keep], &policy, &someone, opening);
        prop_assert_eq!(suffix_ytd, prefix_ytd);
        prop_assert_eq!(suffix_balance, prefix_balance);
    }
}

/// The `EMPLOYEE` `GENERAL_OUTPATIENT` policy of the general-outpatient issue (the Qiannan
/// plan): annual deductible 150, ratios 70/60/50 %, retirees +5 points, annual cap 2,000.
fn general_policy() -> Policy {
    Policy {
        deductible_by_level: ByLevel([dec!(0); 3]),
        later_admission_deductible_by_level: None,
        ratio_by_level: ByLevel([dec!(0.70), dec!(0.60), dec!(0.50)]),
        retiree_bonus: dec!(0.05),
        deltas: deltas(),
        unfiled_delta: None,
        annual_cap: dec!(2000),
        annual_deductible: dec!(150),
        diseases: BTreeMap::new(),
        // A serious-illness rule in the policy pays nothing on general outpatient.
        serious_illness: Some(serious_illness()),
        assistance: assistance(),
    }
}

fn general(level: i64, lines: Vec<Line>) -> Claim {
    Claim {
        visit: Visit::GeneralOutpatient {
            service_date: date!(2026 - 10 - 12),
        },
        level: HospitalLevel::new(level).unwrap(),
        emergency: false,
        use_personal_account: false,
        lines,
    }
}

#[test]
fn worked_example_4_general_outpatient_retiree_with_part_of_the_deductible_met() {
    let ytd = YearToDate {
        general_deductible_met: dec!(100.00),
        ..YearToDate::default()
    };
    let claim = general(
        2,
        vec![
            line("D001", dec!(6), dec!(12.50)),
            line("D002", dec!(2), dec!(55.00)),
            line("C001", dec!(1), dec!(30.00)),
        ],
    );
    let out = run(
        &claim,
        &general_policy(),
        &person(true, None),
        Category::LongTermResident,
        &ytd,
    );
    let s = &out.split;
    assert_eq!(
        (s.total, s.full_self_pay, s.prior_self_pay, s.in_scope),
        (dec!(215.00), dec!(40.00), dec!(10.00), dec!(165.00))
    );
    assert_eq!((s.deductible, s.ratio), (dec!(50.00), dec!(0.65)));
    assert_eq!(
        (s.fund, s.serious_illness, s.cash),
        (dec!(74.75), dec!(0), dec!(140.25))
    );
    assert_eq!(out.delta.general_deductible_met, dec!(50.00));
    assert_eq!(out.delta.general_fund_paid, dec!(74.75));
    // Nothing of it touches the inpatient cap or the serious-illness base.
    assert_eq!(out.delta.inpatient_fund_paid, dec!(0));
    assert_eq!(out.delta.inpatient_admissions, 0);
    assert_eq!(out.delta.serious_illness_base, dec!(0));
}

#[test]
fn worked_example_5_a_child_paid_from_a_parents_account() {
    let child = Person {
        scheme: Scheme::Resident,
        retired: false,
        assistance_category: None,
    };
    let mut claim = general(
        1,
        vec![
            line("D001", dec!(20), dec!(12.50)),
            line("D003", dec!(3), dec!(41.6667)),
            line("S002", dec!(1), dec!(900.00)),
        ],
    );
    claim.use_personal_account = true;
    let policy = general_policy();
    let ctx = Context {
        policy: &policy,
        person: &child,
        coverage: Coverage::Filed(Category::OtherTemporary),
        year_to_date: &YearToDate::default(),
        // The parent's balance: the holder's account pays.
        personal_account_balance: dec!(80.00),
    };
    let out = compute(&claim, &catalogue(), &ctx).unwrap();
    let s = &out.split;
    assert_eq!(
        (s.total, s.full_self_pay, s.prior_self_pay, s.in_scope),
        (dec!(1275.00), dec!(100.00), dec!(25.00), dec!(1150.00))
    );
    assert_eq!(
        (s.deductible, s.ratio, s.fund),
        (dec!(150.00), dec!(0.55), dec!(550.00))
    );
    assert_eq!((s.personal_account, s.cash), (dec!(80.00), dec!(645.00)));
    assert_eq!(out.delta.personal_account_debit, dec!(80.00));
}

#[test]
fn general_outpatient_table() {
    let claim = |level, amount: Decimal| general(level, vec![line("D001", dec!(1), amount)]);
    // (case, level, amount, retired, category, deductible met, fund paid, assistance,
    //  expected deductible, ratio, fund, assistance)
    let cases = [
        (
            "first visit, deductible in full",
            1,
            dec!(1000),
            false,
            Category::LongTermResident,
            dec!(0),
            dec!(0),
            None,
            dec!(150),
            dec!(0.70),
            dec!(595.00),
            dec!(0),
        ),
        (
            "deductible partly met",
            1,
            dec!(1000),
            false,
            Category::LongTermResident,
            dec!(120),
            dec!(0),
            None,
            dec!(30),
            dec!(0.70),
            dec!(679.00),
            dec!(0),
        ),
        (
            "deductible met",
            2,
            dec!(100),
            false,
            Category::LongTermResident,
            dec!(150),
            dec!(0),
            None,
            dec!(0),
            dec!(0.60),
            dec!(60.00),
            dec!(0),
        ),
        (
            "bill under the deductible",
            3,
            dec!(80),
            false,
            Category::LongTermResident,
            dec!(0),
            dec!(0),
            None,
            dec!(80),
            dec!(0.50),
            dec!(0),
            dec!(0),
        ),
        (
            "retiree bonus",
            3,
            dec!(300),
            true,
            Category::PostedWorker,
            dec!(150),
            dec!(0),
            None,
            dec!(0),
            dec!(0.55),
            dec!(165.00),
            dec!(0),
        ),
        (
            "referral",
            1,
            dec!(300),
            false,
            Category::Referral,
            dec!(150),
            dec!(0),
            None,
            dec!(0),
            dec!(0.65),
            dec!(195.00),
            dec!(0),
        ),
        (
            "emergency",
            1,
            dec!(300),
            false,
            Category::Emergency,
            dec!(150),
            dec!(0),
            None,
            dec!(0),
            dec!(0.65),
            dec!(195.00),
            dec!(0),
        ),
        (
            "other temporary",
            1,
            dec!(300),
            false,
            Category::OtherTemporary,
            dec!(150),
            dec!(0),
            None,
            dec!(0),
            dec!(0.55),
            dec!(165.00),
            dec!(0),
        ),
        (
            "cap reached mid-claim",
            1,
            dec!(1000),
            false,
            Category::LongTermResident,
            dec!(150),
            dec!(1800),
            None,
            dec!(0),
            dec!(0.70),
            dec!(200.00),
            dec!(0),
        ),
        (
            "cap already reached",
            1,
            dec!(1000),
            false,
            Category::LongTermResident,
            dec!(150),
            dec!(2000),
            None,
            dec!(0),
            dec!(0.70),
            dec!(0),
            dec!(0),
        ),
        (
            "assistance on what is left",
            1,
            dec!(1000),
            false,
            Category::LongTermResident,
            dec!(150),
            dec!(0),
            Some("LOW_INCOME"),
            dec!(0),
            dec!(0.70),
            dec!(700.00),
            dec!(210.00),
        ),
    ];
    for (
        name,
        level,
        amount,
        retired,
        category,
        met,
        paid,
        assisted,
        deductible,
        ratio,
        fund,
        assistance,
    ) in cases
    {
        let ytd = YearToDate {
            general_deductible_met: met,
            general_fund_paid: paid,
            // The inpatient cap is exhausted: general outpatient has its own.
            inpatient_fund_paid: dec!(450000),
            serious_illness_base: dec!(90000),
            ..YearToDate::default()
        };
        let out = run(
            &claim(level, amount),
            &general_policy(),
            &person(retired, assisted),
            category,
            &ytd,
        );
        let s = &out.split;
        assert_eq!(
            (
                s.deductible,
                s.ratio,
                s.fund,
                s.serious_illness,
                s.assistance
            ),
            (deductible, ratio, fund, dec!(0), assistance),
            "{name}"
        );
        assert_eq!(out.delta.general_fund_paid, fund, "{name}");
        assert_eq!(out.delta.assistance_paid, assistance, "{name}");
        assert_eq!(out.delta.serious_illness_base, dec!(0), "{name}");
    }
}

#[test]
fn a_holders_balance_shorter_than_the_share_pays_what_it_holds() {
    let mut claim = general(1, vec![line("D001", dec!(1), dec!(500))]);
    claim.use_personal_account = true;
    let policy = general_policy();
    for (balance, paid) in [
        (dec!(30.00), dec!(30.00)),
        (dec!(0), dec!(0)),
        (dec!(1000), dec!(255.00)),
    ] {
        let ctx = Context {
            policy: &policy,
            person: &person(false, None),
            coverage: Coverage::Filed(Category::LongTermResident),
            year_to_date: &YearToDate::default(),
            personal_account_balance: balance,
        };
        let out = compute(&claim, &catalogue(), &ctx).unwrap();
        // 500 in scope, deductible 150, fund 245; the patient's share is 255.
        assert_eq!(out.split.fund, dec!(245.00));
        assert_eq!(out.split.personal_account, paid, "balance {balance}");
        assert_eq!(out.split.cash, dec!(255.00) - paid);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A household of four drawing on one holder's account (家庭共济) with general-outpatient
    /// claims: the balance never goes below zero; no one passes the general-outpatient cap;
    /// after reversing any subset each person's year and the holder's balance are exactly
    /// what the remaining claims took; reversing the last claims is never having settled them.
    #[test]
    fn a_household_on_one_account_reverses_to_exactly_the_rest(
        claims in prop::collection::vec(
            (0usize..4, prop::collection::vec(arb_line(), 1..5), 1i64..=3, any::<bool>()),
            1..16,
        ),
        reversed in prop::collection::vec(any::<bool>(), 16),
        keep in 0usize..16,
        opening in 0i64..200_000,
    ) {
        let policy = general_policy();
        let opening = Decimal::new(opening, 2);
        let claims: Vec<(usize, Claim)> = claims
            .into_iter()
            .map(|(who, lines, level, account)| {
                (who, Claim { use_personal_account: account, ..general(level, lines) })
            })
            .collect();
        let settle = |claims: &[(usize, Claim)]| {
            let mut years = vec![YearToDate::default(); 4];
            let mut balance = opening;
            let mut outcomes = Vec::new();
            for (who, claim) in claims {
                let ctx = Context {
                    policy: &policy,
                    person: &person(*who == 0, None),
                    coverage: Coverage::Filed(Category::OtherTemporary),
                    year_to_date: &years[*who],
                    personal_account_balance: balance,
                };
                let out = compute(claim, &catalogue(), &ctx).unwrap();
                accumulate(&mut years[*who], &out.delta);
                balance -= out.delta.personal_account_debit;
                assert!(balance >= Decimal::ZERO, "the account went below zero");
                assert!(years[*who].general_fund_paid <= policy.annual_cap);
                assert_eq!(out.split.serious_illness, Decimal::ZERO);
                outcomes.push((*who, out));
            }
            (years, balance, outcomes)
        };
        let (mut years, mut balance, outcomes) = settle(&claims);
        for ((who, out), reverse) in outcomes.iter().zip(&reversed) {
            if *reverse {
                give_back(&mut years[*who], &out.delta);
                balance += out.delta.personal_account_debit;
            }
        }
        let mut expected = vec![YearToDate::default(); 4];
        let mut debits = Decimal::ZERO;
        for ((who, out), reverse) in outcomes.iter().zip(&reversed) {
            if !*reverse {
                accumulate(&mut expected[*who], &out.delta);
                debits += out.delta.personal_account_debit;
            }
        }
        prop_assert_eq!(&years, &expected);
        prop_assert_eq!(balance, opening - debits);

        let keep = keep.min(claims.len());
        let (mut suffix_years, mut suffix_balance, full) = settle(&claims);
        for (who, out) in &full[keep..] {
            give_back(&mut suffix_years[*who], &out.delta);
            suffix_balance += out.delta.personal_account_debit;
        }
        let (prefix_years, prefix_balance, _) = settle(&claims[..keep]);
        prop_assert_eq!(suffix_years, prefix_years);
        prop_assert_eq!(suffix_balance, prefix_balance);
    }
}
