//! `posledger` as the end-to-end tests run it.

fn main() -> std::process::ExitCode {
    api::cli::main()
}
