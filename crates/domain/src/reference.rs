//! The reference data a claim is settled under (DESIGN.md section 5): schemes, visit
//! types and filing categories; catalogue items; the insured place's policy with its
//! levels, category reductions, disease rules, serious-illness bands and assistance.

use std::collections::{BTreeMap, HashMap};

use rust_decimal::Decimal;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    Employee,
    Resident,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VisitType {
    Inpatient,
    ChronicOutpatient,
    GeneralOutpatient,
}

/// Filing categories; the first three are long-term, the others temporary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    ResettledRetiree,
    LongTermResident,
    PostedWorker,
    Referral,
    Emergency,
    OtherTemporary,
}

impl Category {
    pub const ALL: [Category; 6] = [
        Category::ResettledRetiree,
        Category::LongTermResident,
        Category::PostedWorker,
        Category::Referral,
        Category::Emergency,
        Category::OtherTemporary,
    ];

    pub fn is_long_term(self) -> bool {
        matches!(
            self,
            Category::ResettledRetiree | Category::LongTermResident | Category::PostedWorker
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogueClass {
    A,
    B,
    C,
}

/// One item of a treatment place's catalogue.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogueItem {
    pub class: CatalogueClass,
    /// Class B: the share paid first by the patient (先行自付).
    pub self_pay_ratio: Decimal,
    pub price_ceiling: Option<Decimal>,
}

/// Looks items up in the catalogue version in force on the service date.
pub trait Catalogue {
    fn item(&self, code: &str) -> Option<&CatalogueItem>;
}

impl Catalogue for HashMap<String, CatalogueItem> {
    fn item(&self, code: &str) -> Option<&CatalogueItem> {
        self.get(code)
    }
}

/// Amounts per hospital level 1, 2 and 3.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ByLevel(pub [Decimal; 3]);

impl ByLevel {
    pub fn at(&self, level: HospitalLevel) -> Decimal {
        self.0[usize::from(level.get() - 1)]
    }
}

/// A hospital level, 1 to 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HospitalLevel(u8);

impl HospitalLevel {
    pub fn new(level: i64) -> Option<Self> {
        u8::try_from(level)
            .ok()
            .filter(|l| (1..=3).contains(l))
            .map(Self)
    }
    pub fn get(self) -> u8 {
        self.0
    }
}

/// Δ, the ratio reduction of each temporary category; long-term categories have none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CategoryDeltas {
    pub referral: Decimal,
    pub emergency: Decimal,
    pub other_temporary: Decimal,
}

impl CategoryDeltas {
    pub fn of(&self, category: Category) -> Decimal {
        match category {
            Category::Referral => self.referral,
            Category::Emergency => self.emergency,
            Category::OtherTemporary => self.other_temporary,
            _ => Decimal::ZERO,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DiseaseRule {
    pub annual_deductible: Decimal,
    pub annual_cap: Decimal,
}

/// A serious-illness band `[lower, upper)`; `upper` is `None` for the open last band.
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    pub lower: Decimal,
    pub upper: Option<Decimal>,
    pub ratio: Decimal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SeriousIllness {
    pub bands: Vec<Band>,
    pub annual_cap: Decimal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AssistanceRule {
    pub ratio: Decimal,
    pub annual_cap: Decimal,
}

/// An insured place's policy for one scheme and visit type, in force from a date.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub deductible_by_level: ByLevel,
    pub later_admission_deductible_by_level: Option<ByLevel>,
    pub ratio_by_level: ByLevel,
    pub retiree_bonus: Decimal,
    pub deltas: CategoryDeltas,
    /// `Some(Δ)` when unfiled claims may be settled, with their reduction.
    pub unfiled_delta: Option<Decimal>,
    /// The annual cap of the basic fund: inpatient claims share it; a general-outpatient
    /// policy's is the general-outpatient cap.
    pub annual_cap: Decimal,
    /// General outpatient: the one annual deductible (only the part not yet met applies).
    pub annual_deductible: Decimal,
    /// Chronic outpatient: deductible and cap per disease code.
    pub diseases: BTreeMap<String, DiseaseRule>,
    pub serious_illness: Option<SeriousIllness>,
    /// Assistance per assistance category of the person.
    pub assistance: BTreeMap<String, AssistanceRule>,
}

/// Why a policy is not usable; checked when it is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{0} must lie between 0 and 1")]
    RatioOutOfRange(&'static str),
    #[error("serious-illness bands must be ordered, non-overlapping and only the last open")]
    BandsOutOfOrder,
}

impl Policy {
    /// Checks what the types cannot: ratios in [0, 1] and well-ordered bands.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let unit = |d: Decimal| d >= Decimal::ZERO && d <= Decimal::ONE;
        if !self.ratio_by_level.0.iter().all(|&r| unit(r)) {
            return Err(PolicyError::RatioOutOfRange("ratio_by_level"));
        }
        if !unit(self.retiree_bonus) {
            return Err(PolicyError::RatioOutOfRange("retiree_bonus"));
        }
        let d = &self.deltas;
        if ![d.referral, d.emergency, d.other_temporary]
            .iter()
            .all(|&r| unit(r))
        {
            return Err(PolicyError::RatioOutOfRange("category_deltas"));
        }
        if self.unfiled_delta.is_some_and(|r| !unit(r)) {
            return Err(PolicyError::RatioOutOfRange("unfiled_delta"));
        }
        if !self.assistance.values().all(|a| unit(a.ratio)) {
            return Err(PolicyError::RatioOutOfRange("assistance.ratio"));
        }
        if let Some(si) = &self.serious_illness {
            if !si.bands.iter().all(|b| unit(b.ratio)) {
                return Err(PolicyError::RatioOutOfRange("serious_illness.bands.ratio"));
            }
            let mut floor = Decimal::ZERO;
            for (i, band) in si.bands.iter().enumerate() {
                let last = i + 1 == si.bands.len();
                match band.upper {
                    Some(upper) if band.lower >= floor && upper > band.lower => floor = upper,
                    None if last && band.lower >= floor => {}
                    _ => return Err(PolicyError::BandsOutOfOrder),
                }
            }
        }
        Ok(())
    }
}
