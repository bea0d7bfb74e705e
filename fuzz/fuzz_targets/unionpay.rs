//! Fuzzes the unionpay statement parser: any bytes give a statement or an error, never a panic, and
//! what it accepts holds together (positive amounts, totals that are the sums of the lines).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(statement) = ingest::statement::unionpay::parse_dated("fuzz.txt", data, chrono::NaiveDate::from_ymd_opt(2026, 11, 24)) {
        assert!(statement.consistent());
    }
});
