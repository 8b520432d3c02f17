//! realtime-core: live meeting audio over RTMP in, live transcripts over WebSocket out.
//!
//! The service crate. Its neighbours: `pipelines` (media: FLV, AAC, GStreamer decode, PCM
//! chunks) and `actors` (the actor tree: registry, supervisor, ingest, provider, broadcast,
//! clients). Here:
//! - `config`: docs/PROTOCOL.md#configuration settings, validated to one-line errors.
//! - `rtmp`: the RTMP listener (rml_rtmp, one isolated task per connection).
//! - `http`: HTTP API, the WebSocket upgrade, the middleware guarding `/api/*`, `ApiError`.
//! - `auth`: client tokens (HS256 JWT): who a caller is and which sessions it may use.
//! - `cluster`: cluster mode on Redis (leases, the transcript bus, the finals log).
//! - `db`: diesel storage (SQLite or PostgreSQL), batched writes off the async arbiters.
//! - `telemetry`: stderr logs and, with `OTEL_EXPORTER_OTLP_ENDPOINT`, OTLP trace export.
//! - `escaped_log`: the stderr writer that keeps every log event on one line.
//! - `log_budget`: a few refusal lines a second, the rest counted.
//! - `whisper_engine`: the offline provider's Whisper engine (CTranslate2), loaded and measured.
//! - `app`: wiring it all together; `main.rs` only parses, logs and runs.
//!
//! docs/ARCHITECTURE.md walks one audio chunk and one final transcript through the code.

pub mod app;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod db;
pub mod escaped_log;
pub mod http;
pub mod log_budget;
pub mod rtmp;
pub mod telemetry;
pub mod whisper_engine;
