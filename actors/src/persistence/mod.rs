//! What the actor tree needs from storage, as messages.
//!
//! The actors never touch the database themselves: diesel is synchronous and lives in the
//! service crate (`src/db/`). The broadcast side only holds these recipients, so tests can
//! plug in an in-memory store and the database can batch, retry and spill as it sees fit.

use actix::prelude::*;

#[cfg(any(test, feature = "test-support"))]
pub mod memory;

use crate::messages::SessionState;
use crate::stream_keys::RevokedKey;

/// One final transcript as it is stored and replayed (docs/PROTOCOL.md#persistence field set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalRecord {
    pub session_slug: String,
    /// Per-session sequence number: starts at 1, no gaps, never reused.
    pub seq: i64,
    pub utterance_id: String,
    pub text: String,
    pub speaker: String,
    pub speaker_id: String,
    /// When the speech happened, ms since the Unix epoch.
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    pub language: Option<String>,
}

/// Queue a final for the batched writer. Fire-and-forget: the writer owns retries.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct SaveFinal(pub FinalRecord);

/// The highest `seq` stored for a session (0 when none), so numbering survives restarts.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<i64, StorageError>")]
pub struct LoadLastSeq {
    pub session_slug: String,
}

/// Stored finals with `seq > after_seq`, in `seq` order, at most `limit` of them.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<FinalRecord>, StorageError>")]
pub struct LoadFinalsAfter {
    pub session_slug: String,
    pub after_seq: i64,
    pub limit: i64,
}

/// A storage failure, already stripped of connection strings and credentials.
#[derive(Debug, Clone, thiserror::Error)]
#[error("storage: {0}")]
pub struct StorageError(pub String);

/// The storage endpoints a session needs, handed to every `SessionSupervisor`.
#[derive(Clone)]
pub struct Storage {
    pub save_final: Recipient<SaveFinal>,
    pub load_last_seq: Recipient<LoadLastSeq>,
    pub load_finals_after: Recipient<LoadFinalsAfter>,
    pub save_session_state: Recipient<SaveSessionState>,
    pub revoke_stream_keys: Recipient<RevokeStreamKeys>,
    pub is_stream_key_revoked: Recipient<IsStreamKeyRevoked>,
}

/// Record a session's lifecycle state in the `sessions` table (best effort, for operators).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct SaveSessionState {
    pub session_slug: String,
    pub state: SessionState,
}

/// Store revocations, so a restarted instance refuses the keys too (docs/PROTOCOL.md#stream-keys).
/// Answers once they are stored; the caller keeps them in memory either way.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), StorageError>")]
pub struct RevokeStreamKeys(pub Vec<RevokedKey>);

/// Whether a key's nonce was revoked (by any instance, before any restart).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<bool, StorageError>")]
pub struct IsStreamKeyRevoked {
    pub nonce: String,
}
