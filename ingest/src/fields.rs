//! Checks shared by the feed and admin parsers: each turns one raw field into a typed value
//! or a [`FieldError`] naming the field.

use std::borrow::Cow;

use chrono::{DateTime, FixedOffset, NaiveDate};
use rust_decimal::Decimal;

use crate::event::Channel;
use crate::money::{self, Currency};

/// Longest id (merchant, terminal, transaction, channel transaction) accepted.
pub const ID_BYTES_MAX: usize = 64;
/// Longest free-text field (names, reasons, serials) accepted.
pub const TEXT_BYTES_MAX: usize = 256;

/// A field that failed its check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's name as it appears in the input.
    pub field: &'static str,
    /// What is wrong with it, never echoing a card number.
    pub reason: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        FieldError { field, reason: reason.into() }
    }
}

/// Result of a field check.
pub type FieldResult<T> = Result<T, FieldError>;

/// The value, or "missing".
pub fn required<T>(field: &'static str, value: Option<T>) -> FieldResult<T> {
    value.ok_or_else(|| FieldError::new(field, "is required"))
}

/// Refuses a field that has no meaning for this kind of record.
pub fn absent<T>(field: &'static str, value: &Option<T>, kind: &str) -> FieldResult<()> {
    match value {
        Some(_) => Err(FieldError::new(field, format!("is not allowed on a {kind} record"))),
        None => Ok(()),
    }
}

/// An identifier: 1 to [`ID_BYTES_MAX`] bytes of ASCII letters, digits, `-`, `_` and `.`.
pub fn id<'v, T: From<Cow<'v, str>>>(field: &'static str, value: Option<Cow<'v, str>>) -> FieldResult<T> {
    let v = required(field, value)?;
    let ok = !v.is_empty()
        && v.len() <= ID_BYTES_MAX
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        return Err(FieldError::new(field, format!("must be 1 to {ID_BYTES_MAX} letters, digits, '-', '_' or '.'")));
    }
    Ok(T::from(v))
}

/// A string of 1 to `max` ASCII digits.
pub fn digits<'v, T: From<Cow<'v, str>>>(
    field: &'static str,
    value: Option<Cow<'v, str>>,
    max: usize,
) -> FieldResult<T> {
    let v = required(field, value)?;
    if v.is_empty() || v.len() > max || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FieldError::new(field, format!("must be 1 to {max} digits")));
    }
    Ok(T::from(v))
}

/// Exactly `len` ASCII digits (batch numbers and trace numbers are fixed-width on terminals,
/// so `000012` and `12` are not allowed to name the same batch).
pub fn fixed_digits<'v, T: From<Cow<'v, str>>>(
    field: &'static str,
    value: Option<Cow<'v, str>>,
    len: usize,
) -> FieldResult<T> {
    let v = required(field, value)?;
    if v.len() != len || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FieldError::new(field, format!("must be exactly {len} digits")));
    }
    Ok(T::from(v))
}

/// Free text: 1 to [`TEXT_BYTES_MAX`] bytes, no control characters.
pub fn text<'v, T: From<Cow<'v, str>>>(field: &'static str, value: Option<Cow<'v, str>>) -> FieldResult<T> {
    let v = required(field, value)?;
    if v.trim().is_empty() || v.len() > TEXT_BYTES_MAX || v.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            format!("must be 1 to {TEXT_BYTES_MAX} bytes of text without control characters"),
        ));
    }
    Ok(T::from(v))
}

/// A merchant category code: four digits.
pub fn mcc<'v, T: From<Cow<'v, str>>>(field: &'static str, value: Option<Cow<'v, str>>) -> FieldResult<T> {
    let v = required(field, value)?;
    if v.len() != 4 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FieldError::new(field, "must be a four-digit merchant category code"));
    }
    Ok(T::from(v))
}

/// A payment channel.
pub fn channel(field: &'static str, value: Option<Cow<'_, str>>) -> FieldResult<Channel> {
    required(field, value)?.parse().map_err(|e: String| FieldError::new(field, e))
}

