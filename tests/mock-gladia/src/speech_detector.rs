//! Energy-based utterance detection on PCM16 LE mono 16 kHz audio.
//!
//! The detector stands in for Gladia's recogniser: it cuts the byte stream into 20 ms frames,
//! calls a frame "speech" when its RMS is above a threshold, and turns runs of speech into
//! utterances with the same life cycle as Gladia's (open, partials, final). All times are audio
//! time derived from the byte count, never wall-clock, so results are deterministic whatever the
//! client's pacing.

/// 20 ms at 16 kHz.
const SAMPLES_PER_FRAME: usize = 320;
const BYTES_PER_FRAME: usize = SAMPLES_PER_FRAME * 2;
const FRAME_MS: u64 = 20;

/// Timing rules of the detector.
#[derive(Debug, Clone, Copy)]
pub struct DetectorSettings {
    pub rms_threshold: f64,
    pub endpoint_silence_ms: u32,
    /// 0 disables partials.
    pub partial_every_ms: u32,
    pub max_utterance_ms: u32,
}

/// Something the recogniser noticed; times are seconds from session start.
#[derive(Debug, Clone, PartialEq)]
pub enum SpeechEvent {
    /// An utterance opened at its first speech frame.
    Started { index: u32, start: f64 },
    /// The open utterance has grown by another `partial_every_ms`; `seq` counts from 1.
    Partial {
        index: u32,
        seq: u32,
        start: f64,
        end: f64,
    },
    /// The utterance closed (endpointing, maximum duration, or flush).
    Ended { index: u32, start: f64, end: f64 },
}

#[derive(Debug)]
struct OpenUtterance {
    index: u32,
    start_frame: u64,
    /// Exclusive end of the last speech frame.
    speech_end_frame: u64,
    silent_frames: u64,
    partials: u32,
}

/// Stateful detector for one session; it survives reconnects so times stay session-global.
#[derive(Debug)]
pub struct SpeechDetector {
    settings: DetectorSettings,
    /// Bytes of an incomplete frame, waiting for the next chunk.
    carry: Vec<u8>,
    frames_done: u64,
    open: Option<OpenUtterance>,
    next_index: u32,
}

impl SpeechDetector {
    pub fn new(settings: DetectorSettings) -> Self {
        SpeechDetector {
            settings,
            carry: Vec::with_capacity(BYTES_PER_FRAME),
            frames_done: 0,
            open: None,
            next_index: 0,
        }
    }

    /// Feeds audio bytes (any length, any alignment) and returns what happened, in order.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<SpeechEvent> {
        let mut events = Vec::new();
        if !self.carry.is_empty() {
            let take = (BYTES_PER_FRAME - self.carry.len()).min(bytes.len());
            self.carry.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.carry.len() == BYTES_PER_FRAME {
                let frame = std::mem::take(&mut self.carry);
                self.process_frame(&frame, &mut events);
                self.carry = frame;
                self.carry.clear();
            }
        }
        let mut frames = bytes.chunks_exact(BYTES_PER_FRAME);
        for frame in &mut frames {
            self.process_frame(frame, &mut events);
        }
        self.carry.extend_from_slice(frames.remainder());
        events
    }

    /// Closes the open utterance, if any (on `stop_recording`). A trailing partial frame is
    /// ignored: it is shorter than 20 ms and cannot change the outcome meaningfully.
    pub fn flush(&mut self) -> Vec<SpeechEvent> {
        self.open
            .take()
            .map(|u| vec![ended(&u)])
            .unwrap_or_default()
    }

    fn process_frame(&mut self, frame: &[u8], events: &mut Vec<SpeechEvent>) {
        let f = self.frames_done;
        self.frames_done += 1;
        let speech = rms(frame) > self.settings.rms_threshold;

        match self.open.as_mut() {
            None if speech => {
                let index = self.next_index;
                self.next_index += 1;
                self.open = Some(OpenUtterance {
                    index,
                    start_frame: f,
                    speech_end_frame: f + 1,
                    silent_frames: 0,
                    partials: 0,
                });
                events.push(SpeechEvent::Started {
                    index,
                    start: frame_time(f),
                });
            }
            None => return,
            Some(open) if speech => {
                open.speech_end_frame = f + 1;
                open.silent_frames = 0;
            }
            Some(open) => open.silent_frames += 1,
        }

        let Some(open) = self.open.as_mut() else {
            return;
        };
        let elapsed_ms = (f + 1 - open.start_frame) * FRAME_MS;
        let silence_ms = open.silent_frames * FRAME_MS;
        // Endpointing only counts once some silence was heard, so a 0 ms setting still needs
        // one silent frame rather than closing every utterance at its first frame.
        let endpointed =
            open.silent_frames > 0 && silence_ms >= u64::from(self.settings.endpoint_silence_ms);
        let too_long = elapsed_ms >= u64::from(self.settings.max_utterance_ms);
        if endpointed || too_long {
            if let Some(done) = self.open.take() {
                events.push(ended(&done));
            }
            return;
        }
        let every = u64::from(self.settings.partial_every_ms);
        if every > 0 && elapsed_ms >= every * (u64::from(open.partials) + 1) {
            open.partials += 1;
            events.push(SpeechEvent::Partial {
                index: open.index,
                seq: open.partials,
                start: frame_time(open.start_frame),
                end: frame_time(open.speech_end_frame),
            });
        }
    }
}

