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
    /// First and last day inclusive; a revocation ends cover from its effective date. A
    /// referral covers every hospital of its target province, whatever prefecture it names.
    pub fn covers(&self, treatment_region: Region, date: Date) -> bool {
        self.covered_region().contains(treatment_region)
            && self.start <= date
            && self.end.is_none_or(|end| date <= end)
            && self.revoked_from.is_none_or(|from| date < from)
    }
}

impl FilingCover {
    /// The region the filing covers: the named one, or for a referral its whole province.
    pub fn covered_region(&self) -> Region {
        if self.category == Category::Referral {
            self.treatment_region.province()
        } else {
            self.treatment_region
        }
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

    #[test]
    fn a_referral_covers_its_whole_target_province() {
        let guangzhou = Region::parse("440100").unwrap();
        let shenzhen = Region::parse("440300").unwrap();
        let foshan = Region::parse("440600").unwrap();
        let referral = FilingCover {
            treatment_region: guangzhou,
            category: Category::Referral,
            start: date!(2026 - 01 - 01),
            end: Some(date!(2026 - 12 - 31)),
            revoked_from: None,
        };
        for region in [
            guangzhou,
            shenzhen,
            foshan,
            Region::parse("440000").unwrap(),
        ] {
            assert!(referral.covers(region, date!(2026 - 06 - 01)), "{region}");
        }
        assert!(!referral.covers(Region::parse("450100").unwrap(), date!(2026 - 06 - 01)));
        // Any other category covers only the region it names.
        let temporary = FilingCover {
            category: Category::OtherTemporary,
            ..referral
        };
        assert!(temporary.covers(guangzhou, date!(2026 - 06 - 01)));
        assert!(!temporary.covers(shenzhen, date!(2026 - 06 - 01)));
    }
}
