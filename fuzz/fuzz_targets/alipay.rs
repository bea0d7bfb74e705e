//! Fuzzes the alipay statement parser: any bytes give a statement or an error, never a panic, and
//! what it accepts holds together (positive amounts, totals that are the sums of the lines).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(statement) = ingest::statement::alipay::parse("fuzz.csv", data) {
        assert!(statement.consistent());
    }
});
