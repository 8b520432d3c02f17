//! How the RTMP listener behaves; shared by every connection.

use std::time::Duration;

use super::stream_key::{identity_stream_key_validator, StreamKeyValidator};
use super::trusted_proxies::TrustedProxies;

/// How long a trusted proxy has to send its PROXY header after connecting. A load balancer
/// writes it with, or right after, the connection; waiting longer only holds a task.
pub const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether connections start with a PROXY protocol header (`RTMP_PROXY_PROTOCOL`,
/// docs/PROTOCOL.md#hostile-input-and-limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// Publishers connect directly: the TCP peer is the publisher.
    Off,
    /// Every connection comes from a load balancer in `trusted` and starts with a v1 or v2
    /// header naming the publisher. Any other peer is closed at accept; a trusted one that has
    /// not sent a whole header within `header_timeout` is closed.
    Required {
        trusted: TrustedProxies,
        header_timeout: Duration,
    },
}

/// How the RTMP listener behaves; shared by every connection.
pub struct RtmpConfig {
    /// The only RTMP application accepted (`live` in `rtmp://host/live/{key}`).
    pub app_name: String,
    /// A connection that has not finished the RTMP handshake by then is closed (docs/PROTOCOL.md#hostile-input-and-limits: 10 s).
    pub handshake_timeout: Duration,
    /// Turns a stream key into a session slug, or refuses it. Keys may be signed secrets, so
    /// only the slug it returns is ever logged.
    pub stream_key_validator: StreamKeyValidator,
    /// Concurrent connections accepted from one publisher address (`RTMP_MAX_CONNECTIONS_PER_IP`;
    /// behind a PROXY-protocol load balancer, the address its header names); more are closed
    /// with a log line. Bounds what one host can hold open (each connection is a task, a 64 KiB
    /// buffer and two chunk parsers). An egress node publishes one connection per room it
    /// records, so this is per node, not per meeting: raise it for nodes that record more rooms
    /// at once.
    pub max_connections_per_ip: usize,
    /// Concurrent connections on the whole listener (`RTMP_MAX_CONNECTIONS`), whatever their
    /// address; more are closed at accept. The bound the per-address limit cannot give when
    /// many addresses connect.
    pub max_connections: usize,
    /// Whether the real publisher address comes from a PROXY header.
    pub proxy_protocol: ProxyProtocol,
}

impl Default for RtmpConfig {
    /// App `live`, 10 s handshake timeout, the development key scheme (key = slug), at most
    /// 16 concurrent connections per address and 1,024 in all, no PROXY protocol.
    fn default() -> Self {
        Self {
            app_name: "live".to_string(),
            handshake_timeout: Duration::from_secs(10),
            stream_key_validator: identity_stream_key_validator(),
            max_connections_per_ip: 16,
            max_connections: 1024,
            proxy_protocol: ProxyProtocol::Off,
        }
    }
}

impl std::fmt::Debug for RtmpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtmpConfig")
            .field("app_name", &self.app_name)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("max_connections", &self.max_connections)
            .field("proxy_protocol", &self.proxy_protocol)
            .finish_non_exhaustive()
    }
}
