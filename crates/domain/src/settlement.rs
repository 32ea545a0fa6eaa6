//! The settlement computation of DESIGN.md section 5, steps 1 to 6, and its invariants.
//!
//! Every rounding is [`round2`] and happens exactly where the design writes it.

use rust_decimal::Decimal;
use time::Date;

use crate::money::round2;
pub use crate::reference::{
    AssistanceRule, Band, ByLevel, Catalogue, CatalogueClass, CatalogueItem, Category,
    CategoryDeltas, DiseaseRule, HospitalLevel, Policy, PolicyError, Scheme, SeriousIllness,
    VisitType,
};

/// What the insured place registered about the person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub scheme: Scheme,
    pub retired: bool,
    pub assistance_category: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visit {
    Inpatient { admission: Date, discharge: Date },
    ChronicOutpatient { disease: String, service_date: Date },
    GeneralOutpatient { service_date: Date },
}

impl Visit {
    /// Discharge date for inpatients, the service date for outpatients.
    pub fn service_date(&self) -> Date {
        match self {
            Visit::Inpatient { discharge, .. } => *discharge,
            Visit::ChronicOutpatient { service_date, .. } => *service_date,
            Visit::GeneralOutpatient { service_date } => *service_date,
        }
    }
    pub fn visit_type(&self) -> VisitType {
        match self {
            Visit::Inpatient { .. } => VisitType::Inpatient,
            Visit::ChronicOutpatient { .. } => VisitType::ChronicOutpatient,
            Visit::GeneralOutpatient { .. } => VisitType::GeneralOutpatient,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub item_code: String,
    pub quantity: Decimal,
    pub unit_price: Decimal,
}

/// The part of a claim the computation needs (parsed and validated at the edge).
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub visit: Visit,
    pub level: HospitalLevel,
    pub emergency: bool,
    pub use_personal_account: bool,
    pub lines: Vec<Line>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineReason {
    InScope,
    NotInCatalogue,
    ClassC,
    OverCeiling,
    ClassBShare,
    OverCeilingAndClassBShare,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LineResult {
    pub amount: Decimal,
    pub full_self_pay: Decimal,
    pub prior_self_pay: Decimal,
    pub in_scope: Decimal,
    pub reason: LineReason,
}

/// Step 1: one line priced by the treatment place's catalogue.
pub fn price_line(line: &Line, item: Option<&CatalogueItem>) -> LineResult {
    let amount = round2(line.quantity * line.unit_price);
    let whole_self_pay = |reason| LineResult {
        amount,
        full_self_pay: amount,
        prior_self_pay: Decimal::ZERO,
        in_scope: Decimal::ZERO,
        reason,
    };
    let item = match item {
        None => return whole_self_pay(LineReason::NotInCatalogue),
        Some(item) if item.class == CatalogueClass::C => return whole_self_pay(LineReason::ClassC),
        Some(item) => item,
    };
    let over_ceiling = match item.price_ceiling {
        Some(ceiling) if line.unit_price > ceiling => {
            round2(line.quantity * (line.unit_price - ceiling))
        }
        _ => Decimal::ZERO,
    };
    let base = amount - over_ceiling;
    let prior_self_pay = if item.class == CatalogueClass::B {
        round2(base * item.self_pay_ratio)
    } else {
        Decimal::ZERO
    };
    let over = !over_ceiling.is_zero();
    let share = !prior_self_pay.is_zero();
    let reason = match (over, share) {
        (false, false) => LineReason::InScope,
        (true, false) => LineReason::OverCeiling,
        (false, true) => LineReason::ClassBShare,
        (true, true) => LineReason::OverCeilingAndClassBShare,
    };
    LineResult {
        amount,
        full_self_pay: over_ceiling,
        prior_self_pay,
        in_scope: base - prior_self_pay,
        reason,
    }
}

/// How the claim is covered: the category settled under, or unfiled by the policy's leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    Filed(Category),
    /// No filing, and the policy allows unfiled settlement with its own Δ.
    Unfiled,
}

/// Why a claim cannot be settled under the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("the person has no filing covering the treatment region on the service date")]
    NotFiled,
    #[error("the policy covers no chronic disease {0}")]
    DiseaseNotCovered(String),
    #[error("the policy has no ratio for the hospital level")]
    NoPolicyForLevel,
    #[error("invariant violated: {0}")]
    InvariantViolated(&'static str),
}

/// Step 2: the category among the covering filings with the smallest reduction; an
/// emergency without a filing is deemed filed under `EMERGENCY`.
pub fn resolve_coverage(
    covering: &[Category],
    emergency: bool,
    policy: &Policy,
) -> Result<Coverage, RuleError> {
    if let Some(best) = covering
        .iter()
        .copied()
        .min_by_key(|&c| policy.deltas.of(c))
    {
        return Ok(Coverage::Filed(best));
    }
    if emergency {
        return Ok(Coverage::Filed(Category::Emergency));
    }
    match policy.unfiled_delta {
        Some(_) => Ok(Coverage::Unfiled),
        None => Err(RuleError::NotFiled),
    }
}

/// The person's year so far, for the claim's insured region and calendar year; the disease
/// fields concern the claim's disease (zero for inpatient claims).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct YearToDate {
    pub inpatient_admissions: i32,
    pub inpatient_fund_paid: Decimal,
    pub disease_deductible_met: Decimal,
    pub disease_fund_paid: Decimal,
    /// General outpatient: the annual deductible met and the fund paid against its cap.
    pub general_deductible_met: Decimal,
    pub general_fund_paid: Decimal,
    pub serious_illness_base: Decimal,
    pub serious_illness_paid: Decimal,
    pub assistance_paid: Decimal,
}

impl YearToDate {
    /// Adds a claim's person-year changes (its disease's are kept per disease).
    pub fn add_year(&mut self, d: &AccumulatorDelta) {
        self.inpatient_admissions += d.inpatient_admissions;
        self.inpatient_fund_paid += d.inpatient_fund_paid;
        self.general_deductible_met += d.general_deductible_met;
        self.general_fund_paid += d.general_fund_paid;
        self.serious_illness_base += d.serious_illness_base;
        self.serious_illness_paid += d.serious_illness_paid;
        self.assistance_paid += d.assistance_paid;
    }
}

/// What one claim adds to the accumulators and takes from the personal account; a
/// reversal subtracts exactly this.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccumulatorDelta {
    pub inpatient_admissions: i32,
    pub inpatient_fund_paid: Decimal,
    /// The disease the next two fields belong to (chronic outpatient claims only).
    pub disease: Option<String>,
    pub disease_deductible_met: Decimal,
    pub disease_fund_paid: Decimal,
    pub general_deductible_met: Decimal,
    pub general_fund_paid: Decimal,
    pub serious_illness_base: Decimal,
    pub serious_illness_paid: Decimal,
    pub assistance_paid: Decimal,
    pub personal_account_debit: Decimal,
}

