//! Realistic synthetic input: admin records for N merchants and a terminal feed of any size,
//! deterministic for a seed. Used by the benchmarks, tests and (later) the demo.

use std::io::{self, Write};

/// A small, fast, deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Shape of a generated data set.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Merchants.
    pub merchants: u32,
    /// Terminals per merchant.
    pub terminals_per_merchant: u32,
    /// Seed.
    pub seed: u64,
}

fn terminal_id(m: u32, t: u32) -> String {
    format!("T{m:06}{t:02}")
}

/// Writes admin records onboarding every merchant of `shape` with active terminals.
pub fn write_admin(out: &mut impl Write, shape: Shape) -> io::Result<()> {
    for (ch, rate) in
        [("wechat", "0.0025"), ("alipay", "0.0025"), ("unionpay_qr", "0.0025"), ("unionpay_card", "0.0045")]
    {
        writeln!(
            out,
            r#"{{"kind":"channel_terms","channel":"{ch}","fee_rate":"{rate}","fee_tolerance":"0.01","carry_forward_days":1,"effective_from":"2026-10-01"}}"#
        )?;
    }
    for m in 1..=shape.merchants {
        let id = format!("M{m:06}");
        writeln!(
            out,
            r#"{{"kind":"merchant_applied","merchant_id":"{id}","legal_name":"Shop {m} Trading Co.","licence_no":"9131{m:014}","mcc":"5812","timezone":"Asia/Shanghai","settlement_account":"62220202{m:011}","at":"2026-10-02T09:00:00+08:00"}}"#
        )?;
        writeln!(
            out,
            r#"{{"kind":"merchant_approved","merchant_id":"{id}","reviewer":"risk-01","at":"2026-10-03T09:00:00+08:00"}}"#
        )?;
        writeln!(
            out,
            r#"{{"kind":"contract_signed","merchant_id":"{id}","fees":{{"wechat":{{"rate":"0.0038"}},"alipay":{{"rate":"0.0038"}},"unionpay_qr":{{"rate":"0.0038"}},"unionpay_card":{{"rate":"0.0060","cap":"20.00"}},"cash":{{"rate":"0"}}}},"settlement_cycle":"T1","at":"2026-10-04T09:00:00+08:00"}}"#
        )?;
        for t in 0..shape.terminals_per_merchant {
            let tid = terminal_id(m, t);
            writeln!(
                out,
                r#"{{"kind":"terminal_bound","merchant_id":"{id}","terminal_id":"{tid}","serial":"NL-{m:06}{t:02}","model":"ME31","at":"2026-10-05T09:00:00+08:00"}}"#
            )?;
            writeln!(out, r#"{{"kind":"terminal_activated","terminal_id":"{tid}","at":"2026-10-06T09:00:00+08:00"}}"#)?;
        }
    }
    Ok(())
}

/// Writes a feed of `records` terminal records for `shape`: sales on every channel with
/// refunds (about 3 %), voids (about 1 %) and reversals (about 0.3 %) of recent sales.
/// Returns how many records were written.
pub fn write_feed(out: &mut impl Write, shape: Shape, records: u64) -> io::Result<u64> {
    let mut rng = SplitMix::new(shape.seed);
    let mut recent: Vec<(String, u32, u32, &'static str, u64)> = Vec::with_capacity(64);
    let channels = ["wechat", "wechat", "alipay", "alipay", "unionpay_card", "unionpay_qr", "cash"];
    let mut written = 0u64;
    let mut sale_no = 0u64;
    while written < records {
        let roll = rng.below(1000);
        if roll < 43 && !recent.is_empty() {
            // An operation on a recent sale, which is then forgotten so it is touched once.
            let i = rng.below(recent.len() as u64) as usize;
            let (txn, m, t, ch, fen) = recent.swap_remove(i);
            let (kind, suffix, amount) = if roll < 30 {
                ("refund", "R1", fen / 2 + 1)
            } else if roll < 40 {
                ("void", "V", fen)
            } else {
                ("reversal", "X", fen)
            };
            writeln!(
                out,
                r#"{{"kind":"{kind}","txn_id":"{txn}-{suffix}","original_txn_id":"{txn}","merchant_id":"M{m:06}","terminal_id":"{}","batch_no":"000001","stan":"{:06}","channel":"{ch}","amount":"{}.{:02}","currency":"CNY","at":"2026-11-26T23:59:30+08:00"}}"#,
                terminal_id(m, t),
                written % 1_000_000,
                amount / 100,
                amount % 100
            )?;
        } else {
            sale_no += 1;
            let m = 1 + rng.below(u64::from(shape.merchants)) as u32;
            let t = rng.below(u64::from(shape.terminals_per_merchant)) as u32;
            let ch = channels[rng.below(channels.len() as u64) as usize];
            let fen = 100 + rng.below(50_000);
            let txn = format!("M{m:06}-20261126-{sale_no:09}");
            let hour = rng.below(24);
            let minute = rng.below(60);
            let (ctid, payer) = match ch {
                "cash" => (String::new(), String::new()),
                "unionpay_card" => (
                    format!(r#","channel_txn_id":"U{sale_no:020}""#),
                    format!(r#","payer":"622848******{:04}""#, rng.below(10_000)),
                ),
                "alipay" => (
                    format!(r#","channel_txn_id":"A{sale_no:027}""#),
                    format!(r#","payer":"2088{:012}""#, rng.below(1_000_000)),
                ),
                _ => (
                    format!(r#","channel_txn_id":"W{sale_no:027}""#),
                    format!(r#","payer":"o{:012x}""#, rng.below(1_000_000)),
                ),
            };
            writeln!(
                out,
                r#"{{"kind":"sale","txn_id":"{txn}","merchant_id":"M{m:06}","terminal_id":"{}","batch_no":"000001","stan":"{:06}","rrn":"{:012}","channel":"{ch}"{ctid},"amount":"{}.{:02}","currency":"CNY","at":"2026-11-26T{hour:02}:{minute:02}:00+08:00"{payer},"mcc":"5812"}}"#,
                terminal_id(m, t),
                sale_no % 1_000_000,
                sale_no,
                fen / 100,
                fen % 100
            )?;
            if recent.len() == 64 {
                recent.swap_remove(rng.below(64) as usize);
            }
            recent.push((txn, m, t, ch, fen));
        }
        written += 1;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::parse_admin_line;
    use crate::feed::parse_feed_line;

    #[test]
    fn generated_records_all_parse() {
        let shape = Shape { merchants: 3, terminals_per_merchant: 2, seed: 7 };
        let mut admin = Vec::new();
        write_admin(&mut admin, shape).expect("write");
        for (i, line) in admin.split(|&b| b == b'\n').filter(|l| !l.is_empty()).enumerate() {
            parse_admin_line(i as u64 + 1, line).unwrap_or_else(|e| panic!("{e}"));
        }
        let mut feed = Vec::new();
        assert_eq!(write_feed(&mut feed, shape, 2000).expect("write"), 2000);
        for (i, line) in feed.split(|&b| b == b'\n').filter(|l| !l.is_empty()).enumerate() {
            parse_feed_line(i as u64 + 1, line).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn a_generated_day_is_accepted_whole() {
        let shape = Shape { merchants: 5, terminals_per_merchant: 2, seed: 3 };
        let (mut admin, mut feed) = (Vec::new(), Vec::new());
        write_admin(&mut admin, shape).expect("admin");
        write_feed(&mut feed, shape, 5000).expect("feed");
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = std::sync::Arc::new(crate::store::EmbeddedStore::open(dir.path()).expect("open"));
            let mut ingestor = crate::pipeline::Ingestor::open(store, None).await.expect("ingestor");
            let kind = crate::pipeline::InputKind::Admin;
            let s = ingestor.ingest_reader(admin.as_slice(), kind, |_, _| {}).await.expect("admin");
            assert_eq!(s.rejected, 0, "{:?}", s.first_rejections);
            let kind = crate::pipeline::InputKind::Feed;
            let s = ingestor.ingest_reader(feed.as_slice(), kind, |_, _| {}).await.expect("feed");
            assert_eq!((s.accepted, s.rejected), (5000, 0), "{:?}", s.first_rejections);
        });
    }
}
