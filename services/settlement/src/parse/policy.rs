//! A policy as the insured place puts it, checked field by field into the domain's policy.

use std::collections::BTreeMap;

use clearinghouse_domain::{
    dates::parse_date,
    region::Region,
    settlement::{
        AssistanceRule, Band, ByLevel, CategoryDeltas, DiseaseRule, Policy, Scheme, SeriousIllness,
        VisitType,
    },
};
use clearinghouse_platform::error::FieldViolations;
use clearinghouse_proto::{
    convert::{scheme_from_proto, visit_type_from_proto},
    settlement::v1 as pb,
};
use rust_decimal::Decimal;
use time::Date;
use tonic::Status;

use super::{amount, by_level, code_ok, or_zero, ratio};

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
        return v.finish_with(None);
    };
    let key = policy_key(&mut v, p);
    let visit_type = key.as_ref().map(|k| k.visit_type);
    let domain = policy_rules(&mut v, p, visit_type);
    if v.is_empty()
        && let Err(e) = domain.validate()
    {
        v.add("policy", e.to_string());
    }
    let key = v.finish_with(key)?;
    Ok((key, domain))
}

fn policy_key(v: &mut FieldViolations, p: &pb::Policy) -> Option<PolicyKey> {
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
    Some(PolicyKey {
        insured_region: insured_region?,
        scheme: scheme?,
        visit_type: visit_type?,
        effective_from: effective_from?,
    })
}

/// The policy's rules; a field that does not parse is recorded in `v` and taken as zero.
fn policy_rules(v: &mut FieldViolations, p: &pb::Policy, visit_type: Option<VisitType>) -> Policy {
    let deductible = by_level(
        v,
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
        v,
        "policy.later_admission_deductible_by_level",
        p.later_admission_deductible_by_level.as_ref(),
        amount,
    );
    let ratios = by_level(v, "policy.ratio_by_level", p.ratio_by_level.as_ref(), ratio);
    if ratios.is_none() {
        v.add("policy.ratio_by_level", "is required");
    }
    let diseases = diseases(v, &p.diseases);
    if visit_type == Some(VisitType::ChronicOutpatient) && diseases.is_empty() {
        v.add(
            "policy.diseases",
            "a chronic-outpatient policy needs at least one disease",
        );
    }
    if p.diseases.len() > 100 || p.assistance.len() > 100 {
        v.add(
            "policy",
            "at most 100 diseases and 100 assistance categories",
        );
    }
    Policy {
        deductible_by_level: deductible.unwrap_or(ByLevel([Decimal::ZERO; 3])),
        later_admission_deductible_by_level: later,
        ratio_by_level: ratios.unwrap_or(ByLevel([Decimal::ZERO; 3])),
        retiree_bonus: ratio(v, "policy.retiree_bonus", or_zero(&p.retiree_bonus)),
        deltas: deltas(v, p.category_deltas.clone().unwrap_or_default()),
        unfiled_delta: p
            .unfiled_allowed
            .then(|| ratio(v, "policy.unfiled_delta", or_zero(&p.unfiled_delta))),
        annual_cap: amount(v, "policy.annual_cap", or_zero(&p.annual_cap)),
        annual_deductible: amount(v, "policy.annual_deductible", or_zero(&p.annual_deductible)),
        diseases,
        serious_illness: serious_illness(v, p.serious_illness.as_ref()),
        assistance: assistance(v, &p.assistance),
    }
}

fn deltas(v: &mut FieldViolations, d: pb::CategoryDeltas) -> CategoryDeltas {
    let field = "policy.category_deltas";
    CategoryDeltas {
        referral: ratio(v, &format!("{field}.referral"), or_zero(&d.referral)),
        emergency: ratio(v, &format!("{field}.emergency"), or_zero(&d.emergency)),
        other_temporary: ratio(
            v,
            &format!("{field}.other_temporary"),
            or_zero(&d.other_temporary),
        ),
    }
}

fn diseases(v: &mut FieldViolations, rules: &[pb::DiseaseRule]) -> BTreeMap<String, DiseaseRule> {
    let mut diseases = BTreeMap::new();
    for (i, d) in rules.iter().enumerate() {
        let field = format!("policy.diseases[{i}]");
        if !code_ok(&d.disease_code) {
            v.add(
                format!("{field}.disease_code"),
                "must be 1 to 40 printable characters",
            );
        }
        let rule = DiseaseRule {
            annual_deductible: amount(
                v,
                &format!("{field}.annual_deductible"),
                or_zero(&d.annual_deductible),
            ),
            annual_cap: amount(v, &format!("{field}.annual_cap"), &d.annual_cap),
        };
        if diseases.insert(d.disease_code.clone(), rule).is_some() {
            v.add(format!("{field}.disease_code"), "is listed twice");
        }
    }
    diseases
}

fn serious_illness(
    v: &mut FieldViolations,
    s: Option<&pb::SeriousIllness>,
) -> Option<SeriousIllness> {
    let s = s.filter(|s| !s.bands.is_empty())?;
    let field = "policy.serious_illness";
    let bands = s
        .bands
        .iter()
        .enumerate()
        .map(|(i, b)| Band {
            lower: amount(v, &format!("{field}.bands[{i}].lower"), &b.lower),
            upper: (!b.upper.is_empty())
                .then(|| amount(v, &format!("{field}.bands[{i}].upper"), &b.upper)),
            ratio: ratio(v, &format!("{field}.bands[{i}].ratio"), &b.ratio),
        })
        .collect();
    Some(SeriousIllness {
        bands,
        annual_cap: amount(v, &format!("{field}.annual_cap"), &s.annual_cap),
    })
}

fn assistance(
    v: &mut FieldViolations,
    rules: &[pb::AssistanceRule],
) -> BTreeMap<String, AssistanceRule> {
    let mut assistance = BTreeMap::new();
    for (i, a) in rules.iter().enumerate() {
        let field = format!("policy.assistance[{i}]");
        if !code_ok(&a.category) {
            v.add(
                format!("{field}.category"),
                "must be 1 to 40 printable characters",
            );
        }
        let rule = AssistanceRule {
            ratio: ratio(v, &format!("{field}.ratio"), &a.ratio),
            annual_cap: amount(v, &format!("{field}.annual_cap"), &a.annual_cap),
        };
        if assistance.insert(a.category.clone(), rule).is_some() {
            v.add(format!("{field}.category"), "is listed twice");
        }
    }
    assistance
}
