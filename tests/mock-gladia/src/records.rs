//! Public, cloneable snapshots of what the mock saw and sent, for test assertions.

use std::collections::BTreeMap;
use std::time::SystemTime;

/// One `POST /v2/live` call, whatever its outcome.
#[derive(Debug, Clone)]
pub struct InitRecord {
    /// Raw query string, without `?` (e.g. `region=eu-west`).
    pub query: String,
    /// Request headers, names lowercased; repeated headers joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// Parsed JSON body, or `Value::Null` when the body was not JSON (see `raw_body`).
    pub body: serde_json::Value,
    pub raw_body: String,
    /// Status code the mock answered.
    pub status: u16,
    /// Id of the session created, when the answer was 201.
    pub session_id: Option<String>,
}

/// How one WebSocket connection of a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionEnd {
    /// The client sent a close frame with this code (`None`: close frame without a code).
    ClientClosed(Option<u16>),
    /// The mock closed it with this code (1000 after `stop_recording`, 1009, fault injection...).
    ServerClosed(u16),
    /// The TCP connection went away without a close frame.
    Dropped,
    /// A new connection to the same URL took the session over.
    Superseded,
}

/// A transcript message the mock sent.
#[derive(Debug, Clone)]
pub struct SentTranscript {
    /// `data.id` (e.g. `00_00000000`).
    pub id: String,
    /// `data.utterance.text`, with its leading space.
    pub text: String,
    pub start: f64,
    pub end: f64,
    pub sent_at: SystemTime,
}

/// Everything known about one live session.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// The `id` returned by init (also `session_id` in every WS message).
    pub id: String,
    /// The token of the WebSocket URL (distinct from `id`).
    pub token: String,
    /// Value of `?region=` on init, if any.
    pub region: Option<String>,
    pub init_body: serde_json::Value,
    /// Every audio byte received, in order, across reconnects.
    pub pcm: Vec<u8>,
    /// When each audio frame arrived and `pcm.len()` after it, in order: lets a load test
    /// stamp "this PCM reached the provider" on the same clock as its own sends.
    pub pcm_arrivals: Vec<(SystemTime, u64)>,
    /// Successful WebSocket upgrades so far.
    pub ws_connections: u32,
    /// How each finished connection ended, in order.
    pub connection_ends: Vec<ConnectionEnd>,
    /// Audio frames (binary or JSON chunks) received, empty ones included.
    pub audio_frames: u32,
    pub stop_received: bool,
    /// The session ended with a 1000 close: by the mock after `stop_recording`, or by the
    /// client closing with 1000 (which, per the reference, ends the session too).
    pub closed_with_1000: bool,
    /// The session is over; its URL refuses new connections.
    pub ended: bool,
    pub finals_sent: Vec<SentTranscript>,
    pub partials_sent: Vec<SentTranscript>,
}
