//! Currencies and exact amounts.
//!
//! Money is a [`rust_decimal::Decimal`] whose scale never exceeds the currency's minor unit.
//! Amounts are parsed from their decimal text once, here, and carried as typed values after.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The largest amount a single record may carry, in major units (one hundred million).
/// Anything larger is certainly a data error on a POS terminal and would only risk overflow
/// in sums further down.
pub const AMOUNT_MAX: Decimal = Decimal::from_parts(100_000_000, 0, 0, false, 0);

/// An ISO 4217 currency that posledger books.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Currency {
    /// Chinese yuan renminbi, 2 decimal places (fen).
    #[serde(rename = "CNY")]
    Cny,
    /// Hong Kong dollar, 2 decimal places.
    #[serde(rename = "HKD")]
    Hkd,
    /// US dollar, 2 decimal places.
    #[serde(rename = "USD")]
    Usd,
    /// Japanese yen, no minor unit.
    #[serde(rename = "JPY")]
    Jpy,
}

impl Currency {
    /// Every currency posledger books.
    pub const ALL: [Currency; 4] = [Currency::Cny, Currency::Hkd, Currency::Usd, Currency::Jpy];

    /// Number of decimal places of the currency's minor unit.
    pub const fn scale(self) -> u32 {
        match self {
            Currency::Cny | Currency::Hkd | Currency::Usd => 2,
            Currency::Jpy => 0,
        }
    }

    /// The currency of a stored record that names none: CNY. Reconciliation records (statement
    /// lines, breaks, resolutions) of logs written before they carried a currency are all CNY,
    /// and carry it only when it is another (so such logs stay byte for byte the same).
    pub const fn cny() -> Currency {
        Currency::Cny
    }

    /// Whether it is CNY, which stored reconciliation records leave out (see [`Currency::cny`]).
    pub fn is_cny(&self) -> bool {
        *self == Currency::Cny
    }

    /// The ISO code.
    pub const fn code(self) -> &'static str {
        match self {
            Currency::Cny => "CNY",
            Currency::Hkd => "HKD",
            Currency::Usd => "USD",
            Currency::Jpy => "JPY",
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "CNY" => Ok(Currency::Cny),
            "HKD" => Ok(Currency::Hkd),
            "USD" => Ok(Currency::Usd),
            "JPY" => Ok(Currency::Jpy),
            other => Err(format!("unsupported currency {other:?} (expected CNY, HKD, USD or JPY)")),
        }
    }
}

/// Why an amount's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Not a plain decimal number (exponents, spaces, signs other than a leading `-` are refused).
    #[error("{0:?} is not a decimal amount")]
    Malformed(String),
    /// More decimal places than the currency has.
    #[error("{text:?} has more than {scale} decimal places")]
    OverScale {
        /// The text as given.
        text: String,
        /// The currency's scale.
        scale: u32,
    },
    /// Zero or negative where a positive amount is required.
    #[error("{0:?} must be greater than zero")]
    NotPositive(String),
    /// Negative where zero or more is required.
    #[error("{0:?} must not be negative")]
    Negative(String),
    /// Above [`AMOUNT_MAX`].
    #[error("{0:?} exceeds the limit of {AMOUNT_MAX}")]
    TooLarge(String),
}

/// Parses a decimal amount for `currency`, refusing more decimal places than the currency has,
/// and returns it rescaled to exactly the currency's scale (`"25"` → `25.00`).
pub fn parse_amount(text: &str, currency: Currency) -> Result<Decimal, AmountError> {
    let malformed = || AmountError::Malformed(text.to_owned());
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (int_part, frac_part) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !plain(int_part) || frac_part.is_some_and(|f| !plain(f)) || int_part.len() > 15 {
        return Err(malformed());
    }
    let frac_len = frac_part.map_or(0, str::len);
    if frac_len as u32 > currency.scale() {
        return Err(AmountError::OverScale { text: text.to_owned(), scale: currency.scale() });
    }
    let mut value = Decimal::from_str(text).map_err(|_| malformed())?;
    if value.abs() > AMOUNT_MAX {
        return Err(AmountError::TooLarge(text.to_owned()));
    }
    value.rescale(currency.scale());
    Ok(value)
}

/// [`parse_amount`], then refuses zero and negative values.
pub fn parse_positive_amount(text: &str, currency: Currency) -> Result<Decimal, AmountError> {
    let value = parse_amount(text, currency)?;
    if value <= Decimal::ZERO {
        return Err(AmountError::NotPositive(text.to_owned()));
    }
    Ok(value)
}

/// [`parse_amount`], then refuses negative values.
pub fn parse_non_negative_amount(text: &str, currency: Currency) -> Result<Decimal, AmountError> {
    let value = parse_amount(text, currency)?;
    if value < Decimal::ZERO {
        return Err(AmountError::Negative(text.to_owned()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_rescaled_to_the_currency() {
        assert_eq!(parse_amount("25", Currency::Cny).map(|d| d.to_string()), Ok("25.00".into()));
        assert_eq!(parse_amount("0.5", Currency::Cny).map(|d| d.to_string()), Ok("0.50".into()));
        assert_eq!(parse_amount("1200", Currency::Jpy).map(|d| d.to_string()), Ok("1200".into()));
    }

    #[test]
    fn bad_amount_text_is_refused() {
        for bad in ["", "1e3", " 1.00", "1.00 ", "+1", "1,00", "1.", ".5", "--1", "0x10", "NaN"] {
            assert!(
                matches!(parse_amount(bad, Currency::Cny), Err(AmountError::Malformed(_))),
                "{bad:?} should be malformed"
            );
        }
        assert!(matches!(parse_amount("1.001", Currency::Cny), Err(AmountError::OverScale { scale: 2, .. })));
        assert!(matches!(parse_amount("1.5", Currency::Jpy), Err(AmountError::OverScale { .. })));
        assert!(matches!(parse_amount("100000000.01", Currency::Cny), Err(AmountError::TooLarge(_))));
        assert!(matches!(parse_positive_amount("0.00", Currency::Cny), Err(AmountError::NotPositive(_))));
        assert!(matches!(parse_positive_amount("-3.00", Currency::Cny), Err(AmountError::NotPositive(_))));
        assert!(matches!(parse_non_negative_amount("-0.01", Currency::Cny), Err(AmountError::Negative(_))));
        assert_eq!(parse_non_negative_amount("0", Currency::Cny).map(|d| d.to_string()), Ok("0.00".into()));
    }
}
