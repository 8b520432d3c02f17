//! Audio the provider has not acknowledged yet: kept so that a reconnect can resend it
//! (docs/reference/gladia-live-v2.md §4.3, trimmed by `byte_range` end exactly as the official SDK does).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Frames sent after a reconnect are at most this big: Gladia closes with 1009 above 1 MiB
/// and the official SDK uses 512 KiB.
pub const MAX_RESEND_FRAME: usize = 512 * 1024;

/// Session-relative byte accounting: `start <= min(acked, settled)`, `acked <= sent <= end`.
///
/// Two reasons keep a byte: the provider has not acknowledged it (a reconnect to the same
/// provider session resends it), or it is not *settled*, i.e. it may belong to an utterance
/// that has no final yet (a fresh provider session after a 44xx close or the session limit
/// is fed again from the settled point, so no utterance is cut in two).
#[derive(Debug)]
pub struct AudioBuffer {
    chunks: VecDeque<Bytes>,
    /// Absolute offset (bytes since the provider stream began) of `chunks[0]`.
    start: u64,
    /// Absolute offset up to which the provider acknowledged receipt.
    acked: u64,
    /// Absolute offset before which every utterance has its final.
    settled: u64,
    /// Absolute offset up to which bytes were written on the current connection.
    sent: u64,
    /// Absolute offset of the end of the buffer.
    end: u64,
    max_bytes: u64,
    /// Unacknowledged bytes dropped because the buffer was full (the provider was unreachable
    /// too long): audio the provider never received.
    pub overflow_bytes: u64,
}

impl AudioBuffer {
    pub fn new(max_bytes: u64) -> Self {
        AudioBuffer {
            chunks: VecDeque::new(),
            start: 0,
            acked: 0,
            settled: 0,
            sent: 0,
            end: 0,
            max_bytes,
            overflow_bytes: 0,
        }
    }

    pub fn push(&mut self, chunk: Bytes) {
        self.end += chunk.len() as u64;
        self.chunks.push_back(chunk);
        // Over the bound the oldest audio goes: it is the least useful for a live transcript.
        while self.end - self.start > self.max_bytes {
            let Some(old) = self.chunks.pop_front() else {
                break;
            };
            let old_end = self.start + old.len() as u64;
            self.overflow_bytes += old_end - self.acked.clamp(self.start, old_end);
            self.start = old_end;
            self.acked = self.acked.max(self.start);
            self.settled = self.settled.max(self.start);
            self.sent = self.sent.max(self.start);
        }
    }

    /// The provider acknowledged every byte before `byte_end`.
    pub fn acknowledge(&mut self, byte_end: u64) {
        self.acked = self.acked.max(byte_end.min(self.sent));
        self.trim();
    }

    /// Every utterance before `offset` has its final: that audio is no longer needed for a
    /// fresh provider session. Never moves backwards.
    pub fn settle(&mut self, offset: u64) {
        self.settled = self.settled.max(offset.min(self.end));
        self.trim();
    }

    fn trim(&mut self) {
        let keep_from = self.acked.min(self.settled);
        while self.start < keep_from {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let len = front.len() as u64;
            if self.start + len <= keep_from {
                self.start += len;
                self.chunks.pop_front();
            } else {
                let cut = (keep_from - self.start) as usize;
                *front = front.slice(cut..);
                self.start = keep_from;
            }
        }
    }

    /// A new connection to the same provider session: everything unacknowledged is sent again.
    pub fn rewind_to_unacknowledged(&mut self) {
        self.sent = self.acked;
    }

    /// A fresh provider session: it gets everything from the settled point on, and has
    /// acknowledged none of it. Returns that offset, where the new session's clock starts.
    pub fn rewind_to_settled(&mut self) -> u64 {
        let from = self.settled.clamp(self.start, self.end);
        self.sent = from;
        self.acked = from;
        from
    }

    /// Absolute offset up to which bytes were written on the current connection.
    pub fn sent_offset(&self) -> u64 {
        self.sent
    }

    pub fn acked_offset(&self) -> u64 {
        self.acked
    }

    pub fn settled_offset(&self) -> u64 {
        self.settled
    }

