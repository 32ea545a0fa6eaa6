//! A claim on its way through `Settle`: prepared (reference data and coverage resolved),
//! computed against the person's year so far (DESIGN.md §5 steps 1–6, run by
//! `clearinghouse_domain::settlement`), answered as a `SettlementResult`, and announced by
//! its `ClaimSettled` event — each built here and nowhere else. No I/O.

use std::{collections::HashMap, sync::Arc};

use clearinghouse_domain::{
    dates::format_date,
    money::format2,
    region::Region,
    settlement::{self as rules, AccumulatorDelta, Coverage, Outcome, Person, YearToDate},
};
use clearinghouse_events::{
    Body,
    outbox::{KeptBy, Outgoing, Traced},
    relay::Rebuilt,
};
use clearinghouse_platform::audit::AuditContext;
use clearinghouse_proto::{
    convert::{category_to_proto, line_reason_to_proto},
    events::v1 as ev,
    settlement::v1::{Claim, ClaimStatus, LineResult, SettlementResult, Split, VisitType},
};
use rust_decimal::Decimal;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use clearinghouse_platform::error::{Error, Result};

use crate::parse::ParsedClaim;

/// Everything a claim needs that does not change while it is settled.
pub(crate) struct Prepared {
    pub person: Person,
    pub coverage: Coverage,
    pub policy_version: i64,
    pub policy: Arc<rules::Policy>,
    pub catalogue_version: i64,
    pub items: HashMap<String, rules::CatalogueItem>,
    /// When the claim is settled, by the service's clock: the China day it is reconciled on.
    pub at: OffsetDateTime,
}

/// A claim ready to be written: validated, its reference data and coverage resolved.
pub(crate) struct Pending {
    pub claim: Claim,
    pub parsed: ParsedClaim,
    /// SHA-256 of the claim as received: a repeat must carry the same payload.
    pub request: Vec<u8>,
    pub prepared: Prepared,
    /// The trace of the `Settle` call, which the claim's event continues.
    pub traceparent: Option<String>,
    /// Who settles: the audit entry is written with the claim.
    pub audit: Option<AuditContext>,
}

/// A personal account's row key: (insured region, person id).
pub(crate) type PersonKey = (String, String);
/// A person-year's accumulator row key.
pub(crate) type YearKey = (String, String, i32);
/// A per-kind accumulator row key (a chronic disease, or general outpatient).
pub(crate) type DiseaseKey = (String, String, i32, String);
/// A claim's key: (treatment region, claim id).
pub(crate) type ClaimKey = (String, String);

/// The method whose audit records settled claims' rows are (the settlement migration's
/// `audit_trail` view names it).
pub(crate) const SETTLE_METHOD: &str = "/clearinghouse.settlement.v1.SettlementService/Settle";

impl Pending {
    /// Whether the claim's row is its audit record (`claims.audit_id`, read through the
    /// `audit_trail` view) rather than a row of `audit_log`: so when `Settle` was called
    /// by the treatment region's provincial platform, the caller the view names. Any other
    /// caller (none passes the access check today) is recorded in `audit_log`.
    pub fn recorded_by_row(&self) -> bool {
        let by = format!("province:{}", self.parsed.treatment_region.province());
        self.audit
            .as_ref()
            .is_some_and(|c| c.caller == by && c.method == SETTLE_METHOD)
    }

    /// What the audit trail names the claim.
    pub fn subject(&self) -> String {
        format!(
            "claim {}/{}",
            self.parsed.treatment_region, self.parsed.claim_id
        )
    }

    pub fn key(&self) -> ClaimKey {
        (
            self.parsed.treatment_region.to_string(),
            self.parsed.claim_id.to_string(),
        )
    }

    /// The patient: whose claims are serialized by this personal-account row's lock.
    pub fn person(&self) -> PersonKey {
        (
            self.parsed.insured_region.to_string(),
            self.parsed.person_id.to_string(),
        )
    }

    /// The personal account the claim draws on: a family holder's, else the patient's.
    pub fn account(&self) -> PersonKey {
        let holder = self.parsed.account_holder.as_ref();
        (
            self.parsed.insured_region.to_string(),
            holder.unwrap_or(&self.parsed.person_id).to_string(),
        )
    }

