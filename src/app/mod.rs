//! The service's life: start, say how it is configured, run until a signal, shut down.
//!
//! - `start`: storage, the session registry, the RTMP listener and the HTTP server;
//! - `provider`: the speech-to-text provider sessions use, built during start-up;
//! - `posture`: the start-up lines on provider, secrets, exposure and relaying;
//! - `shutdown`: the signal and the ordered, bounded shutdown.

mod posture;
mod provider;
mod shutdown;
mod start;

use crate::config::Config;

/// Runs the service until SIGINT/SIGTERM. Must be called inside an actix `System`.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let service = start::start(&config).await?;
    posture::log(&config, &service.provider_line);
    tracing::info!(http = %service.http, rtmp = %service.rtmp, "realtime-core ready");
    let signal = shutdown::signal().await?;
    shutdown::shut_down(service, signal).await
}
