//! Admin records: channel terms and the merchant/terminal onboarding lifecycle, NDJSON like
//! the terminal feed, validated once into the [`Event`]s they would record.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;

use crate::event::{
    Channel, ChannelTermsSet, ContractSigned, Event, FeeTerms, MerchantApplied, MerchantApproved, MerchantClosed,
    MerchantRejected, SettlementCycle, TerminalActivated, TerminalBound, TerminalSuspended, TerminalUnbound,
};
use crate::feed::{LineError, parse_raw};
use crate::fields::{self, FieldError, required};
use crate::money::Currency;

/// Longest carry-forward window accepted, in days.
pub const CARRY_FORWARD_DAYS_MAX: u32 = 31;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFee<'a> {
    #[serde(borrow, default)]
    rate: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    min: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    cap: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdminRecord<'a> {
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    fee_rate: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    fee_tolerance: Option<Cow<'a, str>>,
    #[serde(default)]
    carry_forward_days: Option<u32>,
    #[serde(borrow, default)]
    effective_from: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    merchant_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    legal_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    licence_no: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    mcc: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    timezone: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    settlement_account: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reviewer: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    fees: Option<RawFees<'a>>,
    #[serde(borrow, default)]
    settlement_cycle: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    terminal_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    serial: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    at: Option<Cow<'a, str>>,
}

/// Parses one admin line into the event it records (`line` is 1-based, for errors).
pub fn parse_admin_line(line: u64, text: &[u8]) -> Result<Event, LineError> {
    let raw: RawAdminRecord<'_> = parse_raw(line, text)?;
    validate(raw).map_err(|e| LineError::from_field(line, e))
}

fn timezone(value: Option<Cow<'_, str>>) -> Result<String, FieldError> {
    let v: String = fields::text("timezone", value)?;
    let ok = v.contains('/') && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'+'));
    if !ok {
        return Err(FieldError::new("timezone", "must be an IANA time zone such as Asia/Shanghai"));
    }
    Ok(v)
}

/// The `fees` object as written, keys in order and repeated keys kept, so that a channel
/// named twice is refused instead of one of its terms silently winning.
struct RawFees<'a>(Vec<(Cow<'a, str>, RawFee<'a>)>);

impl<'de: 'a, 'a> Deserialize<'de> for RawFees<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Entries<'a> {
            type Value = RawFees<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of fee terms by channel")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry::<Cow<'a, str>, RawFee<'a>>()? {
                    entries.push((k, v));
                }
                Ok(RawFees(entries))
            }
        }
        deserializer.deserialize_map(Entries(std::marker::PhantomData))
    }
}

fn fees(value: Option<RawFees<'_>>) -> Result<BTreeMap<Channel, FeeTerms>, FieldError> {
    let raw = required("fees", value)?.0;
    if raw.is_empty() {
        return Err(FieldError::new("fees", "must name at least one channel"));
    }
    let mut out = BTreeMap::new();
    for (name, fee) in raw {
        let channel: Channel = name.parse().map_err(|e: String| FieldError::new("fees", e))?;
        let rate = fields::fraction("fees.rate", fee.rate)?;
        let amount = |field, v: Option<Cow<'_, str>>| {
            v.map(|v| fields::non_negative_amount(field, Some(v), Currency::Cny)).transpose()
        };
        let min = amount("fees.min", fee.min)?;
        let cap = amount("fees.cap", fee.cap)?;
        if let (Some(min), Some(cap)) = (min, cap)
            && min > cap
        {
            return Err(FieldError::new("fees.min", format!("{channel}: min {min} is above cap {cap}")));
        }
        if out.insert(channel, FeeTerms { rate, min, cap }).is_some() {
            return Err(FieldError::new("fees", format!("names {channel} twice")));
        }
    }
    Ok(out)
}

