//! The RTMP accept loop: one task per TCP connection, admitted under the connection limits
//! once its publisher's address is known: at accept, or behind a PROXY-protocol load balancer
//! once its header names the publisher (docs/PROTOCOL.md#hostile-input-and-limits).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use actors::messages::AttachPublisher;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::UnboundedSender;

use super::config::{ProxyProtocol, RtmpConfig};
use super::connection::{handle_connection, ConnectionOutcome};
use super::connection_limits::ConnectionLimits;
use super::proxied::{read_header, Rewound};
use super::proxy_protocol::Source;

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
    let trusted_proxies = match &config.proxy_protocol {
        ProxyProtocol::Off => String::new(),
        ProxyProtocol::Required { trusted, .. } => trusted.to_string(),
    };
    tracing::info!(
        addr = %local,
        app = %config.app_name,
        max_connections = config.max_connections,
        max_connections_per_ip = config.max_connections_per_ip,
        proxy_protocol = !trusted_proxies.is_empty(),
        %trusted_proxies,
        "rtmp listening"
    );
    let limits = ConnectionLimits::new(config.max_connections, config.max_connections_per_ip);
    loop {
        match listener.accept().await {
            Ok((socket, peer)) => {
                if let ProxyProtocol::Required { trusted, .. } = &config.proxy_protocol {
                    if !trusted.contains(peer.ip()) {
                        // Dropping the socket closes it before any byte is read.
                        tracing::warn!(
                            %peer,
                            "rtmp connection refused: RTMP_PROXY_PROTOCOL=true and the peer is \
                             not in RTMP_TRUSTED_PROXIES"
                        );
                        continue;
                    }
                }
                // Control responses are tiny and latency-sensitive (publish start).
                if let Err(error) = socket.set_nodelay(true) {
                    tracing::debug!(%peer, %error, "rtmp set_nodelay failed");
                }
                let accepted = Accepted {
                    limits: limits.clone(),
                    config: config.clone(),
                    sessions: sessions.clone(),
                    observer: observer.clone(),
                };
                tokio::spawn(accepted.run(socket, peer));
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

/// What a connection task shares with the listener.
struct Accepted {
    limits: ConnectionLimits,
    config: Arc<RtmpConfig>,
    sessions: Recipient<AttachPublisher>,
    observer: Option<UnboundedSender<ConnectionOutcome>>,
}

impl Accepted {
    /// Finds the publisher's address (the peer, or what a trusted proxy's header names),
    /// admits it under the limits and runs the RTMP connection. From here on the publisher's
    /// address is the `peer` of every log line, and the proxy's is `proxy`.
    async fn run(self, mut socket: TcpStream, peer: SocketAddr) {
        let header_timeout = match &self.config.proxy_protocol {
            ProxyProtocol::Off => return self.admit(socket, peer, None).await,
            ProxyProtocol::Required { header_timeout, .. } => *header_timeout,
        };
        // Connections waiting here take no place under the limits: they come from a trusted
        // proxy only, and for at most `header_timeout`.
        let header = match read_header(&mut socket, header_timeout).await {
            Ok(header) => header,
            Err(failure) if failure.is_routine() => {
                tracing::debug!(proxy = %peer, reason = %failure, "rtmp connection closed");
                return;
            }
            Err(failure) => {
                tracing::warn!(proxy = %peer, reason = %failure, "rtmp connection closed");
                return;
            }
        };
        let publisher = match header.source {
            Source::Client(address) => address,
            // A health check, or a proxy that does not know: its own address counts.
            Source::Proxy => peer,
        };
        tracing::debug!(
            peer = %publisher,
            proxy = %peer,
            version = ?header.version,
            "rtmp PROXY header"
        );
        self.admit(Rewound::new(header.rest, socket), publisher, Some(peer))
            .await;
    }

    /// Runs the connection of `publisher` if the limits admit it; else closes it (by dropping
    /// `socket`) with a log line.
    async fn admit<S>(self, socket: S, publisher: SocketAddr, proxy: Option<SocketAddr>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        // Held for the task's whole life, so the places are given back however it ends.
        let _slot = match (self.limits.admit(publisher.ip()), proxy) {
            (Ok(slot), _) => slot,
            (Err(refusal), Some(proxy)) => {
                tracing::warn!(peer = %publisher, %proxy, %refusal, "rtmp connection refused");
                return;
            }
            (Err(refusal), None) => {
                tracing::warn!(peer = %publisher, %refusal, "rtmp connection refused");
                return;
            }
        };
        tracing::debug!(peer = %publisher, "rtmp connection accepted");
        handle_connection(socket, publisher, self.config, self.sessions, self.observer).await;
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

#[cfg(test)]
mod limit_tests {
    use super::*;

    use actix::Actor;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpStream;

    use crate::rtmp::fuzz_entry::StubRegistry;

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

    /// A listener with `config` on a free loopback port.
    async fn listen(config: RtmpConfig) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let registry = StubRegistry::new().start().recipient();
        actix_rt::spawn(serve(listener, Arc::new(config), registry));
        addr
    }

    /// Opens `limit` connections that stay open, then checks the next one is closed and that a
    /// closed one's place is given back.
    async fn assert_limit(addr: SocketAddr, limit: usize) {
        let mut open = Vec::new();
        for _ in 0..limit {
            open.push(TcpStream::connect(addr).await.expect("connect"));
        }
        let mut over = TcpStream::connect(addr).await.expect("connect");
        assert!(
            closed_by_server(&mut over).await,
            "connection {} refused",
            limit + 1
        );
        for stream in &mut open {
            assert!(
                !closed_by_server(stream).await,
                "the first {limit} stay open"
            );
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

    #[actix_rt::test]
    async fn connections_over_the_per_address_limit_are_refused() {
        let addr = listen(RtmpConfig {
            max_connections_per_ip: 3,
            ..Default::default()
        })
        .await;
        assert_limit(addr, 3).await;
    }

    #[actix_rt::test]
    async fn connections_over_the_listener_cap_are_refused() {
        let addr = listen(RtmpConfig {
            max_connections: 2,
            ..Default::default()
        })
        .await;
        assert_limit(addr, 2).await;
    }
}
