//! Calendar dates: ISO 8601 `YYYY-MM-DD` on the wire, and China dates (DESIGN.md §1).
//!
//! Every calendar date the product reasons about — "today", a filing's validity, the
//! back-dating window, a revocation's effective date, the accumulator year, the month of a
//! clearing period — is a date in China Standard Time (UTC+8), whatever the server's zone.
//! Services ask a [`Clock`] for it, so tests can put the clock at any hour.

use std::ops::RangeInclusive;

use time::{
    Date, Duration, OffsetDateTime, UtcOffset,
    format_description::BorrowedFormatItem,
    macros::{format_description, offset},
};

const FORMAT: &[BorrowedFormatItem<'static>] = format_description!("[year]-[month]-[day]");

/// China Standard Time.
pub const CHINA: UtcOffset = offset!(+8);

/// The years any date or year the product accepts lies in: one range for every RPC, so a
/// claim that settles can always be listed and its accumulators read.
pub const YEARS: RangeInclusive<i32> = 2000..=2100;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be a date YYYY-MM-DD between 2000 and 2100")]
pub struct DateError;

pub fn parse_date(text: &str) -> Result<Date, DateError> {
    if text.len() != 10 {
        return Err(DateError);
    }
    let date = Date::parse(text, FORMAT).map_err(|_| DateError)?;
    // Nothing this clearinghouse handles lies outside these years: anything else is a
    // typing error, not a date to store.
    if !YEARS.contains(&date.year()) {
        return Err(DateError);
    }
    Ok(date)
}

pub fn format_date(date: Date) -> String {
    date.format(FORMAT).unwrap_or_default()
}

/// The China date of an instant.
pub fn china_date(at: OffsetDateTime) -> Date {
    at.to_offset(CHINA).date()
}

/// Where services read the time: the system clock, or (tests, demos) the system clock
/// shifted so that it started at a chosen instant and runs on from there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    shift: Duration,
}

impl Clock {
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that reads `at` now and advances with the system clock.
    pub fn starting_at(at: OffsetDateTime) -> Self {
        Self {
            shift: at - OffsetDateTime::now_utc(),
        }
    }

    pub fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + self.shift
    }

    /// Today in China.
    pub fn today(&self) -> Date {
        china_date(self.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    #[test]
    fn round_trips() {
        let d = parse_date("2026-02-28").unwrap();
        assert_eq!(format_date(d), "2026-02-28");
        for bad in [
            "2026-02-30",
            "2026-2-28",
            "",
            "20260228",
            "+2026-02-28",
            "1999-12-31",
            "1900-01-01",
            "2101-01-01",
            "0000-01-01",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
        assert!(parse_date("2000-01-01").is_ok());
        assert!(parse_date("2100-12-31").is_ok());
    }

    #[test]
    fn today_is_the_china_date_whatever_the_utc_date() {
        // 01:30 in China is 17:30 of the day before in UTC.
        let clock = Clock::starting_at(datetime!(2026-11-30 17:30 UTC));
        assert_eq!(clock.today(), date!(2026 - 12 - 01));
        assert_eq!(
            china_date(datetime!(2026-11-30 15:59:59 UTC)),
            date!(2026 - 11 - 30)
        );
        assert_eq!(
            china_date(datetime!(2026-11-30 16:00 UTC)),
            date!(2026 - 12 - 01)
        );
        assert_eq!(china_date(datetime!(2026-12-31 16:00 UTC)).year(), 2027);
        // The system clock's today is China's too.
        assert_eq!(
            Clock::system().today(),
            china_date(OffsetDateTime::now_utc())
        );
    }
}