fn validate(r: RawAdminRecord<'_>) -> Result<Event, FieldError> {
    let kind = required("kind", r.kind)?;
    let merchant = |v| fields::id("merchant_id", v);
    let terminal = |v| fields::id("terminal_id", v);
    let at = |v| fields::timestamp("at", v);
    Ok(match kind.as_ref() {
        "channel_terms" => {
            let carry_forward_days = required("carry_forward_days", r.carry_forward_days)?;
            if carry_forward_days > CARRY_FORWARD_DAYS_MAX {
                return Err(FieldError::new("carry_forward_days", format!("must be at most {CARRY_FORWARD_DAYS_MAX}")));
            }
            Event::ChannelTermsSet(ChannelTermsSet {
                channel: fields::channel("channel", r.channel)?,
                fee_rate: fields::fraction("fee_rate", r.fee_rate)?,
                fee_tolerance: fields::non_negative_amount("fee_tolerance", r.fee_tolerance, Currency::Cny)?,
                carry_forward_days,
                effective_from: fields::date("effective_from", r.effective_from)?,
            })
        }
        "merchant_applied" => Event::MerchantApplied(MerchantApplied {
            merchant_id: merchant(r.merchant_id)?,
            legal_name: fields::text("legal_name", r.legal_name)?,
            licence_no: fields::id("licence_no", r.licence_no)?,
            mcc: fields::mcc("mcc", r.mcc)?,
            timezone: timezone(r.timezone)?,
            settlement_account: fields::digits("settlement_account", r.settlement_account, 34)?,
            at: at(r.at)?,
        }),
        "merchant_approved" => Event::MerchantApproved(MerchantApproved {
            merchant_id: merchant(r.merchant_id)?,
            reviewer: fields::text("reviewer", r.reviewer)?,
            at: at(r.at)?,
        }),
        "merchant_rejected" => Event::MerchantRejected(MerchantRejected {
            merchant_id: merchant(r.merchant_id)?,
            reviewer: fields::text("reviewer", r.reviewer)?,
            reason: fields::text("reason", r.reason)?,
            at: at(r.at)?,
        }),
        "contract_signed" => {
            let settlement_cycle = match required("settlement_cycle", r.settlement_cycle)?.as_ref() {
                "T1" => SettlementCycle::T1,
                "D0" => SettlementCycle::D0,
                _ => return Err(FieldError::new("settlement_cycle", "must be T1 or D0")),
            };
            Event::ContractSigned(ContractSigned {
                merchant_id: merchant(r.merchant_id)?,
                fees: fees(r.fees)?,
                settlement_cycle,
                at: at(r.at)?,
            })
        }
        "terminal_bound" => Event::TerminalBound(TerminalBound {
            terminal_id: terminal(r.terminal_id)?,
            merchant_id: merchant(r.merchant_id)?,
            serial: fields::id("serial", r.serial)?,
            model: fields::text("model", r.model)?,
            at: at(r.at)?,
        }),
        "terminal_activated" => {
            Event::TerminalActivated(TerminalActivated { terminal_id: terminal(r.terminal_id)?, at: at(r.at)? })
        }
        "terminal_suspended" => Event::TerminalSuspended(TerminalSuspended {
            terminal_id: terminal(r.terminal_id)?,
            reason: r.reason.map(|v| fields::text("reason", Some(v))).transpose()?,
            at: at(r.at)?,
        }),
        "terminal_unbound" => {
            Event::TerminalUnbound(TerminalUnbound { terminal_id: terminal(r.terminal_id)?, at: at(r.at)? })
        }
        "merchant_closed" => {
            Event::MerchantClosed(MerchantClosed { merchant_id: merchant(r.merchant_id)?, at: at(r.at)? })
        }
        other => {
            return Err(FieldError::new(
                "kind",
                format!(
                    "unknown kind {other:?} (expected channel_terms, merchant_applied, merchant_approved, \
                     merchant_rejected, contract_signed, terminal_bound, terminal_activated, \
                     terminal_suspended, terminal_unbound or merchant_closed)"
                ),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixture_admin_records_parse() {
        let path = format!("{}/../tests/fixtures/day/admin.ndjson", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(path).expect("fixture");
        let events: Vec<_> = text
            .lines()
            .enumerate()
            .map(|(i, l)| parse_admin_line(i as u64 + 1, l.as_bytes()).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        assert_eq!(events.len(), 62);
        let Event::ContractSigned(c) = &events[6] else { panic!("contract at line 7: {:?}", events[6]) };
        assert_eq!(c.fees[&Channel::UnionpayCard].cap.map(|d| d.to_string()), Some("20.00".into()));
    }

    #[test]
    fn bad_admin_records_name_the_field() {
        let cases = [
            (
                r#"{"kind":"channel_terms","channel":"wechat","fee_rate":"2","fee_tolerance":"0.01","carry_forward_days":1,"effective_from":"2026-10-25"}"#,
                "fee_rate",
            ),
            (
                r#"{"kind":"channel_terms","channel":"wechat","fee_rate":"0.002","fee_tolerance":"0.01","carry_forward_days":1,"effective_from":"2026-13-25"}"#,
                "effective_from",
            ),
            (
                r#"{"kind":"contract_signed","merchant_id":"M1","fees":{"bitcoin":{"rate":"0.01"}},"settlement_cycle":"T1","at":"2026-11-06T09:01:00+08:00"}"#,
                "fees",
            ),
            (
                r#"{"kind":"contract_signed","merchant_id":"M1","fees":{"wechat":{"rate":"0.01"}},"settlement_cycle":"T7","at":"2026-11-06T09:01:00+08:00"}"#,
                "settlement_cycle",
            ),
            (
                r#"{"kind":"merchant_applied","merchant_id":"M1","legal_name":"A","licence_no":"1","mcc":"5812","timezone":"Shanghai","settlement_account":"1","at":"2026-11-06T09:01:00+08:00"}"#,
                "timezone",
            ),
            (r#"{"kind":"terminal_activated","at":"2026-11-06T09:01:00+08:00"}"#, "terminal_id"),
            (
                r#"{"kind":"contract_signed","merchant_id":"M1","fees":{"wechat":{"rate":"0.9"},"wechat":{"rate":"0.0038"}},"settlement_cycle":"T1","at":"2026-11-06T09:01:00+08:00"}"#,
                "fees",
            ),
        ];
        for (line, field) in cases {
            let e = parse_admin_line(3, line.as_bytes()).expect_err(line);
            assert_eq!(e.field.as_deref(), Some(field), "{e}");
            assert_eq!(e.line, 3);
        }
    }
}