    pub fn year(&self) -> YearKey {
        let (region, person) = self.person();
        (
            region,
            person,
            self.parsed.claim.visit.service_date().year(),
        )
    }

    pub fn disease(&self) -> Option<DiseaseKey> {
        let (region, person, year) = self.year();
        disease_of(&self.parsed).map(|d| (region, person, year, d.to_string()))
    }

    /// Steps 1 to 6 against the year so far and the account's balance: the outcome and its
    /// result as the caller is answered.
    pub fn settle(
        &self,
        ytd: &YearToDate,
        balance: Decimal,
        status: ClaimStatus,
    ) -> Result<(Outcome, SettlementResult)> {
        let outcome = compute(&self.parsed, &self.prepared, ytd, balance)?;
        let balance_after = balance - outcome.delta.personal_account_debit;
        let result = result_proto(
            self.claim.clone(),
            &self.parsed,
            &self.prepared,
            &outcome,
            status,
            balance_after,
        );
        Ok((outcome, result))
    }

    /// The claim's `ClaimSettled` event, continuing the `Settle` call's trace; once sent it
    /// is kept by the claim's row (not `outbox_sent`), which holds the same result.
    pub fn settled_event(&self, topic: &str, result: &SettlementResult) -> Traced {
        let (insured, treatment) = (self.parsed.insured_region, self.parsed.treatment_region);
        Traced {
            event: Outgoing {
                topic: topic.to_string(),
                key: insured.province().to_string(),
                body: settled_body(insured, treatment, result.clone()),
            },
            traceparent: self.traceparent.clone(),
            kept_by: Some(KeptBy {
                source: settled_source(&self.key()),
                occurred_at: self.prepared.at,
            }),
        }
    }
}

/// A stored claim's `ClaimSettled` event as first sent: its id, its time (the claim's
/// `settled_at`), its key and body.
pub(crate) fn settled_again(topic: &str, c: crate::store::SettledClaim) -> Result<Rebuilt> {
    let region = |r: &str| Region::parse(r).map_err(|_| Error::Corrupt("claim region"));
    let (insured, treatment) = (region(&c.insured_region)?, region(&c.key.0)?);
    Ok(Rebuilt {
        event_id: c.event_id,
        occurred_at: c.settled_at,
        topic: topic.to_string(),
        key: insured.province().to_string(),
        body: settled_body(insured, treatment, c.result),
        source: settled_source(&c.key),
    })
}

/// A settled claim's `ClaimSettled` event body.
pub(crate) fn settled_body(insured: Region, treatment: Region, result: SettlementResult) -> Body {
    Body::ClaimSettled(ev::ClaimSettled {
        insured_province: insured.province().to_string(),
        treatment_province: treatment.province().to_string(),
        result: Some(result),
    })
}

/// Where a claim's `ClaimSettled` event is kept: its claim's row.
fn settled_source((treatment_region, claim_id): &ClaimKey) -> String {
    format!("claim:{treatment_region}/{claim_id}")
}

/// A settled claim's result, and whether this call wrote it (else it answered the stored
/// result of an earlier call with the same claim id and payload).
pub(crate) struct Settled {
    pub result: SettlementResult,
    pub fresh: bool,
}

/// What is stored of a claim's payload to recognise a repeat: the first 16 bytes of its
/// SHA-256 (a payload told from another by 128 bits; the whole 32 were stored before).
pub(crate) fn request_digest(encoded_claim: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, encoded_claim).as_ref()[..REQUEST_DIGEST_LEN]
        .to_vec()
}

/// Bytes of a request digest.
const REQUEST_DIGEST_LEN: usize = 16;

/// Whether a stored request digest is `request`'s: equal, or (stored before digests were
/// cut to 16 bytes) the whole SHA-256 that `request` begins.
fn same_request(request: &[u8], stored: &[u8]) -> bool {
    stored.get(..request.len()) == Some(request)
}

