//! Fuzzes the feed line parser against serde: any bytes give the same record, or the same error
//! naming the same line and field, from the scanner's path as from serde alone.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fast = ingest::feed::parse_feed_line(1, data);
    let reference = ingest::feed::parse_feed_line_with_serde(1, data);
    assert_eq!(fast, reference);
});
