//! Validation at the edge: contract messages into domain values, naming every bad field.

use std::collections::BTreeMap;

use clearinghouse_domain::{
    dates::parse_date,
    identity::person_id_is_valid,
    money::parse_decimal,
    region::Region,
    settlement::{
        AssistanceRule, Band, ByLevel, CatalogueClass, CatalogueItem, CategoryDeltas, Claim,
        DiseaseRule, HospitalLevel, Line, Policy, Scheme, SeriousIllness, Visit, VisitType,
    },
};
use clearinghouse_platform::error::FieldViolations;
use clearinghouse_proto::{
    convert::{class_from_proto, scheme_from_proto, visit_type_from_proto},
    settlement::v1 as pb,
};
use rust_decimal::Decimal;
use time::Date;
use tonic::Status;

/// At most this many lines per claim and items per catalogue message.
pub const MAX_LINES: usize = 1000;
const MAX_CODE: usize = 40;
const MAX_QUANTITY: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);
const MAX_UNIT_PRICE: Decimal = Decimal::from_parts(100_000_000, 0, 0, false, 0);

fn inconsistent() -> Status {
    Status::internal("validation inconsistency")
}

fn code_ok(code: &str) -> bool {
    (1..=MAX_CODE).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_graphic())
}

fn amount(v: &mut FieldViolations, field: &str, text: &str) -> Decimal {
    v.check(field, parse_decimal(text, 2)).unwrap_or_default()
}

fn ratio(v: &mut FieldViolations, field: &str, text: &str) -> Decimal {
    match parse_decimal(text, 4) {
        Ok(r) if r <= Decimal::ONE => r,
        Ok(_) => {
            v.add(field, "must lie between 0 and 1");
            Decimal::ZERO
        }
        Err(e) => {
            v.add(field, e.to_string());
            Decimal::ZERO
        }
    }
}

fn by_level(
    v: &mut FieldViolations,
    field: &str,
    levels: Option<&pb::LevelAmounts>,
    each: fn(&mut FieldViolations, &str, &str) -> Decimal,
) -> Option<ByLevel> {
    let l = levels?;
    Some(ByLevel([
        each(v, &format!("{field}.level1"), &l.level1),
        each(v, &format!("{field}.level2"), &l.level2),
        each(v, &format!("{field}.level3"), &l.level3),
    ]))
}

/// A policy's key: whose, for which scheme and visit type, from when.
pub struct PolicyKey {
    pub insured_region: Region,
    pub scheme: Scheme,
    pub visit_type: VisitType,
    pub effective_from: Date,
}

