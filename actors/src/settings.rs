//! What every session is started with: the settings they share and the storage they use.

use std::sync::Arc;

use actix::prelude::*;

use crate::messages::cluster::ClusterLink;
use crate::persistence::Storage;
use crate::relay::RelayMessage;
use crate::stream_keys::StreamKeyIssuer;
use crate::stt::SttBackend;

/// Settings every session shares.
pub struct SessionSettings {
    /// `rtmp://{RTMP_HOST}:{RTMP_EXTERNAL_PORT}/live/`; the slug is appended.
    pub rtmp_url_base: String,
    /// `None`: no STT provider configured (docs/PROTOCOL.md#speech-to-text-providers), audio is decoded but not transcribed.
    pub provider: Option<SttBackend>,
    pub pcm_chunk_ms: u32,
    pub pcm_flush_ms: u32,
    pub active_speaker_ttl: std::time::Duration,
    /// Decoder rebuilds after consecutive failures before the session reports `error`.
    pub decoder_max_restarts: u32,
    /// How long the provider stream outlives a publisher that left (egress reconnects).
    pub publisher_reconnect_grace: std::time::Duration,
    pub max_sessions: usize,
    pub max_clients_per_session: usize,
    /// The stream key handed to egress for a slug (signed when keys are signed).
    pub stream_key_issuer: StreamKeyIssuer,
    /// HTTP broadcast mode (`REALTIME_BROADCAST_MODE=http`): every session's messages are also
    /// posted to another instance through this [`crate::relay::RelayPoster`].
    pub relay: Option<Recipient<RelayMessage>>,
    /// A session that only transcripts posted by another instance keep alive (HTTP broadcast
    /// mode, receiving side: no publisher, no client) is retired this long after the last
    /// post, so posts for many meetings do not fill `max_sessions` over time.
    pub relayed_session_idle: std::time::Duration,
    /// Cluster mode (`REDIS_URL`, docs/ARCHITECTURE.md#cluster-mode): leases, the bus and the
    /// finals log. `None`: this instance is alone.
    pub cluster: Option<ClusterLink>,
}

#[derive(Clone)]
pub struct SessionContext {
    pub settings: Arc<SessionSettings>,
    pub storage: Storage,
}
