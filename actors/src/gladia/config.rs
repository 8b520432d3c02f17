//! How to reach Gladia and how long to wait for it.

use std::time::Duration;

/// How to reach Gladia. `Debug` never prints the key.
#[derive(Clone)]
pub struct GladiaConfig {
    pub api_url: String,
    pub api_key: String,
    pub region: Option<String>,
    /// Unacknowledged audio kept for resend; beyond it the oldest audio is dropped and counted.
    pub max_buffered_audio: Duration,
    /// How long to wait for trailing finals and the 1000 close after `stop_recording`.
    pub stop_timeout: Duration,
    /// The provider's limit on one session (3 h for Gladia). From 90 % of it the stream moves
    /// to a fresh provider session at the first moment no utterance is open, at 97 % anyway.
    pub max_session: Duration,
}

impl std::fmt::Debug for GladiaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GladiaConfig")
            .field("api_url", &self.api_url)
            .field("api_key", &"[redacted]")
            .field("region", &self.region)
            .field("max_session", &self.max_session)
            .finish()
    }
}