/// A repeated claim id answers the stored result only if it carries the same payload.
pub(crate) fn replayed(
    c: &ParsedClaim,
    request: &[u8],
    stored_request: &[u8],
    stored_result: SettlementResult,
) -> Result<SettlementResult> {
    if !same_request(request, stored_request) {
        return Err(Error::AlreadyExists(format!(
            "claim {} of treatment region {} was already settled with a different payload",
            c.claim_id, c.treatment_region
        )));
    }
    Ok(stored_result)
}

/// The stored result with its status as stored.
pub(crate) fn with_status(mut result: SettlementResult, reversed: bool) -> SettlementResult {
    if reversed {
        result.status = ClaimStatus::Reversed as i32;
    }
    result
}

/// The per-kind accumulator row a claim draws on besides the person-year's: its chronic
/// disease's, or general outpatient's. General outpatient keeps its annual deductible met
/// and fund paid in the same table as a disease does (`disease_accumulators`, `claims.
/// disease_*`), under this reserved code, so reversal and locking treat them alike.
pub(crate) fn disease_of(c: &ParsedClaim) -> Option<&str> {
    match &c.claim.visit {
        rules::Visit::ChronicOutpatient { disease, .. } => Some(disease),
        rules::Visit::GeneralOutpatient { .. } => Some(GENERAL_OUTPATIENT),
        rules::Visit::Inpatient { .. } => None,
    }
}

/// The reserved accumulator code of general outpatient (no disease code has a space).
pub const GENERAL_OUTPATIENT: &str = "GENERAL OUTPATIENT";

/// The accumulator code a claim row stores (`claims.disease_code`): a chronic disease's;
/// general outpatient's reserved code is not stored in each of its claims (19 bytes of
/// nine claims in ten), as the claim's visit in its stored result names it.
pub(crate) fn stored_disease_code(delta: &AccumulatorDelta) -> Option<&str> {
    delta
        .disease
        .as_deref()
        .filter(|d| *d != GENERAL_OUTPATIENT)
}

/// The accumulator code of a stored claim: the row's, or general outpatient's when its
/// stored result is a general-outpatient visit (rows written before the code was left
/// out carry it, and read as they are).
pub(crate) fn restored_disease_code(
    stored: Option<String>,
    result: &SettlementResult,
) -> Option<String> {
    let general = result
        .claim
        .as_ref()
        .map(clearinghouse_proto::convert::visit_type_of)
        == Some(VisitType::GeneralOutpatient);
    stored.or_else(|| general.then(|| GENERAL_OUTPATIENT.to_string()))
}

/// Steps 1 to 6 for a claim, with the year so far as stored (a general-outpatient claim's
/// deductible met and fund paid read from, and its changes written to, the per-kind
/// accumulator fields; see [`disease_of`]).
pub(crate) fn compute(
    c: &ParsedClaim,
    p: &Prepared,
    ytd: &YearToDate,
    balance: Decimal,
) -> Result<Outcome> {
    let general = matches!(c.claim.visit, rules::Visit::GeneralOutpatient { .. });
    let year_to_date = if general {
        YearToDate {
            general_deductible_met: ytd.disease_deductible_met,
            general_fund_paid: ytd.disease_fund_paid,
            disease_deductible_met: Decimal::ZERO,
            disease_fund_paid: Decimal::ZERO,
            ..ytd.clone()
        }
    } else {
        ytd.clone()
    };
    let ctx = rules::Context {
        policy: &p.policy,
        person: &p.person,
        coverage: p.coverage,
        year_to_date: &year_to_date,
        personal_account_balance: balance,
    };
    let mut outcome = rules::compute(&c.claim, &p.items, &ctx)?;
    if general {
        let d = &mut outcome.delta;
        d.disease = Some(GENERAL_OUTPATIENT.to_string());
        d.disease_deductible_met = std::mem::take(&mut d.general_deductible_met);
        d.disease_fund_paid = std::mem::take(&mut d.general_fund_paid);
    }
    Ok(outcome)
}

