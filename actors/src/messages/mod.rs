//! The messages the actors exchange, and the few plain types they carry: the crate's leaf.
//!
//! Every actor module imports what it sends and handles from here, never from another actor's
//! module, so dependencies run one way (docs/ARCHITECTURE.md "Module dependencies"):
//! `registry → supervisor → {ingest, stt → {gladia, whisper}, broadcast} → messages`, and
//! `client → {registry, supervisor} → messages`. An actor that only sends to another holds a
//! `Recipient<M>` of one of these messages, not the other's `Addr`.
//!
//! - [`publish`]: the RTMP listener ↔ the actor tree (attach a publisher, audio tags, detach).
//! - [`provider`]: a provider stream's contract (PCM in, transcripts, status and end out),
//!   whatever the provider (docs/PROTOCOL.md "Speech-to-text providers").
//! - [`client`]: frames for one WebSocket client, and for the clients of one worker thread.
//! - [`replay`]: a resuming client pulling the finals it missed, page by page.
//! - [`session`]: a session's state as everyone outside sees it, and its retirement.
//! - [`cluster`]: cluster mode's contract (leases, committed finals, the bus), answered by
//!   the service crate's Redis actor.
//! - [`clock`]: wall-clock milliseconds, the one place the messages read the time.

pub mod client;
pub mod clock;
pub mod cluster;
pub mod provider;
pub mod publish;
pub mod replay;
pub mod session;

pub use client::{ClientId, ClientLink, Deliver, DeliverBatch, FanOutThread};
pub use clock::now_ms;
pub use provider::{
    EndOfAudio, HandOver, PcmChunk, ProviderCheckpoint, ProviderFinished, ProviderPhase,
    ProviderResume, ProviderStatus, PublisherGap, StreamSinks, TranscriptEvent,
};
pub use publish::{
    AttachPublisher, AudioTagReceived, DetachPublisher, PublishHandle, PublishKey, PublishRefused,
    PublisherId,
};
pub use replay::{NextReplayPage, ReplayPage, MAX_REPLAY_PAGE};
pub use session::{SessionInstance, SessionRetired, SessionState};
