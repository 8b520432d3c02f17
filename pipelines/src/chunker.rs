//! Cuts the decoder's PCM (S16LE 16 kHz mono, arbitrary buffer sizes) into
//! fixed-duration chunks for the speech-to-text provider.
//!
//! Providers want steady ~100 ms frames; the decoder hands out whatever one AAC frame
//! yields (~21-23 ms, less at the start while the resampler fills). A partial chunk
//! is still sent once its oldest byte has waited `flush_interval`, so a stream that
//! trickles (or pauses) never holds speech back for long.
//!
//! All sizes are kept sample-aligned (even byte counts): a stray odd byte is held back
//! until its pair arrives, and dropped by [`PcmChunker::flush_all`].

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::pcm_format::PCM_BYTES_PER_MS;

/// Bytes per S16LE mono sample.
const SAMPLE_BYTES: usize = 2;

/// Accumulates PCM and emits chunks of exactly `chunk_ms` each.
#[derive(Debug)]
pub struct PcmChunker {
    chunk_bytes: usize,
    flush_interval: Duration,
    pending: BytesMut,
    /// When the oldest byte of `pending` arrived; `None` while nothing is pending.
    pending_since: Option<Instant>,
}

impl PcmChunker {
    /// `chunk_ms` of 0 is treated as 1 ms so a chunk is never empty.
    pub fn new(chunk_ms: u32, flush_interval_ms: u32) -> Self {
        let chunk_bytes = chunk_ms.max(1) as usize * PCM_BYTES_PER_MS;
        Self {
            chunk_bytes,
            flush_interval: Duration::from_millis(u64::from(flush_interval_ms)),
            pending: BytesMut::with_capacity(chunk_bytes * 2),
            pending_since: None,
        }
    }

    /// Size of a full chunk in bytes (`chunk_ms * 32`).
    pub fn chunk_bytes(&self) -> usize {
        self.chunk_bytes
    }

    /// Bytes buffered and not yet returned.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Appends PCM and returns the full chunks now ready (each exactly
    /// `chunk_ms * 32` bytes); the remainder waits for more data or a flush.
    pub fn push(&mut self, pcm: &[u8], now: Instant) -> Vec<Bytes> {
        if pcm.is_empty() {
            return Vec::new();
        }
        if self.pending.is_empty() {
            self.pending_since = Some(now);
        }
        self.pending.extend_from_slice(pcm);

        let mut chunks = Vec::with_capacity(self.pending.len() / self.chunk_bytes);
        while self.pending.len() >= self.chunk_bytes {
            chunks.push(self.pending.split_to(self.chunk_bytes).freeze());
        }
        if !chunks.is_empty() {
            // The bytes left over come from this push, so they are as old as `now`.
            self.pending_since = (!self.pending.is_empty()).then_some(now);
        }
        chunks
    }

    /// Returns the partial chunk if its first byte arrived more than
    /// `flush_interval` before `now` (it is sent short rather than late).
    pub fn flush_due(&mut self, now: Instant) -> Option<Bytes> {
        let since = self.pending_since?;
        if now.saturating_duration_since(since) <= self.flush_interval {
            return None;
        }
        self.take_aligned(now)
    }

    /// Returns whatever remains, sample-aligned (end of stream).
    pub fn flush_all(&mut self) -> Option<Bytes> {
        let out = self.take_aligned(Instant::now());
        // A dangling half sample can never be completed now.
        self.pending.clear();
        self.pending_since = None;
        out
    }

