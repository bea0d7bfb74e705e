//! What a cluster node says about itself: Ballista's log records on standard error, one line
//! each, at the level `POSLEDGER_LOG` names (`error`, `warn`, `info`, `debug`; default `warn`).

use std::io::Write;

/// The environment variable that sets the level.
pub const LOG_LEVEL_VAR: &str = "POSLEDGER_LOG";

struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        // The scheduler's rendering of a finished job's metrics fails on some plans and says so
        // as an error; the query is not affected, so it is shown only when debugging.
        if metadata.target() == "ballista_scheduler::display" && log::max_level() < log::LevelFilter::Debug {
            return false;
        }
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let line = format!("{} {}: {}\n", record.level(), record.target(), record.args());
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

/// Sends log records to standard error at the level of [`LOG_LEVEL_VAR`]. An unknown level
/// is an error naming the variable.
pub fn init_logger() -> Result<(), crate::ClusterError> {
    let level = match std::env::var(LOG_LEVEL_VAR).ok().as_deref() {
        None | Some("") | Some("warn") => log::LevelFilter::Warn,
        Some("error") => log::LevelFilter::Error,
        Some("info") => log::LevelFilter::Info,
        Some("debug") => log::LevelFilter::Debug,
        Some(other) => {
            return Err(crate::ClusterError::Invalid(format!(
                "{LOG_LEVEL_VAR}={other:?}: expected error, warn, info or debug"
            )));
        }
    };
    // A logger set already (a test process starting two nodes) keeps its level.
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
    Ok(())
}
