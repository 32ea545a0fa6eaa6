//! The settlement flow as operators watch it: settlements, and amounts settled and given
//! back by reversals, per province pair; refusals by reason. Series an operator's `rate`
//! or subtraction needs before their first event are created at zero.

use clearinghouse_proto::{
    convert::visit_type_of,
    settlement::v1::{SettlementResult, VisitType},
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PairLabels {
    pub insured_province: String,
    pub treatment_province: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartLabels {
    pub insured_province: String,
    pub treatment_province: String,
    /// total, in_scope, fund, serious_illness, assistance, personal_account, cash
    pub part: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VisitLabels {
    /// INPATIENT, CHRONIC_OUTPATIENT or GENERAL_OUTPATIENT.
    pub visit_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Default)]
pub struct SettlementMetrics {
    settled: Family<PairLabels, Counter>,
    amounts: Family<PartLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    reversed: Family<PartLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    by_visit: Family<VisitLabels, Counter>,
    amount_by_visit: Family<VisitLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    refused: Family<ReasonLabels, Counter>,
    /// Batches that failed as a whole and were settled claim by claim.
    pub batch_fallbacks: Counter,
}

impl SettlementMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "settlements",
            "Claims settled, per insured and treatment province",
            m.settled.clone(),
        );
        registry.register(
            "settled_amount_yuan",
            "Amounts settled in yuan, per province pair and part of the split",
            m.amounts.clone(),
        );
        registry.register(
            "settlements_by_visit_type",
            "Claims settled, per visit type",
            m.by_visit.clone(),
        );
        registry.register(
            "settled_total_by_visit_type_yuan",
            "Total amounts of the claims settled in yuan, per visit type",
            m.amount_by_visit.clone(),
        );
        for visit in VISIT_TYPES {
            let labels = VisitLabels {
                visit_type: visit.to_string(),
            };
            let _ = m.by_visit.get_or_create(&labels);
            let _ = m.amount_by_visit.get_or_create(&labels);
        }
        registry.register(
            "reversed_amount_yuan",
            "Amounts given back by reversals in yuan, per province pair and part of the split",
            m.reversed.clone(),
        );
        registry.register(
            "settlement_refusals",
            "Settle calls refused, by gRPC status",
            m.refused.clone(),
        );
        for code in REFUSAL_CODES {
            let _ = m.refused.get_or_create(&ReasonLabels {
                reason: format!("{code:?}"),
            });
        }
        registry.register(
            "settlement_batch_fallbacks",
            "Settlement batches that failed as a whole and were settled claim by claim",
            m.batch_fallbacks.clone(),
        );
        m
    }

    pub fn settled(
        &self,
        insured_province: &str,
        treatment_province: &str,
        result: &SettlementResult,
    ) {
        self.settled
            .get_or_create(&PairLabels {
                insured_province: insured_province.into(),
                treatment_province: treatment_province.into(),
            })
            .inc();
        // What reversals give back, at zero until the first: settled minus reversed is
        // what the pair owes.
        for part in PARTS {
            let _ = self.reversed.get_or_create(&part_labels(
                insured_province,
                treatment_province,
                part,
            ));
        }
        add_split(&self.amounts, insured_province, treatment_province, result);
        let visit_type = match result.claim.as_ref().map(visit_type_of) {
            None | Some(VisitType::Unspecified) => return,
            Some(visit) => visit,
        };
        let labels = VisitLabels {
            visit_type: visit_type
                .as_str_name()
                .trim_start_matches("VISIT_TYPE_")
                .to_string(),
        };
        self.by_visit.get_or_create(&labels).inc();
        let total: f64 = result
            .split
            .as_ref()
            .and_then(|s| s.total.parse().ok())
            .unwrap_or(0.0);
        self.amount_by_visit.get_or_create(&labels).inc_by(total);
    }

    /// A reversal: everything its claim settled is given back.
    pub fn reversed(
        &self,
        insured_province: &str,
        treatment_province: &str,
        result: &SettlementResult,
    ) {
        add_split(&self.reversed, insured_province, treatment_province, result);
    }

    pub fn refused(&self, status: &tonic::Status) {
        self.refused
            .get_or_create(&ReasonLabels {
                reason: format!("{:?}", status.code()),
            })
            .inc();
    }
}

/// The codes a Settle call is refused with on purpose, created at zero.
const REFUSAL_CODES: [tonic::Code; 8] = [
    tonic::Code::InvalidArgument,
    tonic::Code::FailedPrecondition,
    tonic::Code::AlreadyExists,
    tonic::Code::PermissionDenied,
    tonic::Code::NotFound,
    tonic::Code::ResourceExhausted,
    tonic::Code::Unavailable,
    tonic::Code::Internal,
];

const VISIT_TYPES: [&str; 3] = ["INPATIENT", "CHRONIC_OUTPATIENT", "GENERAL_OUTPATIENT"];

const PARTS: [&str; 7] = [
    "total",
    "in_scope",
    "fund",
    "serious_illness",
    "assistance",
    "personal_account",
    "cash",
];

fn part_labels(insured_province: &str, treatment_province: &str, part: &str) -> PartLabels {
    PartLabels {
        insured_province: insured_province.into(),
        treatment_province: treatment_province.into(),
        part: part.into(),
    }
}

/// Adds each part of the result's split to its counter.
fn add_split(
    family: &Family<PartLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    insured_province: &str,
    treatment_province: &str,
    result: &SettlementResult,
) {
    let Some(split) = &result.split else { return };
    for (part, amount) in [
        ("total", &split.total),
        ("in_scope", &split.in_scope),
        ("fund", &split.fund),
        ("serious_illness", &split.serious_illness),
        ("assistance", &split.assistance),
        ("personal_account", &split.personal_account),
        ("cash", &split.cash),
    ] {
        // The split's amounts are decimal strings we formatted ourselves.
        let value: f64 = amount.parse().unwrap_or(0.0);
        family
            .get_or_create(&part_labels(insured_province, treatment_province, part))
            .inc_by(value);
    }
}