impl AccumulatorDelta {
    /// What a reversal applies: every change with its sign turned.
    pub fn negated(&self) -> Self {
        Self {
            inpatient_admissions: -self.inpatient_admissions,
            inpatient_fund_paid: -self.inpatient_fund_paid,
            disease: self.disease.clone(),
            disease_deductible_met: -self.disease_deductible_met,
            disease_fund_paid: -self.disease_fund_paid,
            general_deductible_met: -self.general_deductible_met,
            general_fund_paid: -self.general_fund_paid,
            serious_illness_base: -self.serious_illness_base,
            serious_illness_paid: -self.serious_illness_paid,
            assistance_paid: -self.assistance_paid,
            personal_account_debit: -self.personal_account_debit,
        }
    }
}

/// The split of a claim between the funds and the patient.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Split {
    pub total: Decimal,
    pub full_self_pay: Decimal,
    pub prior_self_pay: Decimal,
    pub in_scope: Decimal,
    pub deductible: Decimal,
    pub ratio: Decimal,
    pub fund: Decimal,
    pub serious_illness: Decimal,
    pub assistance: Decimal,
    pub personal_account: Decimal,
    pub cash: Decimal,
}

impl Split {
    /// What the insured place owes the treatment place for this claim.
    pub fn insured_share(&self) -> Decimal {
        self.fund + self.serious_illness + self.assistance + self.personal_account
    }

