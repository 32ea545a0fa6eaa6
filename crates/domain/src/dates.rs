//! Calendar dates on the wire: ISO 8601 `YYYY-MM-DD`.

use time::{Date, format_description::BorrowedFormatItem, macros::format_description};

const FORMAT: &[BorrowedFormatItem<'static>] = format_description!("[year]-[month]-[day]");

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be a date YYYY-MM-DD between 1900 and 2100")]
pub struct DateError;

pub fn parse_date(text: &str) -> Result<Date, DateError> {
    if text.len() != 10 {
        return Err(DateError);
    }
    let date = Date::parse(text, FORMAT).map_err(|_| DateError)?;
    // Nothing this clearinghouse handles lies outside these years: anything else is a
    // typing error, not a date to store.
    if !(1900..=2100).contains(&date.year()) {
        return Err(DateError);
    }
    Ok(date)
}

pub fn format_date(date: Date) -> String {
    date.format(FORMAT).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "1899-12-31",
            "2101-01-01",
            "0000-01-01",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }
}
