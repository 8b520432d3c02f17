//! Messages between the RTMP listener (in the service crate) and the actor tree.
//!
//! The RTMP side asks the `SessionRegistry` to attach a publisher to a session, then sends
//! each FLV audio tag straight to the session's `IngestActor` with `try_send` (the RTMP
//! connection must keep reading: egress fails a stream whose bytes stall for 30 s).

use actix::prelude::*;
use bytes::Bytes;

/// Identifies one RTMP connection's publish, so a replaced publisher's late messages are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PublisherId(pub u64);

impl std::fmt::Display for PublisherId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "publisher-{}", self.0)
    }
}

/// Sent to the `SessionRegistry` when a publish is requested on `live/{slug}`.
/// A publisher already attached to the same slug is replaced (egress reconnects at once).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<PublishHandle, PublishRefused>")]
pub struct AttachPublisher {
    pub session_slug: String,
    pub publisher: PublisherId,
    /// Peer address, for logs and the session snapshot.
    pub peer: String,
    /// The signed key's nonce and expiry (`None` for the development scheme): the session
    /// refuses a revoked one (docs/PROTOCOL.md#stream-keys).
    pub key: Option<PublishKey>,
}

/// What a session needs of a valid signed stream key: never the key itself (a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishKey {
    pub nonce: String,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
}

/// Where an accepted publisher sends its audio and its end.
pub struct PublishHandle {
    pub audio: Recipient<AudioTagReceived>,
    pub detach: Recipient<DetachPublisher>,
    /// Resolves with `Ok` when a newer publish of the same key replaced this one: the RTMP
    /// side then closes this (possibly half-dead) connection, so reconnects do not pile up.
    pub replaced: Option<tokio::sync::oneshot::Receiver<()>>,
}

/// Why a publish was refused; the RTMP side maps it to an `onStatus` code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishRefused {
    #[error("unknown session")]
    UnknownSession,
    #[error("session limit reached")]
    SessionLimit,
    /// The key was revoked by a stop of its session (docs/PROTOCOL.md#stream-keys).
    #[error("stream key revoked: the session was stopped; start it again for a new key")]
    KeyRevoked,
    #[error("{0}")]
    Other(String),
}

/// One RTMP audio message: the FLV AUDIODATA payload (sound format byte included).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct AudioTagReceived {
    pub publisher: PublisherId,
    /// RTMP timestamp in milliseconds.
    pub timestamp_ms: u32,
    pub payload: Bytes,
}

/// The publish ended: `deleteStream`, `FCUnpublish`, TCP close or a protocol error.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct DetachPublisher {
    pub publisher: PublisherId,
    pub reason: String,
}