    /// The invariants of section 5, checked on every result.
    pub fn check_invariants(&self) -> Result<(), RuleError> {
        if self.total != self.full_self_pay + self.prior_self_pay + self.in_scope {
            return Err(RuleError::InvariantViolated(
                "total = full_self_pay + prior_self_pay + in_scope",
            ));
        }
        if self.total != self.insured_share() + self.cash {
            return Err(RuleError::InvariantViolated(
                "total = fund + serious_illness + assistance + personal_account + cash",
            ));
        }
        let parts = [
            self.total,
            self.full_self_pay,
            self.prior_self_pay,
            self.in_scope,
            self.deductible,
            self.fund,
            self.serious_illness,
            self.assistance,
            self.personal_account,
            self.cash,
        ];
        if parts.iter().any(|p| p.is_sign_negative() && !p.is_zero()) {
            return Err(RuleError::InvariantViolated("every part >= 0"));
        }
        Ok(())
    }
}

/// The result of a computation: the split, each line, the coverage used and what the
/// accumulators must record.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub split: Split,
    pub lines: Vec<LineResult>,
    pub coverage: Coverage,
    pub delta: AccumulatorDelta,
}

/// Everything the insured place decides for this claim.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub policy: &'a Policy,
    pub person: &'a Person,
    pub coverage: Coverage,
    pub year_to_date: &'a YearToDate,
    pub personal_account_balance: Decimal,
}

fn non_negative(d: Decimal) -> Decimal {
    d.max(Decimal::ZERO)
}

/// Steps 1 to 6 of DESIGN.md section 5 for one claim.
pub fn compute(
    claim: &Claim,
    catalogue: &dyn Catalogue,
    ctx: &Context<'_>,
) -> Result<Outcome, RuleError> {
    // Step 1: lines.
    let lines: Vec<LineResult> = claim
        .lines
        .iter()
        .map(|line| price_line(line, catalogue.item(&line.item_code)))
        .collect();
    let total: Decimal = lines.iter().map(|l| l.amount).sum();
    let full_self_pay: Decimal = lines.iter().map(|l| l.full_self_pay).sum();
    let prior_self_pay: Decimal = lines.iter().map(|l| l.prior_self_pay).sum();
    let p: Decimal = lines.iter().map(|l| l.in_scope).sum();

    // Step 2: the category's reduction.
    let delta = match ctx.coverage {
        Coverage::Filed(category) => ctx.policy.deltas.of(category),
        Coverage::Unfiled => ctx.policy.unfiled_delta.ok_or(RuleError::NotFiled)?,
    };

    // Step 3: the basic fund.
    let mut acc = AccumulatorDelta::default();
    let (deductible, ratio, fund) = basic_fund(claim, ctx, p, delta, &mut acc)?;

    // Step 4: serious-illness insurance on the in-scope burden left to the patient;
    // general-outpatient claims neither add to its base nor receive it.
    let general = matches!(claim.visit, Visit::GeneralOutpatient { .. });
    let burden = if general { Decimal::ZERO } else { p - fund };
    let serious_illness = if general {
        Decimal::ZERO
    } else {
        serious_illness(ctx, burden)
    };
    acc.serious_illness_base = burden;
    acc.serious_illness_paid = serious_illness;

    // Step 5: medical assistance.
    let assistance = assistance(ctx, p - fund - serious_illness);
    acc.assistance_paid = assistance;

    // Step 6: personal account, then cash.
    let personal_account = if claim.use_personal_account {
        non_negative(ctx.personal_account_balance).min(non_negative(
            total - fund - serious_illness - assistance - full_self_pay,
        ))
    } else {
        Decimal::ZERO
    };
    acc.personal_account_debit = personal_account;
    let cash = total - fund - serious_illness - assistance - personal_account;

    let split = Split {
        total,
        full_self_pay,
        prior_self_pay,
        in_scope: p,
        deductible,
        ratio,
        fund,
        serious_illness,
        assistance,
        personal_account,
        cash,
    };
    split.check_invariants()?;
    Ok(Outcome {
        split,
        lines,
        coverage: ctx.coverage,
        delta: acc,
    })
}

