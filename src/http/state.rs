//! What every handler can reach.

use ::actors::persistence::Storage;
use ::actors::registry::SessionRegistry;
use actix::prelude::*;

use super::speaker_rate_limit::SpeakerRateLimit;
use crate::db::Ping;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub registry: Addr<SessionRegistry>,
    pub storage: Storage,
    pub db_ping: Recipient<Ping>,
    pub client_settings: ::actors::client::ClientSettings,
    pub ai_locks: AiLocks,
    /// `REALTIME_BROADCAST_SECRET`: when set, `POST /api/realtime/transcribe/broadcast`
    /// accepts messages relayed by an ingest-only instance (docs/PROTOCOL.md#http-broadcast-mode).
    pub broadcast_secret: Option<std::sync::Arc<str>>,
    /// Active-speaker reports per reporter and second: one for the process, not per HTTP
    /// worker, or each worker would allow its own share.
    pub speaker_limits: std::sync::Arc<SpeakerRateLimit>,
    /// The same token check as the middleware's, for the one route outside it that also takes
    /// a `service` token (the relay, docs/PROTOCOL.md#roles).
    pub auth: crate::auth::Authenticator,
    /// Cluster mode: the directory of sessions other instances own (docs/ARCHITECTURE.md#cluster-mode).
    pub cluster: Option<Addr<crate::cluster::ClusterActor>>,
}

/// The AI coordinator lock's storage (a database write each).
#[derive(Clone)]
pub struct AiLocks {
    pub acquire: Recipient<crate::db::AcquireAiLock>,
    pub release: Recipient<crate::db::ReleaseAiLock>,
}
