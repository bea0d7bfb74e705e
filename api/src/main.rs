//! The `posledger` binary.

// glibc's allocator serialises threads that free what another thread allocated (events are
// built on the ingest thread and freed on others); mimalloc does not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    api::cli::main()
}
