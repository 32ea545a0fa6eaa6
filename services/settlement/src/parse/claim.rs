//! A claim as received, checked field by field into the domain's claim.

use clearinghouse_domain::{
    dates::parse_date,
    identity::{ClaimId, PersonId},
    money::parse_decimal,
    region::Region,
    settlement::{Claim, HospitalLevel, Line, Visit},
};
use clearinghouse_platform::error::FieldViolations;
use clearinghouse_proto::settlement::v1 as pb;
use rust_decimal::Decimal;
use time::Date;
use tonic::Status;

use super::{MAX_LINES, code_ok};

const MAX_QUANTITY: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);
const MAX_UNIT_PRICE: Decimal = Decimal::from_parts(100_000_000, 0, 0, false, 0);

/// A claim after validation.
#[derive(Debug, Clone)]
pub struct ParsedClaim {
    pub claim_id: ClaimId,
    pub person_id: PersonId,
    pub insured_region: Region,
    pub treatment_region: Region,
    pub claim: Claim,
    /// Family mutual aid: the employee (same insured region) whose account pays, when not
    /// the patient.
    pub account_holder: Option<PersonId>,
}

pub fn claim(c: Option<&pb::Claim>, today: Date) -> Result<ParsedClaim, Status> {
    let mut v = FieldViolations::new();
    let Some(c) = c else {
        v.add("claim", "is required");
        return v.finish_with(None);
    };
    let claim_id = v.check("claim.claim_id", ClaimId::parse(&c.claim_id));
    let person_id = v.check("claim.person_id", PersonId::parse(&c.person_id));
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
    let level = hospital_level(&mut v, c.hospital.as_ref());
    let visit = visit(&mut v, c.visit.as_ref(), today);
    let account_holder = account_holder(&mut v, c);
    let lines = lines(&mut v, &c.lines);
    let ids = claim_id.zip(person_id);
    let parsed = ids
        .zip(insured_region.zip(treatment_region))
        .zip(level.zip(visit));
    let (((claim_id, person_id), (insured_region, treatment_region)), (level, visit)) =
        v.finish_with(parsed)?;
    Ok(ParsedClaim {
        claim_id,
        person_id,
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

fn hospital_level(
    v: &mut FieldViolations,
    hospital: Option<&pb::Hospital>,
) -> Option<HospitalLevel> {
    let Some(h) = hospital else {
        v.add("claim.hospital", "is required");
        return None;
    };
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

/// A date of the visit: parsed, and not after tomorrow (China time zones aside, a bill is
/// never settled ahead of its visit).
fn visit_date(v: &mut FieldViolations, field: &str, text: &str, today: Date) -> Option<Date> {
    let date = v.check(field, parse_date(text));
    if date.is_some_and(|d| d > today + time::Duration::days(1)) {
        v.add(field, "must not lie in the future");
    }
    date
}

fn visit(v: &mut FieldViolations, visit: Option<&pb::claim::Visit>, today: Date) -> Option<Visit> {
    match visit {
        None => {
            v.add(
                "claim.visit",
                "is required: inpatient, chronic_outpatient or general_outpatient",
            );
            None
        }
        Some(pb::claim::Visit::GeneralOutpatient(o)) => {
            let field = "claim.general_outpatient.service_date";
            visit_date(v, field, &o.service_date, today)
                .map(|service_date| Visit::GeneralOutpatient { service_date })
        }
        Some(pb::claim::Visit::Inpatient(i)) => {
            let admission = v.check(
                "claim.inpatient.admission_date",
                parse_date(&i.admission_date),
            );
            let field = "claim.inpatient.discharge_date";
            let discharge = visit_date(v, field, &i.discharge_date, today);
            match (admission, discharge) {
                (Some(a), Some(d)) if d < a => {
                    v.add(field, "must not be before the admission date");
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
            let field = "claim.chronic_outpatient.service_date";
            visit_date(v, field, &o.service_date, today).map(|service_date| {
                Visit::ChronicOutpatient {
                    disease: o.disease_code.clone(),
                    service_date,
                }
            })
        }
    }
}

/// Family mutual aid: whose account pays when not the patient's own.
fn account_holder(v: &mut FieldViolations, c: &pb::Claim) -> Option<PersonId> {
    let holder = &c.personal_account_holder;
    if holder.is_empty() || *holder == c.person_id {
        return None;
    }
    if !c.use_personal_account {
        v.add(
            "claim.personal_account_holder",
            "names whose account pays: set use_personal_account too",
        );
    }
    v.check("claim.personal_account_holder", PersonId::parse(holder))
}

fn lines(v: &mut FieldViolations, lines: &[pb::ClaimLine]) -> Vec<Line> {
    if lines.is_empty() || lines.len() > MAX_LINES {
        v.add("claim.lines", "must hold 1 to 1000 lines");
    }
    let mut parsed = Vec::with_capacity(lines.len().min(MAX_LINES));
    for (i, l) in lines.iter().take(MAX_LINES).enumerate() {
        if !code_ok(&l.item_code) {
            v.add(
                format!("claim.lines[{i}].item_code"),
                "must be 1 to 40 printable characters",
            );
        }
        let field = format!("claim.lines[{i}].quantity");
        let quantity = v.check(&field, parse_decimal(&l.quantity, 4));
        if quantity.is_some_and(|q| q.is_zero()) {
            v.add(field.clone(), "must be positive");
        }
        // Bounds far above any real bill keep every sum of 1,000 lines inside Decimal.
        if quantity.is_some_and(|q| q > MAX_QUANTITY) {
            v.add(field, "must be at most 1000000");
        }
        let field = format!("claim.lines[{i}].unit_price");
        let unit_price = v.check(&field, parse_decimal(&l.unit_price, 4));
        if unit_price.is_some_and(|p| p > MAX_UNIT_PRICE) {
            v.add(field, "must be at most 100000000");
        }
        if let (Some(quantity), Some(unit_price)) = (quantity, unit_price) {
            parsed.push(Line {
                item_code: l.item_code.clone(),
                quantity,
                unit_price,
            });
        }
    }
    parsed
}

#[cfg(test)]
mod robustness {
    //! Whatever a caller sends, validation answers with a value or `INVALID_ARGUMENT`
    //! naming fields: never a panic, never `INTERNAL`, and an accepted claim can always be
    //! computed without overflowing.

    use super::*;
    use crate::parse::policy as parse_policy;
    use clearinghouse_domain::settlement::{ByLevel, CatalogueItem, CategoryDeltas, Scheme};
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
                && let Err(status) = parse_policy(Some(&policy))
            {
                prop_assert_eq!(status.code(), tonic::Code::InvalidArgument);
            }
        }
    }
}
