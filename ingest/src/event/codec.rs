//! The hand-written JSON codec of the payment events (captures, voids, refunds, reversals),
//! most of the log: the writers produce exactly the bytes serde_json would, without building
//! a value first; the readers read that exact shape directly and answer `None` at the first
//! byte that differs, so the caller lets serde read anything else (escapes, another order,
//! another version). A test checks the bytes against serde's.

use chrono::{DateTime, FixedOffset};
use rust_decimal::Decimal;

use super::{Channel, Id, PaymentAdjustment, PaymentCaptured};

/// Writes `"name":` and a JSON string value, escaping exactly as serde_json does.
fn put_str(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    if value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        // Rare: let serde_json escape it. Writing a str to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, value);
    }
}

/// Writes `"name":` and a decimal as a JSON string, as `rust_decimal`'s serde does.
fn put_decimal(out: &mut Vec<u8>, name: &str, value: &Decimal) {
    use std::io::Write;
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":\"");
    let _ = write!(out, "{value}");
    out.push(b'"');
}

/// Writes `"name":` and a time as chrono's serde does.
fn put_time(out: &mut Vec<u8>, name: &str, value: &DateTime<FixedOffset>) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    if !put_rfc3339(out, value) {
        let _ = serde_json::to_writer(&mut *out, value);
    }
}

/// Writes a time as a JSON string exactly as chrono's serde does (RFC 3339, the fraction in
/// 3, 6 or 9 digits as it needs, `Z` for UTC) for the times a payment carries: years 0 to
/// 9999, offsets in whole minutes, no leap second. Anything else writes nothing and answers
/// false.
fn put_rfc3339(out: &mut Vec<u8>, value: &DateTime<FixedOffset>) -> bool {
    use chrono::{Datelike, Timelike};
    let local = value.naive_local();
    let offset = value.offset().local_minus_utc();
    let (year, nano) = (local.year(), local.nanosecond());
    if !(0..=9999).contains(&year) || offset % 60 != 0 || nano >= 1_000_000_000 {
        return false;
    }
    let two = |out: &mut Vec<u8>, n: u32| out.extend_from_slice(&[b'0' + (n / 10) as u8, b'0' + (n % 10) as u8]);
    out.push(b'"');
    two(out, year as u32 / 100);
    two(out, year as u32 % 100);
    out.push(b'-');
    two(out, local.month());
    out.push(b'-');
    two(out, local.day());
    out.push(b'T');
    two(out, local.hour());
    out.push(b':');
    two(out, local.minute());
    out.push(b':');
    two(out, local.second());
    let (digits, mut fraction) = match nano {
        0 => (0, 0),
        n if n % 1_000_000 == 0 => (3, n / 1_000_000),
        n if n % 1_000 == 0 => (6, n / 1_000),
        n => (9, n),
    };
    if digits > 0 {
        out.push(b'.');
        let start = out.len();
        out.resize(start + digits, b'0');
        for d in out[start..].iter_mut().rev() {
            *d = b'0' + (fraction % 10) as u8;
            fraction /= 10;
        }
    }
    if offset == 0 {
        out.push(b'Z');
    } else {
        out.push(if offset < 0 { b'-' } else { b'+' });
        let minutes = offset.unsigned_abs() / 60;
        two(out, minutes / 60);
        out.push(b':');
        two(out, minutes % 60);
    }
    out.push(b'"');
    true
}

