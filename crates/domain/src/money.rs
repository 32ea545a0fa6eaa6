//! Money in yuan: `rust_decimal`, rounded half away from zero to the fen.

use rust_decimal::{Decimal, RoundingStrategy};

/// Rounds half away from zero to 0.01, the only rounding DESIGN.md section 5 allows.
pub fn round2(value: Decimal) -> Decimal {
    value.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// Why a decimal string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("is empty")]
    Empty,
    #[error("is not a decimal number")]
    NotANumber,
    #[error("must not be negative")]
    Negative,
    #[error("has more than {0} decimals")]
    TooManyDecimals(u32),
    #[error("is too large")]
    TooLarge,
}

/// Largest amount accepted anywhere: 10^13 yuan, far above any claim or reserve, and small
/// enough that products of two such values stay inside `Decimal`'s 28 digits.
const MAX_ABS: Decimal = Decimal::from_parts(0x4e72_a000, 0x0000_0918, 0, false, 0);

/// Parses a non-negative decimal string with at most `max_decimals` decimals.
pub fn parse_decimal(text: &str, max_decimals: u32) -> Result<Decimal, DecimalError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DecimalError::Empty);
    }
    // Only plain notation: digits with an optional point; no exponent, no sign but '-'.
    let body = text.strip_prefix('-').unwrap_or(text);
    if body.is_empty()
        || body.starts_with('.')
        || body.ends_with('.')
        || !body.chars().all(|c| c.is_ascii_digit() || c == '.')
        || body.chars().filter(|&c| c == '.').count() > 1
        || body.len() > 30
    {
        return Err(DecimalError::NotANumber);
    }
    let value: Decimal = text.parse().map_err(|_| DecimalError::NotANumber)?;
    if value.is_sign_negative() && !value.is_zero() {
        return Err(DecimalError::Negative);
    }
    if value.scale() > max_decimals {
        return Err(DecimalError::TooManyDecimals(max_decimals));
    }
    if value > MAX_ABS {
        return Err(DecimalError::TooLarge);
    }
    Ok(value.abs())
}

/// Formats an amount with exactly two decimals, as the wire format requires.
pub fn format2(value: Decimal) -> String {
    let mut v = value;
    v.rescale(2);
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn rounds_half_away_from_zero() {
        assert_eq!(round2(dec!(0.125)), dec!(0.13));
        assert_eq!(round2(dec!(0.135)), dec!(0.14));
        assert_eq!(round2(dec!(71.1815)), dec!(71.18));
        assert_eq!(round2(dec!(-0.125)), dec!(-0.13));
        assert_eq!(round2(dec!(0.1249999)), dec!(0.12));
    }

    #[test]
    fn parses_only_plain_non_negative_decimals() {
        assert_eq!(parse_decimal("12.50", 2), Ok(dec!(12.50)));
        assert_eq!(parse_decimal("0", 2), Ok(dec!(0)));
        assert_eq!(parse_decimal("-0.00", 2), Ok(dec!(0.00)));
        assert_eq!(
            parse_decimal("1.23456", 4),
            Err(DecimalError::TooManyDecimals(4))
        );
        assert_eq!(parse_decimal("-1", 2), Err(DecimalError::Negative));
        assert_eq!(parse_decimal("1e5", 2), Err(DecimalError::NotANumber));
        assert_eq!(parse_decimal("", 2), Err(DecimalError::Empty));
        assert_eq!(parse_decimal("1.", 2), Err(DecimalError::NotANumber));
        assert_eq!(parse_decimal("NaN", 2), Err(DecimalError::NotANumber));
        assert_eq!(
            parse_decimal("99999999999999", 2),
            Err(DecimalError::TooLarge)
        );
        assert_eq!(parse_decimal("10000000000000", 2), Ok(dec!(10000000000000)));
    }

    #[test]
    fn formats_two_decimals() {
        assert_eq!(format2(dec!(12.5)), "12.50");
        assert_eq!(format2(dec!(0)), "0.00");
        assert_eq!(format2(dec!(25728.75)), "25728.75");
    }
}