/// The result a caller is answered: lines, split, versions, the balance after.
pub(crate) fn result_proto(
    claim: Claim,
    c: &ParsedClaim,
    p: &Prepared,
    o: &Outcome,
    status: ClaimStatus,
    balance_after: Decimal,
) -> SettlementResult {
    let drew_on_account = c.claim.use_personal_account;
    SettlementResult {
        lines: c
            .claim
            .lines
            .iter()
            .zip(&o.lines)
            .map(|(line, r)| LineResult {
                item_code: line.item_code.clone(),
                amount: format2(r.amount),
                full_self_pay: format2(r.full_self_pay),
                prior_self_pay: format2(r.prior_self_pay),
                in_scope: format2(r.in_scope),
                reason: line_reason_to_proto(r.reason) as i32,
            })
            .collect(),
        split: Some(split_proto(&o.split)),
        claim: Some(claim),
        category: match o.coverage {
            Coverage::Filed(c) => category_to_proto(c) as i32,
            Coverage::Unfiled => 0,
        },
        policy_version: p.policy_version,
        catalogue_version: p.catalogue_version,
        service_date: format_date(c.claim.visit.service_date()),
        status: status as i32,
        personal_account_balance: if drew_on_account {
            format2(balance_after)
        } else {
            String::new()
        },
        settled_at: p.at.format(&Rfc3339).unwrap_or_default(),
        personal_account_holder: if drew_on_account {
            c.account_holder
                .clone()
                .unwrap_or_else(|| c.person_id.clone())
                .into()
        } else {
            String::new()
        },
    }
}

fn split_proto(s: &rules::Split) -> Split {
    Split {
        total: format2(s.total),
        full_self_pay: format2(s.full_self_pay),
        prior_self_pay: format2(s.prior_self_pay),
        in_scope: format2(s.in_scope),
        deductible: format2(s.deductible),
        ratio: ratio_text(s.ratio),
        fund: format2(s.fund),
        serious_illness: format2(s.serious_illness),
        assistance: format2(s.assistance),
        personal_account: format2(s.personal_account),
        cash: format2(s.cash),
    }
}

/// A ratio with at least two decimals ("0.90", "0.6525").
fn ratio_text(ratio: Decimal) -> String {
    let mut r = ratio.normalize();
    if r.scale() < 2 {
        r.rescale(2);
    }
    r.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_digest_is_16_bytes_and_matches_the_whole_sha256_stored_before() {
        let digest = request_digest(b"claim");
        assert_eq!(digest.len(), 16);
        let whole = ring::digest::digest(&ring::digest::SHA256, b"claim");
        assert!(same_request(&digest, &digest));
        assert!(same_request(&digest, whole.as_ref()));
        assert!(!same_request(&digest, &request_digest(b"claim2")));
        assert!(!same_request(&digest, &whole.as_ref()[..8]));
    }

    #[test]
    fn general_outpatient_code_is_left_out_of_the_row_and_restored_from_the_visit() {
        let general = AccumulatorDelta {
            disease: Some(GENERAL_OUTPATIENT.into()),
            ..AccumulatorDelta::default()
        };
        let chronic = AccumulatorDelta {
            disease: Some("DIABETES".into()),
            ..AccumulatorDelta::default()
        };
        assert_eq!(stored_disease_code(&general), None);
        assert_eq!(stored_disease_code(&chronic), Some("DIABETES"));
        assert_eq!(stored_disease_code(&AccumulatorDelta::default()), None);
        let result = |visit| SettlementResult {
            claim: Some(Claim {
                visit: Some(visit),
                ..Claim::default()
            }),
            ..SettlementResult::default()
        };
        use clearinghouse_proto::settlement::v1::claim::Visit;
        let go = result(Visit::GeneralOutpatient(Default::default()));
        let inpatient = result(Visit::Inpatient(Default::default()));
        assert_eq!(
            restored_disease_code(None, &go).as_deref(),
            Some(GENERAL_OUTPATIENT)
        );
        assert_eq!(restored_disease_code(None, &inpatient), None);
        assert_eq!(
            restored_disease_code(Some(GENERAL_OUTPATIENT.into()), &go).as_deref(),
            Some(GENERAL_OUTPATIENT),
            "a row written before keeps its code"
        );
        assert_eq!(
            restored_disease_code(Some("DIABETES".into()), &inpatient).as_deref(),
            Some("DIABETES")
        );
    }
}