/// Reads an RFC 3339 time of the canonical shape `put_rfc3339` writes (any 1 to 9 fraction
/// digits); `None` for anything else, which the caller hands to chrono's own parser. Where it
/// answers, it answers what chrono's parser does.
pub(crate) fn read_rfc3339(text: &str) -> Option<DateTime<FixedOffset>> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        b.get(range)?.iter().try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    let at = |i: usize, c: u8| (b.get(i) == Some(&c)).then_some(());
    let year = digits(0..4)?;
    at(4, b'-')?;
    let month = digits(5..7)?;
    at(7, b'-')?;
    let day = digits(8..10)?;
    at(10, b'T')?;
    let hour = digits(11..13)?;
    at(13, b':')?;
    let minute = digits(14..16)?;
    at(16, b':')?;
    let second = digits(17..19)?;
    let mut i = 19;
    let mut nano = 0;
    if b.get(i) == Some(&b'.') {
        let n = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&n) {
            return None;
        }
        nano = digits(i + 1..i + 1 + n)? * 10u32.pow(9 - n as u32);
        i += 1 + n;
    }
    let offset = match *b.get(i)? {
        b'Z' if b.len() == i + 1 => 0,
        sign @ (b'+' | b'-') if b.len() == i + 6 => {
            at(i + 3, b':')?;
            let (hours, minutes) = (digits(i + 1..i + 3)?, digits(i + 4..i + 6)?);
            if minutes >= 60 {
                return None;
            }
            let seconds = ((hours * 60 + minutes) * 60) as i32;
            if sign == b'-' { -seconds } else { seconds }
        }
        _ => return None,
    };
    // A leap second or any field out of range: chrono's parser decides.
    if second >= 60 || minute >= 60 {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(year as i32, month, day)?;
    let time = chrono::NaiveTime::from_hms_nano_opt(hour, minute, second, nano)?;
    let offset = FixedOffset::east_opt(offset)?;
    date.and_time(time).and_local_timezone(offset).single()
}

pub(super) fn write_capture(out: &mut Vec<u8>, e: &PaymentCaptured) {
    out.push(b'{');
    put_str(out, "txn_id", &e.txn_id);
    out.push(b',');
    put_str(out, "merchant_id", &e.merchant_id);
    out.push(b',');
    put_str(out, "terminal_id", &e.terminal_id);
    out.push(b',');
    put_str(out, "batch_no", &e.batch_no);
    out.push(b',');
    put_str(out, "stan", &e.stan);
    if let Some(rrn) = &e.rrn {
        out.push(b',');
        put_str(out, "rrn", rrn);
    }
    out.push(b',');
    put_str(out, "channel", e.channel.as_str());
    if let Some(id) = &e.channel_txn_id {
        out.push(b',');
        put_str(out, "channel_txn_id", id);
    }
    out.push(b',');
    put_decimal(out, "amount", &e.amount);
    out.push(b',');
    put_str(out, "currency", e.currency.code());
    out.push(b',');
    put_time(out, "at", &e.at);
    if let Some(payer) = &e.payer {
        out.push(b',');
        put_str(out, "payer", payer);
    }
    out.push(b',');
    put_str(out, "mcc", &e.mcc);
    out.push(b'}');
}

pub(super) fn write_adjustment(out: &mut Vec<u8>, e: &PaymentAdjustment) {
    out.push(b'{');
    put_str(out, "txn_id", &e.txn_id);
    out.push(b',');
    put_str(out, "original_txn_id", &e.original_txn_id);
    out.push(b',');
    put_str(out, "merchant_id", &e.merchant_id);
    out.push(b',');
    put_str(out, "terminal_id", &e.terminal_id);
    out.push(b',');
    put_str(out, "batch_no", &e.batch_no);
    out.push(b',');
    put_str(out, "stan", &e.stan);
    out.push(b',');
    put_str(out, "channel", e.channel.as_str());
    out.push(b',');
    put_decimal(out, "amount", &e.amount);
    out.push(b',');
    put_str(out, "currency", e.currency.code());
    out.push(b',');
    put_time(out, "at", &e.at);
    out.push(b'}');
}

