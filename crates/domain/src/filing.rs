//! Whether a filing covers a treatment on a date (DESIGN.md section 5, step 2).

use time::Date;

use crate::{region::Region, settlement::Category};

/// The part of a filing that decides coverage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilingCover {
    pub treatment_region: Region,
    pub category: Category,
    pub start: Date,
    /// `None` for an open-ended long-term filing.
    pub end: Option<Date>,
    /// The first day no longer covered, when revoked.
    pub revoked_from: Option<Date>,
}

impl FilingCover {
    /// First and last day inclusive; a revocation ends cover from its effective date.
    pub fn covers(&self, treatment_region: Region, date: Date) -> bool {
        self.treatment_region.contains(treatment_region)
            && self.start <= date
            && self.end.is_none_or(|end| date <= end)
            && self.revoked_from.is_none_or(|from| date < from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn boundaries_are_inclusive_and_revocation_ends_cover() {
        let beijing = Region::parse("110000").unwrap();
        let haidian = Region::parse("110108").unwrap();
        let f = FilingCover {
            treatment_region: beijing,
            category: Category::Referral,
            start: date!(2026 - 01 - 01),
            end: Some(date!(2026 - 06 - 30)),
            revoked_from: None,
        };
        assert!(f.covers(haidian, date!(2026 - 01 - 01)));
        assert!(f.covers(beijing, date!(2026 - 06 - 30)));
        assert!(!f.covers(beijing, date!(2026 - 07 - 01)));
        assert!(!f.covers(beijing, date!(2025 - 12 - 31)));
        assert!(!f.covers(Region::parse("120000").unwrap(), date!(2026 - 03 - 01)));
        let revoked = FilingCover {
            revoked_from: Some(date!(2026 - 03 - 01)),
            end: None,
            ..f
        };
        assert!(revoked.covers(beijing, date!(2026 - 02 - 28)));
        assert!(!revoked.covers(beijing, date!(2026 - 03 - 01)));
    }
}
