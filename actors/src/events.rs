//! Data that flows between the actors of one session.

use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;

/// PCM S16LE 16 kHz mono, `PCM_CHUNK_SIZE_MS` long (shorter when flushed), for the provider.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct PcmChunk {
    pub pcm: Bytes,
}

/// No more audio will come for this provider session (publish ended or session stopped):
/// the provider sends its stop, delivers trailing finals, then reports `ProviderFinished`.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct EndOfAudio;

/// A partial or final transcript from the provider, already normalised.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct TranscriptEvent {
    /// Unique within the meeting session, across provider sessions (see `GladiaActor`).
    pub utterance_id: String,
    /// Provider text with the leading space removed.
    pub text: String,
    pub is_final: bool,
    /// When the speech happened, ms since the Unix epoch.
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    pub language: Option<String>,
    /// The provider's own speaker label, if it gives one.
    pub provider_speaker: Option<String>,
    /// When the provider message arrived, for latency measurement.
    pub received_at: Instant,
    /// A final made from the last partial of an utterance the provider never finalized
    /// (its stream ended first).
    pub provisional: bool,
}

/// The states of SPEC §4.2, as clients and the HTTP API see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    WaitingForEgress,
    Live,
    Reconnecting,
    Ended,
    /// The session cannot transcribe (the audio decoder failed for good); the detail says why.
    Error,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::WaitingForEgress => "waiting_for_egress",
            SessionState::Live => "live",
            SessionState::Reconnecting => "reconnecting",
            SessionState::Ended => "ended",
            SessionState::Error => "error",
        }
    }
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
