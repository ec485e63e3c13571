//! The process's log: env_logger with Roost's default filter (`RUST_LOG` overrides it), and
//! one correction. While the new process of a hot upgrade waits for the old one to send its
//! listening sockets, Pingora logs "No incoming socket transfer, sleep 1s and try again" at
//! ERROR level once a second; that wait is the normal course of every upgrade, so it is
//! logged at INFO, saying so. A hand-over that really fails still logs its own errors.

use log::{Level, Log, Metadata, Record};

/// Default log filter: Roost's own events at info. Pingora's load-balancing crate repeats
/// every health transition Roost already logs, so it is kept to errors.
const DEFAULT_LOG_FILTER: &str = "info,pingora_load_balancing=error";

const TRANSFER_TARGET: &str = "pingora_core::server::transfer_fd";
const EXPECTED_WAIT: &str = "No incoming socket transfer";

/// Install the logger; call once, first thing.
pub fn init() {
    let inner = env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(DEFAULT_LOG_FILTER),
    )
    .build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Corrected(inner))).is_ok() {
        log::set_max_level(max);
    }
}

struct Corrected(env_logger::Logger);

/// Whether `record` is Pingora's expected wait for the sockets of an upgrade.
fn is_expected_wait(record: &Record) -> bool {
    record.level() == Level::Error
        && record.target().starts_with(TRANSFER_TARGET)
        && record.args().to_string().starts_with(EXPECTED_WAIT)
}

impl Log for Corrected {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !is_expected_wait(record) {
            return self.0.log(record);
        }
        let metadata = Metadata::builder()
            .level(Level::Info)
            .target(record.target())
            .build();
        if !self.0.enabled(&metadata) {
            return;
        }
        // One expression: the arguments of `format_args!` live only as long as it does.
        self.0.log(
            &Record::builder()
                .metadata(metadata)
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .args(format_args!(
                    "{} (the old process has not sent its listeners yet: expected during an upgrade)",
                    record.args()
                ))
                .build(),
        );
    }

    fn flush(&self) {
        self.0.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(level: Level, target: &'a str, args: std::fmt::Arguments<'a>) -> Record<'a> {
        Record::builder()
            .level(level)
            .target(target)
            .args(args)
            .build()
    }

    #[test]
    fn only_the_expected_wait_is_corrected() {
        let wait = format_args!("No incoming socket transfer, sleep 1s and try again");
        assert!(is_expected_wait(&record(
            Level::Error,
            TRANSFER_TARGET,
            wait
        )));
        let real = format_args!("Error accepting socket transfer: EBADF");
        assert!(!is_expected_wait(&record(
            Level::Error,
            TRANSFER_TARGET,
            real
        )));
        let elsewhere = format_args!("No incoming socket transfer");
        assert!(!is_expected_wait(&record(
            Level::Error,
            "roost::ops",
            elsewhere
        )));
    }
}