pub fn policy(p: Option<&pb::Policy>) -> Result<(PolicyKey, Policy), Status> {
    let mut v = FieldViolations::new();
    let Some(p) = p else {
        v.add("policy", "is required");
        return Err(v.finish().err().unwrap_or_else(inconsistent));
    };
    let insured_region = v.check("policy.insured_region", Region::parse(&p.insured_region));
    let scheme = scheme_from_proto(p.scheme);
    if scheme.is_none() {
        v.add("policy.scheme", "must be EMPLOYEE or RESIDENT");
    }
    let visit_type = visit_type_from_proto(p.visit_type);
    if visit_type.is_none() {
        v.add(
            "policy.visit_type",
            "must be INPATIENT, CHRONIC_OUTPATIENT or GENERAL_OUTPATIENT",
        );
    }
    let effective_from = v.check("policy.effective_from", parse_date(&p.effective_from));
    let deductible = by_level(
        &mut v,
        "policy.deductible_by_level",
        p.deductible_by_level.as_ref(),
        amount,
    );
    if deductible.is_none() && visit_type == Some(VisitType::Inpatient) {
        v.add(
            "policy.deductible_by_level",
            "is required for inpatient policies",
        );
    }
    let later = by_level(
        &mut v,
        "policy.later_admission_deductible_by_level",
        p.later_admission_deductible_by_level.as_ref(),
        amount,
    );
    let ratios = by_level(
        &mut v,
        "policy.ratio_by_level",
        p.ratio_by_level.as_ref(),
        ratio,
    );
    if ratios.is_none() {
        v.add("policy.ratio_by_level", "is required");
    }
    let retiree_bonus = ratio(&mut v, "policy.retiree_bonus", or_zero(&p.retiree_bonus));
    let d = p.category_deltas.clone().unwrap_or_default();
    let deltas = CategoryDeltas {
        referral: ratio(
            &mut v,
            "policy.category_deltas.referral",
            or_zero(&d.referral),
        ),
        emergency: ratio(
            &mut v,
            "policy.category_deltas.emergency",
            or_zero(&d.emergency),
        ),
        other_temporary: ratio(
            &mut v,
            "policy.category_deltas.other_temporary",
            or_zero(&d.other_temporary),
        ),
    };
    let unfiled_delta = p
        .unfiled_allowed
        .then(|| ratio(&mut v, "policy.unfiled_delta", or_zero(&p.unfiled_delta)));
    let annual_cap = amount(&mut v, "policy.annual_cap", or_zero(&p.annual_cap));
    let annual_deductible = amount(
        &mut v,
        "policy.annual_deductible",
        or_zero(&p.annual_deductible),
    );
    let mut diseases = BTreeMap::new();
    for (i, d) in p.diseases.iter().enumerate() {
        let field = format!("policy.diseases[{i}]");
        if !code_ok(&d.disease_code) {
            v.add(
                format!("{field}.disease_code"),
                "must be 1 to 40 printable characters",
            );
        }
        let rule = DiseaseRule {
            annual_deductible: amount(
                &mut v,
                &format!("{field}.annual_deductible"),
                or_zero(&d.annual_deductible),
            ),
            annual_cap: amount(&mut v, &format!("{field}.annual_cap"), &d.annual_cap),
        };
        if diseases.insert(d.disease_code.clone(), rule).is_some() {
            v.add(format!("{field}.disease_code"), "is listed twice");
        }
    }
    if visit_type == Some(VisitType::ChronicOutpatient) && diseases.is_empty() {
        v.add(
            "policy.diseases",
            "a chronic-outpatient policy needs at least one disease",
        );
    }
    let serious_illness = p
        .serious_illness
        .as_ref()
        .filter(|s| !s.bands.is_empty())
        .map(|s| SeriousIllness {
            bands: s
                .bands
                .iter()
                .enumerate()
                .map(|(i, b)| Band {
                    lower: amount(
                        &mut v,
                        &format!("policy.serious_illness.bands[{i}].lower"),
                        &b.lower,
                    ),
                    upper: (!b.upper.is_empty()).then(|| {
                        amount(
                            &mut v,
                            &format!("policy.serious_illness.bands[{i}].upper"),
                            &b.upper,
                        )
                    }),
                    ratio: ratio(
                        &mut v,
                        &format!("policy.serious_illness.bands[{i}].ratio"),
                        &b.ratio,
                    ),
                })
                .collect(),
            annual_cap: amount(&mut v, "policy.serious_illness.annual_cap", &s.annual_cap),
        });
    let mut assistance = BTreeMap::new();
    for (i, a) in p.assistance.iter().enumerate() {
        let field = format!("policy.assistance[{i}]");
        if !code_ok(&a.category) {
            v.add(
                format!("{field}.category"),
                "must be 1 to 40 printable characters",
            );
        }
        let rule = AssistanceRule {
            ratio: ratio(&mut v, &format!("{field}.ratio"), &a.ratio),
            annual_cap: amount(&mut v, &format!("{field}.annual_cap"), &a.annual_cap),
        };
        if assistance.insert(a.category.clone(), rule).is_some() {
            v.add(format!("{field}.category"), "is listed twice");
        }
    }
    if p.diseases.len() > 100 || p.assistance.len() > 100 {
        v.add(
            "policy",
            "at most 100 diseases and 100 assistance categories",
        );
    }
    let domain = Policy {
        deductible_by_level: deductible.unwrap_or(ByLevel([Decimal::ZERO; 3])),
        later_admission_deductible_by_level: later,
        ratio_by_level: ratios.unwrap_or(ByLevel([Decimal::ZERO; 3])),
        retiree_bonus,
        deltas,
        unfiled_delta,
        annual_cap,
        annual_deductible,
        diseases,
        serious_illness,
        assistance,
    };
    if v.is_empty()
        && let Err(e) = domain.validate()
    {
        v.add("policy", e.to_string());
    }
    v.finish()?;
    let (Some(insured_region), Some(scheme), Some(visit_type), Some(effective_from)) =
        (insured_region, scheme, visit_type, effective_from)
    else {
        return Err(inconsistent());
    };
    Ok((
        PolicyKey {
            insured_region,
            scheme,
            visit_type,
            effective_from,
        },
        domain,
    ))
}

