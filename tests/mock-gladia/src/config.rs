//! Settings of one mock server.

use std::net::{Ipv4Addr, SocketAddr};

/// How the mock listens and how its fake speech recognition behaves.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// The only value of `x-gladia-key` accepted by `POST /v2/live`.
    pub api_key: String,
    /// Listen address; port 0 picks a free port (see [`crate::MockGladia::base_url`]).
    pub bind: SocketAddr,
    /// A 20 ms frame whose RMS (on the i16 scale) exceeds this counts as speech.
    pub speech_rms_threshold: f64,
    /// Silence (in audio time) that closes an open utterance.
    pub endpoint_silence_ms: u32,
    /// Audio time between two partial transcripts of an open utterance.
    pub partial_every_ms: u32,
    /// An utterance is force-closed once it has lasted this long, like Gladia's
    /// `maximum_duration_without_endpointing`.
    pub max_utterance_ms: u32,
    /// When true, a session's `endpointing` / `maximum_duration_without_endpointing` from the
    /// init body override `endpoint_silence_ms` / `max_utterance_ms`, as the real service
    /// would do. Off by default so tests get the same timing whatever the client sends.
    pub honour_body_endpointing: bool,
    /// Fault injection: on `stop_recording` the utterance still open gets no final (its
    /// partials stay drafts), as a provider that loses its tail would do.
    pub drop_open_utterance_on_stop: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            api_key: "test-key".to_owned(),
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            speech_rms_threshold: 500.0,
            endpoint_silence_ms: 300,
            partial_every_ms: 200,
            max_utterance_ms: 8000,
            honour_body_endpointing: false,
            drop_open_utterance_on_stop: false,
        }
    }
}
