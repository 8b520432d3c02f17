//! Shutdown on SIGTERM or SIGINT, in the order that loses nothing: stop taking new work,
//! let every session finish (trailing finals reach clients and the queue), post what the
//! relay holds, write the queued finals (or spill them), stop the session threads, then the
//! HTTP server.
//!
//! Every step is bounded, so a stuck provider or an absent database delays the exit but never
//! blocks it; what could not be done is logged.

use std::time::Duration;

use ::actors::registry::{ShutDownAll, StopSessionThreads};
use ::actors::relay::FlushRelay;
use anyhow::Context as _;

use super::start::Running;
use crate::db::{Flush, SpillAll};

/// How long shutdown waits for the sessions to finish: the provider's trailing finals (the
/// Gladia stop wait is 30 s) and the clients' last frames.
const SHUTDOWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(40);
/// How long shutdown waits for the broadcast relay to post what it still holds (HTTP mode).
const SHUTDOWN_RELAY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the session threads to exit once their sessions are done.
const SHUTDOWN_THREADS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for queued finals to reach the database.
const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(15);

/// Waits for SIGTERM or SIGINT; returns its name.
pub(super) async fn signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    })
}

/// Stops the service started by `super::start`, after `signal`.
pub(super) async fn shut_down(service: Running, signal: &'static str) -> anyhow::Result<()> {
    tracing::info!(
        signal,
        "shutting down: refusing new publishes and clients, finishing every transcription"
    );
    // New connections wait in the backlog until the listener closes; open ones carry on so
    // clients get their trailing finals.
    service.server.pause().await;
    match tokio::time::timeout(SHUTDOWN_DRAIN_TIMEOUT, service.registry.send(ShutDownAll)).await {
        Ok(Ok(sessions)) => {
            tracing::info!(sessions, "every session finished; clients closed with 1001")
        }
        Ok(Err(error)) => tracing::error!(%error, "session shutdown failed"),
        Err(_) => tracing::error!(
            timeout_s = SHUTDOWN_DRAIN_TIMEOUT.as_secs(),
            "sessions did not finish in time; closing anyway"
        ),
    }
    if let Some(relay) = &service.relay {
        // The sessions' last messages are queued now; post them before the process goes.
        match tokio::time::timeout(SHUTDOWN_RELAY_TIMEOUT, relay.send(FlushRelay)).await {
            Ok(Ok(0)) => tracing::info!("broadcast relay flushed"),
            Ok(Ok(left)) => tracing::error!(left, "broadcast relay could not post everything"),
            Ok(Err(error)) => tracing::error!(%error, "broadcast relay flush failed"),
            Err(_) => tracing::error!(
                timeout_s = SHUTDOWN_RELAY_TIMEOUT.as_secs(),
                "broadcast relay flush timed out; unposted messages are lost to the receiver"
            ),
        }
    }
    save_queued_finals(&service).await;
    // Every session has finished; stop their threads so their actors (and trace spans) are
    // gone before the exporter's final flush in main.
    if tokio::time::timeout(
        SHUTDOWN_THREADS_TIMEOUT,
        service.registry.send(StopSessionThreads),
    )
    .await
    .is_err()
    {
        tracing::warn!("session threads did not stop in time");
    }
    service.server.stop(true).await;
    match service.server_task.await {
        Ok(result) => result.context("HTTP server")?,
        Err(error) => tracing::error!(%error, "HTTP server task failed"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Writes the queued finals to the database or, if it is still away, to the spill file.
async fn save_queued_finals(service: &Running) {
    let batcher = &service.storage.batcher;
    tracing::info!("flushing queued transcripts");
    let flushed = match tokio::time::timeout(SHUTDOWN_FLUSH_TIMEOUT, batcher.send(Flush)).await {
        Ok(Ok(Ok(()))) => {
            tracing::info!("all transcripts saved");
            true
        }
        Ok(_) => {
            tracing::error!("transcript flush failed at shutdown");
            false
        }
        Err(_) => {
            tracing::warn!(
                timeout_s = SHUTDOWN_FLUSH_TIMEOUT.as_secs(),
                "transcript flush timed out at shutdown (database unavailable?)"
            );
            false
        }
    };
    if !flushed {
        // The database is still away: what is queued goes to the spill file, replayed on the
        // next start (issue #4: nothing dropped).
        match batcher.send(SpillAll).await {
            Ok(Ok(pending)) => tracing::warn!(
                pending,
                "unsaved finals are in the spill file; the next start writes them"
            ),
            Ok(Err(error)) => {
                tracing::error!(%error, "cannot spill the unsaved finals; they are lost")
            }
            Err(error) => tracing::error!(%error, "transcript batcher unavailable at shutdown"),
        }
    }
}
