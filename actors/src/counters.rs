//! Process-wide counters named as in SPEC §7. Plain atomics for now: the metrics endpoint
//! (issue #5) reads them; nothing here allocates on the hot path.

use std::sync::atomic::{AtomicU64, Ordering};

pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }
    pub fn increment(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Counter::new()
    }
}

/// `ws.heartbeat_timeouts_total`: clients closed for not answering pings.
pub static WS_HEARTBEAT_TIMEOUTS: Counter = Counter::new();
/// `ws.broadcast_errors_total`: sends that failed and removed their client.
pub static WS_BROADCAST_ERRORS: Counter = Counter::new();
/// `ws.queue_drops_total`: partials dropped for a slow client.
pub static WS_QUEUE_DROPS: Counter = Counter::new();
/// Clients closed with 1013 `slow_consumer`.
pub static WS_SLOW_CONSUMERS: Counter = Counter::new();
/// HTTP broadcast mode (`REALTIME_BROADCAST_MODE=http`): messages the receiver accepted.
pub static RELAY_POSTED: Counter = Counter::new();
/// Relay posts that failed (connection, timeout, 5xx, 429) and were retried.
pub static RELAY_RETRIES: Counter = Counter::new();
/// Partials the relay dropped (queue full, or refused by the receiver).
pub static RELAY_DROPPED_PARTIALS: Counter = Counter::new();
/// Finals the relay dropped (queue full of finals, or refused by the receiver with a 4xx).
pub static RELAY_DROPPED_FINALS: Counter = Counter::new();
