//! RTMP ingest: accepts publishers (LiveKit Egress / GStreamer `rtmp2sink`, FFmpeg, librtmp,
//! OBS) on `rtmp://host/live/{streamKey}` and hands their AAC audio to the actor tree.
//!
//! Layout, one concept per file:
//! - [`listener`]: the accept loop, one task per TCP connection.
//! - `connection`: the per-connection state machine (handshake, connect, publish, end of publish)
//!   around rml_rtmp's `ServerSession`.
//! - `wire_inspector`: a second chunk parser fed the same bytes, to see what rml_rtmp hides or
//!   chokes on (`deleteStream` by name, malformed `@setDataFrame`, absurd chunk sizes).
//! - `isolation`: `catch_unwind` around every rml_rtmp call that parses peer bytes.
//! - `publication`: an accepted publish: audio forwarding with `try_send` and the detach guard.
//! - [`stream_key`]: stream key validation and how a refusal maps to an `onStatus` code.
//! - `refusal`: the `onStatus` error packet rml_rtmp cannot send itself.
//!
//! The contract is SPEC.md §3; the rml_rtmp sharp edges are in DESIGN.md.

mod connection;
/// One connection driven from memory, for the fuzz targets and proptests (unused by the service).
pub mod fuzz_entry;
mod isolation;
pub mod listener;
mod publication;
mod refusal;
pub mod stream_key;
mod wire_inspector;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

pub use listener::serve;
pub use stream_key::{identity_stream_key, StreamKeyRejection, StreamKeyValidator};

/// How the RTMP listener behaves; shared by every connection.
pub struct RtmpConfig {
    /// The only RTMP application accepted (`live` in `rtmp://host/live/{key}`).
    pub app_name: String,
    /// A connection that has not finished the RTMP handshake by then is closed (SPEC: 10 s).
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
            stream_key_validator: Arc::new(identity_stream_key),
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