/// Reads the exact JSON the hand-written payment writers produce; `None` at the first byte
/// that differs (the caller then lets serde read it).
struct Exact<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Exact<'a> {
    fn literal(&mut self, text: &[u8]) -> Option<()> {
        let end = self.at.checked_add(text.len())?;
        (self.bytes.get(self.at..end)? == text).then(|| self.at = end)
    }

    /// `,"name":` (or `"name":` right after the opening brace) and a string without escapes.
    fn field(&mut self, name: &str) -> Option<&'a str> {
        if self.at > 1 {
            self.literal(b",")?;
        }
        self.literal(b"\"")?;
        self.literal(name.as_bytes())?;
        self.literal(b"\":\"")?;
        let rest = self.bytes.get(self.at..)?;
        let len = rest.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if rest[len] != b'"' {
            return None;
        }
        let value = std::str::from_utf8(&rest[..len]).ok()?;
        self.at += len + 1;
        Some(value)
    }

    /// An optional field: read only when it is the next one.
    fn optional(&mut self, name: &str) -> Option<Option<&'a str>> {
        let next = self.bytes.get(self.at + 2..)?;
        if next.starts_with(name.as_bytes()) && next.get(name.len()..)?.starts_with(b"\":") {
            self.field(name).map(Some)
        } else {
            Some(None)
        }
    }

    fn end(&mut self) -> Option<()> {
        self.literal(b"}")?;
        (self.at == self.bytes.len()).then_some(())
    }
}

/// A payment's time: the canonical shape read directly, any other by chrono.
fn time(text: &str) -> Option<DateTime<FixedOffset>> {
    read_rfc3339(text).or_else(|| text.parse().ok())
}

fn channel_named(name: &str) -> Option<Channel> {
    Channel::ALL.into_iter().find(|c| c.as_str() == name)
}

pub(super) fn read_capture(payload: &[u8]) -> Option<PaymentCaptured> {
    let mut r = Exact { bytes: payload, at: 0 };
    r.literal(b"{")?;
    let txn_id = r.field("txn_id")?.into();
    let merchant_id = r.field("merchant_id")?.into();
    let terminal_id = r.field("terminal_id")?.into();
    let batch_no = r.field("batch_no")?.into();
    let stan = r.field("stan")?.into();
    let rrn = r.optional("rrn")?.map(Id::from);
    let channel = channel_named(r.field("channel")?)?;
    let channel_txn_id = r.optional("channel_txn_id")?.map(Id::from);
    let amount = r.field("amount")?.parse().ok()?;
    let currency = r.field("currency")?.parse().ok()?;
    let at = time(r.field("at")?)?;
    let payer = r.optional("payer")?.map(Id::from);
    let mcc = r.field("mcc")?.into();
    r.end()?;
    Some(PaymentCaptured {
        txn_id,
        merchant_id,
        terminal_id,
        batch_no,
        stan,
        rrn,
        channel,
        channel_txn_id,
        amount,
        currency,
        at,
        payer,
        mcc,
    })
}

