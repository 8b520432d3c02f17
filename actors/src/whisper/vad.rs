//! Voice-activity segmentation of 16 kHz mono PCM into utterances.
//!
//! Energy per 20 ms frame against an adaptive noise floor: speech starts after
//! [`START_FRAMES`] loud frames in a row (the utterance keeps [`PRE_ROLL_MS`] before them so a
//! soft onset is not clipped), and ends at the first pause of `endpoint_silence`, or is cut at
//! `max_utterance` (below Whisper's 30 s window) and goes on as a new utterance. Time is
//! counted in samples, so segmentation does not depend on when the audio arrives.

use std::collections::VecDeque;
use std::time::Duration;

pub const SAMPLE_RATE: usize = 16_000;
const FRAME: usize = SAMPLE_RATE / 50; // 20 ms
const START_FRAMES: usize = 3;
const PRE_ROLL_MS: usize = 200;
/// Trailing silence kept at an endpoint.
const TAIL_MS: usize = 200;
/// Utterances with less speech than this are clicks or coughs (see [`Utterance::is_speech`]).
pub const MIN_SPEECH_MS: usize = 200;
/// A frame is loud when it is this far above the noise floor and above [`ABSOLUTE_FLOOR_DB`].
const START_MARGIN_DB: f32 = 12.0;
const CONTINUE_MARGIN_DB: f32 = 8.0;
const ABSOLUTE_FLOOR_DB: f32 = -48.0;
/// Per 20 ms frame, the noise floor moves this share of the way to a quieter frame, and this
/// much smaller share towards a louder one (a time constant of about 4 s): it follows the
/// pauses between words down at once and a steadily louder room slowly up.
const FLOOR_FALL: f32 = 0.3;
const FLOOR_RISE: f32 = 0.005;
/// The floor starts at the first frame's level, at most this: speech from the very first
/// frame (no silence before it) must not be taken for the background.
const FIRST_FLOOR_MAX_DB: f32 = -50.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VadConfig {
    /// A pause this long ends the utterance.
    pub endpoint_silence: Duration,
    /// An utterance is cut at this length (must be below 30 s).
    pub max_utterance: Duration,
}

/// A finished utterance: its audio and where it lies in the stream, in samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Utterance {
    pub start_sample: u64,
    pub end_sample: u64,
    pub samples: Vec<f32>,
    /// Cut at the maximum length rather than ended by a pause.
    pub forced: bool,
    /// How much of it was loud.
    pub speech_ms: usize,
}

impl Utterance {
    /// Enough loud audio to be speech rather than a click or a cough.
    pub fn is_speech(&self) -> bool {
        self.speech_ms >= MIN_SPEECH_MS
    }
}

enum State {
    Silence {
        loud_run: usize,
    },
    Speech {
        start_sample: u64,
        samples: Vec<f32>,
        quiet_frames: usize,
        speech_frames: usize,
    },
}

pub struct Segmenter {
    config: VadConfig,
    state: State,
    /// Recent audio while silent, for the pre-roll.
    history: VecDeque<f32>,
    /// Samples not yet a whole frame.
    pending: Vec<f32>,
    /// Samples seen so far (whole frames).
    position: u64,
    /// The background level; `None` until the first frame.
    floor_db: Option<f32>,
}

fn frame_db(frame: &[f32]) -> f32 {
    let energy = frame.iter().map(|s| s * s).sum::<f32>() / frame.len().max(1) as f32;
    10.0 * energy.max(1e-12).log10()
}

fn ms_to_frames(ms: usize) -> usize {
    ms.div_ceil(20).max(1)
}

impl Segmenter {
    pub fn new(config: VadConfig) -> Segmenter {
        Segmenter {
            config,
            state: State::Silence { loud_run: 0 },
            history: VecDeque::new(),
            pending: Vec::new(),
            position: 0,
            floor_db: None,
        }
    }

    /// Feeds S16LE samples; returns the utterances that ended in them (clicks too: see
    /// [`Utterance::is_speech`]).
    pub fn push(&mut self, pcm: &[i16]) -> Vec<Utterance> {
        let mut ended = Vec::new();
        self.pending
            .extend(pcm.iter().map(|&s| f32::from(s) / 32_768.0));
        let whole = self.pending.len() / FRAME * FRAME;
        let frames: Vec<f32> = self.pending.drain(..whole).collect();
        for frame in frames.chunks(FRAME) {
            if let Some(utterance) = self.frame(frame) {
                ended.push(utterance);
            }
        }
        ended
    }

