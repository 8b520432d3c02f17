//! How the RTMP listener behaves; shared by every connection.

use std::time::Duration;

use super::stream_key::{identity_stream_key_validator, StreamKeyValidator};

/// How the RTMP listener behaves; shared by every connection.
pub struct RtmpConfig {
    /// The only RTMP application accepted (`live` in `rtmp://host/live/{key}`).
    pub app_name: String,
    /// A connection that has not finished the RTMP handshake by then is closed (docs/PROTOCOL.md#hostile-input-and-limits: 10 s).
    pub handshake_timeout: Duration,
    /// Turns a stream key into a session slug, or refuses it. Keys may be signed secrets, so
    /// only the slug it returns is ever logged.
    pub stream_key_validator: StreamKeyValidator,
    /// Concurrent connections accepted from one peer IP; more are refused at accept, with a log
    /// line. Bounds what one host can hold open (each connection is a task, a 64 KiB buffer and
    /// two chunk parsers). An egress node publishes one connection per room it records, so this
    /// is per node, not per meeting: raise it for nodes that record more rooms at once.
    pub max_connections_per_peer: usize,
}

impl Default for RtmpConfig {
    /// App `live`, 10 s handshake timeout, the development key scheme (key = slug), and at most
    /// 16 concurrent connections per peer IP.
    fn default() -> Self {
        Self {
            app_name: "live".to_string(),
            handshake_timeout: Duration::from_secs(10),
            stream_key_validator: identity_stream_key_validator(),
            max_connections_per_peer: 16,
        }
    }
}

impl std::fmt::Debug for RtmpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtmpConfig")
            .field("app_name", &self.app_name)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_connections_per_peer", &self.max_connections_per_peer)
            .finish_non_exhaustive()
    }
}
