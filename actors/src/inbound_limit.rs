//! How many frames one WebSocket client may send: a fixed one-second window per socket.
//!
//! A browser sends a command now and then and answers pings; nothing it does needs more than a
//! few frames a second. A client over the limit is closed with 1008 `policy_violation`, so one
//! token cannot keep a worker busy or (before pongs were bounded) grow memory with a ping
//! flood. Pure logic: the caller passes the time.

use std::time::{Duration, Instant};

/// Frames (any kind: text, binary, ping, pong, continuation) a client may send per second.
pub const MAX_FRAMES_PER_SECOND: u32 = 50;

const WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct InboundLimit {
    max: u32,
    window_start: Option<Instant>,
    frames: u32,
}

/// What [`InboundLimit::admit`] decided for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    Allowed,
    /// The frame is one too many in this window: close the socket.
    OverLimit,
}

impl InboundLimit {
    pub fn new(max_frames_per_second: u32) -> InboundLimit {
        InboundLimit {
            max: max_frames_per_second,
            window_start: None,
            frames: 0,
        }
    }

    /// Counts one frame received at `now`.
    pub fn admit(&mut self, now: Instant) -> Inbound {
        match self.window_start {
            Some(start) if now.saturating_duration_since(start) < WINDOW => {}
            _ => {
                self.window_start = Some(now);
                self.frames = 0;
            }
        }
        self.frames = self.frames.saturating_add(1);
        if self.frames > self.max {
            Inbound::OverLimit
        } else {
            Inbound::Allowed
        }
    }
}

impl Default for InboundLimit {
    fn default() -> Self {
        InboundLimit::new(MAX_FRAMES_PER_SECOND)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_applies_per_second_window() {
        let start = Instant::now();
        let mut limit = InboundLimit::new(3);
        for i in 0..3 {
            assert_eq!(
                limit.admit(start + Duration::from_millis(i * 100)),
                Inbound::Allowed
            );
        }
        assert_eq!(
            limit.admit(start + Duration::from_millis(900)),
            Inbound::OverLimit
        );
        // A new window starts a second after the first frame of the last one.
        assert_eq!(
            limit.admit(start + Duration::from_millis(1000)),
            Inbound::Allowed
        );
        for _ in 0..2 {
            assert_eq!(
                limit.admit(start + Duration::from_millis(1500)),
                Inbound::Allowed
            );
        }
        assert_eq!(
            limit.admit(start + Duration::from_millis(1999)),
            Inbound::OverLimit
        );
    }

    #[test]
    fn a_steady_browser_is_never_limited() {
        let start = Instant::now();
        let mut limit = InboundLimit::default();
        // A command and a pong every 100 ms for a minute.
        for i in 0..1200u64 {
            assert_eq!(
                limit.admit(start + Duration::from_millis(i * 50)),
                Inbound::Allowed
            );
        }
    }
}
