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
}

/// Province prefixes of GB/T 2260 (mainland provinces, autonomous regions and
/// municipalities, plus the national pooling code 99 used by some central schemes).
const PROVINCES: [u32; 31] = [
    11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52,
    53, 54, 61, 62, 63, 64, 65,
];

impl Region {
    pub fn parse(text: &str) -> Result<Self, RegionError> {
        if text.len() != 6 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RegionError::Malformed);
        }
        let code: u32 = text.parse().map_err(|_| RegionError::Malformed)?;
        if !PROVINCES.contains(&(code / 10_000)) {
            return Err(RegionError::UnknownProvince);
        }
        Ok(Self(code))
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
    }

    #[test]
    fn refuses_malformed_codes() {
        for bad in [
            "", "37000", "3700000", "37a000", "990000", "000000", " 37000",
        ] {
            assert!(Region::parse(bad).is_err(), "{bad}");
        }
    }
}