fn or_zero(text: &str) -> &str {
    if text.is_empty() { "0" } else { text }
}

/// A catalogue item as stored.
pub struct ParsedItem {
    pub code: String,
    pub name: String,
    pub item: CatalogueItem,
}

pub fn catalogue_item(
    v: &mut FieldViolations,
    field: &str,
    i: &pb::CatalogueItem,
) -> Option<ParsedItem> {
    let before = v.is_empty();
    if !code_ok(&i.item_code) {
        v.add(
            format!("{field}.item_code"),
            "must be 1 to 40 printable characters",
        );
    }
    if !clearinghouse_platform::error::is_plain_text(&i.name, 200) {
        v.add(format!("{field}.name"), "must be at most 200 bytes");
    }
    let class = class_from_proto(i.class);
    if class.is_none() {
        v.add(format!("{field}.class"), "must be A, B or C");
    }
    let self_pay_ratio = if class == Some(CatalogueClass::B) {
        ratio(
            v,
            &format!("{field}.self_pay_ratio"),
            or_zero(&i.self_pay_ratio),
        )
    } else {
        Decimal::ZERO
    };
    let price_ceiling = (!i.price_ceiling.is_empty())
        .then(|| {
            v.check(
                &format!("{field}.price_ceiling"),
                parse_decimal(&i.price_ceiling, 4),
            )
        })
        .flatten();
    if before && !v.is_empty() {
        return None;
    }
    Some(ParsedItem {
        code: i.item_code.clone(),
        name: i.name.clone(),
        item: CatalogueItem {
            class: class?,
            self_pay_ratio,
            price_ceiling,
        },
    })
}

/// A claim after validation.
#[derive(Debug, Clone)]
pub struct ParsedClaim {
    pub claim_id: String,
    pub person_id: String,
    pub insured_region: Region,
    pub treatment_region: Region,
    pub claim: Claim,
    /// Family mutual aid: the employee (same insured region) whose account pays, when not
    /// the patient.
    pub account_holder: Option<String>,
}