    /// Next frame to send: the unsent bytes, merged up to `MAX_RESEND_FRAME` (no copy when
    /// only one chunk is pending, the steady state).
    pub fn next_unsent(&mut self) -> Option<Bytes> {
        if self.sent >= self.end {
            return None;
        }
        let mut pieces: Vec<Bytes> = Vec::new();
        let mut len = 0usize;
        let mut offset = self.start;
        for chunk in &self.chunks {
            let chunk_end = offset + chunk.len() as u64;
            if chunk_end > self.sent {
                let from = (self.sent.max(offset) - offset) as usize;
                let mut piece = chunk.slice(from..);
                if len + piece.len() > MAX_RESEND_FRAME {
                    if len > 0 {
                        break;
                    }
                    piece = piece.slice(..MAX_RESEND_FRAME);
                }
                len += piece.len();
                pieces.push(piece);
                if len >= MAX_RESEND_FRAME {
                    break;
                }
            }
            offset = chunk_end;
        }
        self.sent += len as u64;
        if pieces.len() == 1 {
            return pieces.pop();
        }
        let mut frame = BytesMut::with_capacity(len);
        for piece in pieces {
            frame.extend_from_slice(&piece);
        }
        Some(frame.freeze())
    }

    pub fn unacknowledged_bytes(&self) -> u64 {
        self.end - self.acked
    }

    /// Bytes held in memory (unacknowledged or unsettled).
    pub fn retained_bytes(&self) -> u64 {
        self.end - self.start
    }

    pub fn total_bytes(&self) -> u64 {
        self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; n])
    }

    #[test]
    fn sends_each_chunk_once_then_resends_unacked_after_rewind() {
        let mut buf = AudioBuffer::new(1 << 20);
        buf.push(chunk(3200, 1));
        assert_eq!(buf.next_unsent().unwrap().len(), 3200);
        buf.push(chunk(3200, 2));
        assert_eq!(buf.next_unsent().unwrap()[0], 2);
        assert!(buf.next_unsent().is_none());
        buf.acknowledge(4000);
        assert_eq!(buf.unacknowledged_bytes(), 2400);
        buf.rewind_to_unacknowledged();
        let resent = buf.next_unsent().unwrap();
        assert_eq!(resent.len(), 2400);
        assert_eq!(resent[0], 2);
        assert!(buf.next_unsent().is_none());
    }

    #[test]
    fn resend_frames_are_bounded() {
        let mut buf = AudioBuffer::new(10 << 20);
        for _ in 0..400 {
            buf.push(chunk(3200, 7));
        }
        buf.rewind_to_unacknowledged();
        let mut total = 0;
        while let Some(frame) = buf.next_unsent() {
            assert!(frame.len() <= MAX_RESEND_FRAME);
            total += frame.len();
        }
        assert_eq!(total, 400 * 3200);
    }

    #[test]
    fn overflow_drops_oldest_and_counts() {
        let mut buf = AudioBuffer::new(6400);
        for i in 0..4 {
            buf.push(chunk(3200, i));
        }
        assert_eq!(buf.overflow_bytes, 6400);
        assert_eq!(buf.next_unsent().unwrap()[0], 2);
    }

    #[test]
    fn unsettled_audio_is_kept_for_a_fresh_session_then_trimmed() {
        let mut buf = AudioBuffer::new(1 << 20);
        for i in 0..4 {
            buf.push(chunk(1000, i));
        }
        while buf.next_unsent().is_some() {}
        buf.acknowledge(4000);
        buf.settle(1500);
        assert_eq!(
            buf.retained_bytes(),
            2500,
            "acked but unsettled audio stays"
        );
        assert_eq!(buf.rewind_to_settled(), 1500);
        let resent = buf.next_unsent().unwrap();
        assert_eq!(resent.len(), 2500);
        assert_eq!((resent[0], resent[500]), (1, 2));
        buf.acknowledge(4000);
        buf.settle(4000);
        assert_eq!(buf.retained_bytes(), 0);
    }

    #[test]
    fn overflow_counts_only_audio_the_provider_never_acknowledged() {
        let mut buf = AudioBuffer::new(2000);
        buf.push(chunk(1000, 0));
        buf.next_unsent();
        buf.acknowledge(1000);
        buf.push(chunk(1000, 1));
        buf.push(chunk(1000, 2));
        assert_eq!(
            buf.overflow_bytes, 0,
            "the dropped chunk had been acknowledged"
        );
        buf.push(chunk(1000, 3));
        assert_eq!(buf.overflow_bytes, 1000);
    }

    #[test]
    fn acks_beyond_what_was_sent_are_clamped() {
        let mut buf = AudioBuffer::new(1 << 20);
        buf.push(chunk(100, 1));
        buf.acknowledge(1_000_000);
        assert_eq!(buf.unacknowledged_bytes(), 100);
    }
}
