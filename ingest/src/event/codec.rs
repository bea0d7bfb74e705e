//! The hand-written JSON codec of the payment events (captures, voids, refunds, reversals),
//! most of the log: the writers produce exactly the bytes serde_json would, without building
//! a value first; the readers read that exact shape directly and answer `None` at the first
//! byte that differs, so the caller lets serde read anything else (escapes, another order,
//! another version). A test checks the bytes against serde's.

use chrono::{DateTime, FixedOffset};
use rust_decimal::Decimal;

use super::{Channel, PaymentAdjustment, PaymentCaptured};

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
    let _ = serde_json::to_writer(&mut *out, value);
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

fn channel_named(name: &str) -> Option<Channel> {
    Channel::ALL.into_iter().find(|c| c.as_str() == name)
}

pub(super) fn read_capture(payload: &[u8]) -> Option<PaymentCaptured> {
    let mut r = Exact { bytes: payload, at: 0 };
    r.literal(b"{")?;
    let txn_id = r.field("txn_id")?.to_owned();
    let merchant_id = r.field("merchant_id")?.to_owned();
    let terminal_id = r.field("terminal_id")?.to_owned();
    let batch_no = r.field("batch_no")?.to_owned();
    let stan = r.field("stan")?.to_owned();
    let rrn = r.optional("rrn")?.map(str::to_owned);
    let channel = channel_named(r.field("channel")?)?;
    let channel_txn_id = r.optional("channel_txn_id")?.map(str::to_owned);
    let amount = r.field("amount")?.parse().ok()?;
    let currency = r.field("currency")?.parse().ok()?;
    let at = r.field("at")?.parse().ok()?;
    let payer = r.optional("payer")?.map(str::to_owned);
    let mcc = r.field("mcc")?.to_owned();
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
        txn_id: r.field("txn_id")?.to_owned(),
        original_txn_id: r.field("original_txn_id")?.to_owned(),
        merchant_id: r.field("merchant_id")?.to_owned(),
        terminal_id: r.field("terminal_id")?.to_owned(),
        batch_no: r.field("batch_no")?.to_owned(),
        stan: r.field("stan")?.to_owned(),
        channel: channel_named(r.field("channel")?)?,
        amount: r.field("amount")?.parse().ok()?,
        currency: r.field("currency")?.parse().ok()?,
        at: r.field("at")?.parse().ok()?,
    };
    r.end()?;
    Some(adjustment)
}
