//! Every metric name (docs/PROTOCOL.md#metrics), in one place. Names are `&'static str`, so recording one
//! builds its key without allocating.

/// The label that per-session series carry.
pub const SESSION_SLUG: &str = "sessionSlug";

// Latencies (histograms, milliseconds).
/// The end of an utterance's audio written to the provider socket → its final received.
pub const GLADIA_STT_LATENCY_MS: &str = "gladia.stt_latency_ms";
/// Provider message received → its frame handed to every client of the session.
pub const INGEST_BROADCAST_LATENCY_MS: &str = "ingest.broadcast_latency_ms";
/// One broadcast's loop over the session's clients.
pub const WS_BROADCAST_LOOP_MS: &str = "ws.broadcast_loop_ms";
/// `whisper` provider: an utterance's end detected (its final decode submitted) → its final
/// decoded, queueing behind other decodes included.
pub const WHISPER_STT_LATENCY_MS: &str = "whisper.stt_latency_ms";
/// An HTTP `POST` request, first byte in → response out.
pub const HTTP_POST_LATENCY_MS: &str = "http.post_latency_ms";

// Other histograms (no unit).
/// Finals per committed database batch.
pub const DB_BATCH_SIZE: &str = "db.batch_size";

// Per-session gauges (label `sessionSlug`), removed when the session retires.
/// WebSocket clients subscribed to the session.
pub const WS_SESSION_CLIENTS: &str = "ws.session_clients";
/// The session's latest `ingest.broadcast_latency_ms`.
pub const WS_SESSION_BROADCAST_LAG_MS: &str = "ws.session_broadcast_lag_ms";

// Counters.
/// Sends that failed and removed their client.
pub const WS_BROADCAST_ERRORS_TOTAL: &str = "ws.broadcast_errors_total";
/// Clients closed for not answering pings.
pub const WS_HEARTBEAT_TIMEOUTS_TOTAL: &str = "ws.heartbeat_timeouts_total";
/// Partials dropped for a slow client.
pub const WS_QUEUE_DROPS_TOTAL: &str = "ws.queue_drops_total";
/// Clients closed with 1013 `slow_consumer`.
pub const WS_SLOW_CONSUMER_CLOSES_TOTAL: &str = "ws.slow_consumer_closes_total";
/// Clients closed with 1008 `policy_violation` (too many frames a second).
pub const WS_POLICY_VIOLATION_CLOSES_TOTAL: &str = "ws.policy_violation_closes_total";
/// FLV audio payload bytes received from publishers.
pub const INGEST_AUDIO_BYTES_TOTAL: &str = "ingest.audio_bytes_total";
/// PCM bytes the decoder produced.
pub const INGEST_PCM_BYTES_TOTAL: &str = "ingest.pcm_bytes_total";
/// Decoder pipelines restarted after a fault.
pub const INGEST_DECODER_RESTARTS_TOTAL: &str = "ingest.decoder_restarts_total";
/// Provider connections lost and reopened (same or fresh provider session).
pub const GLADIA_RECONNECTS_TOTAL: &str = "gladia.reconnects_total";
/// Finals received from the provider.
pub const GLADIA_FINALS_TOTAL: &str = "gladia.finals_total";
/// `whisper` provider: finals decoded.
pub const WHISPER_FINALS_TOTAL: &str = "whisper.finals_total";
/// `whisper` provider: partial decodes skipped because the decode pool was saturated.
pub const WHISPER_SKIPPED_PARTIALS_TOTAL: &str = "whisper.skipped_partials_total";
/// `whisper` provider: finals skipped because their stream already had the most waiting
/// (audio published far faster than real time).
pub const WHISPER_SKIPPED_FINALS_TOTAL: &str = "whisper.skipped_finals_total";
/// `whisper` provider: publishes refused at the measured capacity.
pub const WHISPER_REFUSED_SESSIONS_TOTAL: &str = "whisper.refused_sessions_total";
/// Batches of finals committed.
pub const DB_BATCHES_WRITTEN_TOTAL: &str = "db.batches_written_total";
/// Finals committed.
pub const DB_FINALS_WRITTEN_TOTAL: &str = "db.finals_written_total";
/// Failed batch writes (each failed retry counts).
pub const DB_WRITE_ERRORS_TOTAL: &str = "db.write_errors_total";
/// Finals appended to the spill file (memory queue full, or shutdown during an outage).
pub const DB_FINALS_SPILLED_TOTAL: &str = "db.finals_spilled_total";
/// Finals read back from the spill file into the queue.
pub const DB_FINALS_REPLAYED_TOTAL: &str = "db.finals_replayed_total";
/// Finals lost: queue full and the spill file could not take them, or a damaged spill line.
pub const DB_FINALS_LOST_TOTAL: &str = "db.finals_lost_total";
/// Finals the database refused for good.
pub const DB_FINALS_REJECTED_TOTAL: &str = "db.finals_rejected_total";
/// HTTP broadcast mode (`REALTIME_BROADCAST_MODE=http`): messages the receiver accepted.
pub const RELAY_POSTED_TOTAL: &str = "relay.posted_total";
/// Relay posts that failed (connection, timeout, 5xx, 429) and were retried.
pub const RELAY_RETRIES_TOTAL: &str = "relay.retries_total";
/// Partials the relay dropped (queue full, or refused by the receiver).
pub const RELAY_DROPPED_PARTIALS_TOTAL: &str = "relay.dropped_partials_total";
/// Finals the relay dropped (queue full of finals, or refused by the receiver with a 4xx).
pub const RELAY_DROPPED_FINALS_TOTAL: &str = "relay.dropped_finals_total";

