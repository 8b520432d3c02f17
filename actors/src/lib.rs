//! The actor tree of realtime-core (docs/ARCHITECTURE.md has the picture).
//!
//! - `registry`: slug → `SessionSupervisor`; the entry point for routes and the RTMP listener.
//! - `supervisor`: one meeting session's state and children.
//! - `ingest`: FLV audio tags → GStreamer decode → PCM chunks (`pipelines` does the media work).
//! - `stt`: the provider interface the supervisor uses (docs/PROTOCOL.md#speech-to-text-providers), with two providers:
//!   `gladia`, the provider connection (init, WebSocket, acks, resend, stop), and `whisper`,
//!   offline decoding on this machine (voice-activity segmentation, a bounded decode pool).
//! - `broadcast`: numbering, attribution, one serialisation per message, fan-out.
//! - `relay`: HTTP broadcast mode, posting every message to another instance.
//! - `client` + `outbox`: one browser socket; finals first, newest partial only.
//! - `socket_writer` + `fan_out`: a socket's write side, and the one hub per worker thread
//!   that hands a session's frame to every client of its thread in one loop.
//! - `catch_up`: a resuming client pulling the finals it missed, page by page.
//! - `access`: what a token grants (sessions, role); `stream_keys`: issued and revoked keys.
//! - `messages`, `wire`, `persistence`: the messages between them and the
//!   outside (RTMP listener, database, browsers).
//! - `metrics`: the docs/PROTOCOL.md#metrics metrics registry behind `/metrics` and `/metrics/prometheus`.

pub mod access;
pub mod broadcast;
pub mod catch_up;
pub mod client;
pub mod fan_out;
pub mod gladia;
pub mod inbound_limit;
pub mod ingest;
pub mod messages;
pub mod metrics;
pub mod outbound_frames;
pub mod outbox;
pub mod persistence;
pub mod registry;
pub mod relay;
pub mod settings;
pub mod socket_writer;
pub mod speaker;
pub mod stream_keys;
pub mod stt;
pub mod supervisor;
pub mod whisper;
pub mod wire;
