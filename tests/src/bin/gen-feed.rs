//! Writes a generated admin file and terminal feed, for profiling `posledger ingest` by hand.
//!
//! Usage: `gen-feed ADMIN_OUT FEED_OUT RECORDS [MERCHANTS]`

use std::io::{BufWriter, Write};

use ingest::generate::{Shape, write_admin, write_feed};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: gen-feed ADMIN_OUT FEED_OUT RECORDS [MERCHANTS]");
        std::process::exit(2);
    }
    let records: u64 = args[3].parse().expect("RECORDS is a number");
    let merchants: u32 = args.get(4).map_or(1000, |m| m.parse().expect("MERCHANTS is a number"));
    let shape = Shape { merchants, terminals_per_merchant: 2, seed: 42 };
    let mut admin = BufWriter::new(std::fs::File::create(&args[1])?);
    write_admin(&mut admin, shape)?;
    admin.flush()?;
    let mut feed = BufWriter::new(std::fs::File::create(&args[2])?);
    write_feed(&mut feed, shape, records)?;
    feed.flush()
}
