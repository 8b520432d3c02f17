//! The RTMP accept loop: one task per TCP connection.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix::Recipient;
use actors::messages::AttachPublisher;
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedSender;

use super::config::RtmpConfig;
use super::connection::{handle_connection, ConnectionOutcome};

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
    let peers = PeerConnections::new(config.max_connections_per_peer);
    loop {
        match listener.accept().await {
            Ok((socket, peer)) => {
                let Some(slot) = peers.try_acquire(peer.ip()) else {
                    // Dropping the socket closes it before any byte is read.
                    tracing::warn!(
                        %peer,
                        limit = config.max_connections_per_peer,
                        "rtmp connection refused: too many connections from this address"
                    );
                    continue;
                };
                // Control responses are tiny and latency-sensitive (publish start).
                if let Err(error) = socket.set_nodelay(true) {
                    tracing::debug!(%peer, %error, "rtmp set_nodelay failed");
                }
                tracing::debug!(%peer, "rtmp connection accepted");
                let connection = handle_connection(
                    socket,
                    peer,
                    config.clone(),
                    sessions.clone(),
                    observer.clone(),
                );
                tokio::spawn(async move {
                    // Held for the task's whole life, so the slot is freed however it ends.
                    let _slot = slot;
                    connection.await;
                });
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

/// Counts live connections per peer IP for the per-address limit. Shared by the accept loop
/// (which acquires) and the connection tasks (whose [`PeerSlot`] releases on drop); the lock is
/// held for a map update only.
#[derive(Clone)]
struct PeerConnections {
    limit: usize,
    live: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PeerConnections {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            live: Arc::default(),
        }
    }

    /// A slot for one more connection from `ip`, or `None` when it already has `limit`.
    fn try_acquire(&self, ip: IpAddr) -> Option<PeerSlot> {
        // A poisoned lock only means a task panicked mid-update of a counter; keep counting.
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let count = live.entry(ip).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            ip,
            peers: self.clone(),
        })
    }

    #[cfg(test)]
    fn live(&self, ip: IpAddr) -> usize {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.get(&ip).copied().unwrap_or(0)
    }
}

/// One counted connection; releases its count when dropped. Entries at zero are removed so the
/// map only ever holds addresses with a live connection.
struct PeerSlot {
    ip: IpAddr,
    peers: PeerConnections,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut live = self
            .peers
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = live.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                live.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod peer_limit_tests {
    use super::*;
    use std::net::Ipv4Addr;

    use actix::Actor;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpStream;

    use crate::rtmp::fuzz_entry::StubRegistry;

    #[test]
    fn slots_are_counted_per_address_and_released_on_drop() {
        let peers = PeerConnections::new(2);
        let a = IpAddr::from(Ipv4Addr::new(10, 0, 0, 1));
        let b = IpAddr::from(Ipv4Addr::new(10, 0, 0, 2));
        let first = peers.try_acquire(a).expect("first slot");
        let second = peers.try_acquire(a).expect("second slot");
        assert!(
            peers.try_acquire(a).is_none(),
            "third from the same address"
        );
        let other = peers
            .try_acquire(b)
            .expect("another address is not affected");
        drop(first);
        assert_eq!(peers.live(a), 1);
        let again = peers.try_acquire(a).expect("a freed slot is reusable");
        drop((second, again, other));
        assert_eq!(peers.live(a), 0);
        assert!(
            peers.live.lock().expect("lock").is_empty(),
            "no entries left behind"
        );
    }

    /// True when the server closes `stream` within a short time (EOF or reset); false when it
    /// keeps it open (an accepted connection waits silently for C0/C1).
    async fn closed_by_server(stream: &mut TcpStream) -> bool {
        let mut byte = [0_u8; 1];
        match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) => panic!("the server sent bytes before the handshake"),
            Err(_) => false,
        }
    }

    #[actix_rt::test]
    async fn connections_over_the_per_address_limit_are_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = Arc::new(super::super::RtmpConfig {
            max_connections_per_peer: 3,
            ..Default::default()
        });
        let registry = StubRegistry::new().start().recipient();
        actix_rt::spawn(serve(listener, config, registry));

        let mut open = Vec::new();
        for _ in 0..3 {
            open.push(TcpStream::connect(addr).await.expect("connect"));
        }
        let mut fourth = TcpStream::connect(addr).await.expect("connect");
        assert!(
            closed_by_server(&mut fourth).await,
            "4th connection refused"
        );
        for stream in &mut open {
            assert!(!closed_by_server(stream).await, "the first 3 stay open");
        }

        // A closed connection frees its slot once its task has seen the close.
        drop(open.pop());
        let mut replacement = None;
        for _ in 0..50 {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            if !closed_by_server(&mut stream).await {
                replacement = Some(stream);
                break;
            }
        }
        assert!(
            replacement.is_some(),
            "a slot freed by a closed connection is reused"
        );
    }
}
