//! When each part of the audio stream was last written to the provider socket, for
//! `gladia.stt_latency_ms` (docs/PROTOCOL.md#observability: the end of an utterance's audio being sent → its final
//! received).
//!
//! The provider tells where an utterance ends in its own clock (seconds since its session
//! began); the actor maps that to an absolute byte offset of the audio stream. This log maps
//! the offset to the moment the frame holding it went out, so the latency is measured from
//! when the provider *could* have heard the utterance's last sample, not from when it was
//! spoken (which would add ingest and decode delays) nor from the last audio sent overall
//! (which would mix in the speech after it). A resend (reconnect, fresh provider session)
//! replaces the times of the bytes it sends again: the final comes from that resend.

use std::collections::VecDeque;
use std::time::Instant;

/// At 100 ms frames, about 13 minutes of sends; far more than any utterance waits for its
/// final, and a hard bound on memory.
const MAX_ENTRIES: usize = 8192;

#[derive(Debug, Default)]
pub struct SendClock {
    /// (absolute end offset of a frame, when it was written), offsets increasing.
    sends: VecDeque<(u64, Instant)>,
}

impl SendClock {
    /// Bytes `[from, to)` were written at `at`. Sends at or past `from` recorded earlier were
    /// superseded by this (re)send.
    pub fn sent(&mut self, from: u64, to: u64, at: Instant) {
        while self.sends.back().is_some_and(|(end, _)| *end > from) {
            self.sends.pop_back();
        }
        self.sends.push_back((to, at));
        if self.sends.len() > MAX_ENTRIES {
            self.sends.pop_front();
        }
    }

    /// When the byte just before `offset` was written: the first frame ending at or past it,
    /// or the latest send if the provider's end lies beyond what was sent (rounding).
    pub fn sent_at(&self, offset: u64) -> Option<Instant> {
        let i = self.sends.partition_point(|(end, _)| *end < offset);
        self.sends
            .get(i)
            .or_else(|| self.sends.back())
            .map(|(_, at)| *at)
    }

    /// Audio before `offset` will not be asked about any more.
    pub fn forget_before(&mut self, offset: u64) {
        while self.sends.front().is_some_and(|(end, _)| *end < offset) {
            self.sends.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn finds_the_frame_holding_the_offset_and_prefers_a_resend() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut clock = SendClock::default();
        clock.sent(0, 3200, at(100));
        clock.sent(3200, 6400, at(200));
        clock.sent(6400, 9600, at(300));
        assert_eq!(clock.sent_at(1), Some(at(100)));
        assert_eq!(clock.sent_at(3200), Some(at(100)));
        assert_eq!(clock.sent_at(3201), Some(at(200)));
        assert_eq!(
            clock.sent_at(20_000),
            Some(at(300)),
            "beyond: the latest send"
        );
        // A reconnect resends from 3200 in one frame.
        clock.sent(3200, 9600, at(900));
        assert_eq!(clock.sent_at(3000), Some(at(100)));
        assert_eq!(clock.sent_at(5000), Some(at(900)));
        clock.forget_before(5000);
        assert_eq!(clock.sent_at(0), Some(at(900)));
        assert_eq!(SendClock::default().sent_at(0), None);
    }
}
