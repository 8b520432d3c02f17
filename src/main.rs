//! The `realtime-core` binary: parse the configuration, set up logging, run.

use std::process::ExitCode;

use clap::Parser;
use realtime_core::config::{Cli, Config};

fn main() -> ExitCode {
    let config = match Config::from_cli(Cli::parse()) {
        Ok(c) => c,
        Err(error) => {
            eprintln!("realtime-core: {error}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::new(&config.rust_log);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();

    // awc (the Gladia client) uses rustls, which needs one process-wide crypto provider.
    // Err only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let system = actix_rt::System::new();
    match system.block_on(realtime_core::app::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` gives the one-line chain: "database: cannot open …: permission denied".
            eprintln!("realtime-core: {error:#}");
            tracing::error!("{error:#}");
            ExitCode::from(1)
        }
    }
}
