//! RTMP ingest: accepts publishers (LiveKit Egress / GStreamer `rtmp2sink`, FFmpeg, librtmp,
//! OBS) on `rtmp://host/live/{streamKey}` and hands their AAC audio to the actor tree.
//!
//! Layout, one concept per file:
//! - `config`: [`RtmpConfig`], how the listener behaves.
//! - [`listener`]: the accept loop, one task per TCP connection.
//! - `connection_limits`: `RTMP_MAX_CONNECTIONS` and `RTMP_MAX_CONNECTIONS_PER_IP`, as slots a
//!   connection holds.
//! - [`proxy_protocol`]: the PROXY protocol v1/v2 header parser (pure, fuzzed).
//! - `proxied`: reading that header from a load balancer's connection, within a time bound.
//! - [`trusted_proxies`]: the CIDR blocks allowed to send one (`RTMP_TRUSTED_PROXIES`).
//! - `connection`: the per-connection state machine (handshake, connect, publish, end of publish)
//!   around rml_rtmp's `ServerSession`.
//! - `wire_inspector`: a second chunk parser fed the same bytes, to see what rml_rtmp hides or
//!   chokes on (`deleteStream` by name, malformed `@setDataFrame`, absurd chunk sizes).
//! - `isolation`: `catch_unwind` around every rml_rtmp call that parses peer bytes.
//! - `publication`: an accepted publish: audio forwarding with `try_send` and the detach guard.
//! - [`stream_key`]: stream key validation and how a refusal maps to an `onStatus` code.
//! - `refusal`: the `onStatus` error packet rml_rtmp cannot send itself.
//!
//! The contract is docs/PROTOCOL.md#rtmp-ingest; the rml_rtmp sharp edges, each reproduced, are
//! in docs/reference/rtmp-ingest-facts.md and docs/ARCHITECTURE.md "Hostile RTMP bytes".

mod config;
mod connection;
mod connection_limits;
/// One connection driven from memory, for the fuzz targets and proptests (unused by the service).
pub mod fuzz_entry;
mod isolation;
pub mod listener;
mod proxied;
pub mod proxy_protocol;
mod publication;
mod refusal;
pub mod stream_key;
pub mod trusted_proxies;
mod wire_inspector;

#[cfg(test)]
mod tests;

pub use config::{ProxyProtocol, RtmpConfig, PROXY_HEADER_TIMEOUT};
pub use listener::serve;
pub use stream_key::{
    identity_stream_key, identity_stream_key_validator, StreamKeyRejection, StreamKeyValidator,
    ValidKey,
};
pub use trusted_proxies::TrustedProxies;
