//! How many active-speaker reports one reporter may send: one limiter for the process, not
//! per HTTP worker, or each worker would allow its own share.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Reports accepted per (session, identity) per second: clients send ~2; 10 leaves room for
/// bursts after a reconnect while stopping a runaway loop from flooding the session.
const MAX_REPORTS_PER_SECOND: u32 = 10;
/// Rate-limit windows kept before old ones are swept.
const MAX_TRACKED_REPORTERS: usize = 10_000;

/// Fixed one-second windows per reporter.
#[derive(Default)]
pub struct SpeakerRateLimit {
    windows: Mutex<HashMap<(String, String), (Instant, u32)>>,
}

impl SpeakerRateLimit {
    pub fn allow(&self, session: &str, identity: &str) -> bool {
        let now = Instant::now();
        let Ok(mut windows) = self.windows.lock() else {
            return true;
        };
        if windows.len() > MAX_TRACKED_REPORTERS {
            windows.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(1));
        }
        let entry = windows
            .entry((session.to_owned(), identity.to_owned()))
            .or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(1) {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= MAX_REPORTS_PER_SECOND
    }
}