// Process-wide gauges.
/// Finals waiting in memory for the database.
pub const DB_QUEUE_LEN: &str = "db.queue_len";
/// Finals in the spill file not yet read back.
pub const DB_SPILL_PENDING: &str = "db.spill_pending";
/// Sessions whose audio this instance ingests now (a publisher attached): what an autoscaler
/// scales on (deploy/k8s/hpa.yaml). In cluster mode each session counts on its owner only.
pub const INGEST_LIVE_SESSIONS: &str = "ingest.live_sessions";

/// Shown from start-up, at zero, so a reader never misses a series that has not moved yet.
pub const LATENCIES: &[&str] = &[
    GLADIA_STT_LATENCY_MS,
    WHISPER_STT_LATENCY_MS,
    INGEST_BROADCAST_LATENCY_MS,
    WS_BROADCAST_LOOP_MS,
    HTTP_POST_LATENCY_MS,
];
pub const HISTOGRAMS: &[&str] = &[DB_BATCH_SIZE];
pub const COUNTERS: &[&str] = &[
    WS_BROADCAST_ERRORS_TOTAL,
    WS_HEARTBEAT_TIMEOUTS_TOTAL,
    WS_QUEUE_DROPS_TOTAL,
    WS_SLOW_CONSUMER_CLOSES_TOTAL,
    WS_POLICY_VIOLATION_CLOSES_TOTAL,
    INGEST_AUDIO_BYTES_TOTAL,
    INGEST_PCM_BYTES_TOTAL,
    INGEST_DECODER_RESTARTS_TOTAL,
    GLADIA_RECONNECTS_TOTAL,
    GLADIA_FINALS_TOTAL,
    WHISPER_FINALS_TOTAL,
    WHISPER_SKIPPED_PARTIALS_TOTAL,
    WHISPER_SKIPPED_FINALS_TOTAL,
    WHISPER_REFUSED_SESSIONS_TOTAL,
    DB_BATCHES_WRITTEN_TOTAL,
    DB_FINALS_WRITTEN_TOTAL,
    DB_WRITE_ERRORS_TOTAL,
    DB_FINALS_SPILLED_TOTAL,
    DB_FINALS_REPLAYED_TOTAL,
    DB_FINALS_LOST_TOTAL,
    DB_FINALS_REJECTED_TOTAL,
    RELAY_POSTED_TOTAL,
    RELAY_RETRIES_TOTAL,
    RELAY_DROPPED_PARTIALS_TOTAL,
    RELAY_DROPPED_FINALS_TOTAL,
];
pub const GAUGES: &[&str] = &[DB_QUEUE_LEN, DB_SPILL_PENDING, INGEST_LIVE_SESSIONS];

/// A histogram whose name ends in `_ms` is a latency: `/metrics` shows it with `…Ms` fields.
pub fn is_latency(name: &str) -> bool {
    name.ends_with("_ms")
}