fn ended(u: &OpenUtterance) -> SpeechEvent {
    SpeechEvent::Ended {
        index: u.index,
        start: frame_time(u.start_frame),
        end: frame_time(u.speech_end_frame),
    }
}

/// Start of frame `f` in seconds; computed from integer milliseconds so values print cleanly.
fn frame_time(f: u64) -> f64 {
    (f * FRAME_MS) as f64 / 1000.0
}

fn rms(frame: &[u8]) -> f64 {
    let samples = frame.len() / 2;
    if samples == 0 {
        return 0.0;
    }
    let sum_sq: f64 = frame
        .chunks_exact(2)
        .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])).powi(2))
        .sum();
    (sum_sq / samples as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DetectorSettings {
        DetectorSettings {
            rms_threshold: 500.0,
            endpoint_silence_ms: 300,
            partial_every_ms: 200,
            max_utterance_ms: 8000,
        }
    }

    fn silence(ms: usize) -> Vec<u8> {
        vec![0; ms * 32]
    }

    fn tone(ms: usize) -> Vec<u8> {
        (0..ms * 16)
            .flat_map(|i| {
                let t = i as f64 / 16_000.0;
                let s = (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16;
                s.to_le_bytes()
            })
            .collect()
    }

    #[test]
    fn one_utterance_with_partials_and_final() {
        let mut d = SpeechDetector::new(settings());
        let mut audio = silence(1000);
        audio.extend(tone(1000));
        audio.extend(silence(1000));
        // Odd chunk size to exercise the carry buffer.
        let events: Vec<_> = audio.chunks(777).flat_map(|c| d.push(c)).collect();
        assert_eq!(
            events.first(),
            Some(&SpeechEvent::Started {
                index: 0,
                start: 1.0
            })
        );
        let partials = events
            .iter()
            .filter(|e| matches!(e, SpeechEvent::Partial { .. }))
            .count();
        assert_eq!(partials, 6);
        assert_eq!(
            events.last(),
            Some(&SpeechEvent::Ended {
                index: 0,
                start: 1.0,
                end: 2.0
            })
        );
        assert!(d.flush().is_empty());
    }

    #[test]
    fn max_duration_splits_and_flush_closes() {
        let mut d = SpeechDetector::new(DetectorSettings {
            max_utterance_ms: 1000,
            partial_every_ms: 0,
            ..settings()
        });
        let events = d.push(&tone(1500));
        assert_eq!(
            events,
            vec![
                SpeechEvent::Started {
                    index: 0,
                    start: 0.0
                },
                SpeechEvent::Ended {
                    index: 0,
                    start: 0.0,
                    end: 1.0
                },
                SpeechEvent::Started {
                    index: 1,
                    start: 1.0
                },
            ]
        );
        assert_eq!(
            d.flush(),
            vec![SpeechEvent::Ended {
                index: 1,
                start: 1.0,
                end: 1.5
            }]
        );
    }
}
