//! The contract between a session and its provider stream, whichever provider runs it
//! (`stt::SttBackend` picks one; `gladia` and `whisper` implement it). The supervisor starts a
//! stream, the ingest feeds it [`PcmChunk`]s, the supervisor signals [`PublisherGap`] and
//! [`EndOfAudio`] (or, when another instance takes the session over, [`HandOver`]); the
//! stream answers with [`TranscriptEvent`]s (to the broadcaster), [`ProviderStatus`],
//! [`ProviderCheckpoint`]s and, once, [`ProviderFinished`] (to the supervisor).

use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;

/// PCM S16LE 16 kHz mono, `PCM_CHUNK_SIZE_MS` long (shorter when flushed), for the provider.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct PcmChunk {
    pub pcm: Bytes,
}

/// No more audio will come for this provider stream (publish ended or session stopped):
/// the provider sends its stop, delivers trailing finals, then reports [`ProviderFinished`].
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct EndOfAudio;

/// The publisher left and may come back (egress reconnects). A streaming provider turns the
/// gap into silence, so its session neither times out (~30 s without audio for Gladia) nor
/// loses its clock, and it can end the last utterance; a segmenting one closes the open
/// utterance. A stream that ends during a short gap gets no silence.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct PublisherGap;

/// Another instance took the session over (cluster mode): leave the provider session as it
/// is for the new owner to continue ([`ProviderResume`]): no stop, no close, no provisional
/// finals; then report [`ProviderFinished`]. A provider that cannot be continued elsewhere
/// ends its stream as for [`EndOfAudio`].
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct HandOver;

/// Where a provider session stands, enough for another process to continue it: kept in the
/// cluster under the owner's lease (docs/ARCHITECTURE.md#cluster-mode, provider continuity).
/// Only Gladia reports it; a whisper stream has no session outside this process.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderResume {
    /// The provider session's id (`init`'s `id`), also the utterance ids' prefix source.
    pub provider_session_id: String,
    /// Its WebSocket URL, which accepts a new connection after a disconnect. A credential:
    /// never logged, never shown by the API.
    pub url: String,
    /// Audio bytes the provider acknowledged: its clock position when the new owner's first
    /// byte arrives (it may have heard a little more, which its first acknowledgement shows).
    pub acked_bytes: u64,
}

/// Without the URL, which carries the session's token.
impl std::fmt::Debug for ProviderResume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderResume")
            .field("provider_session_id", &self.provider_session_id)
            .field("url", &"[hidden]")
            .field("acked_bytes", &self.acked_bytes)
            .finish()
    }
}

/// The provider stream's [`ProviderResume`] moved on (at most about once a second while audio
/// is acknowledged, and when a provider session starts).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ProviderCheckpoint {
    pub stream: u64,
    pub resume: ProviderResume,
}

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

/// What the provider connection is doing, reported to the `SessionSupervisor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderPhase {
    /// Creating the provider session or opening its socket.
    Connecting,
    /// Audio is flowing.
    Streaming,
    /// A failure; retrying after a back-off. The detail says what failed.
    Retrying,
}

#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ProviderStatus {
    /// Which of the session's provider streams this is (the supervisor numbers them).
    pub stream: u64,
    pub phase: ProviderPhase,
    pub detail: String,
    pub provider_session_id: Option<String>,
}

/// The provider stream is over: trailing finals delivered (or the wait timed out).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ProviderFinished {
    pub stream: u64,
    pub lost_audio_bytes: u64,
}

/// Where a provider stream reports.
pub struct StreamSinks {
    pub transcripts: Recipient<TranscriptEvent>,
    pub status: Recipient<ProviderStatus>,
    pub finished: Recipient<ProviderFinished>,
    pub checkpoints: Recipient<ProviderCheckpoint>,
}