/// A currency code.
pub fn currency(field: &'static str, value: Option<Cow<'_, str>>) -> FieldResult<Currency> {
    required(field, value)?.parse().map_err(|e: String| FieldError::new(field, e))
}

/// Earliest business time accepted.
pub const TIME_YEAR_MIN: i32 = 2000;
/// Latest business time accepted (years before this one).
pub const TIME_YEAR_END: i32 = 2100;
/// Largest UTC offset accepted, in seconds (real time zones stay within ±14 h).
pub const UTC_OFFSET_SECONDS_MAX: i32 = 14 * 3600;

/// An RFC 3339 time with its UTC offset, e.g. `2026-11-26T12:00:01+08:00`, in the years
/// [`TIME_YEAR_MIN`]..[`TIME_YEAR_END`], with a real-world offset and no leap second.
pub fn timestamp(field: &'static str, value: Option<Cow<'_, str>>) -> FieldResult<DateTime<FixedOffset>> {
    use chrono::{Datelike, Timelike};
    let v = required(field, value)?;
    // The common shape is read directly; chrono reads (and explains) any other.
    let t = match crate::event::read_rfc3339(&v) {
        Some(t) => t,
        None => DateTime::parse_from_rfc3339(&v).map_err(|e| {
            FieldError::new(
                field,
                format!("must be an RFC 3339 time with offset, like 2026-11-26T12:00:01+08:00 ({e})"),
            )
        })?,
    };
    if !(TIME_YEAR_MIN..TIME_YEAR_END).contains(&t.year()) {
        return Err(FieldError::new(field, format!("must be in the years {TIME_YEAR_MIN} to {}", TIME_YEAR_END - 1)));
    }
    if t.offset().local_minus_utc().abs() > UTC_OFFSET_SECONDS_MAX {
        return Err(FieldError::new(field, "has a UTC offset beyond ±14:00"));
    }
    if t.nanosecond() >= 1_000_000_000 {
        return Err(FieldError::new(field, "must not be a leap second"));
    }
    Ok(t)
}

/// A calendar date `YYYY-MM-DD`.
pub fn date(field: &'static str, value: Option<Cow<'_, str>>) -> FieldResult<NaiveDate> {
    let v = required(field, value)?;
    NaiveDate::parse_from_str(&v, "%Y-%m-%d").map_err(|_| FieldError::new(field, "must be a date YYYY-MM-DD"))
}

/// A positive amount at the currency's scale.
pub fn positive_amount(field: &'static str, value: Option<Cow<'_, str>>, cur: Currency) -> FieldResult<Decimal> {
    money::parse_positive_amount(&required(field, value)?, cur).map_err(|e| FieldError::new(field, e.to_string()))
}

/// A zero or positive amount at the currency's scale.
pub fn non_negative_amount(field: &'static str, value: Option<Cow<'_, str>>, cur: Currency) -> FieldResult<Decimal> {
    money::parse_non_negative_amount(&required(field, value)?, cur).map_err(|e| FieldError::new(field, e.to_string()))
}

/// A rate or tolerance: a plain non-negative decimal below 1 with at most 6 places.
pub fn fraction(field: &'static str, value: Option<Cow<'_, str>>) -> FieldResult<Decimal> {
    let v = required(field, value)?;
    let bad = || FieldError::new(field, "must be a decimal from 0 up to 1 with at most 6 places, like \"0.0038\"");
    let plain = v.bytes().all(|b| b.is_ascii_digit() || b == b'.') && !v.starts_with('.') && !v.ends_with('.');
    let d: Decimal = if plain {
        v.parse().map_err(|_| bad())?
    } else {
        return Err(bad());
    };
    if d.scale() > 6 || d >= Decimal::ONE {
        return Err(bad());
    }
    Ok(d)
}

