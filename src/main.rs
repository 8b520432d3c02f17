//! The `realtime-core` binary: parse the configuration, set up logging and traces, run.

use std::process::ExitCode;

use clap::Parser;
use realtime_core::config::{Cli, Config, ConfigError};

fn main() -> ExitCode {
    let config = match Cli::try_parse() {
        Ok(cli) => Config::from_cli(cli),
        // --help and --version: printed to stdout, exit 0.
        Err(shown) if !shown.use_stderr() => shown.exit(),
        Err(refused) => Err(ConfigError::from(refused)),
    };
    let config = match config {
        Ok(c) => c,
        Err(error) => {
            eprintln!("realtime-core: {error}");
            return ExitCode::from(2);
        }
    };
    // Before the actix runtime: the OTLP exporter's blocking HTTP client must not be built
    // inside it.
    let telemetry = match realtime_core::telemetry::init(&config.rust_log) {
        Ok(t) => t,
        Err(error) => {
            eprintln!("realtime-core: {error}");
            return ExitCode::from(2);
        }
    };

    // awc (the Gladia client) uses rustls, which needs one process-wide crypto provider.
    // Err only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let system = actix_rt::System::new();
    let result = system.block_on(realtime_core::app::run(config));
    // Dropping the runtime drops the actors still on it, which ends their spans; then the
    // exporter sends the last ones.
    drop(system);
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` gives the one-line chain: "database: cannot open …: permission denied".
            // One line, as for a bad setting: the log writer is on stderr too, so the same text
            // through `tracing` would print it twice.
            eprintln!("realtime-core: {error:#}");
            ExitCode::from(1)
        }
    };
    telemetry.shutdown();
    code
}