/// Step 3: the deductible still due and the cap still open for this visit type, the
/// ratio (level, retiree bonus, category reduction) and the fund's part of the in-scope
/// amount `p`; what it takes from the year is recorded in `acc`.
fn basic_fund(
    claim: &Claim,
    ctx: &Context<'_>,
    p: Decimal,
    delta: Decimal,
    acc: &mut AccumulatorDelta,
) -> Result<(Decimal, Decimal, Decimal), RuleError> {
    let (policy, ytd) = (ctx.policy, ctx.year_to_date);
    let (remaining_deductible, remaining_cap) = match &claim.visit {
        Visit::Inpatient { .. } => {
            let later = ytd.inpatient_admissions >= 1;
            let by_level = match (&policy.later_admission_deductible_by_level, later) {
                (Some(later_by_level), true) => later_by_level,
                _ => &policy.deductible_by_level,
            };
            acc.inpatient_admissions = 1;
            (
                by_level.at(claim.level),
                non_negative(policy.annual_cap - ytd.inpatient_fund_paid),
            )
        }
        Visit::ChronicOutpatient { disease, .. } => {
            let rule = policy
                .diseases
                .get(disease)
                .ok_or_else(|| RuleError::DiseaseNotCovered(disease.clone()))?;
            acc.disease = Some(disease.clone());
            (
                non_negative(rule.annual_deductible - ytd.disease_deductible_met),
                non_negative(rule.annual_cap - ytd.disease_fund_paid),
            )
        }
        Visit::GeneralOutpatient { .. } => (
            non_negative(policy.annual_deductible - ytd.general_deductible_met),
            non_negative(policy.annual_cap - ytd.general_fund_paid),
        ),
    };
    let deductible = p.min(remaining_deductible);
    let bonus = if ctx.person.retired {
        policy.retiree_bonus
    } else {
        Decimal::ZERO
    };
    let ratio =
        (policy.ratio_by_level.at(claim.level) + bonus - delta).clamp(Decimal::ZERO, Decimal::ONE);
    let fund = round2((p - deductible) * ratio).min(remaining_cap);
    match claim.visit {
        Visit::Inpatient { .. } => acc.inpatient_fund_paid = fund,
        Visit::ChronicOutpatient { .. } => {
            acc.disease_deductible_met = deductible;
            acc.disease_fund_paid = fund;
        }
        Visit::GeneralOutpatient { .. } => {
            acc.general_deductible_met = deductible;
            acc.general_fund_paid = fund;
        }
    }
    Ok((deductible, ratio, fund))
}

/// Step 4: serious-illness insurance on `burden`, band by band over the year's base so
/// far, within what is left of its annual cap.
fn serious_illness(ctx: &Context<'_>, burden: Decimal) -> Decimal {
    let Some(si) = &ctx.policy.serious_illness else {
        return Decimal::ZERO;
    };
    let ytd = ctx.year_to_date;
    let before = ytd.serious_illness_base;
    let after = before + burden;
    let raw: Decimal = si
        .bands
        .iter()
        .map(|band| {
            let lo = before.max(band.lower);
            let hi = band.upper.map_or(after, |upper| after.min(upper));
            non_negative(hi - lo) * band.ratio
        })
        .sum();
    round2(raw).min(non_negative(si.annual_cap - ytd.serious_illness_paid))
}

/// Step 5: medical assistance on what is left of the in-scope amount, for a person in an
/// assistance category of the policy, within what is left of its annual cap.
fn assistance(ctx: &Context<'_>, left: Decimal) -> Decimal {
    let rule = ctx
        .person
        .assistance_category
        .as_ref()
        .and_then(|category| ctx.policy.assistance.get(category));
    match rule {
        Some(rule) => round2(left * rule.ratio).min(non_negative(
            rule.annual_cap - ctx.year_to_date.assistance_paid,
        )),
        None => Decimal::ZERO,
    }
}