/// Masks anything in `text` that could be a card number before it goes into a message: every
/// stretch of 12 or more digits, counting digits joined by single spaces or dashes, keeps its
/// first 6 and last 4 digits and shows `*` for the rest. Error messages quote input; a full
/// PAN must never reach a log or a screen through them.
pub fn mask_card_numbers(text: &str) -> std::borrow::Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // A stretch: digits, possibly joined by one space or dash between digits.
        let start = i;
        let mut end = i;
        let mut digits = 0;
        while end < bytes.len() {
            if bytes[end].is_ascii_digit() {
                digits += 1;
                end += 1;
            } else if matches!(bytes[end], b' ' | b'-') && end + 1 < bytes.len() && bytes[end + 1].is_ascii_digit() {
                end += 1;
            } else {
                break;
            }
        }
        if digits >= 12 {
            let buf = out.get_or_insert_with(|| bytes.to_vec());
            let mut seen = 0;
            for b in &mut buf[start..end] {
                if b.is_ascii_digit() {
                    seen += 1;
                    if seen > 6 && seen <= digits - 4 {
                        *b = b'*';
                    }
                }
            }
        }
        i = end;
    }
    match out {
        // Only ASCII digits were replaced by an ASCII '*': still UTF-8.
        Some(buf) => std::borrow::Cow::Owned(String::from_utf8_lossy(&buf).into_owned()),
        None => std::borrow::Cow::Borrowed(text),
    }
}

/// The digits of `text` with single spaces and dashes between them dropped, split into runs.
fn digit_runs(text: &str) -> impl Iterator<Item = String> + '_ {
    let joined: String = text
        .char_indices()
        .filter(|&(i, c)| {
            let between_digits = |j: usize| {
                text[..j].chars().next_back().is_some_and(|p| p.is_ascii_digit())
                    && text[j + 1..].chars().next().is_some_and(|n| n.is_ascii_digit())
            };
            !(matches!(c, ' ' | '-') && between_digits(i))
        })
        .map(|(_, c)| c)
        .collect();
    joined
        .split(|c: char| !c.is_ascii_digit())
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect::<Vec<_>>()
        .into_iter()
}

/// Whether `text` holds a full card number: 13 to 19 digits (spaces and dashes between them
/// ignored) that pass the Luhn check, anywhere in it.
fn holds_pan(text: &str) -> bool {
    // Most payer tokens hold far fewer digits than a card number: nothing more to look at.
    if text.bytes().filter(u8::is_ascii_digit).count() < 13 {
        return false;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return (13..=19).contains(&text.len()) && luhn_valid(text) || text.len() > 19 && has_pan_window(text);
    }
    digit_runs(text)
        .any(|run| (13..=19).contains(&run.len()) && luhn_valid(&run) || run.len() > 19 && has_pan_window(&run))
}

/// Whether a long run of digits holds 16 consecutive digits that pass the Luhn check.
fn has_pan_window(digits: &str) -> bool {
    digits.as_bytes().windows(16).any(|w| luhn_valid(std::str::from_utf8(w).unwrap_or("")))
}