pub fn claim(c: Option<&pb::Claim>, today: Date) -> Result<ParsedClaim, Status> {
    let mut v = FieldViolations::new();
    let Some(c) = c else {
        v.add("claim", "is required");
        return Err(v.finish().err().unwrap_or_else(inconsistent));
    };
    if !(1..=64).contains(&c.claim_id.len()) || !c.claim_id.bytes().all(|b| b.is_ascii_graphic()) {
        v.add("claim.claim_id", "must be 1 to 64 printable characters");
    }
    if !person_id_is_valid(&c.person_id) {
        v.add("claim.person_id", "must be 1 to 30 printable characters");
    }
    let insured_region = v.check("claim.insured_region", Region::parse(&c.insured_region));
    let treatment_region = v.check("claim.treatment_region", Region::parse(&c.treatment_region));
    if let (Some(i), Some(t)) = (insured_region, treatment_region)
        && i.province() == t.province()
    {
        v.add(
            "claim.treatment_region",
            "must lie outside the insured province",
        );
    }
    let level = match &c.hospital {
        None => {
            v.add("claim.hospital", "is required");
            None
        }
        Some(h) => {
            if !code_ok(&h.code) {
                v.add(
                    "claim.hospital.code",
                    "must be 1 to 40 printable characters",
                );
            }
            let level = HospitalLevel::new(i64::from(h.level));
            if level.is_none() {
                v.add("claim.hospital.level", "must be 1, 2 or 3");
            }
            level
        }
    };
    let latest = today + time::Duration::days(1);
    let not_future = |v: &mut FieldViolations, field: &str, d: Option<Date>| {
        if d.is_some_and(|d| d > latest) {
            v.add(field, "must not lie in the future");
        }
        d
    };
    let visit = match &c.visit {
        None => {
            v.add(
                "claim.visit",
                "is required: inpatient, chronic_outpatient or general_outpatient",
            );
            None
        }
        Some(pb::claim::Visit::GeneralOutpatient(o)) => {
            let date = v.check(
                "claim.general_outpatient.service_date",
                parse_date(&o.service_date),
            );
            not_future(&mut v, "claim.general_outpatient.service_date", date)
                .map(|service_date| Visit::GeneralOutpatient { service_date })
        }
        Some(pb::claim::Visit::Inpatient(i)) => {
            let admission = v.check(
                "claim.inpatient.admission_date",
                parse_date(&i.admission_date),
            );
            let discharge = v.check(
                "claim.inpatient.discharge_date",
                parse_date(&i.discharge_date),
            );
            let discharge = not_future(&mut v, "claim.inpatient.discharge_date", discharge);
            match (admission, discharge) {
                (Some(a), Some(d)) if d < a => {
                    v.add(
                        "claim.inpatient.discharge_date",
                        "must not be before the admission date",
                    );
                    None
                }
                (Some(admission), Some(discharge)) => Some(Visit::Inpatient {
                    admission,
                    discharge,
                }),
                _ => None,
            }
        }
        Some(pb::claim::Visit::ChronicOutpatient(o)) => {
            if !code_ok(&o.disease_code) {
                v.add(
                    "claim.chronic_outpatient.disease_code",
                    "must be 1 to 40 printable characters",
                );
            }
            let date = v.check(
                "claim.chronic_outpatient.service_date",
                parse_date(&o.service_date),
            );
            not_future(&mut v, "claim.chronic_outpatient.service_date", date).map(|service_date| {
                Visit::ChronicOutpatient {
                    disease: o.disease_code.clone(),
                    service_date,
                }
            })
        }
    };
    if c.lines.is_empty() || c.lines.len() > MAX_LINES {
        v.add("claim.lines", "must hold 1 to 1000 lines");
    }
    let account_holder = (!c.personal_account_holder.is_empty()
        && c.personal_account_holder != c.person_id)
        .then(|| c.personal_account_holder.clone());
    if account_holder.is_some() {
        if !person_id_is_valid(&c.personal_account_holder) {
            v.add(
                "claim.personal_account_holder",
                "must be 1 to 30 printable characters",
            );
        }
        if !c.use_personal_account {
            v.add(
                "claim.personal_account_holder",
                "names whose account pays: set use_personal_account too",
            );
        }
    }
    let mut lines = Vec::with_capacity(c.lines.len().min(MAX_LINES));
    for (i, l) in c.lines.iter().take(MAX_LINES).enumerate() {
        if !code_ok(&l.item_code) {
            v.add(
                format!("claim.lines[{i}].item_code"),
                "must be 1 to 40 printable characters",
            );
        }
        let quantity = v.check(
            &format!("claim.lines[{i}].quantity"),
            parse_decimal(&l.quantity, 4),
        );
        if quantity.is_some_and(|q| q.is_zero()) {
            v.add(format!("claim.lines[{i}].quantity"), "must be positive");
        }
        // Bounds far above any real bill keep every sum of 1,000 lines inside Decimal.
        if quantity.is_some_and(|q| q > MAX_QUANTITY) {
            v.add(
                format!("claim.lines[{i}].quantity"),
                "must be at most 1000000",
            );
        }
        let unit_price = v.check(
            &format!("claim.lines[{i}].unit_price"),
            parse_decimal(&l.unit_price, 4),
        );
        if unit_price.is_some_and(|p| p > MAX_UNIT_PRICE) {
            v.add(
                format!("claim.lines[{i}].unit_price"),
                "must be at most 100000000",
            );
        }
        if let (Some(quantity), Some(unit_price)) = (quantity, unit_price) {
            lines.push(Line {
                item_code: l.item_code.clone(),
                quantity,
                unit_price,
            });
        }
    }
    v.finish()?;
    let (Some(insured_region), Some(treatment_region), Some(level), Some(visit)) =
        (insured_region, treatment_region, level, visit)
    else {
        return Err(inconsistent());
    };
    Ok(ParsedClaim {
        claim_id: c.claim_id.clone(),
        person_id: c.person_id.clone(),
        insured_region,
        treatment_region,
        claim: Claim {
            visit,
            level,
            emergency: c.emergency,
            use_personal_account: c.use_personal_account,
            lines,
        },
        account_holder,
    })
}

#[cfg(test)]
mod robustness {
    //! Whatever a caller sends, validation answers with a value or `INVALID_ARGUMENT`
    //! naming fields: never a panic, never `INTERNAL`, and an accepted claim can always be
    //! computed without overflowing.

