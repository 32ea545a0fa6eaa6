//! Region codes (医保区划): 6-digit GB/T 2260 codes.

use std::fmt;

/// A 6-digit region code; a province's code ends in `0000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Region(u32);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    #[error("must be a 6-digit region code")]
    Malformed,
    #[error("names no province")]
    UnknownProvince,
    #[error("is not a GB/T 2260 region code")]
    Unknown,
}

/// GB/T 2260 codes (province, prefecture and county level) with their names, shipped with
/// the crate in `data/gbt2260.tsv`.
const TABLE: &str = include_str!("../data/gbt2260.tsv");

fn table() -> &'static std::collections::HashMap<u32, &'static str> {
    static TABLE_MAP: std::sync::OnceLock<std::collections::HashMap<u32, &'static str>> =
        std::sync::OnceLock::new();
    TABLE_MAP.get_or_init(|| {
        TABLE
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .filter_map(|line| {
                let (code, name) = line.split_once('\t')?;
                Some((code.parse().ok()?, name))
            })
            .collect()
    })
}

impl Region {
    pub fn parse(text: &str) -> Result<Self, RegionError> {
        if text.len() != 6 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RegionError::Malformed);
        }
        let code: u32 = text.parse().map_err(|_| RegionError::Malformed)?;
        if !table().contains_key(&(code / 10_000 * 10_000)) {
            return Err(RegionError::UnknownProvince);
        }
        if !table().contains_key(&code) {
            return Err(RegionError::Unknown);
        }
        Ok(Self(code))
    }

    /// The region's name in the table.
    pub fn name(self) -> &'static str {
        table().get(&self.0).copied().unwrap_or("")
    }

    /// Every region of the table.
    pub fn all() -> impl Iterator<Item = Region> {
        let mut codes: Vec<u32> = table().keys().copied().collect();
        codes.sort_unstable();
        codes.into_iter().map(Region)
    }

    /// The province this region lies in (itself when it is a province).
    pub fn province(self) -> Region {
        Region(self.0 / 10_000 * 10_000)
    }

    pub fn is_province(self) -> bool {
        self.0.is_multiple_of(10_000)
    }

    /// Whether `other` is this region or lies inside it.
    pub fn contains(self, other: Region) -> bool {
        if self.is_province() {
            other.province() == self
        } else if self.0.is_multiple_of(100) {
            other.0 / 100 == self.0 / 100
        } else {
            self == other
        }
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_nests() {
        let shandong = Region::parse("370000").unwrap();
        let jinan = Region::parse("370100").unwrap();
        assert!(shandong.is_province());
        assert_eq!(jinan.province(), shandong);
        assert!(shandong.contains(jinan));
        assert!(!jinan.contains(shandong));
        assert!(!Region::parse("110000").unwrap().contains(jinan));
        assert_eq!(jinan.to_string(), "370100");
        assert_eq!(jinan.name(), "济南市");
    }

    #[test]
    fn the_table_has_every_province_and_its_prefectures() {
        let provinces: Vec<Region> = Region::all().filter(|r| r.is_province()).collect();
        assert_eq!(provinces.len(), 31);
        for region in Region::all() {
            assert_eq!(Region::parse(&region.to_string()), Ok(region));
            assert!(region.province().is_province());
            assert!(Region::all().any(|p| p == region.province()));
        }
        assert!(
            Region::all()
                .filter(|r| !r.is_province() && r.0 % 100 == 0)
                .count()
                > 330
        );
        assert!(Region::all().count() > 3000);
    }

    #[test]
    fn refuses_malformed_codes() {
        for bad in [
            "", "37000", "3700000", "37a000", "990000", "000000", " 37000", "370199", "371800",
            "110200",
        ] {
            assert!(Region::parse(bad).is_err(), "{bad}");
        }
    }
}
