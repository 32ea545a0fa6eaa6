//! Conversions between the contract's enums and the domain's.

use clearinghouse_domain::settlement::{CatalogueClass, Category, LineReason, Scheme, VisitType};

use crate::{filing::v1 as filing, settlement::v1 as settlement};

pub fn scheme_from_proto(value: i32) -> Option<Scheme> {
    match filing::Scheme::try_from(value).ok()? {
        filing::Scheme::Employee => Some(Scheme::Employee),
        filing::Scheme::Resident => Some(Scheme::Resident),
        filing::Scheme::Unspecified => None,
    }
}

pub fn scheme_to_proto(scheme: Scheme) -> filing::Scheme {
    match scheme {
        Scheme::Employee => filing::Scheme::Employee,
        Scheme::Resident => filing::Scheme::Resident,
    }
}

pub fn category_from_proto(value: i32) -> Option<Category> {
    use filing::FilingCategory as P;
    match P::try_from(value).ok()? {
        P::ResettledRetiree => Some(Category::ResettledRetiree),
        P::LongTermResident => Some(Category::LongTermResident),
        P::PostedWorker => Some(Category::PostedWorker),
        P::Referral => Some(Category::Referral),
        P::Emergency => Some(Category::Emergency),
        P::OtherTemporary => Some(Category::OtherTemporary),
        P::Unspecified => None,
    }
}

pub fn category_to_proto(category: Category) -> filing::FilingCategory {
    use filing::FilingCategory as P;
    match category {
        Category::ResettledRetiree => P::ResettledRetiree,
        Category::LongTermResident => P::LongTermResident,
        Category::PostedWorker => P::PostedWorker,
        Category::Referral => P::Referral,
        Category::Emergency => P::Emergency,
        Category::OtherTemporary => P::OtherTemporary,
    }
}

pub fn visit_type_from_proto(value: i32) -> Option<VisitType> {
    match settlement::VisitType::try_from(value).ok()? {
        settlement::VisitType::Inpatient => Some(VisitType::Inpatient),
        settlement::VisitType::ChronicOutpatient => Some(VisitType::ChronicOutpatient),
        settlement::VisitType::GeneralOutpatient => Some(VisitType::GeneralOutpatient),
        settlement::VisitType::Unspecified => None,
    }
}

pub fn visit_type_to_proto(visit: VisitType) -> settlement::VisitType {
    match visit {
        VisitType::Inpatient => settlement::VisitType::Inpatient,
        VisitType::ChronicOutpatient => settlement::VisitType::ChronicOutpatient,
        VisitType::GeneralOutpatient => settlement::VisitType::GeneralOutpatient,
    }
}

/// The visit type of a claim as sent (`UNSPECIFIED` when it names no visit).
pub fn visit_type_of(claim: &settlement::Claim) -> settlement::VisitType {
    use settlement::claim::Visit;
    match &claim.visit {
        Some(Visit::Inpatient(_)) => settlement::VisitType::Inpatient,
        Some(Visit::ChronicOutpatient(_)) => settlement::VisitType::ChronicOutpatient,
        Some(Visit::GeneralOutpatient(_)) => settlement::VisitType::GeneralOutpatient,
        None => settlement::VisitType::Unspecified,
    }
}

pub fn class_from_proto(value: i32) -> Option<CatalogueClass> {
    match settlement::CatalogueClass::try_from(value).ok()? {
        settlement::CatalogueClass::A => Some(CatalogueClass::A),
        settlement::CatalogueClass::B => Some(CatalogueClass::B),
        settlement::CatalogueClass::C => Some(CatalogueClass::C),
        settlement::CatalogueClass::Unspecified => None,
    }
}

pub fn class_to_proto(class: CatalogueClass) -> settlement::CatalogueClass {
    match class {
        CatalogueClass::A => settlement::CatalogueClass::A,
        CatalogueClass::B => settlement::CatalogueClass::B,
        CatalogueClass::C => settlement::CatalogueClass::C,
    }
}

pub fn line_reason_to_proto(reason: LineReason) -> settlement::LineReason {
    use settlement::LineReason as P;
    match reason {
        LineReason::InScope => P::InScope,
        LineReason::NotInCatalogue => P::NotInCatalogue,
        LineReason::ClassC => P::ClassC,
        LineReason::OverCeiling => P::OverCeiling,
        LineReason::ClassBShare => P::ClassBShare,
        LineReason::OverCeilingAndClassBShare => P::OverCeilingAndClassBShare,
    }
}

/// Stable text names for storage columns.
pub fn category_name(category: Category) -> &'static str {
    category_to_proto(category).as_str_name()
}

pub fn category_from_name(name: &str) -> Option<Category> {
    category_from_proto(filing::FilingCategory::from_str_name(name)? as i32)
}

pub fn scheme_name(scheme: Scheme) -> &'static str {
    scheme_to_proto(scheme).as_str_name()
}

pub fn scheme_from_name(name: &str) -> Option<Scheme> {
    scheme_from_proto(filing::Scheme::from_str_name(name)? as i32)
}