/// Luhn check of an all-digit string.
fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0u32;
    for (i, b) in digits.bytes().rev().enumerate() {
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

/// A payer token. On the card channel it must be a masked PAN (first 6 digits, 2 to 9 `*`,
/// last 4 digits). On any channel a full PAN (13 to 19 digits passing the Luhn check, also
/// when spaces or dashes separate them or other text surrounds them) is refused, except
/// Alipay's own 16-digit buyer ids (`2088…`) on the Alipay channel. The error never repeats
/// the value.
pub fn payer<'v, T: From<Cow<'v, str>>>(
    field: &'static str,
    value: Option<Cow<'v, str>>,
    ch: Channel,
) -> FieldResult<Option<T>> {
    let Some(v) = value else { return Ok(None) };
    let all_digits = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
    let alipay_buyer = ch == Channel::Alipay && v.len() == 16 && v.starts_with("2088") && all_digits;
    let pan_like = holds_pan(&v);
    let full_pan = "is a full card number (PAN); it is never stored: send it masked as the first 6 and last 4 digits";
    if ch.is_card() {
        let b = v.as_bytes();
        let masked = (12..=19).contains(&b.len())
            && b[..6].iter().all(u8::is_ascii_digit)
            && b[b.len() - 4..].iter().all(u8::is_ascii_digit)
            && b[6..b.len() - 4].iter().all(|&c| c == b'*')
            && b.len() - 10 >= 2;
        if masked {
            return Ok(Some(T::from(v)));
        }
        if all_digits && (12..=19).contains(&v.len()) {
            return Err(FieldError::new(field, full_pan));
        }
        return Err(FieldError::new(
            field,
            "must be a masked card number: first 6 digits, '*' in between, last 4 digits",
        ));
    }
    if pan_like && !alipay_buyer {
        return Err(FieldError::new(field, full_pan));
    }
    if v.is_empty() || v.len() > ID_BYTES_MAX || v.chars().any(char::is_control) {
        return Err(FieldError::new(field, format!("must be 1 to {ID_BYTES_MAX} bytes without control characters")));
    }
    Ok(Some(T::from(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(s))
    }

    #[test]
    fn full_card_numbers_are_refused_without_being_repeated() {
        let pan = "6222021234567890128"; // 19 digits, Luhn-valid
        assert!(luhn_valid(pan));
        let err = payer::<String>("payer", c(pan), Channel::UnionpayCard).expect_err("refused");
        assert!(err.reason.contains("full card number") && !err.reason.contains(pan), "{err:?}");
        let err = payer::<String>("payer", c(pan), Channel::Wechat).expect_err("refused on QR too");
        assert!(!err.reason.contains(pan));
        assert!(payer::<String>("payer", c("622848******1964"), Channel::UnionpayCard).is_ok());
        assert!(payer::<String>("payer", c("622848*1964"), Channel::UnionpayCard).is_err(), "too short a mask");
        assert!(payer::<String>("payer", c("62284812345X1964"), Channel::UnionpayCard).is_err());
        assert!(payer::<String>("payer", c("2088498289387902"), Channel::Alipay).is_ok(), "Alipay buyer id");
        assert!(payer::<String>("payer", c("o397e0750ea82"), Channel::Wechat).is_ok());
        assert_eq!(payer::<String>("payer", None, Channel::Cash), Ok(None));
    }

    #[test]
    fn card_numbers_are_found_with_separators_and_masked_in_messages() {
        for hidden in
            ["6222 0212 3456 7890 128", "6222-0212-3456-7890-128", "card:6222021234567890128", "x6222021234567890128y"]
        {
            let err = payer::<String>("payer", c(hidden), Channel::Wechat).expect_err(hidden);
            assert!(err.reason.contains("full card number"), "{hidden}: {err:?}");
        }
        assert_eq!(
            mask_card_numbers("invalid type: integer `6222021234567890128`, expected a string"),
            "invalid type: integer `622202*********0128`, expected a string"
        );
        assert_eq!(mask_card_numbers("6222 0212 3456 7890 128 and 42"), "6222 02** **** ***0 128 and 42");
        assert_eq!(mask_card_numbers("line 12, 25.00, 20261126"), "line 12, 25.00, 20261126");
    }

    #[test]
    fn ids_and_fractions_are_checked() {
        assert!(id::<String>("txn_id", c("M1-20261126-000123")).is_ok());
        assert!(id::<String>("txn_id", c("bad id")).is_err());
        assert!(id::<String>("txn_id", c(&"x".repeat(65))).is_err());
        assert_eq!(id::<String>("txn_id", None).expect_err("missing").reason, "is required");
        assert!(fraction("fee_rate", c("0.0038")).is_ok());
        for bad in ["1", "1.5", "-0.1", "0.0000001", "abc", ".5"] {
            assert!(fraction("fee_rate", c(bad)).is_err(), "{bad}");
        }
        assert!(timestamp("at", c("2026-11-26T12:00:01")).is_err(), "offset required");
        assert!(mcc::<String>("mcc", c("58123")).is_err());
    }
}
