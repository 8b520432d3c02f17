//! A mock of Gladia's Live v2 speech-to-text API for tests and local development.
//!
//! It speaks the protocol of `docs/reference/gladia-live-v2.md`: `POST /v2/live`
//! (strict body validation, Gladia's error bodies, fault injection), then a WebSocket that
//! accepts PCM16 16 kHz mono audio as binary or base64 JSON frames, acknowledges every chunk
//! with session-global half-open byte ranges, turns loud stretches of audio into utterances
//! (partial and final `transcript` messages with deterministic text), and ends with the
//! post-processing messages and a 1000 close on `stop_recording`. Sessions survive non-1000
//! disconnects, so clients can be tested on resume.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let mock = mock_gladia::MockGladia::start(mock_gladia::MockConfig::default())?;
//! // point the client at mock.base_url() with api key "test-key", stream audio, then:
//! let done = mock
//!     .wait_for(std::time::Duration::from_secs(5), |s| s.iter().any(|s| s.closed_with_1000))
//!     .await;
//! # let _ = done; Ok(()) }
//! ```

mod config;
mod error_body;
mod http_api;
mod live_session;
mod messages;
mod records;
mod routes;
mod server;
mod speech_detector;
mod state;
mod timestamp;
mod validation;
mod ws_session;

pub use config::MockConfig;
pub use records::{ConnectionEnd, InitRecord, SentTranscript, SessionRecord};
pub use server::MockGladia;
