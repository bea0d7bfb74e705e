//! Fee arithmetic, exact and deterministic.
//!
//! Rounding rule (one rule everywhere): to the currency's minor unit, half away from zero
//! ("round half up" on positive amounts), the rule of Chinese acquiring statements.

use ingest::event::FeeTerms;
use ingest::money::Currency;
use rust_decimal::{Decimal, RoundingStrategy};

/// Rounds to the currency's minor unit, half away from zero.
pub fn round(amount: Decimal, currency: Currency) -> Decimal {
    let mut r = amount.round_dp_with_strategy(currency.scale(), RoundingStrategy::MidpointAwayFromZero);
    r.rescale(currency.scale());
    r
}

/// The merchant's fee on a payment: `rate × amount` rounded, raised to `min`, lowered to
/// `cap`, and never more than the amount itself.
pub fn merchant_fee(terms: &FeeTerms, amount: Decimal, currency: Currency) -> Decimal {
    let mut fee = round(terms.rate * amount, currency);
    if let Some(min) = terms.min {
        fee = fee.max(min);
    }
    if let Some(cap) = terms.cap {
        fee = fee.min(cap);
    }
    let mut fee = fee.min(amount).max(Decimal::ZERO);
    fee.rescale(currency.scale());
    fee
}

/// The part of `fee` a refund gives back: in proportion to the refunded share of the payment,
/// rounded; the refund that completes the payment gives back exactly what is left, so a
/// fully refunded payment nets to zero on every account whatever the rounding did before.
pub fn refunded_fee(
    fee: Decimal,
    fee_returned_so_far: Decimal,
    amount: Decimal,
    refunded_so_far: Decimal,
    refund: Decimal,
    currency: Currency,
) -> Decimal {
    if refunded_so_far + refund >= amount {
        return fee - fee_returned_so_far;
    }
    let share = round(fee * refund / amount, currency);
    // Never give back more fee than remains to give back.
    share.min(fee - fee_returned_so_far)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    fn terms(rate: &str, min: Option<&str>, cap: Option<&str>) -> FeeTerms {
        FeeTerms { rate: d(rate), min: min.map(d), cap: cap.map(d) }
    }

    #[test]
    fn fees_round_half_up_and_respect_min_and_cap() {
        let cny = Currency::Cny;
        assert_eq!(merchant_fee(&terms("0.0038", None, None), d("100.00"), cny), d("0.38"));
        // 0.0038 × 25.00 = 0.095 → 0.10 (half up)
        assert_eq!(merchant_fee(&terms("0.0038", None, None), d("25.00"), cny), d("0.10"));
        // 0.0038 × 1.31 = 0.004978 → 0.00
        assert_eq!(merchant_fee(&terms("0.0038", None, None), d("1.31"), cny), d("0.00"));
        // The cap reached exactly, and passed.
        assert_eq!(merchant_fee(&terms("0.0060", None, Some("20.00")), d("3333.33"), cny), d("20.00"));
        assert_eq!(merchant_fee(&terms("0.0060", None, Some("20.00")), d("5000.00"), cny), d("20.00"));
        assert_eq!(merchant_fee(&terms("0.0060", None, Some("20.00")), d("3000.00"), cny), d("18.00"));
        assert_eq!(merchant_fee(&terms("0.0038", Some("0.10"), None), d("1.00"), cny), d("0.10"));
        // The fee never exceeds the amount; zero-fee cash stays zero.
        assert_eq!(merchant_fee(&terms("0.0038", Some("0.10"), None), d("0.05"), cny), d("0.05"));
        assert_eq!(merchant_fee(&terms("0", None, None), d("47.82"), cny), d("0.00"));
    }

    #[test]
    fn refunds_in_thirds_of_an_odd_amount_return_the_whole_fee() {
        let cny = Currency::Cny;
        let (amount, fee) = (d("100.01"), d("0.38"));
        let parts = [d("33.33"), d("33.33"), d("33.35")];
        let (mut refunded, mut returned) = (Decimal::ZERO, Decimal::ZERO);
        for part in parts {
            returned += refunded_fee(fee, returned, amount, refunded, part, cny);
            refunded += part;
        }
        assert_eq!((refunded, returned), (amount, fee));
    }
}
