//! `posledger-bench`: runs posledger's benchmarks and prints one JSON object per line.
//!
//! `posledger-bench [NAME...] [--list] [--scale S] [--repeat N] [--work-dir DIR]`. The
//! benchmarks that need `posledger` itself as a separate process (a server, a command beside
//! it) run this binary as `posledger-bench posledger ARGS...`, which is the `posledger`
//! command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

// As in `posledger`: events are built on one thread and freed on another.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// posledger's benchmarks.
#[derive(Parser)]
#[command(name = "posledger-bench", about)]
struct Args {
    /// Benchmarks to run (all when none is named): see `--list`.
    names: Vec<String>,
    /// List the benchmarks and exit.
    #[arg(long)]
    list: bool,
    /// Multiply every benchmark's size by this (e.g. 0.01 for a quick run).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Timed runs per benchmark; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Scratch directory (default: a temporary directory, removed afterwards).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let program = args.next();
    let rest: Vec<_> = args.collect();
    if rest.first().is_some_and(|a| a == "posledger") {
        return api::cli::main_from(rest);
    }
    let args = Args::parse_from(program.into_iter().chain(rest));
    if args.list {
        for b in bench::BENCHMARKS {
            println!("{:<36} {}", b.name, b.about);
        }
        return ExitCode::SUCCESS;
    }
    match bench::run(&args.names, args.scale, args.repeat, args.work_dir.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