    use super::*;
    use clearinghouse_domain::settlement::{Category, Coverage, Person, YearToDate};
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[0-9]{1,20}(\\.[0-9]{0,6})?",
            "-?[0-9]{0,3}\\.?[0-9]{0,3}e?[0-9]?",
            "[0-9]{6}",
            "20[0-9]{2}-[01][0-9]-[0-3][0-9]",
            ".{0,50}",
            Just("99999999999999999999999999999".to_string()),
            Just("100000000".to_string()),
            Just("1000000".to_string()),
        ]
    }

    fn arb_claim() -> impl Strategy<Value = pb::Claim> {
        let line =
            (text(), text(), text()).prop_map(|(item_code, quantity, unit_price)| pb::ClaimLine {
                item_code,
                quantity,
                unit_price,
            });
        let visit = prop_oneof![
            Just(None),
            (text(), text()).prop_map(|(a, d)| Some(pb::claim::Visit::Inpatient(pb::Inpatient {
                admission_date: a,
                discharge_date: d
            }))),
            (text(), text()).prop_map(|(c, d)| Some(pb::claim::Visit::ChronicOutpatient(
                pb::ChronicOutpatient {
                    disease_code: c,
                    service_date: d
                }
            ))),
        ];
        (
            text(),
            text(),
            text(),
            text(),
            proptest::option::of((text(), any::<i32>())),
            visit,
            any::<bool>(),
            prop::collection::vec(line, 0..8),
        )
            .prop_map(
                |(
                    claim_id,
                    person_id,
                    insured_region,
                    treatment_region,
                    hospital,
                    visit,
                    emergency,
                    lines,
                )| pb::Claim {
                    claim_id,
                    person_id,
                    insured_region,
                    treatment_region,
                    hospital: hospital.map(|(code, level)| pb::Hospital { code, level }),
                    visit,
                    emergency,
                    use_personal_account: emergency,
                    lines,
                    personal_account_holder: String::new(),
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn claims_validate_without_panic(message in arb_claim()) {
            let today = time::macros::date!(2026 - 11 - 22);
            match super::claim(Some(&message), today) {
                Err(status) => prop_assert_eq!(status.code(), tonic::Code::InvalidArgument, "{}", status.message()),
                Ok(parsed) => {
                    // Whatever was accepted computes without overflow under any sane policy.
                    let policy = clearinghouse_domain::settlement::Policy {
                        deductible_by_level: ByLevel([Decimal::ZERO; 3]),
                        later_admission_deductible_by_level: None,
                        ratio_by_level: ByLevel([Decimal::ONE; 3]),
                        retiree_bonus: Decimal::ZERO,
                        deltas: CategoryDeltas { referral: Decimal::ZERO, emergency: Decimal::ZERO, other_temporary: Decimal::ZERO },
                        unfiled_delta: None,
                        annual_cap: Decimal::from(10_000_000_000_000i64),
                        annual_deductible: Decimal::ZERO,
                        diseases: Default::default(),
                        serious_illness: None,
                        assistance: Default::default(),
                    };
                    let person = Person { scheme: Scheme::Employee, retired: false, assistance_category: None };
                    let catalogue: std::collections::HashMap<String, CatalogueItem> = Default::default();
                    let ytd = YearToDate::default();
                    let ctx = clearinghouse_domain::settlement::Context {
                        policy: &policy,
                        person: &person,
                        coverage: Coverage::Filed(Category::PostedWorker),
                        year_to_date: &ytd,
                        personal_account_balance: Decimal::ZERO,
                    };
                    let _ = clearinghouse_domain::settlement::compute(&parsed.claim, &catalogue, &ctx);
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            use prost::Message;
            if let Ok(message) = pb::Claim::decode(bytes.as_slice()) {
                let result = super::claim(Some(&message), time::macros::date!(2026 - 11 - 22));
                if let Err(status) = result {
                    prop_assert_eq!(status.code(), tonic::Code::InvalidArgument);
                }
            }
            if let Ok(policy) = pb::Policy::decode(bytes.as_slice())
                && let Err(status) = super::policy(Some(&policy))
            {
                prop_assert_eq!(status.code(), tonic::Code::InvalidArgument);
            }
        }
    }
}
