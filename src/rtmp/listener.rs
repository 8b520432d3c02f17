//! The RTMP accept loop: one task per TCP connection.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use actors::ingest_messages::AttachPublisher;
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedSender;

use super::connection::{handle_connection, ConnectionOutcome};
use super::RtmpConfig;

/// Pause after running out of file descriptors, so the loop does not spin while connections
/// close and free some.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts RTMP publishers on `listener` until the listener itself fails; each connection runs
/// in its own task (`tokio::spawn`), so a failing or panicking connection touches no other.
/// Accepted publishes are attached through `sessions` (the `SessionRegistry`).
///
/// Spawn it with `actix_rt::spawn` or `tokio::spawn`; it must run inside a Tokio runtime.
pub async fn serve(
    listener: TcpListener,
    config: Arc<RtmpConfig>,
    sessions: Recipient<AttachPublisher>,
) {
    serve_observed(listener, config, sessions, None).await
}

/// [`serve`], also reporting each finished connection to `observer` (for tests).
pub(crate) async fn serve_observed(
    listener: TcpListener,
    config: Arc<RtmpConfig>,
    sessions: Recipient<AttachPublisher>,
    observer: Option<UnboundedSender<ConnectionOutcome>>,
) {
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(addr = %local, app = %config.app_name, "rtmp listening");
    loop {
        match listener.accept().await {
            Ok((socket, peer)) => {
                // Control responses are tiny and latency-sensitive (publish start).
                if let Err(error) = socket.set_nodelay(true) {
                    tracing::debug!(%peer, %error, "rtmp set_nodelay failed");
                }
                tracing::debug!(%peer, "rtmp connection accepted");
                tokio::spawn(handle_connection(
                    socket,
                    peer,
                    config.clone(),
                    sessions.clone(),
                    observer.clone(),
                ));
            }
            Err(error) if is_per_connection(&error) => {
                tracing::debug!(%error, "rtmp accept: connection lost before accept");
            }
            Err(error) if is_resource_exhaustion(&error) => {
                tracing::warn!(%error, "rtmp accept: out of resources, backing off");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
            Err(error) => {
                tracing::error!(addr = %local, %error, "rtmp listener failed");
                return;
            }
        }
    }
}

/// Errors about one pending connection (it went away before we took it), not the listener.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// EMFILE / ENFILE / ENOBUFS / ENOMEM: temporary; the listener is still good.
fn is_resource_exhaustion(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(23 | 24 | 105 | 12))
}