    /// The end of the audio (or of a publish): the open utterance, if there is one.
    pub fn finish(&mut self) -> Option<Utterance> {
        let rest: Vec<f32> = self.pending.drain(..).collect();
        if let State::Speech { samples, .. } = &mut self.state {
            samples.extend_from_slice(&rest);
        }
        self.position += rest.len() as u64;
        self.end_utterance(false, 0)
    }

    /// The utterance being spoken: its start sample and audio so far.
    pub fn current(&self) -> Option<(u64, &[f32])> {
        match &self.state {
            State::Speech {
                start_sample,
                samples,
                ..
            } => Some((*start_sample, samples)),
            State::Silence { .. } => None,
        }
    }

    /// Samples consumed so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    fn frame(&mut self, frame: &[f32]) -> Option<Utterance> {
        let db = frame_db(frame);
        let floor = self.floor_db.unwrap_or(db.min(FIRST_FLOOR_MAX_DB));
        let start_threshold = (floor + START_MARGIN_DB).max(ABSOLUTE_FLOOR_DB);
        let continue_threshold = (floor + CONTINUE_MARGIN_DB).max(ABSOLUTE_FLOOR_DB - 4.0);
        let rate = if db < floor { FLOOR_FALL } else { FLOOR_RISE };
        self.floor_db = Some(floor + (db - floor) * rate);
        self.position += frame.len() as u64;
        let endpoint_frames = ms_to_frames(self.config.endpoint_silence.as_millis() as usize);
        let max_samples =
            (self.config.max_utterance.as_millis() as usize * SAMPLE_RATE / 1000).max(FRAME);
        match &mut self.state {
            State::Silence { loud_run } => {
                self.history.extend(frame.iter().copied());
                let keep = (PRE_ROLL_MS / 20 + START_FRAMES) * FRAME;
                while self.history.len() > keep {
                    self.history.pop_front();
                }
                if db > start_threshold {
                    *loud_run += 1;
                    if *loud_run >= START_FRAMES {
                        let samples: Vec<f32> = self.history.drain(..).collect();
                        self.state = State::Speech {
                            start_sample: self.position - samples.len() as u64,
                            samples,
                            quiet_frames: 0,
                            speech_frames: START_FRAMES,
                        };
                    }
                } else {
                    *loud_run = 0;
                }
                None
            }
            State::Speech {
                samples,
                quiet_frames,
                speech_frames,
                ..
            } => {
                samples.extend_from_slice(frame);
                if db > continue_threshold {
                    *quiet_frames = 0;
                    *speech_frames += 1;
                } else {
                    *quiet_frames += 1;
                }
                if *quiet_frames >= endpoint_frames {
                    let quiet = *quiet_frames;
                    self.end_utterance(false, quiet)
                } else if samples.len() >= max_samples {
                    let quiet = *quiet_frames;
                    self.end_utterance(true, quiet)
                } else {
                    None
                }
            }
        }
    }

    /// Closes the open utterance. A forced cut goes on speaking in a new utterance.
    fn end_utterance(&mut self, forced: bool, quiet_frames: usize) -> Option<Utterance> {
        let state = std::mem::replace(&mut self.state, State::Silence { loud_run: 0 });
        let State::Speech {
            start_sample,
            mut samples,
            speech_frames,
            ..
        } = state
        else {
            return None;
        };
        let trailing_quiet = quiet_frames * FRAME;
        let tail = ms_to_frames(TAIL_MS) * FRAME;
        if trailing_quiet > tail {
            samples.truncate(samples.len() - (trailing_quiet - tail));
        }
        self.history.clear();
        if forced {
            self.state = State::Speech {
                start_sample: self.position,
                samples: Vec::new(),
                quiet_frames: 0,
                speech_frames: 0,
            };
        }
        if samples.is_empty() {
            return None;
        }
        Some(Utterance {
            start_sample,
            end_sample: start_sample + samples.len() as u64,
            samples,
            forced,
            speech_ms: speech_frames * 20,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: VadConfig = VadConfig {
        endpoint_silence: Duration::from_millis(600),
        max_utterance: Duration::from_secs(5),
    };

    fn tone(ms: usize, amplitude: f32) -> Vec<i16> {
        (0..ms * 16)
            .map(|i| {
                // A warbling tone in syllables (4 a second), like a voice.
                let t = i as f32 / 16_000.0;
                let f = 220.0 + 60.0 * (2.0 * std::f32::consts::PI * 3.0 * t).sin();
                let syllables = (2.0 * std::f32::consts::PI * 2.0 * t).sin().abs();
                (amplitude * syllables * 32_767.0 * (2.0 * std::f32::consts::PI * f * t).sin())
                    as i16
            })
            .collect()
    }

    fn noise(ms: usize, amplitude: f32) -> Vec<i16> {
        let mut x: u32 = 12345;
        (0..ms * 16)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let u = (x >> 16) as f32 / 65_536.0 - 0.5;
                (u * 2.0 * amplitude * 32_767.0) as i16
            })
            .collect()
    }

    fn feed(segmenter: &mut Segmenter, parts: &[Vec<i16>]) -> Vec<Utterance> {
        let mut all = Vec::new();
        for part in parts {
            // Uneven chunk sizes, as the decoder delivers them.
            for chunk in part.chunks(1_234) {
                all.extend(segmenter.push(chunk));
            }
        }
        all
    }

    fn secs(samples: u64) -> f64 {
        samples as f64 / 16_000.0
    }

    #[test]
    fn speech_separated_by_pauses_becomes_utterances() {
        let mut s = Segmenter::new(CONFIG);
        let got: Vec<Utterance> = feed(
            &mut s,
            &[
                noise(1_000, 0.002),
                tone(1_500, 0.3),
                noise(900, 0.002),
                tone(2_000, 0.3),
                noise(300, 0.002), // a short pause inside the utterance
                tone(500, 0.3),
                noise(1_000, 0.002),
            ],
        );
        assert!(got.iter().all(Utterance::is_speech));
        assert_eq!(
            got.len(),
            2,
            "{:?}",
            got.iter()
                .map(|u| (u.start_sample, u.end_sample))
                .collect::<Vec<_>>()
        );
        // First: speech 1.0-2.5 s, with up to 200 ms of pre-roll and tail.
        assert!(
            (0.75..=1.0).contains(&secs(got[0].start_sample)),
            "{}",
            secs(got[0].start_sample)
        );
        assert!(
            (2.5..=2.75).contains(&secs(got[0].end_sample)),
            "{}",
            secs(got[0].end_sample)
        );
        // Second: 3.4-6.2 s in one piece despite the 300 ms pause.
        assert!((3.15..=3.4).contains(&secs(got[1].start_sample)));
        assert!((6.2..=6.45).contains(&secs(got[1].end_sample)));
        assert!(got.iter().all(|u| !u.forced));
        assert_eq!(
            got[1].samples.len() as u64,
            got[1].end_sample - got[1].start_sample
        );
        assert!(s.current().is_none());
    }

    #[test]
    fn speech_from_the_first_sample_is_found() {
        let mut s = Segmenter::new(CONFIG);
        let got = feed(&mut s, &[tone(1_500, 0.3), noise(1_000, 0.002)]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].start_sample, 0);
        assert!(got[0].is_speech());
    }

    #[test]
    fn long_speech_is_cut_at_the_maximum_and_goes_on() {
        let mut s = Segmenter::new(CONFIG);
        let got = feed(&mut s, &[noise(500, 0.001), tone(12_000, 0.3)]);
        assert_eq!(got.len(), 2);
        assert!(got
            .iter()
            .all(|u| u.forced && u.samples.len() <= 5 * 16_000));
        assert_eq!(
            got[1].start_sample, got[0].end_sample,
            "no audio lost at a cut"
        );
        // The rest is still open and ends with the stream.
        let (start, open) = s.current().expect("speech goes on");
        assert_eq!(start, got[1].end_sample);
        assert!(!open.is_empty());
        let last = s.finish().expect("the open utterance at the end");
        assert!(!last.forced);
        assert!(
            (12.4..=12.6).contains(&secs(last.end_sample)),
            "{}",
            secs(last.end_sample)
        );
    }

    #[test]
    fn silence_noise_and_clicks_make_no_utterance() {
        let mut s = Segmenter::new(CONFIG);
        let mut click = noise(2_000, 0.003);
        click.extend(tone(80, 0.5)); // 80 ms: too short to be speech
        click.extend(noise(2_000, 0.003));
        click.extend(vec![0; 16_000]);
        let got = feed(&mut s, &[click]);
        assert!(got.len() <= 1, "{got:?}");
        assert!(
            got.iter().all(|u| !u.is_speech()),
            "a click taken for speech"
        );
        assert!(s.finish().is_none());
    }

    #[test]
    fn the_noise_floor_adapts_to_a_steady_background() {
        // Speech 25 dB above a loud background (from the first frame on) is still found, the
        // background alone is not.
        let mut s = Segmenter::new(CONFIG);
        let background = 0.01;
        let mut speech = tone(1_500, 0.3);
        for (x, n) in speech.iter_mut().zip(noise(1_500, background)) {
            *x = x.saturating_add(n);
        }
        let got = feed(
            &mut s,
            &[noise(3_000, background), speech, noise(2_000, background)],
        );
        assert_eq!(got.len(), 1);
        assert!((2.75..=3.0).contains(&secs(got[0].start_sample)));
    }
}
