//! Fuzzes the unionpay statement parser: any bytes give a statement or an error, never a panic, and
//! an accepted statement's totals are the sums of its lines.
#![no_main]

use libfuzzer_sys::fuzz_target;

fn chrono_date() -> Option<chrono::NaiveDate> {
    chrono::NaiveDate::from_ymd_opt(2026, 11, 24)
}

fuzz_target!(|data: &[u8]| {
    if let Ok(statement) = ingest::statement::unionpay::parse_dated("fuzz.txt", data, chrono_date()) {
        let (mut payments, mut refunds) = (0u64, 0u64);
        for line in &statement.lines {
            match line.kind {
                ingest::statement::LineKind::Payment => payments += 1,
                ingest::statement::LineKind::Refund => refunds += 1,
            }
            assert!(line.amount > rust_decimal_zero(), "amounts are positive");
        }
        assert_eq!((statement.totals.payments, statement.totals.refunds), (payments, refunds));
    }
});

fn rust_decimal_zero() -> rust_decimal::Decimal {
    rust_decimal::Decimal::ZERO
}