pub(super) fn read_adjustment(payload: &[u8]) -> Option<PaymentAdjustment> {
    let mut r = Exact { bytes: payload, at: 0 };
    r.literal(b"{")?;
    let adjustment = PaymentAdjustment {
        txn_id: r.field("txn_id")?.into(),
        original_txn_id: r.field("original_txn_id")?.into(),
        merchant_id: r.field("merchant_id")?.into(),
        terminal_id: r.field("terminal_id")?.into(),
        batch_no: r.field("batch_no")?.into(),
        stan: r.field("stan")?.into(),
        channel: channel_named(r.field("channel")?)?,
        amount: r.field("amount")?.parse().ok()?,
        currency: r.field("currency")?.parse().ok()?,
        at: time(r.field("at")?)?,
    };
    r.end()?;
    Some(adjustment)
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, FixedOffset};

    use super::{put_rfc3339, read_rfc3339};

    #[test]
    fn the_shapes_payments_carry_are_read_directly() {
        for text in ["2026-11-26T12:00:00+08:00", "1999-12-31T23:59:59.123456-05:30", "2026-01-01T00:00:00.5Z"] {
            let direct = read_rfc3339(text).expect("read directly");
            assert_eq!(direct, DateTime::parse_from_rfc3339(text).expect("chrono"));
            assert_eq!(direct.offset(), DateTime::parse_from_rfc3339(text).expect("chrono").offset());
        }
        for text in ["2026-11-26T12:00:00+0800", "2026-11-26 12:00:00Z", "2026-11-26T23:59:60Z", "2026-02-30T00:00:00Z"]
        {
            assert_eq!(read_rfc3339(text), None, "{text}");
        }
    }

    proptest::proptest! {
        /// Any time chrono can hold, at any offset: the direct writer writes chrono's serde
        /// text or steps aside, and the direct reader reads that text back as chrono does.
        #[test]
        fn times_are_written_and_read_as_chrono_does(
            secs in -70_000_000_000i64..260_000_000_000,
            nanos in proptest::prop_oneof![0u32..1, 0u32..1000, 0u32..1_000_000_000],
            scale in 0u32..4,
            offset in -86_399i32..86_400,
            whole_minutes in proptest::bool::ANY,
        ) {
            let offset = if whole_minutes { offset / 60 * 60 } else { offset };
            let nanos = nanos / 1000u32.pow(scale) * 1000u32.pow(scale);
            let tz = FixedOffset::east_opt(offset).expect("offset");
            let Some(at) = DateTime::from_timestamp(secs, nanos) else { return Ok(()) };
            let at = at.with_timezone(&tz);
            let serde = serde_json::to_vec(&at).expect("serde");
            let mut ours = Vec::new();
            if put_rfc3339(&mut ours, &at) {
                proptest::prop_assert_eq!(String::from_utf8(ours).expect("utf8"), String::from_utf8(serde.clone()).expect("utf8"));
            }
            let text = std::str::from_utf8(&serde[1..serde.len() - 1]).expect("utf8");
            let chrono: Option<DateTime<FixedOffset>> = text.parse().ok();
            if let Some(direct) = read_rfc3339(text) {
                proptest::prop_assert_eq!(Some(direct), chrono);
                proptest::prop_assert_eq!(Some(direct), DateTime::parse_from_rfc3339(text).ok());
                proptest::prop_assert_eq!(direct.offset().local_minus_utc(), chrono.map(|c| c.offset().local_minus_utc()).unwrap_or(i32::MIN));
            }
        }

        /// Text of the right shape with any digits in it (days and hours out of range,
        /// offsets with 60 or more minutes, any number of fraction digits): the direct reader
        /// answers what chrono's parser answers, or steps aside.
        #[test]
        fn the_time_reader_never_differs_from_chrono(
            fields in (0u32..14, 0u32..33, 0u32..26, 0u32..62, 0u32..62),
            year in 0u32..10_000,
            fraction in "[0-9]{0,11}",
            zone in proptest::prop_oneof![
                proptest::strategy::Just("Z".to_string()),
                "[+-][0-9]{2}:[0-9]{2}",
                "[+-][0-9]{2}[0-9]{2}",
                "[zZ ]",
            ],
            separator in proptest::prop_oneof![proptest::strategy::Just('T'), proptest::strategy::Just('t'), proptest::strategy::Just(' ')],
        ) {
            let dot = if fraction.is_empty() { String::new() } else { format!(".{fraction}") };
            let text = format!(
                "{year:04}-{:02}-{:02}{separator}{:02}:{:02}:{:02}{dot}{zone}",
                fields.0, fields.1, fields.2, fields.3, fields.4
            );
            let chrono: Option<DateTime<FixedOffset>> = text.parse().ok();
            if let Some(direct) = read_rfc3339(&text) {
                proptest::prop_assert_eq!(Some(direct), chrono, "{}", text);
                // The feed's strict reader agrees too (it reads what this one does not).
                proptest::prop_assert_eq!(Some(direct), DateTime::parse_from_rfc3339(&text).ok(), "{}", text);
                proptest::prop_assert_eq!(direct.offset().local_minus_utc(), chrono.map(|c| c.offset().local_minus_utc()).unwrap_or(i32::MIN));
            }
        }
    }
}