    /// Takes the sample-aligned part of `pending`, keeping an odd trailing byte.
    fn take_aligned(&mut self, now: Instant) -> Option<Bytes> {
        let aligned = self.pending.len() - self.pending.len() % SAMPLE_BYTES;
        if aligned == 0 {
            return None;
        }
        let out = self.pending.split_to(aligned).freeze();
        // The held-back byte (if any) belongs to the partial that was just sent, so
        // restart its clock: it will go out with the next data.
        self.pending_since = (!self.pending.is_empty()).then_some(now);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn full_chunks_have_exact_size() {
        let mut c = PcmChunker::new(100, 200);
        let t0 = Instant::now();
        assert_eq!(c.chunk_bytes(), 3200);
        // 22 ms pieces, like one AAC frame at 44.1 kHz once resampled.
        let piece = vec![7u8; 22 * 32];
        let mut got = Vec::new();
        for i in 0..20 {
            got.extend(c.push(&piece, t0 + i * 22 * MS));
        }
        // 20 * 704 = 14 080 bytes = 4 full chunks + 1280 pending.
        assert_eq!(got.len(), 4);
        assert!(got.iter().all(|chunk| chunk.len() == 3200));
        assert_eq!(c.pending_bytes(), 1280);
        assert_eq!(c.flush_all().map(|b| b.len()), Some(1280));
        assert_eq!(c.flush_all(), None);
    }

    #[test]
    fn one_big_push_yields_many_chunks_in_order() {
        let mut c = PcmChunker::new(10, 50);
        let pcm: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let chunks = c.push(&pcm, Instant::now());
        assert_eq!(chunks.len(), 3);
        let joined: Vec<u8> = chunks.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(&joined[..], &pcm[..960]);
        assert_eq!(c.pending_bytes(), 40);
    }

    #[test]
    fn partial_is_flushed_after_interval_measured_from_its_first_byte() {
        let mut c = PcmChunker::new(100, 200);
        let t0 = Instant::now();
        assert!(c.push(&[1; 640], t0).is_empty());
        // More data later must not reset the clock of the first byte.
        assert!(c.push(&[2; 640], t0 + 150 * MS).is_empty());
        assert_eq!(c.flush_due(t0 + 200 * MS), None);
        let flushed = c.flush_due(t0 + 201 * MS).expect("partial is due");
        assert_eq!(flushed.len(), 1280);
        assert_eq!(c.flush_due(t0 + 1000 * MS), None);
    }

    #[test]
    fn leftover_after_a_chunk_gets_a_fresh_clock() {
        let mut c = PcmChunker::new(100, 200);
        let t0 = Instant::now();
        assert!(c.push(&[0; 3000], t0).is_empty());
        // Completes a chunk at t0+180 ms; 800 bytes of this push remain.
        assert_eq!(c.push(&[0; 1000], t0 + 180 * MS).len(), 1);
        assert_eq!(c.flush_due(t0 + 250 * MS), None);
        assert_eq!(c.flush_due(t0 + 381 * MS).map(|b| b.len()), Some(800));
    }

    #[test]
    fn chunks_and_flushes_stay_sample_aligned() {
        let mut c = PcmChunker::new(1, 0);
        let t0 = Instant::now();
        // Odd-sized pieces: 31 bytes then 1 byte complete exactly one 32-byte chunk.
        assert!(c.push(&[0; 31], t0).is_empty());
        assert_eq!(c.push(&[0; 1], t0).len(), 1);
        assert!(c.push(&[0; 5], t0).is_empty());
        let flushed = c.flush_due(t0 + MS).expect("due");
        assert_eq!(flushed.len(), 4);
        assert_eq!(c.pending_bytes(), 1);
        // The odd byte alone is never emitted.
        assert_eq!(c.flush_due(t0 + 10 * MS), None);
        assert_eq!(c.flush_all(), None);
        assert_eq!(c.pending_bytes(), 0);
    }

    #[test]
    fn nothing_pending_means_nothing_due() {
        let mut c = PcmChunker::new(100, 0);
        assert_eq!(c.flush_due(Instant::now()), None);
        assert!(c.push(&[], Instant::now()).is_empty());
        assert_eq!(c.flush_all(), None);
    }

    #[test]
    fn zero_chunk_ms_is_clamped() {
        assert_eq!(PcmChunker::new(0, 10).chunk_bytes(), 32);
    }
}
